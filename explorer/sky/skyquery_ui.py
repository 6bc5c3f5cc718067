"""Sidebar section "Find on the sky": one search box for positions and names, the footprint, and fetch-and-search.

    SIDEBAR_SECTIONS = [..., build_sky_search_section]      # explorer/app.py: build(data, state)
    pn.pane.HoloViews(view.overlay() * query_marker(state))  # the query's place on the map

A position that matches a catalogue object selects it (the app's similarity search then runs as for a click).
Otherwise the section says how far the nearest object is and whether the position is inside the footprint, and
offers to fetch the survey's cutout there (or to use an uploaded FITS), embed it with the bundle's encoder and show
its neighbours. Fetching and embedding run on a worker thread; the section shows "Fetching…" meanwhile and the
map stays usable. Results are applied on the session's event loop (``doc.add_next_tick_callback``).

Per process and bundle: one ``CatalogueMatcher`` (catalogue SkyCoord + KD-tree) and one ``QueryEmbedder``
(encoder, reducer). Fetched cutouts are cached on disk under ``$SKYQUERY_CACHE_DIR`` (default
``~/.cache/sky-explorer/cutouts``).
"""
from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import panel as pn
import param
from astropy import units as u

from core.surveys.base import find_survey
from core.surveys.services import FetchError
from explorer.jobs import JobRunner
from explorer.markup import html, text
from explorer.sky.query_embed import QueryError, QueryResult
from explorer.sky.skyquery import (
    LocalMatch,
    ParsedPosition,
    SkyPositions,
    footprint_plot,
    parse_position,
    resolve_name,
)

THUMB_PX = 128

_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="skyquery")  # 2 cores shared by all sessions


# --------------------------------------------------------------------------------------------- map marker
class QueryMarker(param.Parameterized):
    """Where the last off-catalogue query sits on the UMAP map (None: nothing to mark)."""

    xy = param.Tuple(default=None, allow_None=True, length=2)


def marker_for(state) -> QueryMarker:
    """This session's query marker, kept beside the explorer state (created on first use)."""
    marker = state.sky_marker
    if marker is None:
        marker = state.sky_marker = QueryMarker()
        # A click on a bundle object starts a new search: the query marker goes.
        state.param.watch(lambda event: event.new is not None and marker.param.update(xy=None), "selected")
    return marker


def query_marker(state):
    """A map layer marking the off-catalogue query: overlay it on the explorer's map, e.g.
    ``pn.pane.HoloViews(view.overlay() * query_marker(state))``."""
    import holoviews as hv

    marker = marker_for(state)

    def points(xy):
        data = ([], []) if xy is None else ([xy[0]], [xy[1]])
        return hv.Points(data, kdims=["x", "y"]).opts(
            size=20, marker="diamond", line_color="#ff6d00", line_width=3, fill_color="#ff6d00", fill_alpha=0.9)

    return hv.DynamicMap(pn.bind(points, marker.param.xy))


# --------------------------------------------------------------------------------------------- html
def query_card_html(result: QueryResult, thumbnail_png: bytes, data) -> str:
    """The off-catalogue query: its cutout, where it came from, where it sits on the map and its best match."""
    uri = "data:image/png;base64," + base64.b64encode(thumbnail_png).decode("ascii")
    where = "" if result.coord is None else text(result.coord.to_string("hmsdms", sep=":", precision=1))
    best = ""
    if len(result.neighbour_ids):
        row = data.row(int(result.neighbour_ids[0]))
        best = html("best match {} (cosine {:.3f})", row["object_id"], float(result.similarities[0]))
    placed = html("map position ({:.2f}, {:.2f}), {}", result.map_xy[0], result.map_xy[1], result.placement)
    notes = " · ".join(text(n) for n in result.notes)
    return (f'<div class="sky-query-card"><img class="sky-query-thumb" src="{uri}" width="{THUMB_PX}" '
            f'height="{THUMB_PX}" alt="query cutout"><div class="muted">{where}</div>'
            f'<div>{best}</div><div class="muted">{placed}</div>'
            f'<div class="muted">{notes}</div></div>')


def classified_by_bundle(data, image: np.ndarray) -> list[str]:
    """What the bundle's fine-tuned classifiers (``precompute finetune``) make of a query cutout, one note each."""
    from core.finetune import FineTuneError

    notes = []
    for fine in data.finetuned:
        try:
            p = fine.classify(image)
        except (FineTuneError, ValueError) as e:
            notes.append(f"fine-tuned {fine.name}: cannot classify this cutout ({e})")
            continue
        best = int(np.argmax(p))
        notes.append(f"fine-tuned {fine.name}: {fine.classes[best]} (p = {p[best]:.2f})")
    return notes


def _status(kind: str, message: str) -> str:
    colours = {"ok": "#1b5e20", "warn": "#8a5a00", "error": "#b00020", "busy": "#1f6f8b", "info": "#555"}
    return (f'<div class="sky-status sky-status-{kind}" style="color:{colours[kind]};font-size:12px">'
            f"{text(message)}</div>")


# --------------------------------------------------------------------------------------------- section
class SkySearch:
    """The widgets and callbacks of one session's sky-search section."""

    def __init__(self, data, state):
        self.data, self.state = data, state
        self.sky = SkyPositions(data.ra, data.dec)   # the footprint needs no matcher (built in the background)
        self.position: ParsedPosition | None = None
        self.match: LocalMatch | None = None
        self.box = pn.widgets.TextInput(label="Position or object name",
                                        placeholder="RA Dec, J-name, SkyServer URL, name or object id",
                                        css_classes=["sky-search-input"], sizing_mode="stretch_width")
        self.go = pn.widgets.Button(label="Find", color="primary", width=70, css_classes=["sky-search-go"])
        self.radius = pn.widgets.FloatInput(label="Match radius (arcsec)", value=3.0, start=0.1, end=600, step=0.5,
                                            width=150)
        self.status = pn.pane.HTML(_status("info", "e.g. 201.42 +23.38 · 13:25:41 +23:22:53 · J132541+232253"),
                                   sizing_mode="stretch_width", css_classes=["sky-status-pane"])
        self.fetch = pn.widgets.Button(label="Fetch the survey cutout here and search", color="success",
                                       visible=False, css_classes=["sky-fetch"], sizing_mode="stretch_width")
        self.upload = pn.widgets.FileInput(accept=".fits,.fit,.fits.gz,.fts", multiple=False,
                                           css_classes=["sky-upload"], sizing_mode="stretch_width")
        self.card = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["sky-query-pane"])
        self.plot = pn.pane.HoloViews(footprint_plot(self.sky), linked_axes=False, css_classes=["sky-footprint"])
        self.busy = False
        self.jobs = JobRunner(pool=_WORKERS)   # the pool is shared by every session: 2 cores

        # Enter commits the box's whole text as ``value``: search exactly that (value_input lags fast typing and
        # pasting, and searched '08:58:47.' for '08:58:47.2 +12:00:01' in 7 of 16 quick tries)
        self.box.param.watch(lambda event: self.find(event.new), "value")
        self.go.on_click(lambda *_: self.find())
        self.fetch.on_click(lambda *_: self.fetch_here())
        self.upload.param.watch(lambda event: self.embed_upload(event.new, self.upload.filename), "value")

    def view(self):
        can_fetch = find_survey(self.data.survey).fetchable
        title = self.data.survey_title
        which = title if title != self.data.survey else f"survey '{title}'"
        hint = ("" if can_fetch else f"<span class='muted'>No online image service for {text(which)}: "
                "off-catalogue positions can use an uploaded FITS.</span><br>")
        return pn.Column("### Find on the sky", pn.Row(self.box, self.go, sizing_mode="stretch_width"), self.radius,
                         self.status, self.plot, self.fetch, pn.pane.HTML(
                             hint + "<span class='muted'>or upload a FITS cutout with a WCS:</span>"), self.upload,
                         self.card, sizing_mode="stretch_width", css_classes=["sky-search-section"])

    # -- local ------------------------------------------------------------------------------------
    def find(self, text: str | None = None) -> None:
        if text is None:   # the Find button: the latest text the browser has sent
            text = self.box.value_input if getattr(self.box, "value_input", None) else self.box.value
        if self.select_by_id((text or "").strip()):
            return
        parsed = parse_position(text, resolve_names=False)
        if parsed.how == "name" and text.strip():
            # Sesame can take seconds (or time out offline): resolve on a worker, like a fetch.
            self.run_off_thread(f"Resolving {text.strip()!r} with CDS Sesame…",
                                lambda: resolve_name(text.strip()), self.locate)
            return
        self.locate(parsed)

    def select_by_id(self, text: str) -> bool:
        """An object id of this bundle (the 19-digit SDSS objID the details show, a FIRST name…) selects that
        object; False when ``text`` is none of them."""
        rows = self.data.row_index
        if not text or text not in rows:
            return False
        self.position, self.match, self.fetch.visible, self.card.object = None, None, False, ""
        self.status.object = _status("ok", f"object {text} of this bundle")
        self.state.select(int(rows.get_indexer([text])[0]))
        return True

    def locate(self, parsed: ParsedPosition) -> None:
        """Show where a parsed position is: select the matching object, or say how far the nearest one is."""
        self.position, self.match = parsed, None
        self.fetch.visible = False
        if parsed.how == "empty":  # a cleared box is not a mistake: back to the hint
            self.status.object, self.card.object = _status("info", parsed.message), ""
            self.plot.object = footprint_plot(self.sky)
            return
        if not parsed.ok:
            self.status.object = _status("error", parsed.message)
            return
        self.plot.object = footprint_plot(self.sky, parsed.coord)
        match = self.data.matcher.match(parsed.coord, radius=float(self.radius.value) * u.arcsec)
        self.match = match
        if match.matched:
            self.status.object = _status("ok", f"{parsed.message} — {match.message}")
            self.card.object = ""
            self.state.select(match.index)
            return
        kind = "info" if match.in_footprint else "warn"
        self.status.object = _status(kind, f"{parsed.message} — {match.message}")
        self.fetch.visible = find_survey(self.data.survey).fetchable

    # -- fetch and embed, off the UI thread --------------------------------------------------------
    def fetch_here(self) -> None:
        if self.position is None or not self.position.ok:
            return
        coord, k = self.position.coord, self.state.k
        self.run_off_thread("Fetching the survey cutout and embedding it…",
                            lambda: self._embedded(lambda q: q.from_position(coord, k=k)), self.show,
                            query=True)

    def embed_upload(self, content: bytes | None, filename: str | None) -> None:
        if not content:
            return
        coord = self.position.coord if self.position is not None and self.position.ok else None
        name, k = filename or "uploaded FITS", self.state.k
        self.run_off_thread(f"Embedding {name}…",
                            lambda: self._embedded(lambda q: q.from_fits(content, coord=coord, k=k, name=name)),
                            self.show, query=True)

    def _embedded(self, query):
        q = self.data.query_embedder(self.state.settings.cutout_cache)
        result = query(q)
        result.notes.extend(classified_by_bundle(self.data, result.image))
        return result, q.thumbnail_png(result.image)

    def run_off_thread(self, message: str, work, done, query: bool = False) -> None:
        """Run ``work()`` as a job (``explorer.jobs``) with a busy message; then ``done(result)`` on the session's
        event loop, or the error message in the status line. ``query``: the work was to become the search's query
        (a fetch, an upload), so when it fails the earlier object and its neighbours go too: they no longer
        answer what the user asked."""
        if self.busy:
            return
        self.busy = True
        self.fetch.disabled = True
        self.status.object = _status("busy", message)

        def finish(result=None, error: str | None = None):
            self.busy = False
            self.fetch.disabled = False
            if error is not None:
                self.status.object = _status("error", error)
                if query:
                    self.state.select(None)
                    self.state.param.update(neighbour_ids=np.zeros(0, np.int64),
                                            neighbour_sims=np.zeros(0, np.float32))
            else:
                done(result)

        def run(*, progress, cancel):
            try:
                return work(), None
            except (FetchError, QueryError) as e:
                return None, str(e)
            except Exception as e:  # anything else still ends the busy state, with a message
                return None, f"The query failed unexpectedly ({type(e).__name__}: {e})."

        self.jobs.submit(run, on_done=lambda outcome: finish(*outcome))

    def show(self, embedded) -> None:
        result, thumbnail = embedded
        self.card.object = query_card_html(result, thumbnail, self.data)
        ids = np.asarray(result.neighbour_ids, dtype=np.int64)
        sims = np.asarray(result.similarities, dtype=np.float32)
        self.state.select(None)  # the query is not a bundle object: no positives, then its own neighbours
        self.state.param.update(neighbour_ids=ids, neighbour_sims=sims, dropped_duplicates=0)
        marker_for(self.state).param.update(xy=tuple(result.map_xy))
        self.status.object = _status("ok", f"{len(ids)} most similar objects to the query cutout.")


def build_sky_search_section(data, state):
    """Sidebar builder, same signature as the app's other ``SIDEBAR_SECTIONS`` (``build(data, state)``)."""
    section = SkySearch(data, state)
    view = section.view()
    view.sky_search = section  # a handle for tests
    return view

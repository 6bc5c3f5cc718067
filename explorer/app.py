"""The page: a large Datashader map, a sidebar of sections, a hover card, a detail panel and a neighbour gallery.

Sidebar sections are built by ``build_<section>(data, state) -> viewable`` functions listed in ``SIDEBAR_SECTIONS``;
a later feature (labels/lasso, probes, sky search) adds its own builder there. ``create_page(argv)`` is what
``explorer/main.py`` serves; a missing or invalid bundle gives ``build_error_page`` instead of a traceback.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
import panel as pn

from explorer import colour
from explorer.about import build_about_section
from explorer.cards import THUMB_PX, detail_html, hover_card_html, neighbour_card_html
from explorer.data import (
    MAKE_ONE,
    ExplorerData,
    load_explorer_data,
    resolve_bundle_path,
    resolve_map_engine,
)
from explorer.labels_ui import build_labels_section
from explorer.probe_ui import build_probe_section
from explorer.selection_ui import attach_map_selection
from explorer.plot import MAP_HEIGHT, MapView, colour_layer
from explorer.search import find_neighbours
from explorer.skyquery_ui import build_sky_search_section, query_marker
from explorer.state import ExplorerState, track_session
from precompute.bundle import BundleError
from precompute.points import PointsError, points_command

from panel.theme.fast import Fast


class OfflineFast(Fast):
    """Panel's Fast design without its Google web font: the page loads nothing the server does not serve (the font
    request failed offline and told a third party of every visit)."""

    _resources = {kind: files for kind, files in Fast._resources.items() if kind != "font"}


OfflineFast.__name__ = "Fast"   # Panel finds a design's bundled files (fast/js/...) by its lower-cased class name


TITLE = "Latent-space explorer"
ACCENT = "#1f6f8b"

CSS = """
.cb-legend {font-size: 12px; line-height: 1.35;}
.cb-bar {height: 14px; border-radius: 2px; margin: 4px 0 2px 0; width: 100%;}
.cb-ticks {display: flex; justify-content: space-between; color: #444;}
.cb-cat {display: flex; align-items: center; gap: 6px; margin: 2px 0;}
.cb-swatch {display: inline-block; width: 12px; height: 12px; border-radius: 2px; flex: none;}
.cb-note {color: #777; font-size: 11px; margin-top: 4px;}
.obj-card {font-size: 12px; line-height: 1.3;}
.obj-card img, .nb-card img, .detail img {image-rendering: pixelated; border-radius: 3px; display: block;}
.obj-card table, .detail table {border-collapse: collapse;}
.obj-card td, .detail td {padding: 1px 6px 1px 0; vertical-align: top;}
.obj-card td:first-child, .detail td:first-child {color: #666;}
.obj-card td, .detail td {overflow-wrap: anywhere;}
.muted {color: #888; font-size: 12px;}
.nb-card {font-size: 11px; text-align: center;}
.nb-sim {font-weight: 600;}
"""


# ------------------------------------------------------------------------------------------------- search
def run_search(data: ExplorerData, state: ExplorerState) -> None:
    """Neighbours of the current positives/negatives into the state (empty when nothing is selected)."""
    if not state.positives:
        state.param.update(neighbour_ids=np.zeros(0, np.int64), neighbour_sims=np.zeros(0, np.float32),
                           dropped_duplicates=0)
        return
    # SimilaritySearch runs a single query on one faiss thread (restoring the setting after), so concurrent
    # sessions do not oversubscribe the cores; no process-wide omp_set_num_threads here.
    t0 = time.perf_counter()
    nb = find_neighbours(data.searcher, data.embedding_rows, data.ra, data.dec, state.positives, state.negatives,
                         k=state.k, min_sep_arcsec=state.duplicate_arcsec, negative_weight=state.negative_weight)
    state.param.update(neighbour_ids=nb.ids, neighbour_sims=nb.similarities, dropped_duplicates=nb.dropped_duplicates,
                       search_ms=1000 * (time.perf_counter() - t0))


def wire_search(data: ExplorerData, state: ExplorerState) -> None:
    state.param.watch(lambda *_: run_search(data, state),
                      ["positives", "negatives", "k", "duplicate_arcsec", "negative_weight"])


class NeighbourGallery:
    """A pool of result cards (thumbnail, similarity, pivot / more / fewer buttons), filled in place.

    Building Panel widgets costs ~1 ms each; re-filling existing cards keeps a click's UI update cheap. Cards are made
    when a search first needs them, not all ``k``'s maximum (200) with the page: those 600 buttons and their Bokeh
    models were ~7 s of a 1 M-object cold start (benchmarks/run.py cold start, 2-core box).
    """

    def __init__(self, data: ExplorerData, state: ExplorerState, size: int | None = None):
        self.data, self.state = data, state
        self.size = size or state.param.k.bounds[1]
        self.ids: list[int] = []
        self.cards, self.images = [], []
        self.empty = pn.pane.HTML('<span class="muted">Similar objects appear here after a click on the map.</span>')
        self.box = pn.FlexBox(sizing_mode="stretch_width")
        self.panel = pn.Column(self.empty, self.box, sizing_mode="stretch_width")
        state.param.watch(self.update, ["neighbour_ids"])

    def _new_card(self, slot: int):
        state = self.state
        img = pn.pane.HTML("", margin=(2, 2))
        buttons = [pn.widgets.Button(label="≈", description="search from this object", width=34, margin=(0, 1)),
                   pn.widgets.Button(label="+", description="more like this", width=34, margin=(0, 1),
                                     color="success"),
                   pn.widgets.Button(label="−", description="fewer like this", width=34, margin=(0, 1),
                                     color="danger")]
        for button, action in zip(buttons, (state.select, state.add_positive, state.add_negative)):
            button.on_click(lambda _, slot=slot, action=action: self._act(slot, action))
        self.images.append(img)
        card = pn.Column(img, pn.Row(*buttons, margin=0), width=THUMB_PX + 16, margin=4,
                         css_classes=["neighbour-card"], visible=False)
        self.cards.append(card)
        return card

    def _act(self, slot: int, action) -> None:
        if slot < len(self.ids):
            action(self.ids[slot])

    def update(self, *_):
        ids, sims = self.state.neighbour_ids, self.state.neighbour_sims
        self.ids = [int(i) for i in ids][: self.size]
        new = [self._new_card(slot) for slot in range(len(self.cards), len(self.ids))]
        for slot, card in enumerate(self.cards):
            if slot < len(self.ids):
                self.images[slot].object = neighbour_card_html(self.data, slot + 1, self.ids[slot], float(sims[slot]))
            if card.visible != (slot < len(self.ids)):
                card.visible = slot < len(self.ids)
        if new:
            self.box.extend(new)  # one change to the page for all new cards
        self.empty.visible = not self.ids


def build_gallery(data: ExplorerData, state: ExplorerState):
    gallery = NeighbourGallery(data, state)

    def heading(ids, positives, negatives, dropped, ms):
        if len(ids) == 0:
            return "### Similar objects"
        return (f"### {len(ids)} most similar objects  \n<span class='muted'>rank of each score among random "
                f"pairs of objects, then its cosine in the full embedding · query: {len(positives)} positive, {len(negatives)} negative · {dropped} sky duplicates "
                f"dropped · {ms:.0f} ms</span>")

    p = state.param
    return pn.Column(pn.pane.Markdown(pn.bind(heading, p.neighbour_ids, p.positives, p.negatives,
                                              p.dropped_duplicates, p.search_ms), margin=(0, 10)),
                     gallery.panel, sizing_mode="stretch_width")


# ------------------------------------------------------------------------------------------------- sidebar sections
def build_summary(data: ExplorerData, state: ExplorerState):
    m = data.bundle.manifest
    model = m.get("model", {})
    return pn.pane.Markdown(
        f"**{html.escape(str(data.survey))}** · {data.n:,} objects · {m.get('embedding_dim')}-d embedding  \n"
        f"<span class='muted'>model: {html.escape(str(model.get('method', '?')))} "
        f"{html.escape(str(model.get('architecture') or ''))} · bundle: {html.escape(data.bundle.path.name)}</span>  \n"
        f"<span class='muted map-engine'>{map_engine_note(data)}</span>",
        margin=(0, 10))


def map_engine_note(data: ExplorerData) -> str:
    """Which engine draws the map, so users know why a recolour takes the time it does."""
    if data.points is None:
        return "map engine: memory (colour columns held in the server)"
    return (f"map engine: dask (colours read from points/, {data.points.npartitions} partitions, "
            f"local threaded scheduler)")


def colour_options(data: ExplorerData, state: ExplorerState) -> dict[str, str]:
    """Colour-by choices, label -> key: the bundle's columns, then this session's own layers (probe, labels)."""
    options = {spec.label: name for name, spec in data.specs.items()}
    options.update({layer.spec.label: key for key, layer in state.session_colours.items()})
    return options


def forget_js_callbacks_on_close(widget) -> None:
    """Drop ``widget``'s (and its parts') entries in Panel's jscallback registry when this browser session ends.

    Panel keeps jscallbacks in a WeakKeyDictionary keyed by the source widget, and each callback refers back to its
    source, so an entry never dies. The editable range slider makes such callbacks internally; since our watchers on
    the slider reach this session's state, map and plots, every closed session stayed in server memory (~55 MB each
    in tests/test_soak.py) until this."""
    from panel.links import Callback

    def forget(_session_context):
        for part in widget.select():
            Callback.registry.pop(part, None)

    pn.state.on_session_destroyed(forget)


def build_colour(data: ExplorerData, state: ExplorerState):
    """Colour-by choice and, for continuous columns, a range slider (starts at the 1-99th percentile clip)."""
    select = pn.widgets.Select(label="Colour by", options=colour_options(data, state), value=state.colour_by,
                               css_classes=["colour-by"])
    slider = pn.widgets.EditableRangeSlider(label="Colour range", start=0.0, end=1.0, value=(0.0, 1.0), step=0.01,
                                            visible=False)
    syncing = []  # non-empty while the widgets follow the state, so their own watchers stay quiet

    def on_select(event):
        if not syncing:
            state.param.update(colour_by=event.new, colour_range=None)  # one batch: one re-render

    def on_state_colour(*_):
        layer = colour_layer(data, state)
        syncing.append(True)
        try:
            select.param.update(options=colour_options(data, state), value=state.colour_by)
            if layer.spec.kind != "continuous":
                slider.visible = False
                return
            lo, hi = layer.bounds
            slider.param.update(label=f"Colour range [{layer.spec.units}]" if layer.spec.units else "Colour range",
                                start=lo, end=hi, step=(hi - lo) / 200, value=state.colour_range or layer.range,
                                visible=True)
        finally:
            syncing.pop()

    def on_slider(event):
        if not syncing and colour_layer(data, state).spec.kind == "continuous":
            state.colour_range = tuple(event.new)

    select.param.watch(on_select, "value")
    slider.param.watch(on_slider, "value")
    forget_js_callbacks_on_close(slider)
    state.param.watch(on_state_colour, ["colour_by", "session_colours"])
    on_state_colour()
    hint = pn.pane.HTML("<span class='muted'>continuous columns start clipped to the 1–99th percentile</span>",
                        visible=slider.param.visible)
    return pn.Column("### Colour", select, slider, hint)


def build_search(data: ExplorerData, state: ExplorerState):
    k = pn.widgets.IntSlider.from_param(state.param.k, label="Neighbours (k)", start=1, end=60)
    dup = pn.widgets.FloatInput.from_param(state.param.duplicate_arcsec, label="Drop sky duplicates closer than (arcsec)",
                                           step=0.5)
    negw = pn.widgets.FloatSlider.from_param(state.param.negative_weight, label="Weight of 'fewer like these'",
                                             start=0.0, end=2.0, step=0.1)
    clear = pn.widgets.Button(label="Clear search", color="light")
    clear.on_click(lambda _: state.select(None))

    def sets(positives, negatives):
        return (f"<span class='muted'>more like: {len(positives)} · fewer like: {len(negatives)} — use + / − under "
                f"a result; ≈ restarts the search from it</span>")

    return pn.Card(pn.pane.HTML(pn.bind(sets, state.param.positives, state.param.negatives)), clear, k, dup, negw,
                   title="Similarity search settings", collapsed=True, sizing_mode="stretch_width")


def build_detail(data: ExplorerData, state: ExplorerState):
    return pn.Column("### Selected object", pn.pane.HTML(pn.bind(lambda i: detail_html(data, i), state.param.selected),
                                                         sizing_mode="stretch_width"))


SIDEBAR_SECTIONS = [build_summary, build_about_section, build_sky_search_section, build_colour, build_search,
                    build_labels_section, build_probe_section]


# ------------------------------------------------------------------------------------------------- page
# the toolbar's icons carry no words: say once what the pointer and each tool do
MAP_HELP = ("<span class='muted map-help'><b>Map</b>: hover shows an object · click finds similar objects · drag pans "
            "· wheel zooms · toolbar: <b>lasso</b> or <b>box select</b> to pick objects to label, <b>reset</b> for "
            "the whole map, <b>save</b> for a PNG</span>")
def build_legend(data: ExplorerData, state: ExplorerState, view: MapView):
    def legend(colour_by, colour_range, session_colours, density_log_peak):
        layer = view.layer
        return colour.legend_html(layer.spec, view.current_clim(), layer.null_fraction)

    return pn.pane.HTML(pn.bind(legend, state.param.colour_by, state.param.colour_range, state.param.session_colours,
                                view.param.density_log_peak), width=230, css_classes=["colour-legend"])


def build_page(data: ExplorerData, state: ExplorerState | None = None, sections=None,
               argv: list[str] | None = None):
    """The whole page for one session; ``argv``: the app's arguments (``--labels PATH``), read by its sections."""
    pn.extension(raw_css=[CSS])
    state = state or ExplorerState()
    if argv is not None:
        state.argv = list(argv)
    track_session(state)
    wire_search(data, state)
    view = MapView(data, state)
    plot = pn.pane.HoloViews(view.overlay(query_marker(state)), linked_axes=False)
    attach_map_selection(view)
    hover = pn.pane.HTML(pn.bind(lambda i: hover_card_html(data, i), state.param.hovered), width=230,
                         css_classes=["hover-pane"])
    # the clicked object's details sit under the hover card, beside the map, where a click is followed by the eye
    # (scrolling within the map's height, so the neighbour gallery stays right under the map)
    side = pn.Column(build_legend(data, state, view), pn.layout.Divider(), hover, build_detail(data, state),
                     min_width=250, sizing_mode="stretch_width", height=MAP_HEIGHT, scroll=True)
    main = pn.Column(pn.Row(plot, side, sizing_mode="stretch_width"), pn.pane.HTML(MAP_HELP, margin=(0, 10)),
                     build_gallery(data, state), sizing_mode="stretch_width")
    sidebar = [build(data, state) for build in (sections or SIDEBAR_SECTIONS)]
    template = pn.template.FastListTemplate(title=f"{TITLE} — {html.escape(str(data.survey))}", sidebar=sidebar, main=[main],
                                            sidebar_width=380, accent=ACCENT, theme_toggle=False,
                                            design=OfflineFast)
    template.explorer_state, template.explorer_view = state, view  # handles for tests and later features
    return template


def build_error_page(path: Path, message: str, fix: str = MAKE_ONE):
    """What a visitor sees when the bundle cannot be used: the reason and the command that makes one (``fix``)."""
    pn.extension(raw_css=[CSS])
    body = pn.pane.Alert(
        f"### No usable bundle\n\nThe explorer could not open the bundle at `{html.escape(str(path))}`:\n\n"
        f"> {html.escape(message)}\n\nMake one with:\n\n```\n{fix}\n```\n\nor point the app at another bundle: "
        f"`panel serve explorer --args --bundle DIR` (or set `EXPLORER_BUNDLE=DIR`).",
        alert_type="danger", css_classes=["bundle-error"], sizing_mode="stretch_width")
    return pn.template.FastListTemplate(title=TITLE, main=[body], accent=ACCENT, theme_toggle=False,
                                        design=OfflineFast)


def create_page(argv: list[str] | None = None, environ: dict | None = None):
    """Resolve the bundle, load it (once per process) and build this session's page, or the error page."""
    path = resolve_bundle_path(argv, environ)
    try:
        engine = resolve_map_engine(argv, environ)
    except BundleError as e:
        return build_error_page(path, str(e), fix=f"panel serve explorer --args --bundle {path} --map-engine memory")
    try:
        data = load_explorer_data(path, engine)
    except PointsError as e:
        return build_error_page(path, str(e), fix=points_command(path))
    except BundleError as e:
        return build_error_page(path, str(e))
    other = compare_bundle_path(argv)
    if other is not None:   # two embeddings of the same objects side by side (explorer/compare.py)
        from explorer.compare import build_compare_page

        try:
            return build_compare_page(data, load_explorer_data(other, engine))
        except BundleError as e:
            return build_error_page(other, str(e))
    return build_page(data, argv=list(argv or []))


def compare_bundle_path(argv: list[str] | None) -> Path | None:
    """``--compare DIR``: a second bundle of the same objects to show beside the first."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--compare", default=None)
    args, _ = parser.parse_known_args(list(argv or []))
    return Path(args.compare) if args.compare else None

"""The clicked object's stability under augmentations (``core.stability``; Hayat et al. 2021, Fig. 9).

"Rotate, shift, add noise" takes the object's raw cutout (from the build's ingest cache beside the bundle, else
fetched from the survey's cutout service like a sky search), makes its perturbed copies, embeds them with the
bundle's encoder and places each on the map where its nearest objects put it (``core.placement``). The copies are
drawn on the map, joined to where the same placement puts the original, and a table says how far each moved: as
the share of random pairs of objects that are more alike than the copy and its original, and on the map in units
of the median distance between two random objects. The build's report holds the same measure over many objects,
beside the pixels'.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import panel as pn
import param
from astropy import units as u
from astropy.coordinates import SkyCoord

from core.stability import (
    PERTURBATIONS,
    band_mad,
    perturbed_copies,
)
from explorer.jobs import JobRunner
from explorer.markup import html, text

PLACE_K = 15
# one worker for every session's copies (a few seconds of encoder work each on 2 cores); not a thread per session
_WORKERS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stability")


class StabilityError(Exception):
    """The copies cannot be made (no encoder, no cutout); says what to do."""


class CopiesMarker(param.Parameterized):
    """Where the clicked object's copies land on the map (empty: nothing drawn)."""

    origin = param.Tuple(default=None, allow_None=True, length=2, doc="the original, placed the same way")
    xy = param.Array(default=np.zeros((0, 2)), doc="(P, 2) the copies' places")
    names = param.List(default=[])


def marker_for(state) -> CopiesMarker:
    """This session's copies marker (created on first use); a new click removes the old copies."""
    marker = state.copies_marker
    if marker is None:
        marker = state.copies_marker = CopiesMarker()
        state.param.watch(lambda *_: marker.param.update(origin=None, xy=np.zeros((0, 2)), names=[]), "selected")
    return marker


def copies_layer(state):
    """A map layer: each copy a triangle, joined by a line to the original's placed position."""
    import holoviews as hv

    marker = marker_for(state)

    def draw(origin, xy, names):
        xy = np.asarray(xy, float).reshape(-1, 2)
        ox, oy = origin if origin is not None else (np.nan, np.nan)
        lines = hv.Segments((np.full(len(xy), ox), np.full(len(xy), oy), xy[:, 0], xy[:, 1]),
                            kdims=["x0", "y0", "x1", "y1"]).opts(color="#333333", line_width=1.5, line_alpha=0.8)
        points = hv.Points((xy[:, 0], xy[:, 1], list(names)[:len(xy)]), kdims=["x", "y"], vdims=["copy"]).opts(
            marker="triangle", size=13, fill_color="#ffd600", line_color="#222222", line_width=1.5,
            tools=["hover"])
        return lines * points

    return hv.DynamicMap(pn.bind(draw, marker.param.origin, marker.param.xy, marker.param.names))


# ------------------------------------------------------------------------------------------------ the work
def object_cutout(data, row: int, cutout_cache) -> tuple[np.ndarray, str]:
    """The raw cutout of bundle row ``row`` and where it came from: the build's ingest cache, else the survey's
    service (cached in ``cutout_cache``)."""
    images = data.bundle_images
    at = np.flatnonzero(images.rows == row) if images is not None else []
    if len(at):
        return np.asarray(images.images[at[0]], np.float32), "the build's cutouts"
    from core.surveys.online import FetchError
    from explorer.sky.query_embed import QueryError

    coord = SkyCoord(float(data.ra[row]) * u.deg, float(data.dec[row]) * u.deg)
    try:
        result = data.query_embedder(cutout_cache).from_position(coord, k=1)
    except (FetchError, QueryError) as e:
        raise StabilityError(f"no cutout of this object here (the build's ingest cache is not beside the bundle) and "
                             f"fetching it failed: {e}") from e
    return result.image, "the survey's cutout service"


def copies_of(data, row: int, cutout_cache, names=PERTURBATIONS, seed: int = 0) -> dict:
    """Embed ``row``'s perturbed copies, place them and measure how far they moved."""
    from explorer.sky.query_embed import QueryError

    try:
        q = data.query_embedder(cutout_cache)
        embedder = q.embedder
    except QueryError as e:
        raise StabilityError(str(e)) from e
    image, source = object_cutout(data, row, cutout_cache)
    mad = noise_scale(embedder, image)
    copies = perturbed_copies(image[None], mad, seed, names)[0]
    vectors = np.asarray(embedder(np.concatenate([image[None], copies])), np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims, ids = q.search.search(vectors, k=PLACE_K)
    places = np.array([q.place(v, i[i >= 0], s[i >= 0])[0] for v, i, s in zip(vectors, ids, sims)])
    cosine = vectors[1:] @ vectors[0]
    share_closer = 1.0 - np.asarray(data.similarity_percentile(cosine), float) / 100.0
    shift = np.hypot(*(places[1:] - places[0]).T) / data.map_scale
    return {"names": list(names), "origin": tuple(places[0]), "xy": places[1:], "cosine": cosine,
            "share_closer": share_closer, "map_shift": shift, "source": source}


def noise_scale(embedder, image: np.ndarray) -> np.ndarray:
    """Per-band MAD for the noise copies: the training set's (the encoder's augmentation settings) when recorded,
    else this cutout's own."""
    mad = ((getattr(embedder, "config", {}) or {}).get("augmentations") or {}).get("mad")
    if mad is not None and len(mad) == image.shape[0]:
        return np.asarray(mad, np.float32)
    return band_mad(image[None])


# ------------------------------------------------------------------------------------------------ html
def copies_table_html(result: dict, report_stability: dict | None) -> str:
    rows = "".join(html("<tr><td>{}</td><td>{}</td><td>{}</td></tr>", name, _pct(closer), f"{shift:.3f}")
                   for name, closer, shift in zip(result["names"], result["share_closer"], result["map_shift"]))
    summary = ""
    if report_stability:
        ranks, shifts = report_stability["median_rank"], report_stability["median_map_shift"]
        summary = html("<div class='muted'>Over {} objects in the build (median of every copy): random pairs closer "
                       "than copy and original {} in the embedding, {} in pixel space; map shift {} against {} for "
                       "pixel neighbours.</div>", report_stability["n_objects"], _pct(ranks["embedding"]),
                       _pct(ranks["pixels"]), _num(shifts["embedding"]), _num(shifts["pixels"]))
    return ("<div class='stability-table'><table><tr><th>copy</th><th title='share of random pairs of objects more "
            "alike than this copy and its original (0 %: nearer than any random pair)'>random pairs closer</th>"
            "<th title='distance from the original on the map, in units of the median distance between two random "
            "objects'>map shift</th></tr>" + rows + "</table>"
            + html("<div class='muted'>cutout from {}; triangles on the map: where each copy lands</div>",
                   result["source"]) + summary + "</div>")


def _pct(x) -> str:
    """A share as a percentage; below the random-pair reference's resolution (0.01 %) as '< 0.01 %'."""
    if x is None:
        return "—"
    return "< 0.01 %" if x < 1e-4 else f"{100 * x:.2g} %"


def _num(x) -> str:
    return "—" if x is None else f"{x:.3f}"


# ------------------------------------------------------------------------------------------------ section
class StabilityPanel:
    """The button under the selected object's details, its status and the table of copies."""

    def __init__(self, data, state):
        self.data, self.state = data, state
        self.button = pn.widgets.Button(label="Rotate, shift, add noise", css_classes=["stability-go"],
                                        description="Embed rotated, shifted and noisy copies of this object and "
                                                    "show where they land on the map (a stable representation "
                                                    "keeps them close)", sizing_mode="stretch_width",
                                        visible=False)
        self.result = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["stability-result"])
        self.jobs = JobRunner(pool=_WORKERS)
        self.button.on_click(lambda *_: self.run())
        state.param.watch(self._on_selected, "selected")

    def _on_selected(self, event) -> None:
        self.button.visible = event.new is not None and self.can_embed
        self.result.object = ""

    @property
    def can_embed(self) -> bool:
        """Only a bundle with its encoder can embed new copies (one made from someone else's embeddings has none)."""
        return self.data.bundle.encoder_dir.is_dir()

    def run(self) -> None:
        row = self.state.selected
        if row is None:
            return
        self.button.disabled = True
        self.result.object = "<span class='muted'>embedding 8 copies…</span>"

        def work(*, progress, cancel):
            try:
                return copies_of(self.data, int(row), self.state.settings.cutout_cache), None
            except StabilityError as e:
                return None, str(e)

        self.jobs.submit(work, on_done=lambda outcome: self.show(row, *outcome),
                         on_error=lambda message: self.show(row, None, f"the copies failed: {message}"))

    def show(self, row: int, result: dict | None, error: str | None) -> None:
        self.button.disabled = False
        if row != self.state.selected:   # the user clicked another object meanwhile
            return
        if error is not None:
            self.result.object = f"<div class='stability-error' style='color:#b00020'>{text(error)}</div>"
            return
        marker_for(self.state).param.update(origin=result["origin"], xy=result["xy"], names=result["names"])
        self.result.object = copies_table_html(result, (self.data.report or {}).get("stability"))

    def view(self):
        return pn.Column(self.button, self.result, sizing_mode="stretch_width")


def build_stability_panel(data, state):
    panel = StabilityPanel(data, state)
    view = panel.view()
    view.stability_panel = panel   # a handle for tests
    return view

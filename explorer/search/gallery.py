"""Similarity search from the session's positives and negatives, and the gallery of its results under the map."""
from __future__ import annotations

import time

import numpy as np
import panel as pn

from explorer.cards import THUMB_PX, neighbour_card_html
from explorer.data import ExplorerData
from explorer.search.search import find_neighbours
from explorer.state import ExplorerState


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

"""Two embeddings of the same objects side by side: which one serves an astronomer better?

    panel serve explorer --args --bundle bundles/first --compare bundles/first-published

Each bundle gets its own map, colour, search and neighbours; the objects both hold (same ``object_id``) are linked:
a lasso or box in one map selects the same objects in the other, and a click on an object selects it in both, so
each map shows its own neighbours of the same object and the page says how many of them the two share. Each
bundle's report card ("About this embedding") sits above its map, so the two can be compared on the same labels.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn

from explorer.about import build_about_section, comparison_html
from explorer.cards import hover_card_html
from explorer.data import ExplorerData
from explorer.layout import ACCENT, CSS, MAP_HELP, MAP_MODES, OfflineFast, build_legend
from explorer.map.plot import MapView
from explorer.map.selection_ui import attach_map_selection
from explorer.map.window import WindowSize, compare_frame_for_window, follow_window
from explorer.markup import text
from explorer.search.gallery import build_gallery, wire_search
from explorer.state import ExplorerState, track_session


class Pairing:
    """Rows of the objects two bundles share: ``a_to_b[i]`` is the row in B of A's row i (-1: not in B)."""

    def __init__(self, ids_a, ids_b):
        index_b = pd.Index(np.asarray(ids_b, dtype=str))
        index_a = pd.Index(np.asarray(ids_a, dtype=str))
        self.a_to_b = index_b.get_indexer(index_a).astype(np.int64)
        self.b_to_a = index_a.get_indexer(index_b).astype(np.int64)
        self.n_shared = int((self.a_to_b >= 0).sum())

    def across(self, rows, to_b: bool) -> np.ndarray:
        """The other bundle's rows of ``rows`` (objects it lacks are dropped)."""
        mapped = (self.a_to_b if to_b else self.b_to_a)[np.asarray(rows, dtype=np.int64)]
        return mapped[mapped >= 0]


def link_states(a: ExplorerState, b: ExplorerState, pairing: Pairing) -> None:
    """Selections and clicks in one state are mirrored into the other (a guard stops the echo)."""
    busy = []

    def mirror(source, target, to_b):
        def on_selection(event):
            if not busy:
                busy.append(True)
                try:
                    target.selection_ids = pairing.across(event.new, to_b)
                finally:
                    busy.pop()

        def on_selected(event):
            if busy or event.new is None:
                return
            other = pairing.across([event.new], to_b)
            busy.append(True)
            try:
                target.select(int(other[0]) if len(other) else None)
            finally:
                busy.pop()

        source.param.watch(on_selection, "selection_ids")
        source.param.watch(on_selected, "selected")

    mirror(a, b, True)
    mirror(b, a, False)


def overlap_html(a: ExplorerState, b: ExplorerState, pairing: Pairing) -> str:
    """How many of the two neighbour sets of the clicked object are the same objects."""
    if a.selected is None or len(a.neighbour_ids) == 0 or len(b.neighbour_ids) == 0:
        return "<span class='muted compare-overlap'>Click an object in either map: both maps select it and show " \
               "their own most similar objects.</span>"
    shared = np.intersect1d(pairing.across(a.neighbour_ids, True), b.neighbour_ids)
    k = min(len(a.neighbour_ids), len(b.neighbour_ids))
    return (f"<span class='compare-overlap'><b>{len(shared)} of {k}</b> nearest neighbours are the same objects in "
            f"both embeddings</span>")


def side(data: ExplorerData, state: ExplorerState, title: str):
    """One bundle's column: heading, its map with the legend and hover card under it, its neighbour gallery and
    its report card (folded: the comparison table under the maps says it side by side)."""
    wire_search(data, state)
    view = MapView(data, state)
    attach_map_selection(view)
    plot = pn.pane.HoloViews(view.overlay(), linked_axes=False)
    hover = pn.pane.HTML(pn.bind(lambda i: hover_card_html(data, i), state.param.hovered), width=230,
                         css_classes=["hover-pane"])
    model = data.bundle.manifest.get("model", {})
    heading = pn.pane.HTML(f"<b>{text(title)}</b> <span class='muted'>{text(str(data.survey))} · "
                           f"{data.n:,} objects · {text(str(model.get('method', '?')))} "
                           f"{text(str(model.get('architecture') or ''))}</span>", margin=(0, 10))
    count = pn.pane.HTML(pn.bind(lambda ids: f"<span class='muted selection-count'>{len(ids):,} selected</span>",
                                 state.param.selection_ids))
    about = build_about_section(data, state)
    if isinstance(about, pn.Card):
        about.collapsed = True
    under = pn.Row(build_legend(data, state, view), pn.Column(count, hover))
    column = pn.Column(heading, plot, under, build_gallery(data, state), about, css_classes=["compare-side"],
                       sizing_mode="stretch_width")
    return column, view, plot


def shared_colour_options(data_a: ExplorerData, data_b: ExplorerData) -> dict[str, str]:
    """Colour-by choices both bundles have (label -> key), density first."""
    return {spec.label: name for name, spec in data_a.specs.items() if name in data_b.specs}


def build_compare_controls(data_a: ExplorerData, data_b: ExplorerData, states) -> pn.Row:
    """One Colour by and one Points | Images switch for both maps, so the two are always drawn alike."""
    select = pn.widgets.Select(label="Colour both maps by", options=shared_colour_options(data_a, data_b),
                               value=states[0].colour_by, css_classes=["compare-colour-by"], width=300)
    mode = pn.widgets.RadioButtonGroup(options=MAP_MODES, value=states[0].map_mode,
                                       color="primary", variant="outline", css_classes=["map-mode"],
                                       disabled=not (data_a.has_thumbnails and data_b.has_thumbnails),
                                       align="end")

    def on_colour(event):
        for state in states:
            state.param.update(colour_by=event.new, colour_range=None)

    def on_mode(event):
        for state in states:
            state.map_mode = event.new

    select.param.watch(on_colour, "value")
    mode.param.watch(on_mode, "value")
    return pn.Row(select, mode, sizing_mode="stretch_width")


def build_compare_page(data_a: ExplorerData, data_b: ExplorerData):
    pn.extension(raw_css=[CSS])
    pairing = Pairing(data_a.object_ids, data_b.object_ids)
    state_a, state_b = ExplorerState(), ExplorerState()
    track_session(state_a)
    link_states(state_a, state_b, pairing)
    col_a, view_a, plot_a = side(data_a, state_a, f"A: {data_a.bundle.path.name}")
    col_b, view_b, plot_b = side(data_b, state_b, f"B: {data_b.bundle.path.name}")
    window = WindowSize(margin=0, height=0, width=0)
    follow_window([plot_a, plot_b], window, frame_for=compare_frame_for_window)
    shared = pn.pane.HTML(f"<b>{pairing.n_shared:,}</b> objects are in both bundles (matched by object_id); a lasso "
                          f"or a click in one map selects the same objects in the other.", css_classes=["compare-shared"],
                          margin=(0, 10))
    overlap = pn.pane.HTML(pn.bind(lambda *_: overlap_html(state_a, state_b, pairing), state_a.param.neighbour_ids,
                                   state_b.param.neighbour_ids), margin=(0, 10))
    name_a, name_b = data_a.bundle.path.name, data_b.bundle.path.name
    reports = pn.pane.HTML(comparison_html(data_a.report, data_b.report, name_a, name_b), width=900)
    # the maps first, right under one line of context and the shared controls; what the two know comes after them
    main = pn.Column(window, shared, build_compare_controls(data_a, data_b, (state_a, state_b)), overlap,
                     pn.Row(col_a, col_b, sizing_mode="stretch_width"), pn.pane.HTML(MAP_HELP),
                     pn.pane.Markdown("### What the two embeddings know"), reports, sizing_mode="stretch_width")
    template = pn.template.FastListTemplate(title="Latent-space explorer — comparing two embeddings", main=[main],
                                            accent=ACCENT, theme_toggle=False, design=OfflineFast)
    template.compare = {"pairing": pairing, "states": (state_a, state_b), "views": (view_a, view_b)}
    return template

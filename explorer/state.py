"""Per-session state of the explorer. Features hook in by watching or setting these parameters.

One ``ExplorerState`` per browser session; the bundle data it points to (``explorer.data.ExplorerData``) is shared
by all sessions and read-only. Row ids are row indices into the bundle (catalogue row i <=> embedding row i).
"""
from __future__ import annotations

import ctypes
import gc
import logging
import weakref

import numpy as np
import param

from explorer.search.search import (
    DEFAULT_DUPLICATE_ARCSEC,
    DEFAULT_K,
    DEFAULT_NEGATIVE_WEIGHT,
)
from explorer.settings import Settings

log = logging.getLogger("explorer")
log.setLevel(logging.INFO)  # `panel serve` sets only Bokeh's logger to --log-level; the root stays at WARNING
# process-wide by design: the sessions alive now, for the server's health figures (weak: a closed one leaves)
_LIVE: "weakref.WeakSet[ExplorerState]" = weakref.WeakSet()


class ExplorerState(param.Parameterized):
    # colour
    colour_by = param.String(default="density", doc="colour-by column (a manifest colour_by key or 'density')")
    colour_range = param.Range(default=None, doc="colour limits for continuous columns (None: the default clip)")
    map_mode = param.Selector(default="points", objects=["points", "images"],
                              doc="the map as points (Datashader) or as a mosaic of thumbnails (explorer.map.mosaic)")
    session_colours = param.Dict(default={}, doc="this session's own colour layers (colour.ColourLayer) by key: "
                                                 "probe prediction, probe trust, user labels")

    # pointer and selection
    hovered = param.Integer(default=None, allow_None=True, doc="row under the pointer, if any")
    selected = param.Integer(default=None, allow_None=True, doc="the clicked object (query of the search)")
    selection_ids = param.Array(default=np.zeros(0, dtype=np.int64), doc="current multi-object selection (lasso)")

    # similarity search
    k = param.Integer(default=DEFAULT_K, bounds=(1, 200), doc="number of neighbours shown")
    duplicate_arcsec = param.Number(default=DEFAULT_DUPLICATE_ARCSEC, bounds=(0, 60),
                                    doc="drop matches closer than this on the sky (arcsec)")
    negative_weight = param.Number(default=DEFAULT_NEGATIVE_WEIGHT, bounds=(0, 2))
    positives = param.List(default=[], item_type=int, doc="query examples: more like these")
    negatives = param.List(default=[], item_type=int, doc="counter-examples: fewer like these")
    neighbour_ids = param.Array(default=np.zeros(0, dtype=np.int64), doc="search results, best first")
    neighbour_sims = param.Array(default=np.zeros(0, dtype=np.float32), doc="their cosine similarities")
    dropped_duplicates = param.Integer(default=0)
    search_ms = param.Number(default=0.0, doc="time of the last search, for the status line")

    settings = param.ClassSelector(class_=Settings, default=Settings(), doc="the app's settings (explorer.settings), "
                                                                            "parsed once by create_page")

    # the features' own per-session objects, created on first use (labels_ui.session_for, skyquery_ui.marker_for);
    # kept here rather than in module-level dictionaries keyed by the state, whose values would keep it alive
    label_session = param.Parameter(default=None, doc="labels_ui.LabelSession: author, selection method, messages")
    sky_marker = param.Parameter(default=None, doc="skyquery_ui.QueryMarker: the off-catalogue query's map position")
    copies_marker = param.Parameter(default=None, doc="stability_ui.CopiesMarker: the clicked object's augmented "
                                                      "copies on the map")

    def add_colour_layer(self, layer) -> None:
        """Offer ``layer`` (a colour.ColourLayer) in this session's colour-by choices, replacing one of the same key."""
        self.session_colours = {**self.session_colours, layer.spec.column: layer}

    def clear_selection(self) -> None:
        self.selection_ids = np.zeros(0, dtype=np.int64)

    def select(self, i: int | None) -> None:
        """Make ``i`` the single query object (a click on the map, or a pivot from a result)."""
        with param.parameterized.batch_call_watchers(self):
            self.positives = [] if i is None else [int(i)]
            self.negatives = []
            self.selected = None if i is None else int(i)

    def add_positive(self, i: int) -> None:
        """"More like this": into the positives (and out of the negatives: the later judgement wins)."""
        with param.parameterized.batch_call_watchers(self):
            self.negatives = [j for j in self.negatives if j != int(i)]
            self.positives = sorted(set(self.positives) | {int(i)})

    def add_negative(self, i: int) -> None:
        """"Fewer like this": into the negatives (and out of the positives, keeping at least one positive)."""
        if self.positives == [int(i)]:
            return
        with param.parameterized.batch_call_watchers(self):
            self.positives = [j for j in self.positives if j != int(i)]
            self.negatives = sorted(set(self.negatives) | {int(i)})


def sessions_in_memory() -> int:
    """How many sessions' states the process still holds (after a full garbage collection)."""
    gc.collect()
    return len(_LIVE)


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    A closed session's plots and aggregates are freed, but glibc keeps the pages in its per-thread arenas, so the
    server's RSS stayed at its high-water mark (+220 MB after ten sessions in tests/explorer/test_soak.py)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def track_session(state: ExplorerState, report_after_s: float = 1.0) -> None:
    """Count ``state`` among the live sessions and, a moment after its browser session ends, log how many sessions
    the server still holds: a number that keeps growing as visitors leave is a leak (tests/explorer/test_soak.py reads it)."""
    import panel as pn

    _LIVE.add(state)

    def report():
        log.info("explorer: a session closed; %d explorer sessions still in memory", sessions_in_memory())
        release_free_memory()

    def on_destroyed(_session_context):
        from tornado.ioloop import IOLoop

        IOLoop.current().call_later(report_after_s, report)  # after Bokeh has let go of the document

    if pn.state.curdoc is not None:
        pn.state.on_session_destroyed(on_destroyed)

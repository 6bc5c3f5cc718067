"""The map's lasso and box selection, resolved server-side (``explorer.map.selection``) into ``state.selection_ids``."""
from __future__ import annotations

import holoviews as hv
import numpy as np

from explorer.labels.labels_ui import session_for
from explorer.map.selection import box_select, lasso_select


def attach_map_selection(view) -> tuple:
    """Lasso and box selection on the rasterized map, resolved to rows here (HoloViews' own is unusable there).

    The map (explorer/map/plot.py) carries the two tools; this returns the (Lasso, BoundsXY) streams feeding
    ``state.selection_ids``.
    """
    state, frame = view.state, view.data.frame
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    session = session_for(state)

    def on_lasso(geometry=None, **_):
        if geometry is None or len(geometry) == 0:
            return
        g = np.asarray(geometry, dtype=np.float64)
        session.selection_method = "lasso"
        state.selection_ids = lasso_select(x, y, g[:, 0], g[:, 1])

    def on_box(bounds=None, **_):
        if bounds is None:
            return
        session.selection_method = "box"
        state.selection_ids = box_select(x, y, *bounds)

    source = view.tap.source  # the map's data layer, whatever the view calls it
    lasso = hv.streams.Lasso(source=source)
    box = hv.streams.BoundsXY(source=source)
    lasso.add_subscriber(on_lasso)
    box.add_subscriber(on_box)
    return lasso, box

"""Nearest object under the pointer: a 2-D KD-tree over the UMAP plane with a radius in screen pixels.

The radius is converted to data units from the current view (x/y ranges and the plot's size in pixels), so the
lookup means "within a few pixels of where the pointer is" at every zoom level. This replaces
``rasterize(selector=...)``, which costs ~13x per render (docs/ARCHITECTURE.md, "Measured choices").
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_RADIUS_PX = 6.0
_CANDIDATES = 16


def build_tree(x: np.ndarray, y: np.ndarray) -> cKDTree:
    return cKDTree(np.column_stack([np.asarray(x, np.float64), np.asarray(y, np.float64)]),
                   leafsize=32, balanced_tree=False, compact_nodes=False)


def data_per_pixel(x_range: tuple[float, float], y_range: tuple[float, float],
                   width_px: float, height_px: float) -> tuple[float, float]:
    """Data units per screen pixel along x and y."""
    return (abs(x_range[1] - x_range[0]) / max(width_px, 1.0), abs(y_range[1] - y_range[0]) / max(height_px, 1.0))


def nearest_object(tree: cKDTree, x: float | None, y: float | None, x_range, y_range, width_px: float,
                   height_px: float, radius_px: float = DEFAULT_RADIUS_PX) -> int | None:
    """Row index of the object nearest to (x, y) in screen pixels, or None if none lies within ``radius_px``.

    The KD-tree is in data units; x and y pixels may have different sizes, so take a few candidates inside the
    larger data radius and pick the closest in pixel distance.
    """
    if x is None or y is None or not np.isfinite([x, y]).all() or tree.n == 0:
        return None
    sx, sy = data_per_pixel(x_range, y_range, width_px, height_px)
    if sx <= 0 or sy <= 0:
        return None
    bound = radius_px * max(sx, sy)
    dist, idx = tree.query([x, y], k=min(_CANDIDATES, tree.n), distance_upper_bound=bound)
    idx = np.atleast_1d(idx)
    idx = idx[idx < tree.n]  # misses come back as tree.n
    if idx.size == 0:
        return None
    pts = tree.data[idx]
    d_px = np.hypot((pts[:, 0] - x) / sx, (pts[:, 1] - y) / sy)
    best = int(np.argmin(d_px))
    return int(idx[best]) if d_px[best] <= radius_px else None

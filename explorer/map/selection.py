"""Lasso, box and click selection over the map's (umap_x, umap_y), computed server-side.

HoloViews' own selection is unusable on rasterized plots at this size (docs/ARCHITECTURE.md, "Measured choices"),
so the app hands the drawn geometry here: a bounding-box prefilter in numpy, then a shapely point-in-polygon test
on the candidates only.

Edge semantics (decided here, tested in tests/explorer/test_selection.py):
- a point exactly on the lasso's edge or on a box's edge is selected (``shapely.intersects_xy``, not
  ``contains_xy``, which would drop boundary points): what the user sees under the line is included;
- a self-intersecting lasso (a figure of eight) is repaired with ``shapely.make_valid``, so every lobe the user
  drew selects what it encloses; leftover zero-area pieces (lines, points) select nothing;
- fewer than 3 distinct vertices, or a polygon of zero area, selects nothing.
Results are sorted int64 row indices into the bundle.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

EMPTY = np.zeros(0, dtype=np.int64)


def lasso_polygon(xs: Sequence[float], ys: Sequence[float]) -> BaseGeometry | None:
    """The valid polygonal area enclosed by a drawn path, or None if it encloses nothing."""
    xs = np.asarray(xs, dtype=np.float64).ravel()
    ys = np.asarray(ys, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"lasso has {xs.size} x but {ys.size} y coordinates")
    finite = np.isfinite(xs) & np.isfinite(ys)
    ring = np.column_stack([xs[finite], ys[finite]])
    if len(np.unique(ring, axis=0)) < 3:
        return None
    poly = shapely.make_valid(shapely.Polygon(ring))
    area = _polygonal_part(poly)
    if area is None or area.is_empty or area.area == 0:
        return None
    return area


def _polygonal_part(geom: BaseGeometry) -> BaseGeometry | None:
    """Keep only the polygons of what make_valid returned (it may add lines where the path doubled back)."""
    if isinstance(geom, (shapely.Polygon, shapely.MultiPolygon)):
        return geom
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, (shapely.Polygon, shapely.MultiPolygon))]
    return shapely.union_all(parts) if parts else None


def box_select(x: np.ndarray, y: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Rows with x0 <= x <= x1 and y0 <= y <= y1 (corners in any order; edges included)."""
    lo_x, hi_x = sorted((float(x0), float(x1)))
    lo_y, hi_y = sorted((float(y0), float(y1)))
    if not all(np.isfinite([lo_x, hi_x, lo_y, hi_y])):
        return EMPTY
    return np.flatnonzero(_in_bounds(x, y, lo_x, lo_y, hi_x, hi_y)).astype(np.int64)


def _in_bounds(x, y, lo_x, lo_y, hi_x, hi_y) -> np.ndarray:
    return (x >= lo_x) & (x <= hi_x) & (y >= lo_y) & (y <= hi_y)


def polygon_select(x: np.ndarray, y: np.ndarray, polygon: BaseGeometry | None) -> np.ndarray:
    """Rows whose point lies inside or on the edge of ``polygon`` (bounding-box prefilter first)."""
    if polygon is None or polygon.is_empty:
        return EMPTY
    lo_x, lo_y, hi_x, hi_y = polygon.bounds
    cand = np.flatnonzero(_in_bounds(x, y, lo_x, lo_y, hi_x, hi_y))
    if cand.size == 0:
        return EMPTY
    shapely.prepare(polygon)
    inside = shapely.intersects_xy(polygon, x[cand], y[cand])
    return cand[inside].astype(np.int64)


def lasso_select(x: np.ndarray, y: np.ndarray, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """Rows inside the lasso path (xs, ys) as drawn: closed automatically, repaired if self-intersecting."""
    return polygon_select(x, y, lasso_polygon(xs, ys))


def click_select(x: np.ndarray, y: np.ndarray, px: float, py: float, radius: float) -> np.ndarray:
    """The single row nearest to (px, py) if it lies within ``radius`` (map units), else nothing."""
    if radius <= 0 or not np.isfinite([px, py]).all():
        return EMPTY
    near = np.flatnonzero(_in_bounds(x, y, px - radius, py - radius, px + radius, py + radius))
    if near.size == 0:
        return EMPTY
    d2 = (x[near] - px) ** 2 + (y[near] - py) ** 2
    best = int(np.argmin(d2))
    return near[best : best + 1].astype(np.int64) if d2[best] <= radius * radius else EMPTY

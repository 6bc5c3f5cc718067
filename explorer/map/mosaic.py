"""The map as a galaxy mosaic (Hayat et al. 2021, Figs. 2 and 8): the visible plane cut into square cells, each
occupied cell drawn as the thumbnail of its representative object.

The grid is anchored to the map's full extent and its cell side comes from a ladder of half-octave steps
(``extent / 2**(k/2)``), the step whose cells are closest to ``TARGET_TILE_PX`` on screen. So a pan keeps every
tile where it was (the same cells, the same objects, shifted), a zoom moves to a finer step and shows finer
families, and a bigger window shows more tiles. Tiles never overlap: one per cell, drawn inside it.

The representative of a cell is the object nearest the cell's centre among those inside it: a k-nearest query of
the hover KD-tree at every visible cell centre (a few hundred queries, whatever the number of objects), so a view
costs the same at 1 M objects as at 1 k. The whole mosaic is one RGBA image (like the Datashader layers), never
one glyph per tile.

Thumbnails are the bundle's own (each survey's stretch already applied), decoded once per process and kept in an
LRU cache shared by every session; a thumbnail that does not decode, or claims a size no thumbnail has (a tampered
bundle), is drawn as a grey tile and logged once.
"""
from __future__ import annotations

import io
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

log = logging.getLogger("explorer")

TARGET_TILE_PX = 46       # a tile on screen: ~10 across the smallest map, ~20 across a full-HD one
TILE_GAP_PX = 1           # white between tiles, so neighbouring images read as separate objects
FRAME_PX = 3              # the colour-by value as a frame around each tile (density: no frame)
MAX_THUMBNAIL_PX = 512    # a thumbnail claiming more is not one of ours (the build writes 64 px)
_CANDIDATES = 16          # nearest objects to a cell's centre tried before the cell counts as empty
BROKEN_TILE = np.array([200, 200, 200], np.uint8)


@dataclass(frozen=True)
class Grid:
    """Cells of side ``cell`` (data units) anchored at (x0, y0): cell (i, j) spans x0 + i*cell .. x0 + (i+1)*cell."""

    x0: float
    y0: float
    cell: float

    def index(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        return (np.floor((np.asarray(x) - self.x0) / self.cell).astype(np.int64),
                np.floor((np.asarray(y) - self.y0) / self.cell).astype(np.int64))


def grid_for_view(extent: tuple, x_range, y_range, width_px: float, target_px: float = TARGET_TILE_PX) -> Grid:
    """The grid whose cells come closest to ``target_px`` on screen in this view (half-octave steps of the full
    extent's side, so the same zoom always gives the same cells)."""
    x0, x1, y0, _ = extent
    side = max(x1 - x0, 1e-12)
    per_px = abs(x_range[1] - x_range[0]) / max(float(width_px), 1.0)
    k = round(2 * math.log2(side / max(target_px * per_px, 1e-300)))
    return Grid(x0, y0, side / 2 ** (k / 2))


@dataclass
class Mosaic:
    """One view's tiles: ``rows`` (bundle rows) in cells ``(ix, iy)`` of ``grid``."""

    grid: Grid
    ix: np.ndarray
    iy: np.ndarray
    rows: np.ndarray

    def object_at(self, x: float | None, y: float | None) -> int | None:
        """The row whose tile covers (x, y), or None."""
        if x is None or y is None or not np.isfinite([x, y]).all() or self.rows.size == 0:
            return None
        i, j = self.grid.index(x, y)
        hit = np.flatnonzero((self.ix == i) & (self.iy == j))
        return int(self.rows[hit[0]]) if hit.size else None


def choose_tiles(tree: cKDTree, grid: Grid, x_range, y_range) -> Mosaic:
    """For every cell the view touches, the object nearest its centre among those inside it (empty cells drop out)."""
    i0, j0 = grid.index(min(x_range), min(y_range))
    i1, j1 = grid.index(max(x_range), max(y_range))
    ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    empty = Mosaic(grid, ii[:0], jj[:0], np.zeros(0, np.int64))
    if tree.n == 0 or ii.size == 0:
        return empty
    centres = np.column_stack([grid.x0 + (ii + 0.5) * grid.cell, grid.y0 + (jj + 0.5) * grid.cell])
    k = min(_CANDIDATES, tree.n)
    _, idx = tree.query(centres, k=k, distance_upper_bound=grid.cell * 0.7072)
    idx = idx.reshape(len(centres), k)
    found = idx < tree.n                     # misses come back as tree.n
    pts = tree.data[np.where(found, idx, 0)]
    ci, cj = grid.index(pts[..., 0], pts[..., 1])
    inside = found & (ci == ii[:, None]) & (cj == jj[:, None])
    occupied = inside.any(axis=1)
    first = inside.argmax(axis=1)            # candidates come nearest first
    rows = idx[np.arange(len(idx)), first][occupied].astype(np.int64)
    return Mosaic(grid, ii[occupied], jj[occupied], rows)


class ThumbnailTiles:
    """Decoded thumbnails by bundle row (RGB uint8), an LRU cache shared by every session of the process."""

    def __init__(self, read_bytes, capacity: int = 6_000):
        self.read_bytes, self.capacity = read_bytes, capacity
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._warned = False

    def get(self, row: int) -> np.ndarray:
        with self._lock:
            tile = self._cache.get(row)
            if tile is not None:
                self._cache.move_to_end(row)
                return tile
        tile = self._decode(row)
        with self._lock:
            self._cache[row] = tile
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return tile

    def _decode(self, row: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(self.read_bytes(row))) as img:
                if max(img.size) > MAX_THUMBNAIL_PX:
                    raise ValueError(f"a {img.size[0]}x{img.size[1]} image is not a thumbnail")
                return np.asarray(img.convert("RGB"))
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            if not self._warned:
                self._warned = True
                log.warning("mosaic: thumbnail of row %d does not decode (%s); drawn grey (bundle damaged? "
                            "`python -m precompute validate` checks it)", row, e)
            return np.broadcast_to(BROKEN_TILE, (8, 8, 3))


def tile_box(grid: Grid, i: int, j: int, x_range, y_range, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of cell (i, j) in an image of the view (row 0 at the top)."""
    sx = (x_range[1] - x_range[0]) / width
    sy = (y_range[1] - y_range[0]) / height
    left = math.floor((grid.x0 + i * grid.cell - x_range[0]) / sx)
    right = math.floor((grid.x0 + (i + 1) * grid.cell - x_range[0]) / sx)
    top = math.floor((y_range[1] - (grid.y0 + (j + 1) * grid.cell)) / sy)
    bottom = math.floor((y_range[1] - (grid.y0 + j * grid.cell)) / sy)
    return left, top, right, bottom


def frame_colours(values: np.ndarray, palette: list[str], clim: tuple[float, float],
                  null_colour: str) -> np.ndarray:
    """RGB (n, 3) uint8 of each value on ``palette`` between ``clim`` (as the map's colour layer draws it; NaN:
    ``null_colour``)."""
    lut = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in palette + [null_colour]], np.uint8)
    lo, hi = clim
    t = (np.asarray(values, np.float64) - lo) / (hi - lo if hi > lo else 1.0)
    idx = np.clip(np.floor(t * len(palette)), 0, len(palette) - 1)
    return lut[np.where(np.isfinite(t), idx, len(palette)).astype(np.int64)]


def _paste(canvas: np.ndarray, rgb: np.ndarray, left: int, top: int) -> None:
    """``rgb`` at (left, top) on the RGBA canvas, clipped to it (cells at the view's edges are partly outside)."""
    height, width = canvas.shape[:2]
    h, w = rgb.shape[:2]
    t0, l0, t1, l1 = max(top, 0), max(left, 0), min(top + h, height), min(left + w, width)
    if t1 > t0 and l1 > l0:
        canvas[t0:t1, l0:l1, :3] = rgb[t0 - top:t1 - top, l0 - left:l1 - left]
        canvas[t0:t1, l0:l1, 3] = 255


def _resized(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), Image.Resampling.BILINEAR))


def compose(mosaic: Mosaic, tiles: ThumbnailTiles, x_range, y_range, width: int, height: int,
            frames: np.ndarray | None = None) -> np.ndarray:
    """The view as an RGBA image (height, width, 4), transparent where no cell is occupied; ``frames`` (n, 3)
    uint8, one colour per tile, draws each tile inside a frame of that colour."""
    canvas = np.zeros((height, width, 4), np.uint8)
    for n, (i, j, row) in enumerate(zip(mosaic.ix.tolist(), mosaic.iy.tolist(), mosaic.rows.tolist())):
        left, top, right, bottom = tile_box(mosaic.grid, i, j, x_range, y_range, width, height)
        w, h = right - left - TILE_GAP_PX, bottom - top - TILE_GAP_PX
        inset = FRAME_PX if frames is not None and min(w, h) > 4 * FRAME_PX else 0
        if w - 2 * inset < 2 or h - 2 * inset < 2:
            continue
        if inset:
            _paste(canvas, np.broadcast_to(frames[n], (h, w, 3)), left, top)
        _paste(canvas, _resized(tiles.get(row), w - 2 * inset, h - 2 * inset), left + inset, top + inset)
    return canvas

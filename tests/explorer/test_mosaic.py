"""The map's mosaic mode (explorer/map/mosaic.py): the grid, the representatives, the image and the map view's use of it."""
from __future__ import annotations

import io
import logging
import shutil

import numpy as np
import pytest

from explorer.map.hover import build_tree
from explorer.map.mosaic import (
    BROKEN_TILE,
    Grid,
    ThumbnailTiles,
    choose_tiles,
    compose,
    frame_colours,
    grid_for_view,
    tile_box,
)

EXTENT = (0.0, 10.0, 0.0, 10.0)


def test_a_pan_keeps_the_cells_and_a_zoom_refines_them():
    full = grid_for_view(EXTENT, (0, 10), (0, 10), 480)
    panned = grid_for_view(EXTENT, (3.3, 13.3), (-2.1, 7.9), 480)
    assert panned == full, "panning must not move the grid (tiles would reshuffle on every drag)"
    zoomed = grid_for_view(EXTENT, (0, 2.5), (0, 2.5), 480)   # 4x in: two octaves, four half-octave steps
    assert zoomed.cell == pytest.approx(full.cell / 4)
    assert 0.8 * 46 < 480 * full.cell / 10 < 1.2 * 46, "cells come out near the target size on screen"
    bigger_window = grid_for_view(EXTENT, (0, 10), (0, 10), 960)
    assert bigger_window.cell == pytest.approx(full.cell / 2), "a bigger map shows more, smaller-in-data cells"


def test_each_cell_shows_the_object_nearest_its_centre_among_its_own():
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.uniform(0, 10, (3000, 2)), rng.normal(5, 0.2, (2000, 2))])
    tree = build_tree(xy[:, 0], xy[:, 1])
    grid = Grid(0.0, 0.0, 0.5)
    tiles = choose_tiles(tree, grid, (0, 10), (0, 10))
    cells = set(zip(tiles.ix.tolist(), tiles.iy.tolist()))
    assert len(cells) == tiles.rows.size, "one tile per cell"
    ix, iy = grid.index(xy[:, 0], xy[:, 1])
    assert cells == set(zip(ix.tolist(), iy.tolist())), "every occupied cell (and only those) gets a tile"
    for i, j, row in zip(tiles.ix, tiles.iy, tiles.rows):
        members = np.flatnonzero((ix == i) & (iy == j))
        centre = np.array([(i + 0.5) * 0.5, (j + 0.5) * 0.5])
        assert row == members[np.argmin(np.hypot(*(xy[members] - centre).T))]


def test_a_click_on_a_tile_is_a_click_on_its_object():
    xy = np.array([[0.1, 0.1], [0.4, 0.45], [2.6, 0.2]])
    tiles = choose_tiles(build_tree(xy[:, 0], xy[:, 1]), Grid(0.0, 0.0, 1.0), (0, 3), (0, 1))
    assert tiles.object_at(0.9, 0.9) == 1          # the corner of cell (0, 0): its object nearest the centre
    assert tiles.object_at(2.1, 0.7) == 2
    assert tiles.object_at(1.5, 0.5) is None        # an empty cell
    assert tiles.object_at(None, 0.5) is None and tiles.object_at(np.nan, 0.5) is None


def _solid_tiles(n):
    colours = np.random.default_rng(1).integers(0, 256, (n, 3)).astype(np.uint8)
    return colours, ThumbnailTiles(lambda i: _png(np.broadcast_to(colours[i], (64, 64, 3))))


def _png(rgb) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_tiles_never_overlap_and_stay_inside_their_cells():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 10, (400, 2))
    colours, thumbs = _solid_tiles(len(xy))
    x_range, y_range, w, h = (1.3, 8.7), (0.2, 7.6), 300, 300
    grid = grid_for_view(EXTENT, x_range, y_range, w)
    tiles = choose_tiles(build_tree(xy[:, 0], xy[:, 1]), grid, x_range, y_range)
    image = compose(tiles, thumbs, x_range, y_range, w, h)
    assert image.shape == (h, w, 4) and image.dtype == np.uint8
    owner = np.full((h, w), -1)
    for i, j, row in zip(tiles.ix, tiles.iy, tiles.rows):
        left, top, right, bottom = tile_box(grid, i, j, x_range, y_range, w, h)
        box = (slice(max(top, 0), max(min(bottom - 1, h), 0)), slice(max(left, 0), max(min(right - 1, w), 0)))
        assert (owner[box] == -1).all(), "two tiles share pixels"
        owner[box] = row
        if owner[box].size:
            assert (image[box][..., :3] == colours[row]).all() and (image[box][..., 3] == 255).all()
    assert (image[owner == -1][:, 3] == 0).all(), "outside the tiles the mosaic is transparent"


def test_frames_show_the_colour_by_value():
    palette = ["#ff0000", "#00ff00", "#0000ff"]
    rgb = frame_colours(np.array([0, 1, 2, np.nan]), palette, (-0.5, 2.5), "#b4b4b4")   # categorical codes
    assert rgb.tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [180, 180, 180]]
    assert frame_colours(np.array([-5.0, 0.5, 99.0]), palette, (0, 1), "#b4b4b4").tolist() == [
        [255, 0, 0], [0, 255, 0], [0, 0, 255]], "values outside the limits take the end colours"
    xy = np.array([[0.5, 0.5]])
    _, thumbs = _solid_tiles(1)
    framed = compose(choose_tiles(build_tree(xy[:, 0], xy[:, 1]), Grid(0, 0, 1.0), (0, 1), (0, 1)), thumbs, (0, 1),
                     (0, 1), 60, 60, frames=np.array([[0, 0, 255]], np.uint8))
    assert framed[1, 1, :3].tolist() == [0, 0, 255] and framed[30, 30, :3].tolist() != [0, 0, 255]


def test_a_thumbnail_that_does_not_decode_is_a_grey_tile(caplog):
    from PIL import Image

    huge = io.BytesIO()
    Image.new("RGB", (2048, 8)).save(huge, format="PNG")
    blobs = {0: b"not an image", 1: huge.getvalue(), 2: _png(np.zeros((64, 64, 3)))}
    tiles = ThumbnailTiles(blobs.__getitem__)
    with caplog.at_level(logging.WARNING, logger="explorer"):
        assert (tiles.get(0) == BROKEN_TILE).all() and (tiles.get(1) == BROKEN_TILE).all()
    assert tiles.get(2).shape == (64, 64, 3)
    assert sum("does not decode" in r.message for r in caplog.records) == 1, "logged once, not per tile"


def test_the_cache_keeps_at_most_its_capacity():
    calls = []
    tiles = ThumbnailTiles(lambda i: calls.append(i) or _png(np.zeros((8, 8, 3))), capacity=3)
    for i in [0, 1, 2, 0, 3, 0, 1]:
        tiles.get(i)
    assert calls == [0, 1, 2, 3, 1] and len(tiles._cache) == 3


# ------------------------------------------------------------------------------------------------ the map view
@pytest.fixture
def view(small_bundle):
    import holoviews as hv

    hv.renderer("bokeh")
    from explorer.data import load_explorer_data
    from explorer.map.plot import MapView
    from explorer.state import ExplorerState

    return MapView(load_explorer_data(small_bundle), ExplorerState())


def test_images_mode_draws_tiles_and_hover_and_click_find_them(view):
    import holoviews as hv

    plot = hv.renderer("bokeh").get_plot(view.overlay())
    assert view.last_mosaic is None
    view.state.map_mode = "images"
    assert view.last_mosaic is not None and view.last_mosaic.rows.size > 20, "the live plot re-rendered as a mosaic"
    rgba = np.dstack([view.render_mosaic(width=400, height=400).dimension_values(d, flat=False) for d in range(2, 6)])
    assert rgba.shape == (400, 400, 4) and (rgba[..., 3] > 0).mean() > 0.2
    # the points layers are empty meanwhile (nothing aggregated twice)
    assert np.isnan(view.render(width=400, height=400).get(1).dimension_values("value")).all()
    mosaic = view.last_mosaic
    g = mosaic.grid
    i, j, row = mosaic.ix[0], mosaic.iy[0], mosaic.rows[0]
    cx, cy = g.x0 + (i + 0.9) * g.cell, g.y0 + (j + 0.1) * g.cell   # a corner of the tile, far from its object
    view._on_pointer(x=cx, y=cy)
    assert view.state.hovered == row
    view._on_tap(x=cx, y=cy)
    assert view.state.selected == row
    view.state.map_mode = "points"
    assert view.last_mosaic is None and plot.state is not None


def test_frames_follow_the_colour_choice(view):
    view.state.param.update(map_mode="images", colour_by="morph_class")
    spec = view.data.specs["morph_class"]
    rows = np.arange(50)
    frames = view.tile_frames(rows)
    codes = view.data.frame[spec.value_column].to_numpy()[rows]
    from explorer.map.colour import palette_for

    expected = [palette_for(spec)[int(c)] for c in codes]
    assert [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in frames] == expected
    view.state.colour_by = "density"
    assert view.tile_frames(rows) is None


def test_dask_engine_frames_equal_memory_frames(make_bundle, tmp_path):
    import holoviews as hv

    hv.renderer("bokeh")
    from explorer.data import load_explorer_data
    from explorer.map.plot import MapView
    from explorer.state import ExplorerState
    from precompute.__main__ import main

    bundle = tmp_path / "bundle"
    shutil.copytree(make_bundle("mosaic-dask", n=1500, dim=16), bundle)
    assert main(["points", "--bundle", str(bundle), "--rows-per-partition", "500"]) == 0
    views = [MapView(load_explorer_data(bundle, engine), ExplorerState(map_mode="images", colour_by="redshift"))
             for engine in ("memory", "dask")]
    images = [np.dstack([v.render_mosaic(width=300, height=300).dimension_values(d, flat=False) for d in range(2, 6)])
              for v in views]
    assert views[1].data.map_engine == "dask" and (images[0][..., 3] > 0).any()
    assert np.array_equal(images[0], images[1])


def test_a_bundle_without_thumbnails_offers_no_images(view, monkeypatch):
    from explorer.app import build_map_mode

    monkeypatch.setitem(view.data.__dict__, "has_thumbnails", False)
    switch = build_map_mode(view.data, view.state)[1]
    assert switch.disabled
    view.state.map_mode = "images"
    assert view.last_mosaic is None

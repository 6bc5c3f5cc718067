"""Selection geometry: edges, concave and self-intersecting lassos, degenerate input, agreement with a brute check."""
import numpy as np
import pytest

from explorer.map.selection import box_select, click_select, lasso_polygon, lasso_select

GRID = np.mgrid[0:11, 0:11].reshape(2, -1).astype(np.float32)  # integer points 0..10 x 0..10
GX, GY = GRID[0], GRID[1]


def _points(rows):
    return sorted(zip(GX[rows].tolist(), GY[rows].tolist()))


def test_square_lasso_includes_points_on_edges_and_corners():
    rows = lasso_select(GX, GY, [2, 5, 5, 2], [2, 2, 5, 5])
    assert len(rows) == 16  # 4 x 4 lattice points including the boundary
    assert (2.0, 2.0) in _points(rows) and (5.0, 3.0) in _points(rows)
    assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)


def test_concave_lasso_excludes_the_notch():
    # A U shape: the notch x in (3, 7), y > 3 is outside.
    xs = [1, 9, 9, 7, 7, 3, 3, 1]
    ys = [1, 1, 9, 9, 3, 3, 9, 9]
    pts = set(_points(lasso_select(GX, GY, xs, ys)))
    assert (5.0, 5.0) not in pts and (5.0, 8.0) not in pts  # inside the notch
    assert (2.0, 8.0) in pts and (8.0, 8.0) in pts and (5.0, 2.0) in pts  # in the arms and the base
    assert (5.0, 3.0) in pts  # on the notch's bottom edge


def test_self_intersecting_lasso_keeps_both_lobes():
    # Figure of eight (bow tie) crossing at (5, 5): both triangles are selected, nothing between them.
    xs, ys = [1, 9, 9, 1], [1, 9, 1, 9]
    poly = lasso_polygon(xs, ys)
    assert poly is not None and poly.area == pytest.approx(32.0)
    pts = set(_points(lasso_select(GX, GY, xs, ys)))
    assert (8.0, 5.0) in pts and (2.0, 5.0) in pts  # one point in each lobe
    assert (5.0, 8.0) not in pts and (5.0, 2.0) not in pts


@pytest.mark.parametrize("xs,ys", [([], []), ([1], [1]), ([1, 5], [1, 5]), ([1, 5, 1, 5], [1, 5, 1, 5]),
                                   ([0, 5, 10], [0, 5, 10]), ([1, np.nan, 3], [1, 2, np.nan])])
def test_degenerate_lassos_select_nothing(xs, ys):
    assert lasso_select(GX, GY, xs, ys).size == 0


def _even_odd_inside(x, y, xs, ys):
    """Reference point-in-polygon by ray casting, independent of shapely."""
    inside = np.zeros(len(x), bool)
    for (xa, ya), (xb, yb) in zip(zip(xs, ys), zip(np.roll(xs, -1), np.roll(ys, -1))):
        crosses = (ya > y) != (yb > y)
        x_at = xa + (y - ya) * (xb - xa) / np.where(yb == ya, 1, yb - ya)
        inside ^= crosses & (x < x_at)
    return inside


def test_lasso_agrees_with_ray_casting_on_random_points_off_the_boundary():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, (2, 20_000))
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    r = 0.5 + 0.3 * np.sin(5 * t)  # a star: strongly concave
    xs, ys = r * np.cos(t), r * np.sin(t)
    ours = np.zeros(len(x), bool)
    ours[lasso_select(x, y, xs, ys)] = True
    ref = _even_odd_inside(x, y, xs, ys)
    assert ours.sum() > 1000
    assert (ours != ref).sum() == 0


def test_box_select_is_inclusive_and_order_free():
    rows = box_select(GX, GY, 5, 5, 3, 3)
    assert _points(rows) == [(a, b) for a in (3.0, 4.0, 5.0) for b in (3.0, 4.0, 5.0)]
    assert box_select(GX, GY, 20, 20, 30, 30).size == 0
    assert box_select(GX, GY, 0, 0, np.nan, 3).size == 0


def test_click_select_picks_nearest_within_radius():
    assert _points(click_select(GX, GY, 3.2, 4.1, 0.5)) == [(3.0, 4.0)]
    assert click_select(GX, GY, 3.5, 4.5, 0.5).size == 0  # nearest is 0.707 away

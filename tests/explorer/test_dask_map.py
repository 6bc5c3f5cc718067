"""The Dask map engine: `python -m precompute points`, the explorer's dask mode against memory mode, its errors,
and one browser check that a dask-mode page draws and recolours."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    colour_by,
    deep_text,
    inked,
    map_canvas,
    pixels,
    start_explorer_server,
    wait_for,
)


@pytest.fixture(scope="module")
def points_bundle(make_bundle, tmp_path_factory):
    """A fixture bundle (own copy) with points/ written by the command, in 1,000-row partitions."""
    from precompute.__main__ import main

    src = make_bundle("dask-map", n=2500, dim=16)
    bundle = tmp_path_factory.mktemp("dask") / "bundle"
    shutil.copytree(src, bundle)
    assert main(["points", "--bundle", str(bundle), "--rows-per-partition", "1000"]) == 0
    return bundle


@pytest.fixture(scope="module")
def views(points_bundle):
    """A memory-mode and a dask-mode MapView over the same bundle."""
    import holoviews as hv

    hv.extension("bokeh")
    from explorer.data import load_explorer_data
    from explorer.map.plot import MapView
    from explorer.state import ExplorerState

    return (MapView(load_explorer_data(points_bundle, "memory"), ExplorerState()),
            MapView(load_explorer_data(points_bundle, "dask"), ExplorerState()))


# ------------------------------------------------------------------------------------------------ the command
def test_points_command_writes_the_colour_values(points_bundle):
    from core.bundle import Bundle
    from explorer.map import colour

    folder = points_bundle / "points"
    parts = sorted(folder.glob("part-*.parquet"))
    assert len(parts) == 3 and not list(points_bundle.glob(".points*")), "3 partitions, no temporary folder left"
    meta = json.loads((folder / "points.json").read_text())
    bundle = Bundle.open(points_bundle)
    assert meta["n_rows"] == bundle.n == 2500 and meta["bundle_created"] == bundle.manifest["created"]
    written = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    specs = colour.specs_from_manifest(bundle.colour_by, bundle.catalog)
    assert meta["columns"]["morph_class"]["categories"] == list(specs["morph_class"].categories)
    for name in ("redshift", "morph_class", "gz2_smooth_fraction"):
        expected = colour.colour_values(bundle.catalog[name], specs[name])
        got = written[f"c__{name}"].to_numpy()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)  # NaNs in the same places too
    np.testing.assert_array_equal(written["umap_x"].to_numpy(), bundle.catalog["umap_x"].to_numpy(np.float32))


def test_rewriting_points_replaces_the_folder(points_bundle, tmp_path):
    from core.points import parquet_rows, write_points

    bundle = tmp_path / "b"
    shutil.copytree(points_bundle, bundle)
    write_points(bundle, rows_per_partition=2500)
    assert len(list((bundle / "points").glob("part-*.parquet"))) == 1 and parquet_rows(bundle / "points") == 2500
    assert sorted(p.name for p in bundle.iterdir() if p.name.startswith(".")) == []


def test_points_that_do_not_match_the_bundle_are_refused(points_bundle, tmp_path):
    from core.bundle import Bundle
    from core.points import PointsError
    from explorer.data import prepare

    bundle = tmp_path / "b"
    shutil.copytree(points_bundle, bundle)
    (bundle / "points" / "part-00002.parquet").unlink()  # a lost partition
    with pytest.raises(PointsError, match=r"holds part files .* but points.json lists .*python -m precompute points"):
        prepare(Bundle.open(bundle), "dask")
    shutil.copytree(points_bundle / "points", bundle / "points", dirs_exist_ok=True)
    meta = json.loads((bundle / "points" / "points.json").read_text())
    meta["bundle_created"] = "2000-01-01T00:00:00+00:00"  # points of an earlier build of this bundle
    (bundle / "points" / "points.json").write_text(json.dumps(meta))
    with pytest.raises(PointsError, match="written for the bundle built 2000"):
        prepare(Bundle.open(bundle), "dask")


POINTS_DAMAGE = {
    "part flipped": lambda d: _flip(d / "part-00001.parquet"),
    "part truncated": lambda d: (d / "part-00001.parquet").write_bytes((d / "part-00001.parquet").read_bytes()[:500]),
    "part replaced by garbage": lambda d: (d / "part-00000.parquet").write_bytes(b"PAR1" + b"x" * 300),
    "extra part": lambda d: shutil.copyfile(d / "part-00000.parquet", d / "part-00009.parquet"),
    "part a symlink": lambda d: ((d / "part-00002.parquet").unlink(), (d / "part-00002.parquet").symlink_to("/etc/passwd")),
    "meta not JSON": lambda d: (d / "points.json").write_text("{nope"),
    "meta a list": lambda d: (d / "points.json").write_text("[]"),
    "meta bad UTF-8": lambda d: (d / "points.json").write_bytes(b'{"format": 2, "x": "\xff"}'),
    "meta columns wrong": lambda d: _edit_meta(d, lambda m: m["columns"].__setitem__("redshift", {"kind": 1})),
    "meta range text": lambda d: _edit_meta(d, lambda m: m["columns"]["redshift"].__setitem__("range", ["a", "b"])),
    "meta xy missing": lambda d: _edit_meta(d, lambda m: m.pop("xy")),
    "meta parts missing": lambda d: _edit_meta(d, lambda m: m.pop("parts")),
    "meta part size wrong": lambda d: _edit_meta(d, lambda m: m["parts"]["part-00000.parquet"].__setitem__("bytes", 1)),
    "meta from format 1": lambda d: _edit_meta(d, lambda m: (m.pop("parts"), m.__setitem__("format", 1))),
}


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_meta(folder, change):
    meta = json.loads((folder / "points.json").read_text())
    change(meta)
    (folder / "points.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", list(POINTS_DAMAGE))
def test_a_damaged_points_folder_is_one_message_and_a_page(points_bundle, tmp_path, damage):
    """Each damage to points/ ends in one PointsError naming the folder and the command that rewrites it, and the
    explorer's page says so (no traceback, no blank page)."""
    from core.bundle import Bundle
    from core.contract import BundleError
    from core.points import PointsError
    from explorer.app import create_page
    from explorer.data import clear_cache, prepare

    bundle = Path(shutil.copytree(points_bundle, tmp_path / "b"))
    POINTS_DAMAGE[damage](bundle / "points")
    with pytest.raises(BundleError) as err:   # a PointsError, or the bundle's own check (a symlink)
        prepare(Bundle.open(bundle), "dask")
    assert "points" in str(err.value)
    assert isinstance(err.value, PointsError) == ("python -m precompute points" in str(err.value))
    assert "\n" not in str(err.value).strip()
    clear_cache()
    page = create_page(["--bundle", str(bundle), "--map-engine", "dask"])
    assert "bundle-error" in page.main[0].css_classes   # the page that says what is wrong and what to do
    clear_cache()


# ------------------------------------------------------------------------------------------------ engine choice
def test_missing_points_gives_one_message_naming_folder_and_command(small_bundle):
    from core.bundle import Bundle
    from core.points import PointsError
    from explorer.app import create_page
    from explorer.data import prepare

    with pytest.raises(PointsError) as err:
        prepare(Bundle.open(small_bundle), "dask")
    message = str(err.value)
    assert str(small_bundle / "points") in message and f"python -m precompute points --bundle {small_bundle}" in message
    page = create_page(["--bundle", str(small_bundle), "--map-engine", "dask"])
    alert = page.main[0].object
    assert "python -m precompute points" in alert and "points" in alert and "make demo" not in alert


def test_engine_from_argument_environment_and_auto(small_bundle, points_bundle, monkeypatch):
    from core.bundle import Bundle
    from core.contract import BundleError
    from explorer import data as explorer_data
    from explorer.settings import Settings

    def resolve(argv, environ):
        return Settings.parse(argv, environ).checked_map_engine()

    assert resolve([], {}) == "memory"
    assert resolve([], {"EXPLORER_MAP_ENGINE": "dask"}) == "dask"
    assert resolve(["--bundle", "x", "--map-engine", "auto"], {"EXPLORER_MAP_ENGINE": "dask"}) == "auto"
    with pytest.raises(BundleError, match="unknown map engine 'gpu'"):
        resolve(["--map-engine", "gpu"], {})
    from explorer.app import create_page

    assert "unknown map engine" in create_page(["--bundle", str(small_bundle), "--map-engine", "gpu"]).main[0].object
    assert explorer_data.choose_map_engine("auto", Bundle.open(points_bundle)) == "memory"  # small
    monkeypatch.setattr(explorer_data, "AUTO_DASK_ABOVE_BYTES", 4 * 2500 * 5 - 1)  # 2,500 objects x 5 columns
    assert explorer_data.choose_map_engine("auto", Bundle.open(points_bundle)) == "dask"
    assert explorer_data.choose_map_engine("auto", Bundle.open(small_bundle)) == "memory"  # no points/


# ------------------------------------------------------------------------------------------------ the aggregate
@pytest.mark.parametrize("colour_by", ["density", "redshift", "morph_class", "gz2_smooth_fraction"])
def test_dask_aggregate_equals_memory_aggregate(views, colour_by):
    memory, lazy = views
    assert lazy.data.map_engine == "dask" and list(lazy.data.frame.columns) == ["x", "y"]  # no colour in memory
    for view in views:
        view.state.param.update(colour_by=colour_by, colour_range=None)
    assert (lazy.points_frame() is None) == (colour_by == "density")
    x0, x1, y0, y1 = memory._extent
    cx, cy = float(memory.data.frame["x"][0]), float(memory.data.frame["y"][0])  # a zoom onto an island
    for x_range, y_range, w, h in [((x0, x1), (y0, y1), 300, 220), ((cx - 2, cx + 2), (cy - 1.5, cy + 1.5), 160, 90)]:
        n_mem, v_mem = memory.aggregate(x_range, y_range, w, h)
        n_dask, v_dask = lazy.aggregate(x_range, y_range, w, h)
        np.testing.assert_array_equal(n_dask.values, n_mem.values)
        assert n_mem.values.sum() > 50
        if colour_by == "density":
            assert v_mem is None and v_dask is None
        else:
            np.testing.assert_array_equal(v_dask.values, v_mem.values)
    assert lazy.layer.range == memory.layer.range and lazy.layer.null_fraction == memory.layer.null_fraction


def test_a_dask_aggregation_keeps_its_scheduler_while_another_thread_aggregates():
    """dask.config is process-wide: a second thread's aggregation (the background warm-up on local threads) must
    not start while the first runs, or it swaps the first one's scheduler (a cluster render ran on this process's
    threads in CI). The second waits for the first and each runs on the scheduler it named."""
    import threading

    import dask
    import dask.dataframe as dd
    import datashader as ds

    from explorer.map.kernels import aggregate_summary

    rng = np.random.default_rng(1)
    frame = dd.from_pandas(pd.DataFrame({c: rng.random(400).astype(np.float32) for c in "xyv"}), npartitions=2)
    cvs = ds.Canvas(plot_width=20, plot_height=20, x_range=(0, 1), y_range=(0, 1))
    ran_on: list[str] = []
    second_done_inside_first: list[bool] = []

    def named(name, inside=None):
        def get(dsk, keys, **kwargs):
            ran_on.append(name)
            if inside is not None:
                inside()
            return dask.get(dsk, keys, **kwargs)
        return get

    aggregate_summary(cvs, frame, ds.mean("v"), named("warm"))   # compiled before the timed part
    ran_on.clear()

    def second():
        aggregate_summary(cvs, frame, ds.mean("v"), named("second"))

    def while_the_first_runs():
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=1.0)
        second_done_inside_first.append(not thread.is_alive())
        while_the_first_runs.thread = thread

    first = aggregate_summary(cvs, frame, ds.mean("v"), named("first", while_the_first_runs))
    while_the_first_runs.thread.join(timeout=30)
    assert second_done_inside_first == [False], "a second aggregation ran while the first held the scheduler"
    assert ran_on == ["first", "second"] and int(first["n"].values.sum()) == 400


def test_session_layers_stay_in_memory_in_dask_mode(views):
    from explorer.map import colour

    _, lazy = views
    values = np.linspace(0, 1, lazy.data.n, dtype=np.float32)
    lazy.state.add_colour_layer(colour.layer_from_values("probe", "P(probe)", "fraction", values))
    lazy.state.colour_by = "probe"
    assert lazy.points_frame() is None
    counts, agg = lazy.aggregate(*[(lazy._extent[0], lazy._extent[1]), (lazy._extent[2], lazy._extent[3])], 200, 150)
    assert np.nanmax(agg.values) <= 1 and counts.values.sum() == lazy.data.n


# ------------------------------------------------------------------------------------------------ in a browser
@pytest.mark.browser
def test_dask_mode_page_draws_and_recolours(browser, points_bundle, tmp_path, screenshot_dir):

    server = start_explorer_server(points_bundle, tmp_path, extra_args=["--map-engine", "dask"])
    try:
        browser.get(server.url)
        canvas = wait_for(lambda: map_canvas(browser), timeout=60, message="the map canvas")
        wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=30, message="the map to draw")
        assert "map engine: dask" in deep_text(browser)
        colour_by(browser, "Morphology (truth)", message="the dask-mode map to recolour")
        time.sleep(0.5)
        browser.save_screenshot(str(screenshot_dir / "dask-01-morphology.png"))
        assert "Traceback" not in server.log()
    finally:
        server.stop()

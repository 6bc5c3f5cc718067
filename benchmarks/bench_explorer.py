"""BENCHMARK: the explorer's server-side costs on a large bundle, measured with the app's own functions.

    python -m benchmarks.bench_explorer --bundle bundles/bench-1m [--json results-explorer.json]
    python -m benchmarks.bench_explorer --make 200000 --dim 256 --bundle bundles/bench-200k   # build one first

Run it as its own process: "cold start" is measured from the top of this script (before the heavy imports) to the
first rendered map of a session page, as a freshly started ``panel serve`` pays it (the OS page cache may already
hold the bundle's files: say so when reporting). Then, in the same process:

- pan/zoom: RangeXY + PlotSize events on the rendered Bokeh plot (a 1200 x 680 px map) at random zooms: both layers
  re-aggregated at full resolution, spread, colour-mapped and written into the Bokeh models;
- recolour: changing ``colour_by`` on the live plot (aggregator swap + re-aggregation);
- hover: ``MapView.object_at`` (KD-tree lookup within 6 screen pixels) at random pointer positions, and the
  hover card's HTML (thumbnail as a data URI + key columns) for hits;
- click: ``ExplorerState.select`` (faiss candidates + exact re-rank on the memory-mapped embeddings + sky duplicate
  filter + the highlight overlay update) and the detail panel's HTML;
- memory: the process's resident set size at the end (memory-mapped embedding pages it touched included).
"""
from __future__ import annotations

import time

_T_PROCESS = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.quick import add_quick, parse_quick, quick_bundle

MAP_W, MAP_H = 1200, 680
TARGETS_MS = {"pan_zoom": 100.0, "hover": 5.0, "click": 50.0}


def _stats(ms, cpu_ms=None) -> dict:
    """Wall-clock statistics; with ``cpu_ms`` also the median process CPU time (what the work costs when the
    shared machine is busy: wall time then includes waiting for a core)."""
    ms = np.asarray(ms, dtype=float)
    out = {"n": int(ms.size), "median_ms": round(float(np.median(ms)), 3),
           "p90_ms": round(float(np.percentile(ms, 90)), 3), "max_ms": round(float(ms.max()), 3)}
    if cpu_ms is not None:
        out["median_cpu_ms"] = round(float(np.median(cpu_ms)), 3)
    return out


def _rss_gb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e9


def _map_only_data(folder: Path):
    """ExplorerData over a folder holding only a bundle's catalog.parquet (no embeddings, index or thumbnails)."""
    from benchmarks.fixture_bundle import COLOUR_BY
    from core.bundle import Bundle
    from explorer.data import prepare
    from explorer.map.kernels import warm_kernels

    data = prepare(Bundle(path=folder, manifest={"survey": "fixture", "colour_by": COLOUR_BY, "n_objects": -1}))
    _ = data.tree
    warm_kernels()
    return data


def cold_start(bundle: Path, map_only: bool = False):
    """Import the app, load the bundle, build a session page and render its map once."""
    import holoviews as hv

    from explorer.app import build_page
    from explorer.data import load_explorer_data

    hv.extension("bokeh")
    t_import = time.perf_counter()
    data = _map_only_data(bundle) if map_only else load_explorer_data(bundle)
    t_load = time.perf_counter()
    page = build_page(data)
    view = page.explorer_view
    plot = hv.renderer("bokeh").get_plot(view.overlay())
    t_render = time.perf_counter()
    timings = {"imports_s": round(t_import - _T_PROCESS, 2), "load_bundle_s": round(t_load - t_import, 2),
               "first_page_and_render_s": round(t_render - t_load, 2), "total_s": round(t_render - _T_PROCESS, 2),
               "process_cpu_s": round(time.process_time(), 2)}
    return data, page, plot, timings


def _streams(plot, kind):
    return [s for s in plot.streams if isinstance(s, kind)]


def show_view(plot, x_range, y_range, width: int, height: int) -> tuple[float, float]:
    """One pan/zoom of the live plot, as the browser sends it (RangeXY + PlotSize): (wall ms, process CPU ms)."""
    import holoviews as hv

    ranges, sizes = _streams(plot, hv.streams.RangeXY), _streams(plot, hv.streams.PlotSize)
    for s in ranges:
        s.update(x_range=x_range, y_range=y_range)
    for s in sizes:
        s.update(width=width, height=height, scale=1.0)
    t, c = time.perf_counter(), time.process_time()
    hv.streams.Stream.trigger(ranges + sizes)
    return (time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3


def bench_pan_zoom(data, view, plot, rng, n: int = 30) -> dict:
    x0, x1, y0, y1 = view._extent
    times, cpu = [], []
    for i in range(n + 2):
        zoom = 2.0 ** rng.uniform(0, 5)  # from the whole map to 32x in
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        hw, hh = (x1 - x0) / zoom / 2, (y1 - y0) / zoom / 2
        xr, yr = (cx - hw, cx + hw), (cy - hh, cy + hh)
        dt, dc = show_view(plot, xr, yr, MAP_W, MAP_H)
        img = view.last_colour_image
        assert img is not None and abs(img.range("x")[0] - xr[0]) < (xr[1] - xr[0]) / 100, "the map was not re-rendered"
        if i >= 2:  # first two are warm-up
            times.append(dt)
            cpu.append(dc)
    shape = view.last_colour_image.dimension_values(2, flat=False).shape
    return {**_stats(times, cpu), "image_px": list(shape), "target_ms": TARGETS_MS["pan_zoom"]}


def bench_recolour(data, state, n_rounds: int = 3) -> dict:
    """Each colour-by choice applied to the live plot, as the colour select does (one batched update)."""
    times, cpu = {}, {}
    for _ in range(n_rounds):
        for name in data.specs:
            t, c = time.perf_counter(), time.process_time()
            state.param.update(colour_by=name, colour_range=None)
            times.setdefault(name, []).append((time.perf_counter() - t) * 1e3)
            cpu.setdefault(name, []).append((time.process_time() - c) * 1e3)
    state.colour_by = "density"
    return {name: {"median_ms": round(float(np.median(times[name])), 1),
                   "median_cpu_ms": round(float(np.median(cpu[name])), 1)} for name in times}


def bench_hover(data, view, rng, n: int = 2000, cards: bool = True) -> dict:
    from explorer.cards import hover_card_html

    x, y = data.frame["x"].to_numpy(), data.frame["y"].to_numpy()
    x0, x1, y0, y1 = view._extent
    view.range_stream.update(x_range=(x0, x1), y_range=(y0, y1))
    view.size_stream.update(width=MAP_W, height=MAP_H)
    rows = rng.integers(0, data.n, n // 2)
    px = np.r_[x[rows] + rng.normal(0, 0.01, n // 2), rng.uniform(x0, x1, n - n // 2)]
    py = np.r_[y[rows] + rng.normal(0, 0.01, n // 2), rng.uniform(y0, y1, n - n // 2)]
    look, card, hits = [], [], 0
    c0 = time.process_time()
    for a, b in zip(px, py):
        t = time.perf_counter()
        i = view.object_at(float(a), float(b))
        look.append((time.perf_counter() - t) * 1e3)
        if i is not None and cards:
            hits += 1
            t = time.perf_counter()
            hover_card_html(data, i)
            card.append((time.perf_counter() - t) * 1e3)
    cpu_per_lookup = (time.process_time() - c0) * 1e3 / n  # includes the cards' cost for hits
    return {"lookup": {**_stats(look), "target_ms": TARGETS_MS["hover"]}, "hits": hits,
            "cpu_ms_per_pointer_event_incl_card": round(cpu_per_lookup, 3),
            "card_html": _stats(card) if card else None}


def bench_click(data, state, rng, n: int = 40) -> dict:
    from explorer.cards import detail_html

    total, cpu, search, detail = [], [], [], []
    for j, i in enumerate(rng.integers(0, data.n, n + 3)):
        t, c = time.perf_counter(), time.process_time()
        state.select(int(i))
        dt, dc = (time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3
        assert len(state.neighbour_ids) == state.k, "a search returned fewer than k neighbours"
        t = time.perf_counter()
        detail_html(data, int(i))
        dd = (time.perf_counter() - t) * 1e3
        if j >= 3:
            total.append(dt)
            cpu.append(dc)
            search.append(state.search_ms)
            detail.append(dd)
    return {"select_and_search": {**_stats(total, cpu), "target_ms": TARGETS_MS["click"]},
            "search_only": _stats(search), "detail_html": _stats(detail), "k": state.k,
            "index": type(data.bundle.index).__name__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="bundles/bench-1m")
    p.add_argument("--make", type=int, default=0, help="first write a fixture bundle of this many objects there")
    p.add_argument("--dim", type=int, default=2048, help="embedding dimension for --make")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--map-only", action="store_true",
                   help="BUNDLE holds only catalog.parquet: measure start, map, recolour and hover lookups, no click")
    add_quick(p, bundle=lambda: str(quick_bundle()))
    a = parse_quick(p, argv)
    bundle = Path(a.bundle)
    if a.make:
        from benchmarks.fixture_bundle import make_fixture_bundle

        make_fixture_bundle(bundle, n=a.make, dim=a.dim)
        print(f"wrote {bundle}; rerun without --make for a cold start")
        return
    rng = np.random.default_rng(a.seed)
    data, page, plot, cold = cold_start(bundle, a.map_only)
    rss_after_start = _rss_gb()
    view, state = page.explorer_view, page.explorer_state
    out = {
        "bundle": str(bundle), "n_objects": data.n, "embedding_dim": data.bundle.manifest.get("embedding_dim"),
        "cpu_count": os.cpu_count(), "cold_start": {**cold, "target_s": 10.0},
        "rss_after_start_gb": round(rss_after_start, 2),
        "pan_zoom": bench_pan_zoom(data, view, plot, rng),
        "recolour_median_ms": bench_recolour(data, state),
        "hover": bench_hover(data, view, rng, cards=not a.map_only),
    }
    if not a.map_only:
        out["click"] = bench_click(data, state, rng)
    out["rss_end_gb"] = round(_rss_gb(), 2)
    out["rss_target_gb"] = 3.0
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""BENCHMARK: the map's mosaic mode (explorer/map/mosaic.py) on a large bundle, through the live Bokeh plot.

    python -m benchmarks.bench_mosaic --bundle bundles/bench-1m-128 [--json benchmarks/results/mosaic-1m.json]

Each view is one RangeXY + PlotSize event on the rendered plot (a MAP_W x MAP_H map), as a pan or zoom in the
browser sends: the representatives chosen with the KD-tree, the thumbnails decoded (or taken from the process's
cache), the RGBA image composed and written into the Bokeh model. Views are drawn at three zooms (the whole map,
4x and 16x in) at random centres, first with a cold thumbnail cache (a fresh server's first visits), then the same
views again (warm: tiles the process has decoded before), with and without colour frames. Dask mode is measured too
when the bundle has points/ (``python -m precompute points``).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_explorer import show_view
from benchmarks.quick import add_quick, parse_quick, quick_bundle

MAP_W, MAP_H = 720, 720
TARGET_MS = 300.0
ZOOMS = (1, 4, 16)


def views(extent, rng, n: int) -> list[tuple[int, tuple, tuple]]:
    """``n`` views per zoom: (zoom, x_range, y_range) at random centres inside the extent."""
    x0, x1, y0, y1 = extent
    out = []
    for zoom in ZOOMS:
        for _ in range(n):
            hw, hh = (x1 - x0) / zoom / 2, (y1 - y0) / zoom / 2
            # the whole map: panned by up to 5 % (identical views would be answered from HoloViews' memo)
            cx = (x0 + x1) / 2 + rng.uniform(-0.05, 0.05) * (x1 - x0) if zoom == 1 else rng.uniform(x0 + hw, x1 - hw)
            cy = (y0 + y1) / 2 + rng.uniform(-0.05, 0.05) * (y1 - y0) if zoom == 1 else rng.uniform(y0 + hh, y1 - hh)
            out.append((zoom, (cx - hw, cx + hw), (cy - hh, cy + hh)))
    return out


def time_views(view, plot, todo) -> dict:
    times, cpu, tiles = {z: [] for z in ZOOMS}, {z: [] for z in ZOOMS}, {z: [] for z in ZOOMS}
    for zoom, xr, yr in todo:
        ms, cpu_ms = show_view(plot, xr, yr, MAP_W, MAP_H)
        times[zoom].append(ms)
        cpu[zoom].append(cpu_ms)
        assert view.last_mosaic is not None, "the mosaic was not rendered"
        tiles[zoom].append(int(view.last_mosaic.rows.size))
    return {f"zoom_{z}x": {"median_ms": round(float(np.median(times[z])), 1),
                           "max_ms": round(float(np.max(times[z])), 1),
                           "median_cpu_ms": round(float(np.median(cpu[z])), 1),
                           "median_tiles": int(np.median(tiles[z]))} for z in ZOOMS}


def bench_engine(bundle: Path, engine: str, n_views: int, seed: int) -> dict:
    import holoviews as hv

    from explorer.data import load_explorer_data
    from explorer.map.plot import MapView
    from explorer.state import ExplorerState

    t = time.perf_counter()
    data = load_explorer_data(bundle, engine)
    _ = data.tree
    load_s = time.perf_counter() - t
    view = MapView(data, ExplorerState(map_mode="images"))
    plot = hv.renderer("bokeh").get_plot(view.overlay())
    todo = views(view._extent, np.random.default_rng(seed), n_views)
    out = {"engine": data.map_engine, "load_s": round(load_s, 2),
           "cold": time_views(view, plot, todo), "warm": time_views(view, plot, todo)}
    colour = next((name for name, spec in data.specs.items() if spec.kind == "fraction"), None)
    if colour is not None:
        view.state.colour_by = colour
        out["warm_framed"] = {"colour_by": colour, **time_views(view, plot, todo)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="bundles/bench-1m-128")
    p.add_argument("--views", type=int, default=10, help="views per zoom level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    add_quick(p, bundle=lambda: str(quick_bundle()), views=2)
    args = parse_quick(p, argv)
    import holoviews as hv

    hv.extension("bokeh")
    bundle = Path(args.bundle)
    engines = ["memory"] + (["dask"] if (bundle / "points").is_dir() else [])
    result = {"bundle": str(bundle), "map_px": [MAP_W, MAP_H], "target_ms": TARGET_MS, "cpu_count": os.cpu_count(),
              "load_average": list(os.getloadavg()),
              "engines": [bench_engine(bundle, e, args.views, args.seed) for e in engines]}
    from explorer.data import load_explorer_data

    result["n_objects"] = load_explorer_data(bundle).n
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

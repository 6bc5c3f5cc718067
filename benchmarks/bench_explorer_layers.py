"""BENCHMARK: the map's per-session layers at scale, on the live Bokeh plot, with the app's own functions.

    python -m benchmarks.bench_explorer_layers [--n 1000000] [--selected 250000] [--json out.json]

A synthetic map (clustered UMAP-like points, no bundle files needed: only the map frame is used) and, per step, the
wall and process CPU time (the box may be shared):

- select: a new ``state.selection_ids`` of ``--selected`` rows -> the selection layer re-rasterized and pushed
  into the Bokeh model (the colour layer is not re-aggregated);
- pan/zoom with and without that selection shown (both DynamicMaps follow the same range/size streams);
- clear: the selection emptied (the layer becomes a 2x2 blank image);
- probe colour: a probe's float32 prediction added as a session layer and chosen in colour-by (first time, then
  toggled with density);
- probe refit: the layer on show replaced by new values (the Counter-stream redraw);
- user labels: ``label_codes`` for ``--selected`` labelled objects in 5 labels (store rows -> bundle rows -> codes).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from benchmarks.quick import add_quick, parse_quick

MAP_W, MAP_H = 1200, 680


def synthetic_data(n: int, seed: int = 0):
    from explorer.data import ExplorerData
    from explorer.map import colour

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(40, 2))
    xy = centres[rng.integers(0, 40, n)] + rng.normal(size=(n, 2))
    frame = pd.DataFrame({"x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32)})
    catalog = pd.DataFrame({"object_id": np.arange(n).astype(str)})
    return ExplorerData(bundle=None, catalog=catalog, frame=frame, specs={colour.DENSITY: colour.density_spec()})


def _timed(fn, repeat: int) -> dict:
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return {"median_ms": round(float(np.median(wall)), 1), "max_ms": round(float(np.max(wall)), 1),
            "median_cpu_ms": round(float(np.median(cpu)), 1), "n": repeat}


def run(n: int, n_selected: int, repeat: int = 7) -> dict:
    import holoviews as hv
    from explorer.probes.probe_ui import PROBE_KEY

    from explorer.labels.labels_ui import label_codes
    from explorer.map import colour
    from explorer.map.kernels import warm_kernels
    from explorer.map.plot import MapView
    from explorer.state import ExplorerState

    hv.extension("bokeh")
    warm_kernels(background=False)
    data = synthetic_data(n)
    state = ExplorerState()
    view = MapView(data, state)
    plot = hv.renderer("bokeh").get_plot(view.overlay())
    rng = np.random.default_rng(1)
    ranges = [s for s in plot.streams if isinstance(s, hv.streams.RangeXY)]
    sizes = [s for s in plot.streams if isinstance(s, hv.streams.PlotSize)]
    x0, x1, y0, y1 = view._extent

    def pan_zoom():
        zoom = 2.0 ** rng.uniform(0, 4)
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        hw, hh = (x1 - x0) / zoom / 2, (y1 - y0) / zoom / 2
        for s in ranges:
            s.update(x_range=(cx - hw, cx + hw), y_range=(cy - hh, cy + hh))
        for s in sizes:
            s.update(width=MAP_W, height=MAP_H, scale=1.0)
        hv.streams.Stream.trigger(ranges + sizes)

    selections = [np.sort(rng.choice(n, n_selected, replace=False)) for _ in range(repeat)]
    out = {"n_objects": n, "n_selected": n_selected, "map_px": [MAP_W, MAP_H]}
    pan_zoom()
    out["pan_zoom_no_selection"] = _timed(pan_zoom, repeat)
    picks = iter(selections)
    out["select"] = _timed(lambda: setattr(state, "selection_ids", next(picks)), repeat)
    assert np.isfinite(view.last_selection_image.dimension_values("selected")).any(), "selection not drawn"
    out["pan_zoom_with_selection"] = _timed(pan_zoom, repeat)
    out["clear"] = _timed(state.clear_selection, 1)
    assert not np.isfinite(view.last_selection_image.dimension_values("selected")).any(), "selection not cleared"

    probe = colour.layer_from_values(PROBE_KEY, "Probe: bench", "fraction", rng.random(n, dtype=np.float32))
    state.add_colour_layer(probe)
    out["probe_colour_first"] = _timed(lambda: state.param.update(colour_by=PROBE_KEY, colour_range=None), 1)
    toggle = iter([colour.DENSITY, PROBE_KEY] * repeat)  # steady state: density and the probe in turn
    out["probe_colour_toggle"] = _timed(lambda: state.param.update(colour_by=next(toggle), colour_range=None),
                                        2 * repeat)
    refits = iter([colour.layer_from_values(PROBE_KEY, "Probe: bench", "fraction", rng.random(n, dtype=np.float32))
                   for _ in range(repeat)])
    out["probe_refit_redraw"] = _timed(lambda: state.add_colour_layer(next(refits)), repeat)

    rows = pd.Index(data.catalog["object_id"].to_numpy())
    labelled = rng.choice(n, n_selected, replace=False)
    current = pd.DataFrame({"object_id": labelled.astype(str), "label": rng.choice(list("abcde"), n_selected),
                            "event_id": rng.integers(0, 50, n_selected)})
    out["user_label_codes"] = _timed(lambda: label_codes(current, rows), repeat)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--selected", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", default=None)
    add_quick(parser, n=20_000, selected=5_000, repeat=1)
    args = parse_quick(parser, argv)
    result = run(args.n, args.selected, args.repeat)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

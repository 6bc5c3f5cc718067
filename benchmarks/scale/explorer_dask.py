"""The explorer's Dask map engine at 10 M objects: build a cheap bundle, write its points/, time the app's own code.

    .venv/bin/python -m benchmarks.scale.explorer_dask build --n 10000000 --out bundles/scale-10m-bundle
    .venv/bin/python -m benchmarks.scale.explorer_dask measure --bundle bundles/scale-10m-bundle --json dask-10m.json

``build`` writes a fixture-like bundle through the real bundle writer (``benchmarks.fixture_bundle``'s clustered
embeddings and catalogue columns) but with a 16-d embedding and 16-px thumbnails, so 10 M objects cost ~2 GB of
disk instead of ~10 GB, then runs ``python -m precompute points`` on it. ``measure`` times, for each map engine
(``memory``, ``dask``): the server cold start (``panel serve explorer --args --bundle B --map-engine E`` until the
first page is served) and the server's RSS after that page, then, in this process, ``MapView.render`` (the app's
own callback) at the full view and at 10x zoom for density, a continuous and a categorical colour (median of
``--repeats`` after one warm-up); with ``--breakdown``, the RSS after each start-up step and page part (two
sessions) in a fresh interpreter. The load average is recorded before and after: the box is shared.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.quick import add_quick, parse_quick, scratch_dir
from benchmarks.run import finish, median_ms

COLOURS = ("density", "redshift", "morph_class")


# ------------------------------------------------------------------------------------------------ build
def tiny_thumbnails(labels: np.ndarray, size: int, rng) -> tuple[np.memmap, np.ndarray]:
    """Packed thumbnails from a small pool (one per cluster family), as (blob, offsets) without one big bytes join."""
    from benchmarks.fixture_bundle import _thumbnail_pool

    pool = _thumbnail_pool(64, size, rng)
    pick = (labels * 7 + rng.integers(0, 7, len(labels))) % len(pool)
    lengths = np.array([len(p) for p in pool], dtype=np.int64)[pick]
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    pool_arrays = [np.frombuffer(p, np.uint8) for p in pool]
    blob = np.empty(int(offsets[-1]), dtype=np.uint8)
    for k, arr in enumerate(pool_arrays):  # scatter each pool image into every slot that uses it
        starts = offsets[:-1][pick == k]
        idx = starts[:, None] + np.arange(len(arr))[None, :]
        blob[idx.ravel()] = np.tile(arr, len(starts))
    return blob, offsets


def build_scale_bundle(out: Path, n: int, dim: int = 16, thumb_px: int = 16, seed: int = 0) -> Path:
    """A bundle of ``n`` fixture objects (same catalogue model as ``make_fixture_bundle``), cheap at 10 M."""
    from benchmarks.fixture_bundle import CLASSES, COLOUR_BY, clustered_embeddings
    from core.write import assign_splits, write_bundle

    n_clusters = 40
    emb, labels, latent2 = clustered_embeddings(n, dim, n_clusters, seed, np.float16)
    rng = np.random.default_rng(seed + 1)
    plane = rng.uniform(-10, 10, size=(n_clusters, 2))
    spread = rng.uniform(0.3, 1.2, size=n_clusters)
    xy = (plane[labels] + latent2 * spread[labels, None]).astype(np.float32)
    del latent2
    smooth_p = rng.uniform(0, 1, n_clusters)
    z = np.clip(rng.gamma(2.0, 0.04, n) + 0.02 * (labels % 5), 0.005, 0.6)
    z[rng.random(n) > 0.6] = np.nan
    smooth = np.clip(smooth_p[labels] + rng.normal(0, 0.1, n), 0, 1)
    smooth[rng.random(n) > 0.5] = np.nan
    catalog = pd.DataFrame({
        "object_id": pd.array(np.char.add("FIX", np.arange(n).astype("U9")), dtype="string[pyarrow]"),
        "ra": rng.uniform(120, 240, n),
        "dec": np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-5)), np.sin(np.radians(60)), n))),
        "umap_x": xy[:, 0], "umap_y": xy[:, 1],
        "split": pd.Categorical(assign_splits(n, seed)),
        "gz2_smooth_fraction": smooth,
        "redshift": z,
        "angular_extent_arcsec": np.clip(8 / (np.nan_to_num(z, nan=0.1) + 0.02) * rng.lognormal(0, 0.3, n) / 10,
                                         1, 120),
        "r_mag": np.clip(14 + 2.5 * np.log10(np.nan_to_num(z, nan=0.1) / 0.02 + 1) * 2 + rng.normal(0, 0.5, n),
                         12, 22),
        "morph_class": pd.Categorical.from_codes(labels % len(CLASSES), list(CLASSES)),
        "cluster": labels.astype(np.int32),
    })
    del xy, z, smooth
    blob, offsets = tiny_thumbnails(labels, thumb_px, rng)
    manifest = {
        "survey": "fixture", "bands": ["g", "r", "i"], "pixel_scale_arcsec": 0.396,
        "model": {"method": "none (benchmark fixture)", "architecture": "none"},
        "umap": {"note": "fixture: cluster centres plus scatter, not a UMAP fit"},
        "colour_by": COLOUR_BY,
        "source": {"fixture": "benchmarks/scale/explorer_dask.py", "seed": seed, "n_clusters": n_clusters},
    }
    return write_bundle(out, catalog=catalog, embeddings=emb, thumbnails=(blob, offsets), manifest=manifest)


def cmd_build(a) -> dict:
    from core.points import write_points

    res = {"n": a.n, "dim": a.dim, "thumb_px": a.thumb_px}
    t = time.perf_counter()
    build_scale_bundle(Path(a.out), a.n, a.dim, a.thumb_px)
    res["bundle_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    write_points(Path(a.out), rows_per_partition=a.rows_per_partition)
    res["points_s"] = round(time.perf_counter() - t, 1)
    res["bundle_gb"] = round(sum(f.stat().st_size for f in Path(a.out).rglob("*") if f.is_file()) / 2**30, 2)
    res["points_mb"] = round(sum(f.stat().st_size for f in (Path(a.out) / "points").glob("*")) / 2**20, 1)
    return res


# ------------------------------------------------------------------------------------------------ measure
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def serve_cold_start(bundle: Path, engine: str, timeout: float = 900.0) -> dict:
    """Start ``panel serve explorer`` on ``bundle`` with ``engine``; seconds until the first page is served, RSS."""
    from tests.conftest import free_port

    port = free_port()
    from explorer.serve import serve_command

    cmd = serve_command(bundle, port, args=["--map-engine", engine])
    log = open(Path(bundle).parent / f".serve-{engine}-{port}.log", "wb")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        while time.perf_counter() - t < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"panel serve exited with {proc.returncode}; see {log.name}")
            try:  # the page builds a session: the bundle is loaded (once per process) before it answers
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer", timeout=timeout) as r:
                    page = r.read().decode(errors="replace")
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"no page within {timeout:.0f} s")
        out = {"cold_start_s": round(time.perf_counter() - t, 1), "server_rss_mb": rss_mb(proc.pid),
               "error_page": "No usable bundle" in page}
        time.sleep(3)  # background kernel warm-up finishes
        out["server_rss_after_warm_mb"] = rss_mb(proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def time_renders(bundle: Path, engine: str, repeats: int) -> dict:
    """``MapView.render`` at the full view and 10x zoom for each colour in COLOURS, with this process' RSS."""
    import holoviews as hv

    hv.extension("bokeh")  # MapView.render styles its images (as the served app does)
    from explorer.data import clear_cache, load_explorer_data
    from explorer.map.plot import MapView
    from explorer.state import ExplorerState

    out = {"rss_before_mb": rss_mb(os.getpid())}
    t = time.perf_counter()
    data = load_explorer_data(bundle, map_engine=engine)
    out["load_s"] = round(time.perf_counter() - t, 1)
    out["rss_loaded_mb"] = rss_mb(os.getpid())
    view = MapView(data, ExplorerState())
    x0, x1, y0, y1 = view._extent
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 20, (y1 - y0) / 20
    views = {"full": ((x0, x1), (y0, y1)), "zoom10": ((cx - hx, cx + hx), (cy - hy, cy + hy))}
    for name in COLOURS:
        view.state.colour_by = name
        for label, (xr, yr) in views.items():
            out[f"render_{name}_{label}_ms"] = median_ms(lambda: view.render(xr, yr, 900, 680), repeats)
    out["rss_after_renders_mb"] = rss_mb(os.getpid())
    del view, data
    clear_cache()
    gc.collect()
    return out


def rss_breakdown(bundle: Path, engine: str, sessions: int = 2) -> dict:
    """This process' RSS (MB) after each step of a served start: open + validate, prepare, warm, then each page part
    of ``sessions`` sessions (which parts cost per process and which per session). Run it in a fresh process."""
    import holoviews as hv

    hv.extension("bokeh")
    from core.bundle import Bundle
    from explorer import app
    from explorer.data import prepare
    from explorer.map.kernels import warm_kernels
    from explorer.map.plot import MapView
    from explorer.state import ExplorerState

    out = {"imports": rss_mb(os.getpid())}
    b = Bundle.open(bundle, validate=True)
    out["open_validate"] = rss_mb(os.getpid())
    data = prepare(b, engine)
    out["prepare"] = rss_mb(os.getpid())
    data.warm()
    warm_kernels(background=False, dask_points=data.points)
    out["warm_tree_search_kernels"] = rss_mb(os.getpid())
    keep = []
    for session in range(sessions):
        state = ExplorerState()
        for build in app.SIDEBAR_SECTIONS:
            keep.append(build(data, state))
            out[f"session{session}_{build.__name__}"] = rss_mb(os.getpid())
        keep.append(MapView(data, state))
        out[f"session{session}_MapView"] = rss_mb(os.getpid())
    return out


def cmd_measure(a) -> dict:
    import dask

    bundle = Path(a.bundle)
    res = {"bundle": str(bundle), "n": json.loads((bundle / "manifest.json").read_text())["n_objects"],
           "machine": f"shared {os.cpu_count()}-core box", "dask": dask.__version__,
           "scheduler": "dask threaded (local)", "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    for engine in a.engines:
        if a.breakdown:  # a fresh interpreter per engine, so the figures do not include the other's heap
            cmd = [sys.executable, "-c", "import json, sys; from benchmarks.scale.explorer_dask import rss_breakdown; "
                   f"print(json.dumps(rss_breakdown({str(bundle)!r}, {engine!r})))"]
            res[f"rss_breakdown_{engine}"] = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                                                       check=True).stdout.strip().splitlines()[-1])
            print(engine, res[f"rss_breakdown_{engine}"], flush=True)
        if not a.no_serve:
            res[f"serve_{engine}"] = serve_cold_start(bundle, engine)
            print(engine, res[f"serve_{engine}"], flush=True)
        res[f"renders_{engine}"] = time_renders(bundle, engine, a.repeats)
        print(engine, res[f"renders_{engine}"], flush=True)
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return res


def _quick_scale_bundle() -> str:
    out = scratch_dir() / "bundle"
    cmd_build(argparse.Namespace(n=5_000, dim=16, thumb_px=16, rows_per_partition=1_000, out=str(out)))
    return str(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write a cheap fixture bundle and its points/")
    b.add_argument("--n", type=int, default=10_000_000)
    b.add_argument("--dim", type=int, default=16)
    b.add_argument("--thumb-px", type=int, default=16)
    b.add_argument("--rows-per-partition", type=int, default=1_000_000)
    b.add_argument("--out", default="bundles/scale-10m-bundle")
    m = sub.add_parser("measure", help="cold start, RSS and MapView.render times per map engine")
    m.add_argument("--bundle", default="bundles/scale-10m-bundle")
    m.add_argument("--engines", nargs="+", default=["memory", "dask"])
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--no-serve", action="store_true", help="skip the panel serve cold starts")
    m.add_argument("--breakdown", action="store_true", help="also RSS after each start-up step and page part")
    for sp in (b, m):
        sp.add_argument("--json")
    add_quick(b, n=5_000, rows_per_partition=1_000, out=lambda: str(scratch_dir() / "bundle"))
    add_quick(m, bundle=lambda: _quick_scale_bundle(), repeats=1, no_serve=True)
    a = parse_quick(p, argv)
    return finish(cmd_build(a) if a.cmd == "build" else cmd_measure(a), a.json)


if __name__ == "__main__":
    main()

"""Datashader over Dask at 10 M points: partitioned Parquet, Dask's local threaded scheduler, render times.

    python -m benchmarks.scale.dask_render --n 10000000 --out bundles/scale-10m --json scale.json

Writes (once) ``n`` UMAP-like points (clustered islands, a float32 colour column, an int8 class code) as
1 M-row Parquet partitions, then times: opening the dataset (metadata only), the extent pass, a full-view count
render, a 10x-zoom render, and a mean-of-column render, each the median of ``--repeats`` after one warm-up (every
render re-reads the Parquet partitions: the out-of-core case); then the same on persisted partitions and, for
comparison, on one in-memory pandas frame (``--no-pandas`` to skip).
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.run import finish, median_ms
from benchmarks.scale.dask_points import points_extent, render_points
from core.points import load_points_dask, write_points_parquet
from benchmarks.quick import add_quick, parse_quick, scratch_dir


def synthetic_points(n: int, partition_rows: int = 1_000_000, n_clusters: int = 60, seed: int = 0):
    """Yield pandas partitions of UMAP-like points: islands of different size and spread, plus a colour column."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-12, 12, size=(n_clusters, 2))
    spread = rng.uniform(0.2, 1.0, size=n_clusters)
    weights = rng.dirichlet(np.full(n_clusters, 1.5))
    level = rng.uniform(0, 1, n_clusters)
    for start in range(0, n, partition_rows):
        m = min(partition_rows, n - start)
        lab = rng.choice(n_clusters, size=m, p=weights)
        xy = centres[lab] + rng.standard_normal((m, 2)) * spread[lab, None]
        yield pd.DataFrame({
            "umap_x": xy[:, 0].astype(np.float32), "umap_y": xy[:, 1].astype(np.float32),
            "colour": np.clip(level[lab] + rng.normal(0, 0.1, m), 0, 1).astype(np.float32),
            "cls": (lab % 8).astype(np.int8),
        })


def zoom_ranges(xr, yr, zoom: float):
    cx, cy, hx, hy = sum(xr) / 2, sum(yr) / 2, (xr[1] - xr[0]) / 2 / zoom, (yr[1] - yr[0]) / 2 / zoom
    return (cx - hx, cx + hx), (cy - hy, cy + hy)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--out", default="bundles/scale-10m")
    p.add_argument("--partition-rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-pandas", action="store_true")
    p.add_argument("--json")
    add_quick(p, n=20_000, out=lambda: str(scratch_dir()), partition_rows=5_000, repeats=1)
    a = parse_quick(p, argv)
    folder = Path(a.out) / "points"
    res = {"n": a.n, "partition_rows": a.partition_rows, "scheduler": "dask threads (local)"}
    if not folder.exists() or sum(1 for _ in folder.glob("*.parquet")) * a.partition_rows < a.n:
        t = time.perf_counter()
        write_points_parquet(synthetic_points(a.n, a.partition_rows), folder)
        res["write_s"] = round(time.perf_counter() - t, 1)
    res["parquet_mb"] = round(sum(f.stat().st_size for f in folder.glob("*.parquet")) / 2**20, 1)
    import dask.dataframe  # noqa: F401  (the import, ~seconds, is not part of opening the data)

    t = time.perf_counter()
    ddf = load_points_dask(folder)
    res["open_ms"] = round((time.perf_counter() - t) * 1e3, 1)
    res["npartitions"] = ddf.npartitions
    t = time.perf_counter()
    xr, yr = points_extent(ddf)
    res["extent_s"] = round(time.perf_counter() - t, 2)
    zx, zy = zoom_ranges(xr, yr, 10)
    res["render_full_count_ms"] = median_ms(lambda: render_points(ddf, xr, yr), a.repeats)
    res["render_zoom10_count_ms"] = median_ms(lambda: render_points(ddf, zx, zy), a.repeats)
    res["render_full_mean_ms"] = median_ms(lambda: render_points(ddf, xr, yr, column="colour"), a.repeats)
    # Persisted partitions (when the points fit in RAM but one wants the partition-parallel path).
    t = time.perf_counter()
    held = ddf.persist(scheduler="threads")
    res["persist_s"] = round(time.perf_counter() - t, 1)
    res["persisted_render_full_count_ms"] = median_ms(lambda: render_points(held, xr, yr), a.repeats)
    res["persisted_render_zoom10_count_ms"] = median_ms(lambda: render_points(held, zx, zy), a.repeats)
    del held
    print(res, flush=True)
    if not a.no_pandas:
        t = time.perf_counter()
        frame = ddf.compute()
        res["pandas_load_s"] = round(time.perf_counter() - t, 1)
        res["pandas_render_full_count_ms"] = median_ms(lambda: render_points(frame, xr, yr), a.repeats)
        res["pandas_render_zoom10_count_ms"] = median_ms(lambda: render_points(frame, zx, zy), a.repeats)
        del frame
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return finish(res, a.json)


if __name__ == "__main__":
    main()

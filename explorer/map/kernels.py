"""The map's Datashader kernels: how points are aggregated (count, and a colour reduction beside it) and spread,
and compiling those kernels once per process before a visitor needs them (seconds of Numba JIT)."""
from __future__ import annotations

import threading

import datashader as ds
import datashader.transfer_functions as tf
import numpy as np
import pandas as pd

# 'source' keeps means and codes ('add' would sum them) and is ~50x faster than 'max' in datashader 0.19.
SPREAD = dict(threshold=0.6, max_px=3, how="source")

# Datashader's Dask path takes its scheduler from dask.config, one dict for the whole process: two threads that
# set it at once swap schedulers (a render meant for the cluster ran on local threads while the background warm-up
# drew its toy frame). Process-wide, so one Dask aggregation runs at a time; each one already uses every worker.
DASK_SCHEDULER_LOCK = threading.Lock()


def log_counts(counts: np.ndarray) -> np.ndarray:
    """log10 of per-pixel counts, NaN where there is nothing (density is drawn on a log scale)."""
    counts = np.asarray(counts, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, np.log10(counts), np.nan).astype(np.float32)


def warm_kernels(background: bool = True, dask_points=None) -> None:
    """Compile the map's Datashader/Numba kernels once per process (seconds of JIT) before a visitor needs them.

    The density kernels (the first view) compile now; the colour-by kernels (mean, max) in a background thread
    unless ``background`` is False. With ``dask_points`` (dask engine) the colour kernels are compiled on a small
    Dask frame of the same columns too (Datashader's Dask path has its own combine step).

    The kernels cannot come from a Numba on-disk cache: Datashader generates them at run time without
    ``cache=True``; with NUMBA_CACHE_DIR set only its two compositing functions are cached (measured: a second
    process spends the same 7-9 s in this function on the shared 2-core box).
    """
    warm_density_kernels()
    if background:
        threading.Thread(target=warm_colour_kernels, kwargs={"dask_points": dask_points}, name="warm-datashader",
                         daemon=True).start()
    else:
        warm_colour_kernels(dask_points)


def _tiny_canvas_and_frame():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.random(64).astype(np.float32) for c in ("x", "y", "v")})
    return ds.Canvas(plot_width=16, plot_height=16, x_range=(0, 1), y_range=(0, 1)), frame


def _spread_all(arr) -> None:
    tf.dynspread(arr, **SPREAD)
    for px in range(1, SPREAD["max_px"] + 1):
        tf.spread(arr, px, how=SPREAD["how"])


def warm_density_kernels() -> None:
    """Compile what the first view (density) draws with: the count aggregation and the spreading."""
    cvs, frame = _tiny_canvas_and_frame()
    counts = cvs.points(frame, "x", "y", ds.count())
    _spread_all(counts.astype(np.float32).where(counts > 0))


def warm_colour_kernels(dask_points=None) -> None:
    """Compile the colour-by aggregations (count + mean / max); with ``dask_points`` on a Dask frame too: on this
    process's threads, or on each worker of its cluster (seconds on the first recolour otherwise). Not both: a
    toy Dask pass here would hold DASK_SCHEDULER_LOCK while it compiles, and a visitor's first recolour on the
    cluster would wait for kernels it never uses."""
    cvs, frame = _tiny_canvas_and_frame()
    frames = [frame]
    client = getattr(dask_points, "client", None)
    if dask_points is not None and client is None:
        import dask.dataframe as dd

        frames.append(dd.from_pandas(frame, npartitions=2))
    for source in frames:
        for reduction in (ds.mean("v"), ds.max("v")):
            agg = aggregate_summary(cvs, source, reduction)
            _spread_all(agg["v"].astype(np.float32))
    if client is not None:
        client.run(warm_colour_kernels)


def aggregate_summary(cvs: ds.Canvas, frame, reduction, scheduler=None):
    """One Datashader pass over x, y[, v] of ``frame`` (pandas, or Dask on ``scheduler``: a dask.distributed client,
    else the local threaded scheduler): the per-pixel count "n" and ``reduction`` as "v"."""
    agg = ds.summary(n=ds.count(), v=reduction)
    if isinstance(frame, pd.DataFrame):
        return cvs.points(frame, "x", "y", agg)
    import dask

    with DASK_SCHEDULER_LOCK, dask.config.set(scheduler=scheduler or "threads"):
        return cvs.points(frame, "x", "y", agg)

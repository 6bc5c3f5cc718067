"""Benchmark helpers for map points larger than memory: re-partition a catalogue into points, aggregate and shade
them with Dask + Datashader, find their extent (docs/SCALING.md has the figures; the explorer's own Dask path is
``explorer.map.plot`` over ``core.points``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core.points import XY_COLUMNS, write_points_parquet


def catalog_to_points_parquet(catalog_path: str | Path, out: str | Path, columns: Sequence[str] | None = None,
                              rows_per_partition: int = 1_000_000) -> Path:
    """Re-partition a bundle's ``catalog.parquet`` into map-point partitions (x, y and float32 colour columns)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(catalog_path)
    names = pf.schema_arrow.names
    wanted = list(columns) if columns is not None else [c for c in names if c in XY_COLUMNS]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"{catalog_path}: no columns {missing}; it has {names}")

    def frames():
        for batch in pf.iter_batches(batch_size=rows_per_partition, columns=wanted):
            frame = batch.to_pandas()
            yield frame.astype({c: np.float32 for c in frame.columns if pd.api.types.is_float_dtype(frame[c])})

    return write_points_parquet(frames(), out)


def aggregate_points(df, x_range, y_range, width: int = 900, height: int = 680, x: str = "umap_x",
                     y: str = "umap_y", column: str | None = None, how: str = "mean"):
    """Datashader aggregate of (pandas or Dask) points: counts, or ``how`` ('mean', 'max', ...) of ``column``."""
    import datashader as ds

    agg = ds.count() if column is None else getattr(ds, how)(column)
    canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=tuple(x_range), y_range=tuple(y_range))
    return canvas.points(df, x, y, agg=agg)


def render_points(df, x_range, y_range, width: int = 900, height: int = 680, x: str = "umap_x", y: str = "umap_y",
                  column: str | None = None, how: str = "mean", cmap: Sequence[str] | None = None,
                  scheduler: str = "threads"):
    """Aggregate and shade (log counts, or linear ``how`` of ``column``) with Dask's local threaded scheduler."""
    import dask
    import datashader.transfer_functions as tf

    with dask.config.set(scheduler=scheduler):
        agg = aggregate_points(df, x_range, y_range, width, height, x, y, column, how)
    kwargs = {"cmap": list(cmap)} if cmap else {}
    return tf.shade(agg, how="log" if column is None else "linear", **kwargs)


def points_extent(df, x: str = "umap_x", y: str = "umap_y") -> tuple[tuple[float, float], tuple[float, float]]:
    """(x_range, y_range) of all points, computed in one pass over the partitions."""
    import dask

    lo_x, hi_x, lo_y, hi_y = dask.compute(df[x].min(), df[x].max(), df[y].min(), df[y].max())
    return (float(lo_x), float(hi_x)), (float(lo_y), float(hi_y))

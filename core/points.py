"""The points format: a bundle's map points as partitioned Parquet (``points/``), written by
`python -m precompute points --bundle DIR` and read by the explorer's Dask map engine.

When to use it: when a bundle's colour-by columns are too big to hold in the explorer's memory (the default
``memory`` map engine keeps one float32 array per colour column: 4 B x N x columns), serve it with
``panel serve explorer --args --bundle DIR --map-engine dask`` after running this once (``auto`` picks Dask for
bundles with ``points/`` whose colour columns would pass ``explorer.data.AUTO_DASK_ABOVE_BYTES``, 1 GiB). The
explorer then aggregates the colour layer from these partitions with Dask + Datashader, reading only the chosen
column at each render, and keeps just x/y in memory (for hover, click, lasso). Bundles whose colour columns fit
do not need it: memory mode renders ~4x faster (10 M objects: 0.1-0.3 s against 0.6-1.1 s, docs/SCALING.md).
Rerun it after rebuilding the bundle (the explorer refuses points/ written for another build).

``points/`` holds ``part-00000.parquet, ...`` (``umap_x``, ``umap_y`` float32 and one float32 value column per
manifest ``colour_by`` column, named ``c__<column>``, exactly as ``core.colour.colour_values`` computes them:
numbers as float32, categories as codes, nulls NaN; each data page with a CRC) and ``points.json``: the row count,
the bundle's ``created`` stamp (so a rebuilt bundle's stale points are detected), per column the kind, categories,
default colour range, slider bounds and null fraction (so the explorer needs no pass over the values at start-up),
and per part file its size and sha256 (checked at start-up: sizes always, hashes up to ``HASH_PARTS_UP_TO``). The folder is
written beside the bundle's files under a temporary name and renamed into place; the row count is checked first.
The bundle's own files are not touched (``points/`` is an optional extra the validator ignores).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core import colour
from core.contract import BundleError
from core.write import replace_dir

POINTS_DIR = "points"
META_FILE = "points.json"
POINTS_FORMAT = 2          # 2: points.json lists each part's size and sha256
HASH_PARTS_UP_TO = 1 << 30   # bytes of parts hashed at every start; above it, sizes and footers only
XY_COLUMNS = ("umap_x", "umap_y")
COMMAND = "python -m precompute points --bundle {bundle}"


class PointsError(BundleError):
    """A bundle's ``points/`` is missing, incomplete or does not match the bundle; the message says how to fix it."""


def points_command(bundle: str | Path) -> str:
    return COMMAND.format(bundle=bundle)


# ------------------------------------------------------------------------------------------------ writing
def colour_columns(bundle_path: Path) -> tuple[pd.DataFrame, dict]:
    """The map columns of the catalogue (x, y, float32 colour values) and their metadata, as the explorer makes them."""
    manifest = json.loads((bundle_path / "manifest.json").read_text(encoding="utf-8"))
    wanted = [c for c in manifest.get("colour_by", {}) if c != colour.DENSITY]
    import pyarrow.parquet as pq

    names = pq.ParquetFile(bundle_path / "catalog.parquet").schema_arrow.names
    catalog = pd.read_parquet(bundle_path / "catalog.parquet", columns=[*XY_COLUMNS, *(c for c in wanted if c in names)])
    specs = colour.specs_from_manifest(manifest.get("colour_by", {}), catalog)
    cols = {c: catalog[c].to_numpy(np.float32) for c in XY_COLUMNS}
    meta = {}
    for name, spec in specs.items():
        if spec.kind == colour.DENSITY:
            continue
        values = colour.colour_values(catalog[name], spec)
        cols[spec.value_column] = values
        rng, bounds, nulls = colour.column_stats(values, spec)
        meta[name] = {"value_column": spec.value_column, "kind": spec.kind, "categories": list(spec.categories),
                      "range": list(rng), "bounds": list(bounds), "null_fraction": nulls}
    return pd.DataFrame(cols, copy=False), meta


def write_points(bundle_path: str | Path, rows_per_partition: int = 1_000_000, client=None) -> Path:
    """Write ``bundle_path/points/`` (see the module docstring) atomically; return the folder. With ``client`` (a
    dask.distributed client, ``core.cluster``) each part file is compressed, written and hashed by a task on the
    cluster (its workers must see the bundle's folder)."""
    bundle_path = Path(bundle_path)
    if rows_per_partition < 1:
        raise ValueError("rows_per_partition must be at least 1")
    manifest = json.loads((bundle_path / "manifest.json").read_text(encoding="utf-8"))
    frame, columns = colour_columns(bundle_path)
    n = len(frame)
    if n != int(manifest["n_objects"]):
        raise BundleError(f"{bundle_path / 'catalog.parquet'} has {n} rows but the manifest says "
                          f"{manifest['n_objects']}; rebuild the bundle")
    out = bundle_path / POINTS_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{POINTS_DIR}.partial-", dir=bundle_path))
    try:
        slices = [frame.iloc[s: s + rows_per_partition] for s in range(0, n, rows_per_partition)]
        paths = [tmp / f"part-{i:05d}.parquet" for i in range(len(slices))]
        if client is None:
            parts = dict(write_part(part, path) for part, path in zip(slices, paths))
        else:
            parts = dict(client.gather(client.map(write_part, slices, [str(p) for p in paths], pure=False)))
        written = parquet_rows(tmp)
        if written != n:
            raise BundleError(f"{tmp}: wrote {written} rows, expected {n}")
        meta = {"format": POINTS_FORMAT, "n_rows": n, "rows_per_partition": rows_per_partition,
                "bundle_created": manifest.get("created"), "xy": list(XY_COLUMNS), "columns": columns,
                "parts": parts}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_part(frame: pd.DataFrame, path: str | Path, compression: str = "zstd") -> tuple[str, dict]:
    """Write one part file (page checksums on) and return (its name, {bytes, sha256}) for points.json."""
    from core.contract import sha256_of

    path = Path(path)
    _write_table(frame, path, compression)
    return path.name, {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def parquet_rows(folder: Path) -> int:
    """Total rows of the part files, from their footers (no data read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(Path(folder).glob("part-*.parquet")))


# ------------------------------------------------------------------------------------------------ reading
def read_meta(folder: Path) -> dict:
    """points.json as a dict; ValueError saying what is wrong with it."""
    try:
        meta = json.loads((Path(folder) / META_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{META_FILE} is not JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{META_FILE} must hold a JSON object")
    return meta


def _meta_problem(meta: dict) -> str | None:
    """The first field of points.json that the explorer would trip on, or None."""
    if not (isinstance(meta.get("xy"), list) and len(meta["xy"]) == 2 and all(isinstance(c, str) for c in meta["xy"])):
        return "'xy' must name the two map columns"
    if not isinstance(meta.get("columns"), dict) or not isinstance(meta.get("parts"), dict) or not meta["parts"]:
        return "'columns' and 'parts' must be objects"
    for name, col in meta["columns"].items():
        ok = (isinstance(col, dict) and isinstance(col.get("value_column"), str) and isinstance(col.get("kind"), str)
              and isinstance(col.get("categories"), list)
              and all(isinstance(col.get(k), list) and len(col[k]) == 2 and all(_number(v) for v in col[k])
                      for k in ("range", "bounds")) and _number(col.get("null_fraction")))
        if not ok:
            return f"column {name!r} lacks a value column, kind, categories, numeric range, bounds or null fraction"
    return None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parts_problem(folder: Path, meta: dict) -> str | None:
    """Part files as points.json lists them: the same names, sizes, hashes (up to HASH_PARTS_UP_TO bytes in all) and
    readable footers holding the listed columns; or what differs."""
    import pyarrow.parquet as pq

    from core.contract import sha256_of

    on_disk = sorted(p.name for p in folder.glob("part-*.parquet"))
    if on_disk != sorted(meta["parts"]):
        return f"holds part files {on_disk[:3]}… but points.json lists {sorted(meta['parts'])[:3]}…"
    total = sum(int(e.get("bytes", -1)) if isinstance(e, dict) else -1 for e in meta["parts"].values())
    wanted = {*meta["xy"], *(c["value_column"] for c in meta["columns"].values())}
    for name, entry in meta["parts"].items():
        path = folder / name
        if path.is_symlink():
            return f"{name} is a symbolic link"
        if not isinstance(entry, dict) or entry.get("bytes") != path.stat().st_size:
            return f"{name} has {path.stat().st_size:,} bytes, not the size points.json recorded (truncated or modified)"
        if total <= HASH_PARTS_UP_TO and entry.get("sha256") != sha256_of(path):
            return f"{name} does not match the sha256 recorded in points.json (modified or corrupt)"
        try:
            names = set(pq.ParquetFile(path).schema_arrow.names)
        except Exception as e:
            return f"{name} cannot be read ({str(e)[:200]})"
        if not wanted <= names:
            return f"{name} lacks the columns {sorted(wanted - names)}"
    return None


def check_points(bundle_path: str | Path, n_objects: int, created: str | None, specs: dict) -> dict:
    """Check ``bundle_path/points/`` against the bundle (row count, build stamp, colour columns and categories) and
    return its metadata; raise ``PointsError`` naming the folder and the command that (re)writes it."""
    bundle_path = Path(bundle_path)
    folder = bundle_path / POINTS_DIR
    fix = f"write it with: {points_command(bundle_path)}"

    def fail(what: str):
        raise PointsError(f"{folder}: {what}; the dask map engine needs it — {fix}")

    if folder.is_symlink() or (folder / META_FILE).is_symlink():
        fail("is a symbolic link; a bundle holds plain files only")
    if not (folder / META_FILE).is_file():
        fail("missing (no points/points.json)" if not folder.exists() else f"has no {META_FILE}")
    try:
        meta = read_meta(folder)
    except ValueError as e:
        fail(str(e))
    if meta.get("format") != POINTS_FORMAT:
        fail(f"format {meta.get('format')!r}, this explorer reads {POINTS_FORMAT}")
    problem = _meta_problem(meta) or _parts_problem(folder, meta)
    if problem:
        fail(problem)
    if meta.get("n_rows") != n_objects or parquet_rows(folder) != n_objects:
        fail(f"holds {parquet_rows(folder)} rows but the bundle has {n_objects} objects")
    if meta.get("bundle_created") != created:
        fail(f"was written for the bundle built {meta.get('bundle_created')}, not this one ({created})")
    for name, spec in specs.items():
        if spec.kind == "density":
            continue
        col = meta["columns"].get(name)
        if col is None or col["kind"] != spec.kind or tuple(col["categories"]) != tuple(spec.categories):
            fail(f"has no matching colour column for '{name}' (kind {spec.kind}, categories {list(spec.categories)})")
    return meta


# ------------------------------------------------------------------------------------------------ Parquet parts
def write_points_parquet(frames, out: str | Path, compression: str = "zstd") -> Path:
    """Write an iterable of pandas frames as one Parquet file each (part-00000.parquet, ...) under ``out``.

    One file per partition keeps writing streamable (never the whole catalogue in memory) and lets Dask read the
    partitions in parallel. Returns ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        _write_table(frame, out / f"part-{i:05d}.parquet", compression)
    return out


def _write_table(frame: pd.DataFrame, path: Path, compression: str) -> None:
    """One Parquet part file, each data page with a CRC."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression=compression,
                   write_page_checksum=True)


def load_points_dask(path: str | Path, columns: Sequence[str] | None = None):
    """A lazy Dask dataframe over partitioned Parquet points (a folder of part files or one file)."""
    import dask.dataframe as dd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such Parquet file or folder; write one with "
                                "core.points.write_points_parquet (python -m precompute points)")
    source = str(path / "*.parquet") if path.is_dir() else str(path)
    return dd.read_parquet(source, columns=list(columns) if columns else None)

"""Checking a bundle against the contract (``core.contract``): every problem is one BundleError naming the file and
what to do; a bundle that passes comes back with what the checks read (its manifest and similarity index)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import (COLOUR_KINDS, FORMAT_VERSION, NORM_TOLERANCE, REQUIRED_COLUMNS, SPLITS, BundleError, fail,
                           read_report, sha256_of)


def _read_manifest(man_path: Path) -> dict:
    """manifest.json parsed and type-checked: every problem is one BundleError naming the file."""
    try:
        man = json.loads(man_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        fail(man_path, f"is not UTF-8 text ({e.reason} at byte {e.start})")
    except json.JSONDecodeError as e:
        fail(man_path, f"is not valid JSON ({e})")
    if not isinstance(man, dict):
        fail(man_path, f"must hold a JSON object, not {type(man).__name__}")
    for key in ("format_version", "survey", "n_objects", "embedding_dim", "embedding_dtype", "bands", "model",
                "colour_by"):
        if key not in man:
            fail(man_path, f"lacks the field '{key}'")
    version = man["format_version"]
    if isinstance(version, bool) or version != FORMAT_VERSION:   # JSON true == 1 in Python
        fail(man_path, f"format_version {version!r} is not supported (this software reads {FORMAT_VERSION})")
    for key in ("n_objects", "embedding_dim"):
        if isinstance(man[key], bool) or not isinstance(man[key], int) or man[key] < 0:
            fail(man_path, f"'{key}' must be a non-negative integer, not {man[key]!r}")
    for key, kind in (("survey", str), ("embedding_dtype", str), ("bands", list), ("model", dict),
                      ("colour_by", dict)):
        if not isinstance(man[key], kind):
            fail(man_path, f"'{key}' must be a JSON {kind.__name__.replace('dict', 'object').replace('str', 'string')}"
                            f", not {type(man[key]).__name__}")
    return man


def _check_thumbnails(path: Path, man: dict, n: int, hash_blob: bool = True) -> None:
    offsets_path, blob_path = path / "thumbnails" / "offsets.npy", path / "thumbnails" / "blob.bin"
    try:
        offsets = np.load(offsets_path, mmap_mode="r", allow_pickle=False)
    except Exception as e:   # not an .npy at all, or a pickled object array
        fail(offsets_path, f"cannot be read as a plain .npy array ({str(e).splitlines()[0][:120]})")
    if offsets.dtype.kind not in "iu":
        fail(offsets_path, f"must hold integer byte offsets, not {offsets.dtype}")
    if offsets.shape != (n + 1,):
        fail(offsets_path, f"has shape {offsets.shape}, expected ({n + 1},): one offset per thumbnail and the end")
    blob_size = blob_path.stat().st_size
    if n and (int(offsets[0]) != 0 or int(offsets[-1]) != blob_size or np.any(np.diff(offsets) < 0)):
        fail(blob_path, "does not match thumbnails/offsets.npy (truncated or corrupt)")
    recorded = man.get("thumbnails", {}).get("sha256") if isinstance(man.get("thumbnails"), dict) else None
    if hash_blob and recorded and sha256_of(blob_path) != recorded:
        fail(blob_path, "does not match the sha256 recorded in manifest.json (modified or corrupt thumbnails)")


def validate_bundle(path: str | Path, check_norms_rows: int = 100_000, hash_thumbnails: bool = True) -> dict:
    """Check a bundle against contract version 1. Returns the manifest; raises BundleError naming the file
    (``checked_bundle`` returns the similarity index it read as well)."""
    return checked_bundle(path, check_norms_rows, hash_thumbnails)[0]


def checked_bundle(path: str | Path, check_norms_rows: int = 100_000, hash_thumbnails: bool = True) -> tuple:
    """(manifest, faiss index) of a bundle that passes every check of contract version 1; BundleError otherwise.

    Every structural check (files, manifest, shapes, dtypes, row counts, catalogue columns, thumbnails, index size)
    always runs in full; ``check_norms_rows`` is how many evenly spread embedding rows are checked to be finite and
    unit-norm (all rows when the bundle has fewer). ``python -m precompute validate`` and the pipeline use the 100 k
    default; a server opening a bundle passes a small sample (``explorer.data.STARTUP_NORM_ROWS``), since 100 k rows
    of a 1 M x 2048 bundle read most of its 4 GB embeddings file.
    ``hash_thumbnails=False`` skips the sha256 of the thumbnail blob (GBs at millions of objects; a server start
    skips it as it samples the norms: the blob is image bytes shown as images, nothing in it runs)."""
    path = Path(path)
    man = _read_manifest(_manifest_path(path))
    for rel in ("catalog.parquet", "embeddings.npy", "index.faiss", "thumbnails/blob.bin", "thumbnails/offsets.npy"):
        if not (path / rel).is_file():
            fail(path / rel, "is missing")
    columns = _check_catalogue(path / "catalog.parquet", man["n_objects"])
    _check_embeddings(path / "embeddings.npy", man, check_norms_rows)
    _check_thumbnails(path, man, man["n_objects"], hash_thumbnails)
    index = _read_index(path / "index.faiss", man["n_objects"], man["embedding_dim"])
    _check_checkpoint(path, man)
    _check_colour_by(path / "manifest.json", man, columns)
    _check_report(path, man)
    return man, index


def _manifest_path(path: Path) -> Path:
    """``path``/manifest.json, or a BundleError saying what happened to the folder (swapped aside, half-written)."""
    man_path = path / "manifest.json"
    if not path.is_dir():
        swapped = sorted(path.parent.glob(f".{path.name}.old-*"))
        if swapped:
            fail(path, f"is missing, but the previous bundle survives as {swapped[-1]} (a run was killed while "
                       f"swapping bundles)", f"rename it back (`mv {swapped[-1]} {path}`) or rebuild")
        fail(path, "no bundle folder here", "make one with `python -m precompute demo --out " + str(path) + "`")
    if not man_path.is_file():
        partial = sorted(path.parent.glob(f".{path.name}.partial-*"))
        hint = " (a partial build was left behind by an interrupted run)" if partial else ""
        fail(man_path, "manifest.json is missing" + hint)
    return man_path


def _check_catalogue(cat_path: Path, n: int) -> list[str]:
    """The catalogue's required columns, row count, positions, ids and splits; returns its column names."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(cat_path)
    except Exception as e:  # corrupt parquet
        fail(cat_path, f"cannot be read ({e})")
    cols = meta.schema_arrow.names
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        fail(cat_path, f"lacks required columns {missing}")
    if meta.metadata.num_rows != n:
        fail(cat_path, f"has {meta.metadata.num_rows} rows but manifest.json says n_objects = {n}")
    try:
        core = pd.read_parquet(cat_path, columns=list(REQUIRED_COLUMNS))
    except Exception as e:   # damaged data pages behind a readable footer
        fail(cat_path, f"cannot be read ({e})")
    for c in ("ra", "dec", "umap_x", "umap_y"):
        bad = int(core[c].isna().sum())
        if bad:
            fail(cat_path, f"column '{c}' has {bad} NaN values (first at row {int(np.flatnonzero(core[c].isna())[0])})")
    if (core["dec"].abs() > 90).any() or ((core["ra"] < 0) | (core["ra"] >= 360)).any():
        fail(cat_path, "has RA outside [0, 360) or Dec outside [-90, 90] degrees")
    dup = core["object_id"].duplicated()
    if dup.any():
        fail(cat_path, f"has {int(dup.sum())} duplicate object_id values (e.g. {core['object_id'][dup].iloc[0]!r})")
    if (~core["split"].isin(SPLITS)).any():
        fail(cat_path, f"column 'split' has values other than {SPLITS}")
    return cols


def _check_embeddings(emb_path: Path, man: dict, check_norms_rows: int) -> None:
    """Shape and dtype as the manifest says; ``check_norms_rows`` spread rows finite and of unit length."""
    n, d = man["n_objects"], man["embedding_dim"]
    try:
        emb = np.load(emb_path, mmap_mode="r")
    except Exception as e:
        fail(emb_path, f"cannot be read ({e})")
    if emb.shape != (n, d):
        fail(emb_path, f"has shape {emb.shape} but the catalogue has {n} rows and manifest says dim {d}")
    if str(emb.dtype) != man["embedding_dtype"]:
        fail(emb_path, f"has dtype {emb.dtype} but manifest.json says {man['embedding_dtype']}")
    rows = np.linspace(0, n - 1, min(n, check_norms_rows)).astype(np.int64) if n else np.zeros(0, np.int64)
    sample = np.asarray(emb[rows], dtype=np.float32)
    if not np.isfinite(sample).all():
        fail(emb_path, "contains NaN or infinite values")
    norms = np.linalg.norm(sample, axis=1)
    off = np.abs(norms - 1) > NORM_TOLERANCE
    if off.any():
        fail(emb_path, f"is not L2-normalised: {int(off.sum())} checked rows have |v| != 1 (e.g. row "
                       f"{int(rows[off][0])}, |v| = {norms[off][0]:.3f})")


def _read_index(idx_path: Path, n: int, d: int):
    import faiss

    try:
        idx = faiss.read_index(str(idx_path))
    except Exception as e:
        fail(idx_path, f"cannot be read by faiss ({str(e).splitlines()[0][:200]})")
    if idx.ntotal != n or idx.d != d:
        fail(idx_path, f"holds {idx.ntotal} vectors of dim {idx.d}, expected {n} of dim {d}")
    return idx


def _check_checkpoint(path: Path, man: dict) -> None:
    """The encoder checkpoint the manifest names: inside the bundle, present, and as hashed."""
    model = man["model"]
    ckpt = model.get("checkpoint")
    if not ckpt:
        return
    ckpt_path = path / str(ckpt)
    if not ckpt_path.resolve().is_relative_to(path.resolve()):
        fail(path / "manifest.json", f"model.checkpoint {ckpt!r} points outside the bundle")
    if not ckpt_path.is_file():
        fail(ckpt_path, "the encoder checkpoint named in manifest.json is missing")
    if model.get("sha256") and sha256_of(ckpt_path) != model["sha256"]:
        fail(ckpt_path, "does not match the sha256 recorded in manifest.json (modified or corrupt checkpoint)")


def _check_colour_by(man_path: Path, man: dict, columns: list[str]) -> None:
    for col, spec in man["colour_by"].items():
        if not isinstance(spec, dict):
            fail(man_path, f"colour_by['{col}'] must be an object with title and kind, not {type(spec).__name__}")
        if col not in columns and col != "density":
            fail(man_path, f"colour_by names column '{col}' that catalog.parquet does not have")
        if spec.get("kind") not in COLOUR_KINDS:
            fail(man_path, f"colour_by['{col}'] has kind {spec.get('kind')!r}; expected one of {COLOUR_KINDS}")


def _check_report(path: Path, man: dict) -> None:
    """report.json is optional (bundles from before it existed), but one that is named or present must parse."""
    name = man.get("report")
    if name is not None and name != "report.json":
        fail(path / "manifest.json", f"'report' must be \"report.json\", not {name!r}")
    try:
        read_report(path / "report.json")
    except ValueError as e:
        raise BundleError(f"{e}; rebuild it with `python -m precompute build ...` (the report stage)") from e
    if name is not None and not (path / "report.json").is_file():
        fail(path / "report.json", "is named in manifest.json but missing")

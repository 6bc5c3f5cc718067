"""Checking a bundle against the contract (``core.contract``): every problem is one BundleError naming the file and
what to do; a bundle that passes comes back with what the checks read (its manifest, similarity index and catalogue)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import (COLOUR_KINDS, FORMAT_VERSION, NORM_TOLERANCE, REQUIRED_COLUMNS, SPLITS, BundleError, fail,
                           read_catalogue, read_report, sha256_of)

REQUIRED_FILES = ("catalog.parquet", "embeddings.npy", "index.faiss", "thumbnails/blob.bin", "thumbnails/offsets.npy")
# Files a server start checks by size and structure only: hashing them reads GBs at millions of objects. Everything
# else in the inventory (catalogue, report, encoder config, projection) is hashed at every start.
LARGE_FILES = ("embeddings.npy", "index.faiss", "thumbnails/blob.bin")


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


def _refuse_links(path: Path) -> None:
    """A bundle holds plain files: a symbolic link in it could serve any file of the machine as a thumbnail."""
    import os

    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                fail(Path(root) / name, "is a symbolic link; a bundle holds plain files only",
                     "replace it with the file itself (`cp -L`) or rebuild the bundle")


def _inside(path: Path, rel) -> Path:
    """``path``/``rel`` when that names a place inside the bundle; a BundleError naming manifest.json otherwise."""
    target = path / str(rel)
    if not isinstance(rel, str) or not rel or not target.resolve().is_relative_to(path.resolve()):
        fail(path / "manifest.json", f"names the file {rel!r}, which is outside the bundle")
    return target


def _check_inventory(path: Path, man: dict, hash_large_files: bool) -> None:
    """Every file the manifest's ``files`` lists has the size and sha256 recorded when it was written (the large
    arrays by size only unless ``hash_large_files``). Bundles written before the inventory existed have none."""
    files = man.get("files")
    if files is None:
        return
    man_path = path / "manifest.json"
    if not isinstance(files, dict):
        fail(man_path, f"'files' must be a JSON object of file name -> size and sha256, not {type(files).__name__}")
    unlisted = [rel for rel in REQUIRED_FILES if rel not in files]
    if unlisted:
        fail(man_path, f"'files' does not account for {unlisted}")
    for rel, entry in files.items():
        target = _inside(path, rel)
        if not (isinstance(entry, dict) and isinstance(entry.get("bytes"), int) and not isinstance(entry["bytes"], bool)
                and isinstance(entry.get("sha256"), str)):
            fail(man_path, f"files[{rel!r}] must hold an integer 'bytes' and a 'sha256' string")
        if not target.is_file():
            fail(target, "is listed in manifest.json but missing")
        size = target.stat().st_size
        if size != entry["bytes"]:
            fail(target, f"has {size:,} bytes but manifest.json recorded {entry['bytes']:,} (truncated or modified)")
        if (hash_large_files or rel not in LARGE_FILES) and sha256_of(target) != entry["sha256"]:
            fail(target, "does not match the sha256 recorded in manifest.json (modified or corrupt)")


def _check_thumbnails(path: Path, man: dict, n: int, hash_blob: bool = True) -> None:
    offsets_path, blob_path = path / "thumbnails" / "offsets.npy", path / "thumbnails" / "blob.bin"
    described = man.get("thumbnails", {})
    if not isinstance(described, dict) or not isinstance(described.get("format", "webp"), str):
        fail(path / "manifest.json", "thumbnails must be an object whose format is text (e.g. "
                                     '{"format": "webp"}), not ' + repr(described)[:80])
    try:
        offsets = np.load(offsets_path, mmap_mode="r", allow_pickle=False)
    except Exception as e:   # not an .npy at all, or a pickled object array
        fail(offsets_path, f"cannot be read as a plain .npy array ({' '.join(str(e).split())[:120]})")
    if offsets.dtype.kind not in "iu":
        fail(offsets_path, f"must hold integer byte offsets, not {offsets.dtype}")
    if offsets.shape != (n + 1,):
        fail(offsets_path, f"has shape {offsets.shape}, expected ({n + 1},): one offset per thumbnail and the end")
    blob_size = blob_path.stat().st_size
    if n and (int(offsets[0]) != 0 or int(offsets[-1]) != blob_size or np.any(np.diff(offsets) < 0)):
        fail(blob_path, "does not match thumbnails/offsets.npy (truncated or corrupt)")
    recorded = man.get("thumbnails", {}).get("sha256") if isinstance(man.get("thumbnails"), dict) else None
    if hash_blob and recorded and "files" not in man and sha256_of(blob_path) != recorded:
        fail(blob_path, "does not match the sha256 recorded in manifest.json (modified or corrupt thumbnails)")


def validate_bundle(path: str | Path, check_norms_rows: int = 100_000, hash_large_files: bool = True) -> dict:
    """Check a bundle against contract version 1. Returns the manifest; raises BundleError naming the file
    (``checked_bundle`` returns the similarity index and the catalogue it read as well)."""
    return checked_bundle(path, check_norms_rows, hash_large_files)[0]


def checked_bundle(path: str | Path, check_norms_rows: int = 100_000, hash_large_files: bool = True) -> tuple:
    """(manifest, faiss index, catalogue) of a bundle passing every check of contract version 1; BundleError otherwise.

    Every structural check (files, manifest, shapes, dtypes, row counts, catalogue columns, thumbnails, index size)
    always runs in full; ``check_norms_rows`` is how many evenly spread embedding rows are checked to be finite and
    unit-norm (all rows when the bundle has fewer). ``python -m precompute validate`` and the pipeline use the 100 k
    default; a server opening a bundle passes a small sample (``explorer.data.STARTUP_NORM_ROWS``), since 100 k rows
    of a 1 M x 2048 bundle read most of its 4 GB embeddings file.
    Every file of the manifest's inventory must have its recorded size and sha256; ``hash_large_files=False``
    checks the embeddings, index and thumbnail blob by size and structure only (GBs at millions of objects: a server
    start skips their hashes as it samples the norms). No file may be a symbolic link or lie outside the bundle."""
    path = Path(path)
    man_path = _manifest_path(path)
    _refuse_links(path)
    man = _read_manifest(man_path)
    for rel in REQUIRED_FILES:
        if not (path / rel).is_file():
            fail(path / rel, "is missing")
    _check_inventory(path, man, hash_large_files)
    catalogue = _check_catalogue(path / "catalog.parquet", man["n_objects"])
    _check_embeddings(path / "embeddings.npy", man, check_norms_rows)
    _check_thumbnails(path, man, man["n_objects"], hash_large_files)
    index = _read_index(path / "index.faiss", man["n_objects"], man["embedding_dim"])
    _check_checkpoint(path, man)
    _check_colour_by(path / "manifest.json", man, catalogue)
    _check_report(path, man)
    return man, index, catalogue


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


def _check_catalogue(cat_path: Path, n: int) -> pd.DataFrame:
    """The catalogue's required columns, row count, positions, ids and splits; every page read and decoded (a
    damaged page of any column is refused here). Returns the catalogue."""
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
    core = read_catalogue(cat_path)
    for c in ("object_id", "split"):
        if not (pd.api.types.is_string_dtype(core[c]) or pd.api.types.is_integer_dtype(core[c])):
            fail(cat_path, f"column '{c}' must hold text or integers, not {core[c].dtype}")
    for c in ("ra", "dec", "umap_x", "umap_y"):
        if not pd.api.types.is_numeric_dtype(core[c]) or pd.api.types.is_bool_dtype(core[c]):
            fail(cat_path, f"column '{c}' must hold numbers, not {core[c].dtype}")
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
    return core


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
        fail(idx_path, f"cannot be read by faiss ({' '.join(str(e).split())[:200]})")
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
    if not isinstance(ckpt, str) or not ckpt_path.resolve().is_relative_to(path.resolve()):
        fail(path / "manifest.json", f"model.checkpoint {ckpt!r} points outside the bundle")
    if not ckpt_path.is_file():
        fail(ckpt_path, "the encoder checkpoint named in manifest.json is missing")
    if model.get("sha256") and sha256_of(ckpt_path) != model["sha256"]:
        fail(ckpt_path, "does not match the sha256 recorded in manifest.json (modified or corrupt checkpoint)")
    from models.safe_load import expansion_problem   # torch-free: validation does not import torch

    problem = expansion_problem(ckpt_path)
    if problem:
        fail(ckpt_path, problem, "rebuild the bundle, or save its encoder again with torch.save")


def _check_colour_by(man_path: Path, man: dict, catalogue: pd.DataFrame) -> None:
    """Each colour-by entry names a catalogue column, a known kind, text for its title and units, and numbers for a
    fraction or continuous column."""
    for col, spec in man["colour_by"].items():
        if not isinstance(spec, dict):
            fail(man_path, f"colour_by[{col!r}] must be an object with title and kind, not {type(spec).__name__}")
        if col not in catalogue.columns and col != "density":
            fail(man_path, f"colour_by names column {col!r} that catalog.parquet does not have")
        if spec.get("kind") not in COLOUR_KINDS:
            fail(man_path, f"colour_by[{col!r}] has kind {spec.get('kind')!r}; expected one of {COLOUR_KINDS}")
        for key in ("title", "units"):
            if key in spec and not isinstance(spec[key], str):
                fail(man_path, f"colour_by[{col!r}].{key} must be text, not {type(spec[key]).__name__}")
        if col in catalogue.columns and spec["kind"] != "categorical" and (
                not pd.api.types.is_numeric_dtype(catalogue[col]) or pd.api.types.is_bool_dtype(catalogue[col])):
            fail(man_path, f"colour_by[{col!r}] is {spec['kind']} but the column holds {catalogue[col].dtype}")


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

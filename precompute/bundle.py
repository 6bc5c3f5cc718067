"""The bundle: the on-disk contract between precompute (writes) and the explorer (reads).

Layout (format version 1, see docs/ARCHITECTURE.md, "The bundle")::

    manifest.json          what is here and how it was made
    catalog.parquet        one row per object; row i <=> row i of every array
    embeddings.npy         (N, D) float16/float32, L2-normalised, memory-mappable
    index.faiss            similarity index over embeddings.npy (inner product = cosine)
    thumbnails/blob.bin    all thumbnails (JPEG/WebP bytes) back to back
    thumbnails/offsets.npy (N + 1,) int64 byte offsets into blob.bin
    encoder/               weights + config.json (architecture and exact preprocessing)
    projection/            optional: projection.json, the map's PCA + UMAP parameters (no pickles)

A bundle is written into a temporary sibling folder and renamed into place at the end, so a reader never sees
a half-written one.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
REQUIRED_COLUMNS = ("object_id", "ra", "dec", "umap_x", "umap_y", "split")
SPLITS = ("train", "val", "test")
COLOUR_KINDS = ("fraction", "continuous", "categorical")
NORM_TOLERANCE = 1e-2  # float16 storage keeps |v| within ~1e-3 of 1


class BundleError(Exception):
    """A bundle that cannot be used. The message names the file and what to do."""


# ----------------------------------------------------------------------------------------------- thumbnails
def pack_thumbnails(thumbs: Iterable[bytes]) -> tuple[bytes, np.ndarray]:
    """Concatenate encoded images; return the blob and its (N + 1,) offsets."""
    thumbs = list(thumbs)
    offsets = np.zeros(len(thumbs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) for t in thumbs])
    return b"".join(thumbs), offsets


class PackedThumbnails:
    """Random access to the packed thumbnails without loading the blob into memory."""

    def __init__(self, folder: Path):
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        self._path = folder / "blob.bin"
        self._mm = np.memmap(self._path, dtype=np.uint8, mode="r") if self._path.stat().st_size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> bytes:
        return self._mm[int(self.offsets[i]) : int(self.offsets[i + 1])].tobytes()


# ----------------------------------------------------------------------------------------------- helpers
def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def l2_normalise(x: np.ndarray, dtype=np.float16) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(dtype)


def software_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("numpy", "pandas", "torch", "torchvision", "faiss-cpu", "umap-learn", "astropy", "panel", "holoviews",
                "datashader", "galsim"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def assign_splits(n: int, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> np.ndarray:
    """A fixed train/val/test split, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    edges = np.cumsum(fractions)
    return np.array(SPLITS, dtype=object)[np.searchsorted(edges, u, side="right").clip(0, 2)]


# ----------------------------------------------------------------------------------------------- writer
def write_bundle(
    out: str | Path,
    *,
    catalog: pd.DataFrame,
    embeddings: np.ndarray | str | Path,
    thumbnails: Sequence[bytes] | tuple[bytes, np.ndarray],
    manifest: dict,
    encoder_dir: str | Path | None = None,
    index=None,
    extra_dirs: dict[str, str | Path] | None = None,
    extra_files: dict[str, str | Path] | None = None,
    thumbnail_format: str = "webp",
) -> Path:
    """Write a complete bundle atomically and return its path.

    ``manifest`` holds the survey-specific fields (survey, bands, pixel_scale_arcsec, model, umap, colour_by,
    source); the writer fills in format_version, n_objects, embedding_dim/dtype, created, software and the
    checkpoint hash. ``index`` is a faiss index over ``embeddings``; when None one is built by size.
    ``extra_dirs`` maps a bundle sub-folder name (e.g. "projection") to a folder to copy in, ``extra_files`` a
    file name (e.g. "report.json") to a file.
    ``embeddings`` is an array (a memory map is copied block by block, never loaded whole), a ``.npy`` path, or a
    folder of embedding shards (``precompute.shards``), which are merged straight into the bundle.
    """
    from precompute.shards import copy_to_npy, merge_embedding_shards

    out = Path(out)
    n = len(catalog)
    shard_dir = Path(embeddings) if isinstance(embeddings, (str, Path)) and Path(embeddings).is_dir() else None
    emb = None
    if shard_dir is None:
        if isinstance(embeddings, (str, Path)) and not Path(embeddings).is_file():
            raise BundleError(f"{embeddings}: no embeddings .npy or shard folder here; run `python -m precompute "
                              f"embed ...` to write them")
        emb = np.load(embeddings, mmap_mode="r") if isinstance(embeddings, (str, Path)) else embeddings
        emb = emb if isinstance(emb, np.ndarray) else np.asarray(emb)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise BundleError(f"embeddings have shape {emb.shape} but the catalogue has {n} rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in catalog.columns]
    if missing:
        raise BundleError(f"catalogue is missing required columns {missing}")
    emb_dtype = None if emb is None or emb.dtype in (np.float16, np.float32) else np.float32
    if isinstance(thumbnails, tuple):
        blob, offsets = thumbnails
    else:
        blob, offsets = pack_thumbnails(thumbnails)
    if len(offsets) != n + 1:
        raise BundleError(f"{len(offsets) - 1} thumbnails for {n} catalogue rows")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        catalog.reset_index(drop=True).to_parquet(tmp / "catalog.parquet", index=False)
        if shard_dir is not None:
            merge_embedding_shards(shard_dir, tmp / "embeddings.npy", n)
        else:
            copy_to_npy(emb, tmp / "embeddings.npy", emb_dtype)
        emb = np.load(tmp / "embeddings.npy", mmap_mode="r")
        (tmp / "thumbnails").mkdir()
        (tmp / "thumbnails" / "blob.bin").write_bytes(blob)
        np.save(tmp / "thumbnails" / "offsets.npy", np.asarray(offsets, dtype=np.int64))

        import faiss

        from precompute.index import build_index

        faiss.write_index(index if index is not None else build_index(emb), str(tmp / "index.faiss"))

        man = dict(manifest)
        model = dict(man.get("model", {}))
        if encoder_dir is not None:
            shutil.copytree(encoder_dir, tmp / "encoder")
            ckpt = model.get("checkpoint", "encoder/weights.pt")
            model["checkpoint"] = ckpt
            model["sha256"] = sha256_of(tmp / ckpt)
        for name, src in (extra_dirs or {}).items():
            shutil.copytree(src, tmp / name)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        man.update(
            format_version=FORMAT_VERSION,
            n_objects=int(n),
            embedding_dim=int(emb.shape[1]),
            embedding_dtype=str(emb.dtype),
            model=model,
            thumbnails={"format": thumbnail_format, "blob": "thumbnails/blob.bin", "offsets": "thumbnails/offsets.npy",
                        "sha256": sha256_of(tmp / "thumbnails" / "blob.bin")},
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            software=software_versions(),
        )
        man.setdefault("colour_by", {})
        man.setdefault("source", {})
        man.setdefault("umap", {})
        (tmp / "manifest.json").write_text(json.dumps(man, indent=2, default=_json_default))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move tmp to out; an existing out is swapped aside first and removed only after the rename."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- reader
@dataclass
class Bundle:
    """A read-only view of a bundle. Arrays are memory-mapped; the catalogue is loaded once."""

    path: Path
    manifest: dict = field(repr=False)
    loaded_index: object = field(default=None, repr=False)   # the index validation already read, if any

    @classmethod
    def open(cls, path: str | Path, validate: bool = True, check_norms_rows: int = 100_000,
             hash_thumbnails: bool = True) -> "Bundle":
        """The bundle at ``path``, checked first (``checked_bundle``; options as ``validate_bundle``'s)."""
        path = Path(path)
        if not validate:
            return cls(path=path, manifest=json.loads((path / "manifest.json").read_text()))
        manifest, index = checked_bundle(path, check_norms_rows, hash_thumbnails)
        return cls(path=path, manifest=manifest, loaded_index=index)

    @property
    def n(self) -> int:
        return int(self.manifest["n_objects"])

    @property
    def survey(self) -> str:
        return self.manifest.get("survey", "unknown")

    @cached_property
    def catalog(self) -> pd.DataFrame:
        path = self.path / "catalog.parquet"
        try:
            return pd.read_parquet(path)
        except Exception as e:   # damaged column data that the validator's read of the core columns did not touch
            _fail(path, f"cannot be read ({e})")

    @cached_property
    def embeddings(self) -> np.ndarray:
        return np.load(self.path / "embeddings.npy", mmap_mode="r")

    @cached_property
    def thumbnails(self) -> PackedThumbnails:
        return PackedThumbnails(self.path / "thumbnails")

    @cached_property
    def index(self):
        if self.loaded_index is not None:   # validation read the whole index already: not twice
            return self.loaded_index
        import faiss

        return faiss.read_index(str(self.path / "index.faiss"))

    @property
    def colour_by(self) -> dict:
        return self.manifest.get("colour_by", {})

    @property
    def encoder_dir(self) -> Path:
        return self.path / "encoder"


# ----------------------------------------------------------------------------------------------- validation
def _fail(path: Path, what: str, fix: str = "rebuild it with `python -m precompute demo` or `python -m precompute build`"):
    what = " ".join(str(what).split())   # one line, whatever a library's message spans
    raise BundleError(f"{path}: {what}; {fix}.")


def _read_manifest(man_path: Path) -> dict:
    """manifest.json parsed and type-checked: every problem is one BundleError naming the file."""
    try:
        man = json.loads(man_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        _fail(man_path, f"is not UTF-8 text ({e.reason} at byte {e.start})")
    except json.JSONDecodeError as e:
        _fail(man_path, f"is not valid JSON ({e})")
    if not isinstance(man, dict):
        _fail(man_path, f"must hold a JSON object, not {type(man).__name__}")
    for key in ("format_version", "survey", "n_objects", "embedding_dim", "embedding_dtype", "bands", "model",
                "colour_by"):
        if key not in man:
            _fail(man_path, f"lacks the field '{key}'")
    version = man["format_version"]
    if isinstance(version, bool) or version != FORMAT_VERSION:   # JSON true == 1 in Python
        _fail(man_path, f"format_version {version!r} is not supported (this software reads {FORMAT_VERSION})")
    for key in ("n_objects", "embedding_dim"):
        if isinstance(man[key], bool) or not isinstance(man[key], int) or man[key] < 0:
            _fail(man_path, f"'{key}' must be a non-negative integer, not {man[key]!r}")
    for key, kind in (("survey", str), ("embedding_dtype", str), ("bands", list), ("model", dict),
                      ("colour_by", dict)):
        if not isinstance(man[key], kind):
            _fail(man_path, f"'{key}' must be a JSON {kind.__name__.replace('dict', 'object').replace('str', 'string')}"
                            f", not {type(man[key]).__name__}")
    return man


def _check_thumbnails(path: Path, man: dict, n: int, hash_blob: bool = True) -> None:
    offsets_path, blob_path = path / "thumbnails" / "offsets.npy", path / "thumbnails" / "blob.bin"
    try:
        offsets = np.load(offsets_path, mmap_mode="r", allow_pickle=False)
    except Exception as e:   # not an .npy at all, or a pickled object array
        _fail(offsets_path, f"cannot be read as a plain .npy array ({str(e).splitlines()[0][:120]})")
    if offsets.dtype.kind not in "iu":
        _fail(offsets_path, f"must hold integer byte offsets, not {offsets.dtype}")
    if offsets.shape != (n + 1,):
        _fail(offsets_path, f"has shape {offsets.shape}, expected ({n + 1},): one offset per thumbnail and the end")
    blob_size = blob_path.stat().st_size
    if n and (int(offsets[0]) != 0 or int(offsets[-1]) != blob_size or np.any(np.diff(offsets) < 0)):
        _fail(blob_path, "does not match thumbnails/offsets.npy (truncated or corrupt)")
    recorded = man.get("thumbnails", {}).get("sha256") if isinstance(man.get("thumbnails"), dict) else None
    if hash_blob and recorded and sha256_of(blob_path) != recorded:
        _fail(blob_path, "does not match the sha256 recorded in manifest.json (modified or corrupt thumbnails)")


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
    man_path = path / "manifest.json"
    if not path.is_dir():
        swapped = sorted(path.parent.glob(f".{path.name}.old-*"))
        if swapped:
            _fail(path, f"is missing, but the previous bundle survives as {swapped[-1]} (a run was killed while "
                        f"swapping bundles)", f"rename it back (`mv {swapped[-1]} {path}`) or rebuild")
        _fail(path, "no bundle folder here", "make one with `python -m precompute demo --out " + str(path) + "`")
    if not man_path.is_file():
        partial = sorted(path.parent.glob(f".{path.name}.partial-*"))
        hint = " (a partial build was left behind by an interrupted run)" if partial else ""
        _fail(man_path, "manifest.json is missing" + hint)
    man = _read_manifest(man_path)
    n, d = man["n_objects"], man["embedding_dim"]

    for rel in ("catalog.parquet", "embeddings.npy", "index.faiss", "thumbnails/blob.bin", "thumbnails/offsets.npy"):
        if not (path / rel).is_file():
            _fail(path / rel, "is missing")

    import pyarrow.parquet as pq

    cat_path = path / "catalog.parquet"
    try:
        meta = pq.ParquetFile(cat_path)
    except Exception as e:  # corrupt parquet
        _fail(cat_path, f"cannot be read ({e})")
    cols = meta.schema_arrow.names
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        _fail(cat_path, f"lacks required columns {missing}")
    if meta.metadata.num_rows != n:
        _fail(cat_path, f"has {meta.metadata.num_rows} rows but manifest.json says n_objects = {n}")
    try:
        core = pd.read_parquet(cat_path, columns=["object_id", "ra", "dec", "umap_x", "umap_y", "split"])
    except Exception as e:   # damaged data pages behind a readable footer
        _fail(cat_path, f"cannot be read ({e})")
    for c in ("ra", "dec", "umap_x", "umap_y"):
        bad = int(core[c].isna().sum())
        if bad:
            _fail(cat_path, f"column '{c}' has {bad} NaN values (first at row {int(np.flatnonzero(core[c].isna())[0])})")
    if (core["dec"].abs() > 90).any() or ((core["ra"] < 0) | (core["ra"] >= 360)).any():
        _fail(cat_path, "has RA outside [0, 360) or Dec outside [-90, 90] degrees")
    dup = core["object_id"].duplicated()
    if dup.any():
        _fail(cat_path, f"has {int(dup.sum())} duplicate object_id values (e.g. {core['object_id'][dup].iloc[0]!r})")
    bad_split = ~core["split"].isin(SPLITS)
    if bad_split.any():
        _fail(cat_path, f"column 'split' has values other than {SPLITS}")

    emb_path = path / "embeddings.npy"
    try:
        emb = np.load(emb_path, mmap_mode="r")
    except Exception as e:
        _fail(emb_path, f"cannot be read ({e})")
    if emb.shape != (n, d):
        _fail(emb_path, f"has shape {emb.shape} but the catalogue has {n} rows and manifest says dim {d}")
    if str(emb.dtype) != man["embedding_dtype"]:
        _fail(emb_path, f"has dtype {emb.dtype} but manifest.json says {man['embedding_dtype']}")
    rows = np.linspace(0, n - 1, min(n, check_norms_rows)).astype(np.int64) if n else np.zeros(0, np.int64)
    sample = np.asarray(emb[rows], dtype=np.float32)
    if not np.isfinite(sample).all():
        _fail(emb_path, "contains NaN or infinite values")
    norms = np.linalg.norm(sample, axis=1)
    off = np.abs(norms - 1) > NORM_TOLERANCE
    if off.any():
        _fail(emb_path, f"is not L2-normalised: {int(off.sum())} checked rows have |v| != 1 (e.g. row {int(rows[off][0])}, |v| = {norms[off][0]:.3f})")

    _check_thumbnails(path, man, n, hash_thumbnails)

    import faiss

    idx_path = path / "index.faiss"
    try:
        idx = faiss.read_index(str(idx_path))
    except Exception as e:
        _fail(idx_path, f"cannot be read by faiss ({str(e).splitlines()[0][:200]})")
    if idx.ntotal != n or idx.d != d:
        _fail(idx_path, f"holds {idx.ntotal} vectors of dim {idx.d}, expected {n} of dim {d}")

    model = man["model"]
    ckpt = model.get("checkpoint")
    if ckpt:
        ckpt_path = path / str(ckpt)
        if not ckpt_path.resolve().is_relative_to(path.resolve()):
            _fail(man_path, f"model.checkpoint {ckpt!r} points outside the bundle")
        if not ckpt_path.is_file():
            _fail(ckpt_path, "the encoder checkpoint named in manifest.json is missing")
        if model.get("sha256") and sha256_of(ckpt_path) != model["sha256"]:
            _fail(ckpt_path, "does not match the sha256 recorded in manifest.json (modified or corrupt checkpoint)")
    for col, spec in man["colour_by"].items():
        if not isinstance(spec, dict):
            _fail(man_path, f"colour_by['{col}'] must be an object with title and kind, not {type(spec).__name__}")
        if col not in cols and col != "density":
            _fail(man_path, f"colour_by names column '{col}' that catalog.parquet does not have")
        if spec.get("kind") not in COLOUR_KINDS:
            _fail(man_path, f"colour_by['{col}'] has kind {spec.get('kind')!r}; expected one of {COLOUR_KINDS}")
    _check_report(path, man)
    return man, idx


def _check_report(path: Path, man: dict) -> None:
    """report.json is optional (bundles from before it existed), but one that is named or present must parse."""
    from precompute.report import read_report

    name = man.get("report")
    if name is not None and name != "report.json":
        _fail(path / "manifest.json", f"'report' must be \"report.json\", not {name!r}")
    try:
        read_report(path / "report.json")
    except ValueError as e:
        raise BundleError(f"{e}; rebuild it with `python -m precompute build ...` (the report stage)") from e
    if name is not None and not (path / "report.json").is_file():
        _fail(path / "report.json", "is named in manifest.json but missing")


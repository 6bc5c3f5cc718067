"""Writing a bundle: into a temporary sibling folder, renamed into place at the end, so a reader never sees a
half-written one (the layout is in ``core.contract``)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from core.arrays import copy_to_npy, merge_embedding_shards
from core.contract import FORMAT_VERSION, REQUIRED_COLUMNS, SPLITS, BundleError, sha256_of, write_catalogue
from core.index import build_index


def pack_thumbnails(thumbs: Iterable[bytes]) -> tuple[bytes, np.ndarray]:
    """Concatenate encoded images; return the blob and its (N + 1,) offsets."""
    thumbs = list(thumbs)
    offsets = np.zeros(len(thumbs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) for t in thumbs])
    return b"".join(thumbs), offsets


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
    checkpoint hash. ``index`` is a faiss index over ``embeddings`` (or the path of one written already); when None one is built by size.
    ``extra_dirs`` maps a bundle sub-folder name (e.g. "projection") to a folder to copy in, ``extra_files`` a
    file name (e.g. "report.json") to a file.
    ``embeddings`` is an array (a memory map is copied block by block, never loaded whole), a ``.npy`` path, or a
    folder of embedding shards (``precompute.shards``), which are merged straight into the bundle.
    """
    out, n = Path(out), len(catalog)
    shard_dir, emb = _embeddings_source(embeddings, n)
    missing = [c for c in REQUIRED_COLUMNS if c not in catalog.columns]
    if missing:
        raise BundleError(f"catalogue is missing required columns {missing}")
    blob, offsets = thumbnails if isinstance(thumbnails, tuple) else pack_thumbnails(thumbnails)
    if len(offsets) != n + 1:
        raise BundleError(f"{len(offsets) - 1} thumbnails for {n} catalogue rows")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        write_catalogue(catalog, tmp / "catalog.parquet")
        if shard_dir is not None:
            merge_embedding_shards(shard_dir, tmp / "embeddings.npy", n)
        else:
            copy_to_npy(emb, tmp / "embeddings.npy", None if emb.dtype in (np.float16, np.float32) else np.float32)
        emb = np.load(tmp / "embeddings.npy", mmap_mode="r")
        (tmp / "thumbnails").mkdir()
        (tmp / "thumbnails" / "blob.bin").write_bytes(blob)
        np.save(tmp / "thumbnails" / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        import faiss

        if isinstance(index, (str, Path)):     # an index file already written: copied, not loaded
            shutil.copyfile(index, tmp / "index.faiss")
        else:
            faiss.write_index(index if index is not None else build_index(emb), str(tmp / "index.faiss"))
        model = _copy_in(tmp, dict(manifest.get("model", {})), encoder_dir, extra_dirs, extra_files)
        man = completed_manifest(manifest, model, emb, thumbnail_format, sha256_of(tmp / "thumbnails" / "blob.bin"))
        man["files"] = file_inventory(tmp)
        (tmp / "manifest.json").write_text(json.dumps(man, indent=2, default=_json_default))
        check_written(tmp, out)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _copy_in(tmp: Path, model: dict, encoder_dir, extra_dirs: dict | None, extra_files: dict | None) -> dict:
    """Copy the encoder folder and the extras into the bundle; the manifest's model entry with the checkpoint's
    name and hash."""
    if encoder_dir is not None:
        shutil.copytree(encoder_dir, tmp / "encoder")
        model["checkpoint"] = model.get("checkpoint", "encoder/weights.pt")
        model["sha256"] = sha256_of(tmp / model["checkpoint"])
    for name, src in (extra_dirs or {}).items():
        shutil.copytree(src, tmp / name)
    for name, src in (extra_files or {}).items():
        shutil.copyfile(src, tmp / name)
    return model


def _embeddings_source(embeddings, n: int) -> tuple[Path | None, np.ndarray | None]:
    """(folder of embedding shards, None) or (None, an (n, D) array: a memory map stays one)."""
    if isinstance(embeddings, (str, Path)) and Path(embeddings).is_dir():
        return Path(embeddings), None
    if isinstance(embeddings, (str, Path)) and not Path(embeddings).is_file():
        raise BundleError(f"{embeddings}: no embeddings .npy or shard folder here; run `python -m precompute "
                          f"embed ...` to write them")
    emb = np.load(embeddings, mmap_mode="r") if isinstance(embeddings, (str, Path)) else embeddings
    emb = emb if isinstance(emb, np.ndarray) else np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise BundleError(f"embeddings have shape {emb.shape} but the catalogue has {n} rows")
    return None, emb


def completed_manifest(manifest: dict, model: dict, emb: np.ndarray, thumbnail_format: str, blob_sha256: str) -> dict:
    """The caller's survey-specific fields plus what the writer knows: format, counts, dtype, hashes, provenance."""
    man = dict(manifest)
    man.update(
        format_version=FORMAT_VERSION,
        n_objects=int(emb.shape[0]),
        embedding_dim=int(emb.shape[1]),
        embedding_dtype=str(emb.dtype),
        model=model,
        thumbnails={"format": thumbnail_format, "blob": "thumbnails/blob.bin", "offsets": "thumbnails/offsets.npy",
                    "sha256": blob_sha256},
        created=creation_time(),
        software=software_versions(),
    )
    for key in ("colour_by", "source", "umap"):
        man.setdefault(key, {})
    return man


def file_inventory(folder: Path) -> dict:
    """{relative path: {"bytes", "sha256"}} of every file in a bundle folder but the manifest itself, so that
    ``precompute validate`` can account for every byte."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}


def creation_time() -> str:
    """Now, in UTC; ``$SOURCE_DATE_EPOCH`` (the reproducible-builds convention) fixes it, so that a test's fixture
    bundle has the same bytes on every run."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch and epoch.isdigit()
            else _dt.datetime.now(_dt.timezone.utc))
    return when.isoformat(timespec="seconds")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def check_written(tmp: Path, out: Path) -> None:
    """The whole validation on the finished folder before it takes ``out``'s place: a writer never says "ok" for a
    bundle that ``precompute validate`` would refuse (an existing bundle at ``out`` stays as it was)."""
    from core.validate import validate_bundle

    try:   # the large files were hashed for the inventory a moment ago: sized and checked for structure here
        validate_bundle(tmp, hash_large_files=False)
    except BundleError as e:
        raise BundleError(f"{out} was not written: the new bundle fails validation ({e})") from e


def replace_dir(tmp: Path, out: Path) -> None:
    """Move tmp to out; an existing out is swapped aside first and removed only after the rename."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

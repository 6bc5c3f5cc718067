"""Embedding arrays on disk, part of the bundle contract: the shard files that embedding writes and the streaming
merge and copies that turn them (or any array, memory-mapped or not) into one memory-mappable ``embeddings.npy``.

A shard is ``rows-<start>-<stop>.npy`` (float16, L2-normalised, rows ``start:stop`` of the full matrix), written
to a temporary name and renamed, so a file with a shard's name is complete and a killed run resumes at shard
granularity. Shards are cut on a fixed grid of ``rows_per_shard`` rows and ranks take contiguous runs of whole
shards, so the files do not depend on the number of processes: a run resumed with a different world size reuses
them (``precompute.shards`` runs the ranks under torchrun).
"""
from __future__ import annotations

import mmap
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.contract import NORM_TOLERANCE, BundleError, l2_normalise

ROWS_PER_SHARD = 4096
SHARD_NAME = re.compile(r"^rows-(\d+)-(\d+)\.npy$")
BLOCK_BYTES = 16 << 20  # bytes of rows copied per step in the streaming copies: bounds their memory
RERUN = "delete it and rerun `python -m precompute embed ...` (finished shards are kept and skipped)"


# ----------------------------------------------------------------------------------------------- row ranges
def release_pages(array) -> None:
    """Drop a read-only memory map's pages from this process's resident set (they stay in the page cache, so a
    reread costs nothing): a pass over a file of GBs otherwise counts all of it against the process's memory."""
    mapped = getattr(array, "_mmap", None)
    if isinstance(mapped, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mapped.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass     # a closed map, or a platform without it: memory is only reported higher


def shard_ranges(n_rows: int, rows_per_shard: int = ROWS_PER_SHARD) -> list[tuple[int, int]]:
    """The fixed grid of shards: [(0, R), (R, 2R), ..., (kR, n_rows)]."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    return [(s, min(s + rows_per_shard, n_rows)) for s in range(0, n_rows, rows_per_shard)]


def rank_rows(n_rows: int, rank: int, world_size: int, rows_per_shard: int = 1) -> tuple[int, int]:
    """The contiguous rows ``(start, stop)`` of ``rank`` among ``world_size``: whole shards, as even as possible
    (ranks beyond the number of shards get an empty range)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    n_shards = -(-n_rows // rows_per_shard)
    first, last = (n_shards * rank) // world_size, (n_shards * (rank + 1)) // world_size
    return min(first * rows_per_shard, n_rows), min(last * rows_per_shard, n_rows)


def shard_name(start: int, stop: int) -> str:
    return f"rows-{start:012d}-{stop:012d}.npy"


# ----------------------------------------------------------------------------------------------- writing
def _is_complete_shard(path: Path, n_rows: int) -> bool:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return arr.ndim == 2 and arr.shape[0] == n_rows and arr.dtype == np.float16


def _save_atomically(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_embedding_shards(embedder: Callable[[np.ndarray], np.ndarray], images, out_dir: str | Path,
                           rank: int = 0, world_size: int = 1, rows_per_shard: int = ROWS_PER_SHARD,
                           progress: bool = False) -> list[Path]:
    """Embed this rank's rows of ``images`` (N, ...) one shard at a time into ``out_dir``; return its shard paths.

    ``embedder(images[a:b])`` -> (b - a, D) vectors. A shard already on disk and complete is skipped (no embedder
    call), so rerunning after a kill resumes. Only one shard's images and vectors are in memory at a time.
    Keeping ``rows_per_shard`` a multiple of the embedder's batch size keeps the batches, and so the vectors
    bit for bit, the same whatever the number of ranks."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, stop = rank_rows(len(images), rank, world_size, rows_per_shard)
    mine = [(a, b) for a, b in shard_ranges(len(images), rows_per_shard) if start <= a < stop]
    if progress:
        from tqdm import tqdm
        mine = tqdm(mine, desc=f"embed (rank {rank})" if world_size > 1 else "embed", unit="shard")
    return [write_shard(embedder, images, out_dir, a, b) for a, b in mine]


def shard_is_done(out_dir: str | Path, start: int, stop: int) -> bool:
    """Whether the shard of rows ``start:stop`` is on disk and complete (a killed run's shards are kept)."""
    return _is_complete_shard(Path(out_dir) / shard_name(start, stop), stop - start)


def write_shard(embedder: Callable[[np.ndarray], np.ndarray], images, out_dir: str | Path, start: int,
                stop: int) -> Path:
    """Embed ``images[start:stop]`` into its shard file (written atomically), unless it is already complete."""
    path = Path(out_dir) / shard_name(start, stop)
    if not _is_complete_shard(path, stop - start):
        path.parent.mkdir(parents=True, exist_ok=True)
        vectors = np.asarray(embedder(images[start:stop]))
        if vectors.ndim != 2 or len(vectors) != stop - start:
            raise ValueError(f"the embedder returned shape {vectors.shape} for rows {start}:{stop} of the images")
        _save_atomically(path, l2_normalise(vectors, dtype=np.float16))
    return path


# ----------------------------------------------------------------------------------------------- merging
def _shard_table(shard_dir: Path) -> list[tuple[int, int, Path]]:
    found = []
    for p in shard_dir.iterdir():
        m = SHARD_NAME.match(p.name)
        if m:
            found.append((int(m[1]), int(m[2]), p))
    return sorted(found)


def check_tiling(shard_dir: str | Path, n_rows: int) -> list[tuple[int, int, Path]]:
    """The shards of ``shard_dir`` as (start, stop, path), checked to tile rows 0..n_rows exactly once."""
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        raise BundleError(f"{shard_dir}: no shard folder here; run `python -m precompute embed ...` to write it")
    table = _shard_table(shard_dir)
    if not table and n_rows:
        raise BundleError(f"{shard_dir}: holds no embedding shards (rows-<start>-<stop>.npy); "
                          f"run `python -m precompute embed ...` to write them")
    expected = 0
    for i, (a, b, path) in enumerate(table):
        if b <= a:
            raise BundleError(f"{path}: names an empty or reversed row range {a}:{b}; {RERUN}")
        if a > expected:
            raise BundleError(f"{path}: starts at row {a} but the shards before it end at row {expected} "
                              f"(rows {expected}:{a} have no shard); rerun `python -m precompute embed ...` "
                              f"to embed the missing rows")
        if a < expected:
            prev = table[i - 1][2]
            raise BundleError(f"{path}: rows {a}:{b} overlap {prev.name} (rows {table[i - 1][0]}:{expected}); "
                              f"shards from two different runs are mixed in {shard_dir}: delete the folder and "
                              f"rerun `python -m precompute embed ...`")
        expected = b
    if expected != n_rows:
        last = table[-1][2] if table else shard_dir
        what = (f"ends at row {expected} but there are {n_rows} rows (rows {expected}:{n_rows} have no shard); "
                f"rerun `python -m precompute embed ...` to embed the missing rows") if expected < n_rows else \
               (f"ends at row {expected} but there are only {n_rows} rows (shards of another input?); {RERUN}")
        raise BundleError(f"{last}: {what}")
    return table


def _open_shard(path: Path, rows: int, dim: int | None) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as e:  # truncated, not a .npy, unreadable
        raise BundleError(f"{path}: cannot be read as an embedding shard ({e}); {RERUN}") from None
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise BundleError(f"{path}: has shape {arr.shape} but its name says {rows} rows; {RERUN}")
    if dim is not None and arr.shape[1] != dim:
        raise BundleError(f"{path}: has dimension {arr.shape[1]} but the other shards have {dim} "
                          f"(embedded by a different encoder?); {RERUN}")
    if arr.dtype not in (np.float16, np.float32):
        raise BundleError(f"{path}: has dtype {arr.dtype}, expected float16; {RERUN}")
    return arr


def _squared_norms(rows: np.ndarray, step: int = 256) -> np.ndarray:
    """Row sums of squares in float32, a few rows at a time (einsum casts its float16 inputs whole)."""
    out = np.empty(len(rows), dtype=np.float32)
    for s in range(0, len(rows), step):
        out[s : s + step] = np.einsum("ij,ij->i", rows[s : s + step], rows[s : s + step], dtype=np.float32)
    return out


def _unit_rows(block: np.ndarray, path: Path, first_row: int) -> np.ndarray:
    """float16 rows of unit length: rows already within NORM_TOLERANCE are kept bit for bit, others renormalised."""
    out = np.array(block, dtype=np.float16)  # a copy: the shard is mapped read-only
    squared = _squared_norms(out)  # NaN/inf in a row make its sum non-finite
    if not np.isfinite(squared).all():
        bad = first_row + int(np.flatnonzero(~np.isfinite(squared))[0])
        raise BundleError(f"{path}: row {bad} has NaN or infinite values; {RERUN}")
    if (squared < 1e-12).any():
        bad = first_row + int(np.flatnonzero(squared < 1e-12)[0])
        raise BundleError(f"{path}: row {bad} is all zeros and cannot be normalised; {RERUN}")
    off = np.abs(np.sqrt(squared) - 1) > NORM_TOLERANCE
    if off.any():
        out[off] = l2_normalise(block[off], dtype=np.float16)
    return out


def _rows_per_block(dim: int, itemsize: int = 2) -> int:
    return max(1, BLOCK_BYTES // max(1, dim * itemsize))


def _create_npy(path: Path, shape: tuple[int, int], dtype) -> int:
    """An empty .npy of ``shape`` (sparse until written); returns the byte offset of its data."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    offset = mm.offset
    del mm
    return offset


def merge_embedding_shards(shard_dir: str | Path, out_path: str | Path, n_rows: int) -> Path:
    """Stream the shards of ``shard_dir`` into one (n_rows, D) float16 ``.npy`` at ``out_path`` and return it.

    The shards must tile rows 0..n_rows exactly; a gap, an overlap, an unreadable or truncated shard, a different
    dimension or a non-finite row raises one BundleError naming the shard file. Rows are checked to be unit length
    (renormalised when not). Memory stays at one block (16 MB) whatever the matrix size: blocks are
    written with plain file writes rather than through a mapping of the output, whose dirty pages would otherwise
    count against this process until the kernel writes them back."""
    out_path = Path(out_path)
    table = check_tiling(shard_dir, n_rows)
    dim = _open_shard(table[0][2], table[0][1] - table[0][0], None).shape[1] if table else 0
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        offset = _create_npy(tmp, (n_rows, dim), np.float16)
        row_bytes = dim * np.dtype(np.float16).itemsize
        step = _rows_per_block(dim)
        with open(tmp, "r+b") as f:
            for a, b, path in table:
                shard = _open_shard(path, b - a, dim)
                f.seek(offset + a * row_bytes)
                f.writelines(_unit_rows(shard[s : s + step], path, a + s) for s in range(0, b - a, step))
                del shard
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def _file_backed(array: np.ndarray) -> bool:
    """A whole memory-mapped .npy as ``np.load(mmap_mode=...)`` returns it (not a slice or view of one)."""
    return (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename is not None
            and array.flags.c_contiguous)


def _blocks(array: np.ndarray, step: int):
    """``array`` in blocks of ``step`` rows. A file-backed memory map is read with plain file reads, so the pages
    already copied do not stay mapped (and counted) in this process the way the caller's mapping would keep them."""
    if not _file_backed(array):
        for s in range(0, len(array), step):
            yield array[s : s + step]
        return
    buffer = np.empty((min(step, len(array)),) + array.shape[1:], dtype=array.dtype)  # reused: one block alive
    with open(array.filename, "rb") as f:
        f.seek(array.offset)
        for s in range(0, len(array), step):
            block = buffer[: min(step, len(array) - s)]
            if f.readinto(block) != block.nbytes:
                raise BundleError(f"{array.filename}: ends before row {s + len(block)} (truncated); rewrite it")
            yield block


def copy_to_npy(array: np.ndarray, out_path: str | Path, dtype=None) -> Path:
    """Write ``array`` (an in-memory or memory-mapped (N, D) matrix) to ``out_path`` as .npy block by block, so a
    memory-mapped input is never read into memory whole."""
    out_path = Path(out_path)
    dtype = np.dtype(dtype or array.dtype)
    offset = _create_npy(out_path, tuple(array.shape), dtype)
    step = _rows_per_block(int(np.prod(array.shape[1:], dtype=np.int64)) or 1, max(dtype.itemsize,
                                                                                   array.dtype.itemsize))
    with open(out_path, "r+b") as f:
        f.seek(offset)
        f.writelines(np.ascontiguousarray(block, dtype=dtype) for block in _blocks(array, step))
    return out_path



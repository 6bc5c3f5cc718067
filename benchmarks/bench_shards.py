"""BENCHMARK: merging sharded embeddings into one .npy (core.arrays) vs the old concatenate-in-memory path.

    python -m benchmarks.bench_shards                       # 1 M x 2048 float16 merge (4 GB), old path at 200 k
    python -m benchmarks.bench_shards --n 200000 --old-n 50000 --tmp /tmp/shards-bench

Shards are synthetic unit vectors (no encoder runs). Each measurement runs in a fresh child process, so its peak
RSS (``VmHWM``) is its own; ``interpreter_with_imports_rss_mb`` is that of a child that only imports. Measured:

- ``merge``: ``merge_embedding_shards`` (tiling check, per-row norm check, streamed write) of all shards;
- ``copy``: ``copy_to_npy`` of the merged memory map (what ``write_bundle`` does with a memory-mapped input);
- ``old``: what the embed stage and the bundle writer did before: every chunk held in a list, ``np.concatenate``,
  ``l2_normalise``, ``np.save``, then ``np.load`` in full and ``np.save`` again (run at ``--old-n`` rows, since at
  1 M it needs ~5x the matrix in RAM).

Disk: shards + merged file (2 x n x dim x 2 bytes, 8 GB at the defaults; the shards are deleted before the copy).
Everything is deleted at the end. Shards are read while still in the page cache (just written): the figures are
for a warm cache, i.e. memory bandwidth and write-back, not cold disk reads. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.quick import add_quick, parse_quick

ROOT = Path(__file__).parents[1]


def write_synthetic_shards(folder: Path, n: int, dim: int, rows_per_shard: int, seed: int = 0) -> None:
    """Unit-vector float16 shards on the rows_per_shard grid; one random pool, rolled per shard (fast to make)."""
    from core.contract import l2_normalise
    from core.arrays import shard_name, shard_ranges

    folder.mkdir(parents=True, exist_ok=True)
    pool = l2_normalise(np.random.default_rng(seed).normal(size=(rows_per_shard, dim)), np.float16)
    for i, (a, b) in enumerate(shard_ranges(n, rows_per_shard)):
        np.save(folder / shard_name(a, b), np.roll(pool, i, axis=0)[: b - a])


def child(task: str, folder: Path, out: Path, n: int) -> dict:
    from core.contract import l2_normalise
    from core.arrays import copy_to_npy, merge_embedding_shards

    t0 = time.perf_counter()
    if task == "none":
        pass
    elif task == "merge":
        merge_embedding_shards(folder, out, n)
    elif task == "copy":
        copy_to_npy(np.load(folder, mmap_mode="r"), out)
    elif task == "old":
        parts = [np.load(p) for p in sorted(folder.glob("rows-*.npy"))]  # the embed stage's list of chunks
        np.save(out, l2_normalise(np.concatenate(parts), dtype=np.float16))
        del parts
        emb = np.load(out)  # stages.write's full load; write_bundle's np.asarray + np.save
        np.save(out.with_name("old-bundle.npy"), np.asarray(emb))
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> int:
    """This process's peak RSS. /proc's VmHWM, because ru_maxrss carries the parent's peak over fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure(task: str, folder: Path, out: Path, n: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_shards", "--child", task, str(folder), str(out),
                           str(n)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{task} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--rows-per-shard", type=int, default=4096)
    p.add_argument("--old-n", type=int, default=200_000, help="rows for the old in-memory path (0: skip)")
    p.add_argument("--tmp", default=None, help="scratch folder (default: a new one under /tmp)")
    p.add_argument("--child", nargs=4, metavar=("TASK", "IN", "OUT", "N"), help=argparse.SUPPRESS)
    add_quick(p, n=5_000, dim=32, rows_per_shard=1_000, old_n=2_000)
    args = parse_quick(p, argv)
    if args.child:
        task, folder, out, n = args.child
        print(json.dumps(child(task, Path(folder), Path(out), int(n))))
        return

    scratch = Path(tempfile.mkdtemp(prefix="bench-shards-", dir=args.tmp))
    try:
        row_mb = args.dim * 2 / 2**20
        result = {"n": args.n, "dim": args.dim, "rows_per_shard": args.rows_per_shard,
                  "matrix_mb": round(args.n * row_mb)}
        result["interpreter_with_imports_rss_mb"] = measure("none", scratch, scratch, 0)["peak_rss_mb"]
        t0 = time.perf_counter()
        write_synthetic_shards(scratch / "shards", args.n, args.dim, args.rows_per_shard)
        result["write_shards_s"] = round(time.perf_counter() - t0, 1)
        merge = measure("merge", scratch / "shards", scratch / "merged.npy", args.n)
        merge["mb_per_s"] = round(result["matrix_mb"] / max(merge["seconds"], 1e-3))
        result["merge"] = merge
        shutil.rmtree(scratch / "shards")
        copy = measure("copy", scratch / "merged.npy", scratch / "copy.npy", args.n)
        copy["mb_per_s"] = round(result["matrix_mb"] / max(copy["seconds"], 1e-3))
        result["copy_memmap"] = copy
        for f in ("merged.npy", "copy.npy"):
            (scratch / f).unlink()
        if args.old_n:
            write_synthetic_shards(scratch / "old-shards", args.old_n, args.dim, args.rows_per_shard)
            old = measure("old", scratch / "old-shards", scratch / "old.npy", args.old_n)
            old["n"] = args.old_n
            old["matrix_mb"] = round(args.old_n * row_mb)
            base = result["interpreter_with_imports_rss_mb"]
            old["rss_above_imports_per_matrix"] = round((old["peak_rss_mb"] - base) / max(old["matrix_mb"], 1), 2)
            result["old_in_memory"] = old
        print(json.dumps(result))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

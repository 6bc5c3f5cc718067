"""Time and peak memory of `python -m precompute from-embeddings` on a large Parquet of vectors.

    .venv/bin/python -m benchmarks.bench_from_embeddings --n 1000000 --dim 512 --dir /tmp/fe1m [--full]

Writes N x D float32 vectors (clusters, as a list column, 50 k rows per row group) and a catalogue with the same ids
in shuffled order, each in a child process; then runs the command in a child process and reports its wall time
and peak RSS (getrusage of the children: run it twice, the second run's figure is the command's alone, since the
inputs are then already on disk). Without ``--full`` it stops after the import stage (read, match,
normalise into the float16 memory map); ``--full`` goes on through UMAP, the index and the report to a bundle.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.quick import add_quick, parse_quick, scratch_dir

ROW_GROUP = 50_000


def write_inputs(n: int, dim: int, folder: Path, seed: int = 0) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim)).astype(np.float32) * 3
    schema = pa.schema([("object_id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(folder / "emb.parquet", schema) as writer:
        for start in range(0, n, ROW_GROUP):
            m = min(ROW_GROUP, n - start)
            vec = centres[rng.integers(0, 64, m)] + rng.normal(size=(m, dim)).astype(np.float32)
            ids = pa.array([f"g{i:08d}" for i in range(start, start + m)])
            values = pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dim)
            writer.write_table(pa.Table.from_arrays([ids, values], schema=schema))
    order = rng.permutation(n)
    pd.DataFrame({"object_id": [f"g{i:08d}" for i in order], "ra": rng.uniform(0, 360, n),
                  "dec": rng.uniform(-30, 60, n), "mag": rng.normal(17, 1, n)}).to_parquet(folder / "cat.parquet")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fe1m"))
    ap.add_argument("--full", action="store_true")
    add_quick(ap, n=2_000, dim=16, dir=scratch_dir)
    a = parse_quick(ap, argv)
    a.dir.mkdir(parents=True, exist_ok=True)
    if not (a.dir / "emb.parquet").exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"from benchmarks.bench_from_embeddings import write_inputs; "
                        f"from pathlib import Path; write_inputs({a.n}, {a.dim}, Path({str(a.dir)!r}))"], check=True)
        print(f"inputs written in {time.perf_counter() - t0:.0f} s", flush=True)
    shutil.rmtree(a.dir / "work", ignore_errors=True)   # measure the import itself, not a cache hit
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = [sys.executable, "-m", "precompute", "from-embeddings", "--survey", "sdss", "--embeddings",
           str(a.dir / "emb.parquet"), "--catalog", str(a.dir / "cat.parquet"), "--out", str(a.dir / "bundle"),
           "--work", str(a.dir / "work"), "--no-progress"] + ([] if a.full else ["--stop-after", "import"])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"n": a.n, "dim": a.dim, "stage": "bundle" if a.full else "import", "wall_s": round(wall, 1),
                      "peak_rss_mb": round(peak / 1024), "peak_rss_before_mb": round(before / 1024),
                      "input_mb": round((a.dir / "emb.parquet").stat().st_size / 2**20)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""BENCHMARK: simulation throughput (objects/s) of the SDSS-like and FIRST-like surveys.

    python -m benchmarks.bench_simulate --n-sdss 2000 --n-first 1000 --workers 2

Times the whole command path (parameters, rendering, votes, writing HDF5/parquet/CSV or compressed FITS) into a
temporary folder, after a small warm-up run that pays for imports and GalSim's first Sérsic tables.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from precompute.simulators.sim_common import default_workers
from precompute.simulators.simulate import simulate_first, simulate_sdss
from benchmarks.quick import add_quick, parse_quick


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def throughput(simulate, n: int, workers: int, seed: int = 0) -> tuple[float, float]:
    """(objects per wall-clock second, CPU milliseconds per object summed over all processes)."""
    with tempfile.TemporaryDirectory() as tmp:
        simulate(20, Path(tmp) / "warm", seed=seed + 1, progress=False, workers=workers)
        start, cpu = time.perf_counter(), _cpu_seconds()
        simulate(n, Path(tmp) / "run", seed=seed, progress=False, workers=workers)
        return n / (time.perf_counter() - start), (_cpu_seconds() - cpu) / n * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-sdss", type=int, default=2000)
    ap.add_argument("--n-first", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=default_workers())
    add_quick(ap, n_sdss=20, n_first=10, workers=1)
    args = parse_quick(ap, argv)
    print(f"cores: {os.cpu_count()}, workers: {args.workers}, load average: {os.getloadavg()[0]:.1f}")
    for name, simulate, n, what in (("sdss", simulate_sdss, args.n_sdss, "5 x 107 x 107, HDF5 + GZ2 votes"),
                                    ("first", simulate_first, args.n_first, "150 x 150, RICE FITS per source")):
        if n:
            rate, cpu_ms = throughput(simulate, n, args.workers)
            print(f"{name:5s} ({what}): {n} objects, {rate:.0f} objects/s wall, {cpu_ms:.1f} CPU ms/object "
                  f"(=> {1e3 * args.workers / cpu_ms:.0f} objects/s on {args.workers} idle cores)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()

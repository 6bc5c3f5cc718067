"""`python -m precompute simulate --survey NAME --n N --out DIR [--seed S] [--workers W]`.

Writes a simulated survey whose truth is known, in the layout of the real data release it imitates (a survey has a
simulator when ``sim_<survey>.py`` here defines ``simulate_<survey>``):
- sdss: ``images.h5`` (Hayat et al. 2021 keys), ``gz2.csv`` (Hart et al. 2016 columns), ``truth.parquet``;
- first: ``catalog.csv`` + ``cutouts/*.fits.fz`` (the MiraBest/FIRST layout of shared/data/first_mirabest).

The same (survey, n, seed) gives identical files whatever the number of workers.
"""
from __future__ import annotations

from pathlib import Path

from precompute.simulators.sim_common import default_workers


def simulators() -> dict:
    """survey name -> its simulator: ``simulate_<name>(n, out, seed, progress, workers)`` of the module
    ``precompute/simulators/sim_<name>.py``, for every survey that has one."""
    import importlib
    import pkgutil

    from core.surveys.base import known_surveys

    here = Path(__file__).parent
    modules = {m.name for m in pkgutil.iter_modules([str(here)])}
    return {name: getattr(importlib.import_module(f"precompute.simulators.sim_{name}"), f"simulate_{name}")
            for name in known_surveys() if f"sim_{name}" in modules}


def simulate_sdss(n: int, out, seed: int = 0, progress: bool = True, workers: int | None = None) -> Path:
    """Simulated SDSS ugriz survey of ``n`` objects in ``out``; returns ``out`` as a Path."""
    return simulators()["sdss"](n, out, seed=seed, progress=progress, workers=workers)


def simulate_first(n: int, out, seed: int = 0, progress: bool = True, workers: int | None = None) -> Path:
    """Simulated VLA FIRST survey of ``n`` radio sources in ``out``; returns ``out`` as a Path."""
    return simulators()["first"](n, out, seed=seed, progress=progress, workers=workers)


def add_arguments(parser, command=None):
    parser.add_argument("--survey", required=True, choices=sorted(simulators()), help="which survey to imitate")
    parser.add_argument("--n", type=int, required=True, help="number of objects")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help=f"processes (default min(2, cores) = {default_workers()})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.n < 1:
        raise SystemExit(f"simulate: --n must be at least 1 (got {args.n})")
    out = simulators()[args.survey](args.n, args.out, seed=args.seed, progress=not args.no_progress,
                                  workers=args.workers)
    print(f"wrote a simulated {args.survey} survey of {args.n} objects to {out}")
    return 0

"""``--quick``: every benchmark script's smoke-test size, so that the suite runs each script and none rots unnoticed.

A script declares its tiny sizes with ``add_quick(parser, n=2000, ...)`` and reads its arguments through
``parse_quick(parser, argv)``; ``--quick`` then overrides those options (figures from it mean nothing; the full
runs are in BENCHMARKS.md). ``quick_bundle()`` writes a small fixture bundle in a temporary folder for scripts
that measure a bundle.
"""
from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path


def add_quick(parser: argparse.ArgumentParser, **tiny) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run that only checks the script still works (tests/test_benchmarks_quick.py); "
                             f"sets {', '.join(f'{k}={v}' for k, v in tiny.items()) or 'nothing else'}")
    parser.set_defaults(_quick_sizes=tiny)


def parse_quick(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    tiny = vars(args).pop("_quick_sizes", {})
    if args.quick:
        for name, value in tiny.items():
            setattr(args, name, value() if callable(value) else value)
    return args


def scratch_dir(prefix: str = "bench-quick-") -> Path:
    """A temporary folder removed when the process ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def quick_bundle(n: int = 2_000, dim: int = 32) -> Path:
    """A small fixture bundle in a temporary folder."""
    from benchmarks.fixture_bundle import make_fixture_bundle

    return make_fixture_bundle(scratch_dir() / "bundle", n=n, dim=dim, n_clusters=8)

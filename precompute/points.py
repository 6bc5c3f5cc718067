"""`python -m precompute points --bundle DIR`: add ``points/`` (the map points as partitioned Parquet, for the
explorer's Dask map engine; the format and when to use it: ``core.points``) to a bundle."""
from __future__ import annotations

from core.bundle import Bundle
from core.points import read_meta, write_points


def add_arguments(parser, command: str = "points") -> None:
    parser.add_argument("--bundle", required=True, help="the bundle folder to add points/ to")
    parser.add_argument("--rows-per-partition", type=int, default=1_000_000,
                        help="rows per Parquet part file (default 1,000,000: ~12-30 MB each; one per Dask task)")


def run(args) -> int:
    bundle = Bundle.open(args.bundle, validate=True)
    folder = write_points(bundle.path, rows_per_partition=args.rows_per_partition)
    meta = read_meta(folder)
    parts = sorted(folder.glob("part-*.parquet"))
    print(f"wrote {folder}: {meta['n_rows']:,} rows in {len(parts)} partitions, colour columns "
          f"{sorted(meta['columns'])}")
    return 0

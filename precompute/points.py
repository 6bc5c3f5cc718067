"""`python -m precompute points --bundle DIR`: add ``points/`` (the map points as partitioned Parquet, for the
explorer's Dask map engine; the format and when to use it: ``core.points``) to a bundle."""
from __future__ import annotations

from core.bundle import Bundle
from core.points import read_meta, write_points


def add_arguments(parser, command: str = "points") -> None:
    parser.add_argument("--bundle", required=True, help="the bundle folder to add points/ to")
    parser.add_argument("--rows-per-partition", type=int, default=1_000_000,
                        help="rows per Parquet part file (default 1,000,000: ~12-30 MB each; one per Dask task)")
    parser.add_argument("--engine", choices=("local", "dask"), default="local",
                        help="dask: write and hash the part files on a dask.distributed cluster (--dask-scheduler "
                             "or $DASK_SCHEDULER_ADDRESS, else a LocalCluster); its workers must see the bundle")
    parser.add_argument("--dask-scheduler", metavar="ADDRESS", help="a running Dask scheduler (implies --engine dask)")


def run(args) -> int:
    bundle = Bundle.open(args.bundle, validate=True)
    if args.engine == "dask" or args.dask_scheduler:
        from core.cluster import dask_client, describe

        with dask_client(args.dask_scheduler) as client:
            print(f"writing points/ on {describe(client)}", flush=True)
            folder = write_points(bundle.path, rows_per_partition=args.rows_per_partition, client=client)
    else:
        folder = write_points(bundle.path, rows_per_partition=args.rows_per_partition)
    meta = read_meta(folder)
    parts = sorted(folder.glob("part-*.parquet"))
    print(f"wrote {folder}: {meta['n_rows']:,} rows in {len(parts)} partitions, colour columns "
          f"{sorted(meta['columns'])}")
    return 0

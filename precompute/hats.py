"""`python -m precompute hats --bundle DIR`: add ``hats/`` (the catalogue as a HATS catalogue, for sky queries
through LSDB; the format and when the explorer uses it: ``core.hats``) to a bundle."""
from __future__ import annotations

from core.bundle import Bundle
from core.hats import PARTITION_ROWS, open_hats, write_hats


def add_arguments(parser, command: str = "hats") -> None:
    parser.add_argument("--bundle", required=True, help="the bundle folder to add hats/ to")
    parser.add_argument("--partition-rows", type=int, default=PARTITION_ROWS,
                        help=f"at most this many objects per HEALPix partition (default {PARTITION_ROWS:,}: a cone "
                             "search reads about one partition)")


def run(args) -> int:
    bundle = Bundle.open(args.bundle, validate=True)
    folder = write_hats(bundle.path, bundle.catalog, bundle.manifest.get("created"), args.partition_rows)
    cat = open_hats(bundle.path, bundle.n, bundle.manifest.get("created"), bundle.catalog["object_id"].to_numpy())
    print(f"wrote {folder}: {bundle.n:,} objects in {cat.npartitions} HEALPix partitions")
    return 0

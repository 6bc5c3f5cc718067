"""`python -m precompute validate DIR`: check a bundle; exit 1 with one clear message when it is not valid."""
from __future__ import annotations

from core.validate import validate_bundle


def add_arguments(parser, command):
    parser.add_argument("bundle", help="bundle folder")


def run(args) -> int:
    man = validate_bundle(args.bundle)
    print(f"ok: {args.bundle} is a valid bundle (format {man['format_version']}, survey {man['survey']}, "
          f"{man['n_objects']} objects, {man['embedding_dim']}-d {man['embedding_dtype']} embeddings)")
    return 0

"""`python -m precompute <command>`: simulate surveys, run pipeline stages, build and validate bundles.

Each command lives in its own module, which provides ``add_arguments(parser)`` and ``run(args)``; they are
imported only when used so that `validate` starts fast and a missing optional dependency names itself.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from core.contract import BundleError
from precompute.graph import STAGE_GRAPH

# command -> (module, one-line help)
COMMANDS = {
    "simulate": ("precompute.simulators.simulate", "write a simulated survey (SDSS-like, FIRST-like, Legacy Surveys-like) with known truth"),
    "demo": ("precompute.pipeline", "simulate an SDSS-like survey, train a small SimCLR encoder, write a bundle"),
    "build": ("precompute.pipeline", "build a bundle from a survey's local files (each survey's options below)"),
    "train-array": ("precompute.train_array", "train a survey's encoder on an array of normalised images (one process "
                                              "or torchrun DDP), with the pipeline's settings"),
    "report": ("precompute.report", "what a bundle's embedding knows (health, probes); with baselines: build "
                                    "--stop-after report"),
    "from-embeddings": ("precompute.from_embeddings", "build a bundle from embeddings made elsewhere (.npy, Parquet, "
                                                      "HDF5) and a catalogue (CSV, Parquet, FITS, VOTable)"),
    "fetch": ("precompute.fetch", "download cutouts for a catalogue of RA/Dec (any survey with a cutout service) into a resumable cache"),
    "finetune": ("precompute.finetune", "fine-tune a bundle's encoder on labels, beside the supervised baseline and the "
                                        "linear probe (label-efficiency curves with --label-counts)"),
    "validate": ("precompute.validate", "check a bundle against the format contract"),
    "points": ("precompute.points", "add points/ (partitioned Parquet map points) to a bundle for the Dask map engine"),
    "hats": ("precompute.hats", "add hats/ (the catalogue as a HATS catalogue) to a bundle for sky queries through LSDB"),
}


# every pipeline stage is a command too, running it and what it needs (report has its own command: it also reads bundles)
COMMANDS.update({name: ("precompute.pipeline", f"stage: {what}") for name, (_, what) in STAGE_GRAPH.items()
                 if name not in COMMANDS})
COMMANDS["bundle"] = ("precompute.pipeline", "stage: assemble and write the bundle")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m precompute", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    cmd_parser = argparse.ArgumentParser(prog=f"python -m precompute {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(cmd_parser, argv[0])
    args = cmd_parser.parse_args(argv[1:])
    args.command = argv[0]
    try:
        return int(module.run(args) or 0)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

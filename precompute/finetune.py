"""`python -m precompute finetune`: fine-tune a bundle's encoder on a class column or the user's labels, beside the
supervised baseline and the linear probe (``core.finetune``), optionally at several numbers of labels (the
label-efficiency curve), and keep the fine-tuned classifier in the bundle.

    python -m precompute finetune --bundle bundles/first --column fr_class --where confidence=confident \\
        --classes FRI FRII
    python -m precompute finetune --bundle bundles/first --column fr_class --where confidence=confident \\
        --classes FRI FRII --label-counts 36 72 145 291 437 583 all --seeds 3 --no-save
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from core.finetune import METHODS, FineTuneError

# Table 4 of Slijepcevic et al. 2023 runs 300 epochs on a GPU; on a CPU the same schedule is run for fewer epochs
# (the cosine decay is stretched over them), which the output says.
CPU_EPOCHS = 100


def add_arguments(parser, command=None) -> None:
    from precompute.pipeline import add_source_arguments

    parser.add_argument("--bundle", required=True, help="the bundle whose encoder is fine-tuned")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--column", help="a class column of the catalogue (e.g. fr_class)")
    what.add_argument("--labels-from-store", action="store_true",
                      help="the labels given in the explorer (the bundle's label store; --labels to choose another)")
    parser.add_argument("--labels", help="label store (default <bundle>.labels.sqlite)")
    parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                        help="only objects where COLUMN equals VALUE (repeatable), e.g. confidence=confident")
    parser.add_argument("--classes", nargs="+", help="only these classes (default: every class present)")
    parser.add_argument("--depth", type=int, help="layers fine-tuned, counted from the head (default: all; 0: the "
                                                  "head alone)")
    parser.add_argument("--epochs", type=int, help=f"default 300 on a GPU (the paper), {CPU_EPOCHS} on a CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--base-lr", type=float, default=1e-3, help="scaled by batch size / 256 (default 1e-3)")
    parser.add_argument("--layer-decay", type=float, default=0.75)
    parser.add_argument("--head-epochs", type=int, default=0,
                        help="train the head alone for this many epochs first (LP-FT; default 0, as in the paper)")
    parser.add_argument("--label-counts", nargs="+", metavar="N",
                        help="numbers of training labels to compare at ('all' for every one): the label-efficiency "
                             "curve (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per number of labels (label subset and "
                                                             "initialisation; default 1)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                        help=f"what to compare (default all: {', '.join(METHODS)})")
    parser.add_argument("--name", help="the classifier's name in the bundle (default: the column, or 'labels')")
    parser.add_argument("--no-save", action="store_true", help="compare only; keep nothing in the bundle")
    parser.add_argument("--json", help="also write the comparison (every run and the table) to this JSON file")
    parser.add_argument("--work", help="the build's work folder, where its ingest cache holds the cutouts "
                                       "(default <bundle>.work)")
    add_source_arguments(parser)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--no-progress", action="store_true")


def label_counts(values) -> tuple:
    """``--label-counts`` as ints, with None for 'all'."""
    if not values:
        return (None,)
    out = []
    for v in values:
        if str(v).lower() == "all":
            out.append(None)
        elif str(v).isdigit() and int(v) >= 2:
            out.append(int(v))
        else:
            raise FineTuneError(f"--label-counts {v!r}: give whole numbers of at least 2, or 'all'")
    return tuple(out)


def finetune_config(args):
    import torch

    from models.finetune import FineTuneConfig

    gpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    epochs = args.epochs or (FineTuneConfig.epochs if gpu else CPU_EPOCHS)
    cfg = FineTuneConfig(epochs=epochs, batch_size=args.batch_size, base_lr=args.base_lr,
                         layer_decay=args.layer_decay, depth=args.depth, head_epochs=args.head_epochs,
                         device=args.device)
    note = "" if epochs == FineTuneConfig.epochs else \
        f" (the paper's {FineTuneConfig.epochs} epochs scaled to {epochs} on {'this GPU' if gpu else 'a CPU'})"
    return cfg, note


def read_labels(args, bundle):
    from core import finetune as ft

    if args.labels_from_store:
        from core.labels import LabelStore, default_labels_path

        path = Path(args.labels) if args.labels else default_labels_path(bundle.path)
        if not path.is_file():
            raise FineTuneError(f"no label store at {path}: label objects in the explorer first, or give --labels")
        return ft.labels_from_store(LabelStore(path).current(), bundle.catalog["object_id"], args.classes)
    return ft.labels_from_column(bundle.catalog, args.column, args.where, args.classes)


def sources_given(args, survey_name: str) -> dict:
    from core.surveys.base import get_survey

    out = {}
    for source in get_survey(survey_name).inputs:
        value = getattr(args, source.name, None)
        if value:
            out[source.name] = value[0] if source.many and len(value) == 1 else value
    return out


def format_table(table, n_test: int) -> str:
    """Markdown: one row per number of labels, one column per method, test error in per cent +- SE."""
    lines = ["| labels | " + " | ".join(f"{m} error (%)" for m in METHODS if m in set(table["method"])) + " |"]
    methods = [m for m in METHODS if m in set(table["method"])]
    lines.append("|---:|" + "---:|" * len(methods))
    for n in sorted(set(table["n_labels"])):
        cells = []
        for m in methods:
            row = table[(table["method"] == m) & (table["n_labels"] == n)]
            if row.empty:
                cells.append("–")
                continue
            mean, se = 100 * float(row["mean"].iloc[0]), 100 * float(row["se"].iloc[0]) if row["n_seeds"].iloc[0] > 1 else None
            cells.append(f"{mean:.1f} ± {se:.1f}" if se is not None else f"{mean:.1f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n(test errors on {n_test} held-out objects)"


def run(args) -> int:
    from core import finetune as ft
    from core.bundle import Bundle

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    bundle = Bundle.open(args.bundle)
    try:
        if ft.no_encoder(bundle):
            raise FineTuneError(ft.no_encoder(bundle))
        labels = read_labels(args, bundle)
        counts = label_counts(args.label_counts)
        cfg, note = finetune_config(args)
        images = ft.find_images(bundle, Path(args.work) if args.work else None,
                                sources_given(args, bundle.survey), progress=not args.no_progress)
        print(f"images: {len(images.rows):,} of {bundle.n:,} objects, from {images.source}")
        print(f"recipe: AdamW, lr {cfg.base_lr:g} x {cfg.batch_size}/256, batch {cfg.batch_size}, weight decay "
              f"{cfg.weight_decay}, cosine decay, {cfg.epochs} epochs{note}; layer-wise decay {cfg.layer_decay} "
              f"(fine-tuning only), depth {'all' if cfg.depth is None else cfg.depth}; affine augmentations only")
        progress = None if args.no_progress else _print_progress
        comparison, final = ft.compare(bundle, labels, images, cfg, counts=counts, seeds=range(args.seeds),
                                       methods=args.methods, progress=progress, keep_final=not args.no_save)
    except FineTuneError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    if not args.no_progress:
        print()
    table = comparison.table()
    missing = comparison.settings.get("labelled_without_cutout", 0)
    if missing:
        print(f"note: {missing:,} labelled objects have no cutout in {images.source} and were left out")
    print(format_table(table, comparison.n_test))
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": comparison.rows, "table": table.to_dict(orient="records"),
                                               "n_test": comparison.n_test,
                                               "settings": comparison.settings}, indent=1, default=float))
    if not args.no_save and final is not None:
        proba = ft.predict_all(final.model, bundle, images, device=args.device)
        name = args.name or labels.name
        folder = ft.save_finetuned(bundle, name, final, proba, comparison,
                                   {"target": labels.name, "where": list(args.where), "images": images.source})
        known = np.isfinite(proba).all(axis=1).sum()
        print(f"kept the fine-tuned classifier in {folder} (predictions for {known:,} objects); the explorer shows "
              f"them as the colour layer 'Fine-tuned: {name}'")
    return 0


def _print_progress(fraction: float, message: str) -> None:
    print(f"\r[{100 * fraction:5.1f} %] {message[:100]:<100}", end="", flush=True)

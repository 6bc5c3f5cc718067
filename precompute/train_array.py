"""`python -m precompute train-array`: train a survey's encoder on an array of already normalised images, in one
process or many under torchrun (DDP), with exactly the pipeline's settings (the survey's recipe, then the training
loop's ``TrainConfig`` defaults; every option below overrides one)::

    python -m precompute train-array --survey sdss --images normalised.npy --out encoder/
    torchrun --standalone --nproc_per_node 2 -m precompute train-array --survey first --images first.npy --out enc/

The images are (N, C, H, W) float32 as ``Survey.normalise`` returns them (the ``train`` stage writes them in its
work folder); the survey's augmentation recipe crops them. The pipeline's ``train`` stage is the same loop on the
same settings, with ingest and normalisation in front of it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from core.contract import BundleError
from core.surveys.base import buildable_surveys, get_survey
from precompute.config import Config, add_train_options, default_of, settings_from_args
from precompute.shards import world_from_env

# the training settings that apply to images already normalised and binned (no bin, views, centring or whitening)
ARRAY_OPTIONS = ("method", "arch", "stem", "width", "crop", "epochs", "batch_size", "lr", "optimizer", "queue_size",
                 "max_steps", "device", "num_workers")


def add_arguments(parser, command: str) -> None:
    parser.add_argument("--survey", required=True, choices=buildable_surveys(),
                        help="whose recipe, augmentations and defaults to use")
    parser.add_argument("--images", required=True, help=".npy of (N, C, H, W) float32 normalised images")
    parser.add_argument("--out", required=True, help="folder for the trained encoder and history.json")
    parser.add_argument("--checkpoint-dir", help="per-epoch checkpoints, resumed from when present")
    add_train_options(parser, only=ARRAY_OPTIONS)
    parser.add_argument("--disable", nargs="*", default=(), help="augmentation names to switch off")
    parser.add_argument("--seed", type=int, default=default_of("seed"))
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args) -> Config:
    out = Path(args.out)
    return Config(survey=args.survey, out=out, work=out, train=settings_from_args(args), seed=args.seed,
                  progress=not args.no_progress).resolved()


def weights_digest(module) -> str:
    """sha256 over a module's state_dict tensors (every rank writes its own: they must agree)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(args) -> int:
    from models.augment import build_augmentations
    from models.io import save_encoder
    from models.train import train

    images = np.load(args.images, mmap_mode="r")
    if images.ndim != 4:
        raise BundleError(f"{args.images}: expected an (N, C, H, W) array of normalised images, got shape "
                          f"{images.shape}")
    cfg = config_from_args(args)
    survey = get_survey(cfg.survey)
    if images.shape[1] != survey.n_channels:
        raise BundleError(f"{args.images}: {images.shape[1]} channels, but {survey.name} images have "
                          f"{survey.n_channels} ({', '.join(survey.bands)})")
    params = survey.augmentation_params(images, cfg.train.crop)
    augment = build_augmentations(survey.augmentation_recipe, disabled=args.disable, **params)
    encoder, history = train(images, augment, cfg.train_config(len(images)), checkpoint_dir=args.checkpoint_dir)
    out = Path(args.out)
    rank = world_from_env()[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.sha256").write_text(weights_digest(encoder))
    if rank == 0:
        save_encoder(encoder, {**cfg.encoder_config(), "method": cfg.train.method, "survey": survey.name,
                               "crop_size": augment.output_size, "augmentations": params}, out)
        (out / "history.json").write_text(json.dumps(history, indent=1))
    return 0

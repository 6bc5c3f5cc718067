"""The train stage for a published encoder: load the checkpoint (``models.checkpoints``) instead of training, and
write the same ``encoder/`` folder a trained run writes, with the authors' preprocessing, so every later stage (and
every cutout fetched by the explorer) embeds exactly as with a trained encoder.

    python -m precompute build --survey first --catalog cat.csv --out B \\
        --encoder-checkpoint encoder.pt --checkpoint-format slijepcevic2023
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from core.inputs import InputError
from core.surveys.base import get_survey
from precompute.cache import StageResult, WorkDir, fingerprint_file


def published_build(path: str | Path, fmt: str) -> dict:
    """build_encoder kwargs, survey and preprocessing of a published checkpoint (what Config.resolved needs); the
    file is read and checked once per process and content, however often a run resolves its config."""
    path = Path(path)
    stat = path.stat() if path.is_file() else None
    return dict(_checked_config(str(path.resolve()), fmt, stat and (stat.st_size, stat.st_mtime_ns)))


@lru_cache(maxsize=4)
def _checked_config(path: str, fmt: str, version) -> dict:
    from models.checkpoints import CheckpointError, load_published_encoder

    try:
        _, config = load_published_encoder(path, fmt)
    except CheckpointError as e:
        raise InputError(f"--encoder-checkpoint: {e}") from e
    return config


def import_published(wd: WorkDir, cfg, ing: StageResult) -> StageResult:
    """The 'train' stage of a run with ``cfg.encoder_checkpoint``: keyed by the file's content and the format."""
    from precompute.prepare import (
        load_ingest,
        normalise_to,
        representation_post,
        training_rows,
    )

    survey = get_survey(cfg.survey)
    path = Path(cfg.encoder_checkpoint)
    params = {"checkpoint": fingerprint_file(path), "format": cfg.checkpoint_format, "views": cfg.train.views,
              "centre": cfg.train.centre, "bin": cfg.train.bin, "crop": cfg.train.crop, "seed": cfg.seed}
    if cfg.train.whiten:
        params["whiten"] = True

    def build(tmp: Path, key: str) -> None:
        from models.checkpoints import load_published_encoder
        from models.io import BUILD_KEYS, save_encoder

        encoder, pub = load_published_encoder(path, cfg.checkpoint_format)
        _, images = load_ingest(ing)
        prep = pub["preprocessing"] or survey.fit_preprocessing(images, bin=cfg.train.bin, crop=cfg.train.crop)
        post = {"centre": None, "whiten": None}
        if cfg.train.centre or cfg.train.whiten:
            rows = training_rows(len(images), 4096, cfg.seed)
            scratch = wd.checkpoint_dir("train", key)
            normalised = normalise_to(survey, images, rows, prep, scratch / "normalised.npy")
            post = representation_post(encoder, normalised, int(prep["crop"]), cfg.train.views, bool(cfg.train.centre),
                                       bool(cfg.train.whiten), seed=cfg.seed)
            del normalised
        config = {**{k: pub[k] for k in BUILD_KEYS}, "survey": survey.name,
                  "method": f"published ({cfg.checkpoint_format})", "checkpoint_format": cfg.checkpoint_format,
                  "checkpoint_file": path.name, "preprocessing": prep, "views": cfg.train.views, "centre": post["centre"],
                  "whiten": post["whiten"], **({"representation_health": post["health"]} if "health" in post else {}),
                  "crop_size": int(prep["crop"]), "cutout_size": survey.cutout_size,
                  "pixel_scale_arcsec": survey.pixel_scale_arcsec, "bands": list(survey.bands),
                  "epochs": 0, "n_train_images": 0, "train_seconds": 0.0}
        save_encoder(encoder, config, tmp / "encoder")
        (tmp / "history.json").write_text(json.dumps([]))

    return wd.run("train", params, {"ingest": ing.key}, build)


def check_survey(cfg, pub: dict) -> None:
    if pub.get("format_survey") not in (None, cfg.survey):
        raise InputError(f"--checkpoint-format {cfg.checkpoint_format} is an encoder for {pub['format_survey']} "
                         f"images, not {cfg.survey}; use --survey {pub['format_survey']} or another format")


def published_fields(cfg) -> dict:
    """Config fields a published checkpoint fixes: its network, its crop and binning when the authors' images
    were prepared a fixed way, and no whitening unless asked for."""
    pub = published_build(cfg.encoder_checkpoint, cfg.checkpoint_format)
    check_survey(cfg, pub)
    fields = {"method": f"published ({cfg.checkpoint_format})", "arch": pub["arch"], "stem": pub["stem"],
              "width": pub["width"], "epochs": 0}
    if cfg.train.whiten is None:   # the authors' representation unless whitening is asked for (--whiten yes)
        fields["whiten"] = False
    prep = pub.get("preprocessing") or {}
    if "crop" in prep:
        fields["crop"] = int(prep["crop"])
    if "bin" in prep:
        fields["bin"] = int(prep["bin"])
    return fields


"""What training and the report read from the ingest stage: its catalogue and images, the rows trained on, the
normalised training images, and what ``embed`` does after the encoder (centring, whitening)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.surveys.base import centre_crop
from precompute.cache import StageResult


def load_ingest(res: StageResult) -> tuple[pd.DataFrame, np.ndarray]:
    return pd.read_parquet(res.path / "catalog.parquet"), np.load(res.path / "images.npy", mmap_mode="r")


def representation_post(encoder, normalised: np.ndarray, crop: int, views: str, centre: bool, whiten: bool,
                        max_rows: int = 4096, seed: int = 0) -> dict:
    """What ``embed`` does after the encoder, fitted on (at most ``max_rows`` of) the training images, centre-cropped
    to the encoder's input: ``centre``, the mean L2-normalised representation, subtracted so that cosine measures
    differences from the typical object (on FIRST the raw median random-pair cosine is ~0.9 and every neighbour
    reads 0.99); ``whiten`` (``models.embed.fit_whitening`` of the centred representations) and
    ``health``, the ``core.knowledge.health`` of the representation before whitening (what the encoder itself
    learnt, which the report states beside the stored embedding's)."""
    from models.embed import embed

    rows = training_rows(len(normalised), max_rows, seed)
    crops = np.ascontiguousarray(centre_crop(np.asarray(normalised[rows]), crop), dtype=np.float32)
    return fit_post(embed(encoder, crops, dtype=np.float32, views=views), centre, whiten, seed)


def fit_post(features: np.ndarray, centre: bool, whiten: bool, seed: int = 0) -> dict:
    """``representation_post`` from the L2-normalised representations of the images it is fitted on."""
    from core.knowledge import health
    from models.embed import fit_whitening, post_process

    mean = features.mean(axis=0).tolist() if centre else None
    centred = post_process(features, mean)
    return {"centre": mean, "whiten": fit_whitening(centred) if whiten else None,
            "health": health(centred, seed=seed)}


def training_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Rows to train on: all, or a seeded random subset of ``limit`` (sorted, for sequential reads)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def normalise_to(survey, images: np.ndarray, rows: np.ndarray, params: dict, path: Path,
                 chunk: int = 2048) -> np.ndarray:
    """Normalised full-size training images (``images[rows]``), written chunk by chunk to a memory-mapped .npy."""
    shape = survey.normalise(np.asarray(images[:1]), params).shape[1:]   # binning changes the side
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(rows),) + shape)
    for s in range(0, len(rows), chunk):
        out[s : s + chunk] = survey.normalise(np.asarray(images[rows[s : s + chunk]]), params)
    out.flush()
    return np.load(path, mmap_mode="r")

"""Embed raw cutouts exactly as a bundle's images were embedded: the encoder folder's config names the survey and
its fitted preprocessing; ``load_embedder`` turns that into one callable."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from core.surveys.base import get_survey


def load_embedder(encoder_dir: str | Path, device=None, batch_size: int = 256,
                  chunk: int = 4096) -> Callable[[np.ndarray], np.ndarray]:
    """``encoder_dir`` (a bundle's ``encoder/`` or a train stage's) -> f(raw_images (N, C, H, W) in the survey's
    stored units) -> (N, D) float16 L2-normalised embeddings."""
    from models.embed import embed
    from models.io import load_encoder

    encoder_dir = Path(encoder_dir)
    if not encoder_dir.is_dir():
        raise FileNotFoundError(f"{encoder_dir}: no encoder folder here; point to a bundle's encoder/ folder")
    encoder, config = load_encoder(encoder_dir)
    survey = get_survey(config["survey"])
    params = config["preprocessing"]
    expected = (len(config.get("bands", survey.bands)), config.get("cutout_size", survey.cutout_size))
    views, centre, whiten = config.get("views", "identity"), config.get("centre"), config.get("whiten")

    def embedder(raw_images: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw_images) if not isinstance(raw_images, np.memmap) else raw_images
        if raw.ndim == 3:
            raw = raw[None]
        if raw.ndim != 4 or raw.shape[1] != expected[0] or raw.shape[2] != expected[1] or raw.shape[3] != expected[1]:
            raise ValueError(f"images have shape {raw.shape}; this encoder ({encoder_dir}) expects "
                             f"(N, {expected[0]}, {expected[1]}, {expected[1]}) raw {survey.name} cutouts")
        parts = [embed(encoder, survey.preprocess(np.asarray(raw[s : s + chunk]), params), batch_size=batch_size,
                       device=device, views=views, centre=centre, whiten=whiten) for s in range(0, len(raw), chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, getattr(encoder, "out_dim", 0)), np.float16)

    embedder.config = config
    return embedder

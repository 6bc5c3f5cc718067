"""Thumbnails: each survey draws an RGB image (``Survey.thumbnail_rgb``), resized to ~64 px and encoded as WebP
(q80 ~ 0.75 KB at 64x64, docs/ARCHITECTURE.md "Measured choices"), packed into one blob + offsets."""
from __future__ import annotations

import io

import numpy as np


def encode_thumbnail(rgb: np.ndarray, size: int = 64, fmt: str = "WEBP", quality: int = 80) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def render_thumbnails(survey, images: np.ndarray, size: int = 64, quality: int = 80, chunk: int = 1024,
                      progress: bool = False) -> list[bytes]:
    """One encoded thumbnail per image, in order; images may be a memory map (read chunk by chunk)."""
    starts = range(0, len(images), chunk)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="thumbnails", unit="chunk")
    out = []
    for s in starts:
        block = np.asarray(images[s : s + chunk])
        out.extend(encode_thumbnail(survey.thumbnail_rgb(im), size, quality=quality) for im in block)
    return out

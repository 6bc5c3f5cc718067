"""A tiny structured two-class image set (round vs elongated Gaussian blobs) for tests and benchmarks, so they
do not depend on the survey simulators."""
from __future__ import annotations

import numpy as np


def two_class_blobs(n: int, size: int = 48, channels: int = 5, seed: int = 0, noise: float = 0.05):
    """(images (n, channels, size, size) float32, labels (n,) int): label 0 = round Gaussian blob, 1 = elongated
    (axis ratio ~4) at a random orientation; random flux, width and small offsets; per-band flux ratios fixed
    (linear fluxes, as the SDSS augmentations expect); Gaussian pixel noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    axis = np.arange(size) - (size - 1) / 2
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    sigma = rng.uniform(2.0, 3.5, n)
    ratio = np.where(labels == 1, 4.0, 1.0)
    angle = rng.uniform(0, np.pi, n)
    dx, dy = rng.uniform(-2, 2, (2, n))
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (xx - dx[:, None, None]) * cos + (yy - dy[:, None, None]) * sin
    v = -(xx - dx[:, None, None]) * sin + (yy - dy[:, None, None]) * cos
    major, minor = (sigma * np.sqrt(ratio))[:, None, None], (sigma / np.sqrt(ratio))[:, None, None]
    blob = np.exp(-0.5 * ((u / major) ** 2 + (v / minor) ** 2))
    flux = rng.uniform(0.5, 1.5, n)[:, None, None, None]
    band_ratio = np.linspace(0.6, 1.2, channels)[None, :, None, None]
    images = flux * band_ratio * blob[:, None] + noise * rng.standard_normal((n, channels, size, size))
    return images.astype(np.float32), labels

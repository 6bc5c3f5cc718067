"""A toy survey in one file: one band, 32x32 cutouts of discs and rings read from a .npy and a catalogue CSV.
Importing this file registers it (``@register``); nothing else in the code base names it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.inputs import read_catalog_csv
from core.surveys.base import Cutouts, SourceInput, Survey, register


@register
class ToySurvey(Survey):
    name = "toy"
    bands = ("toy-band",)
    pixel_scale_arcsec = 2.0
    cutout_size = 32
    crop_size = 28
    method = "toy"
    arch = "small"
    cpu_recipe = {"method": "toy", "arch": "small", "width": 4, "epochs": 1, "batch_size": 32}
    augmentation_recipe = "rotate_crop_flip_jitter"
    inputs = (SourceInput("images", "toy: .npy of (N, 1, 32, 32) cutouts", required=True),
              SourceInput("labels", "toy: catalogue CSV (object_id, ra, dec, shape, size_arcsec)", required=True))
    colour_by = {"shape": {"title": "Shape", "kind": "categorical", "units": ""},
                 "size_arcsec": {"title": "Size", "kind": "continuous", "units": "arcsec"}}

    def normalise(self, images: np.ndarray, params: dict) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        return x / np.maximum(x.reshape(len(x), -1).max(axis=1), 1e-6)[:, None, None, None]

    def thumbnail_rgb(self, image: np.ndarray) -> np.ndarray:
        grey = (255 * np.clip(image[0] / max(float(image.max()), 1e-6), 0, 1)).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)

    def archive_links(self, ra_deg: float, dec_deg: float) -> list[tuple[str, str]]:
        return [("Toy archive", f"https://toy.example/?ra={ra_deg:.4f}&dec={dec_deg:.4f}")]

    def read_local(self, images: str | Path, labels: str | Path, **_) -> Cutouts:
        catalog = read_catalog_csv(labels, ("object_id", "ra", "dec"), what="toy catalogue")
        return Cutouts(catalog.astype({"object_id": str}), np.load(images).astype(np.float32))


def write_toy_survey(folder: Path, n: int = 160, seed: int = 0) -> tuple[Path, Path]:
    """Discs and rings of random size and position; returns (images.npy, catalog.csv)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32] - 15.5
    shapes = rng.choice(["disc", "ring"], n)
    sizes = rng.uniform(4, 10, n)
    images = np.empty((n, 1, 32, 32), np.float32)
    for i, (shape, size) in enumerate(zip(shapes, sizes)):
        r = np.hypot(xx - rng.normal(0, 1.5), yy - rng.normal(0, 1.5))
        profile = np.exp(-0.5 * (r / size) ** 2) if shape == "disc" else np.exp(-0.5 * ((r - size) / 1.5) ** 2)
        images[i, 0] = profile + rng.normal(0, 0.05, (32, 32))
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", images)
    pd.DataFrame({"object_id": [f"toy{i}" for i in range(n)], "ra": rng.uniform(150, 151, n),
                  "dec": rng.uniform(2, 3, n), "shape": shapes, "size_arcsec": 2.0 * sizes}).to_csv(
        folder / "catalog.csv", index=False)
    return folder / "images.npy", folder / "catalog.csv"

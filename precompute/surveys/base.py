"""One interface for every survey. SDSS and FIRST differ only in what a subclass of ``Survey`` says.

A survey knows:
- its bands, pixel scale, stored cutout size and the network's input crop;
- how to read its local data into a :class:`Cutouts` (catalogue + image array) and, online, how to fetch one
  cutout by position (astroquery), with a timeout;
- its normalisation (``preprocess``): the exact transform from stored pixels to encoder input. Its parameters are
  fitted once on the training images (``fit_preprocessing``) and saved with the encoder, so a cutout fetched later
  is embedded exactly as the bundle's images were;
- its default augmentations (names from ``models.augment``), its colour-by columns, and how to draw a thumbnail.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Cutouts:
    """Images and catalogue of one survey sample, row i <=> image i.

    ``catalog`` has at least ``object_id``, ``ra``, ``dec`` (deg, ICRS) and the survey's label columns;
    ``images`` is (N, C, H, W) float32 in the survey's native units; ``skipped`` lists (object_id, reason) for
    inputs that could not be used.
    """

    catalog: pd.DataFrame
    images: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        if len(self.catalog) != len(self.images):
            raise ValueError(f"{len(self.catalog)} catalogue rows but {len(self.images)} images")


class Survey:
    name: str = "base"
    bands: tuple[str, ...] = ()
    pixel_scale_arcsec: float = 1.0
    cutout_size: int = 64          # stored image side, pixels
    crop_size: int = 64            # encoder input side, pixels (centre crop)
    method: str = "moco"           # default self-supervised method
    arch: str = "small"
    stem: str = "standard"
    # Training recipes, as ``precompute.stages.Config`` fields: what learns in minutes on a CPU (chosen by the
    # ablations in BENCHMARKS.md) and the paper's configuration, the default when a GPU is present.
    cpu_recipe: dict = {}
    gpu_recipe: dict = {}
    colour_by: dict = {}

    @property
    def n_channels(self) -> int:
        return len(self.bands)

    # -- normalisation --------------------------------------------------------------------------------
    def fit_preprocessing(self, images: np.ndarray, bin: int = 1, crop: int | None = None) -> dict:
        """Parameters of ``preprocess`` fitted on training images (JSON-serialisable); ``bin`` and ``crop`` are
        the recipe's pixel binning and encoder input side."""
        return {"bin": int(bin), "crop": int(crop or self.crop_size)}

    def normalise(self, images: np.ndarray, params: dict) -> np.ndarray:
        """Stored pixels (N, C, H, W) -> normalised float32 at full stored size (training input, before
        the augmentations, which do their own cropping)."""
        raise NotImplementedError

    def preprocess(self, images: np.ndarray, params: dict) -> np.ndarray:
        """Stored pixels (N, C, H, W) -> encoder input for embedding: normalise, then centre crop to the encoder's
        input size (``params["crop"]`` when the preprocessing fixed one, else the survey's ``crop_size``)."""
        crop = int(params.get("crop", self.crop_size))
        return np.ascontiguousarray(centre_crop(self.normalise(images, params), crop), dtype=np.float32)

    # -- evaluation -----------------------------------------------------------------------------------
    def report_tasks(self, catalog: pd.DataFrame, colour_by: dict) -> list[dict]:
        """Labelled tests for the report stage (``precompute.report``): by default every colour-by column."""
        from precompute.report import catalogue_tasks

        return catalogue_tasks(catalog, colour_by)

    # -- display --------------------------------------------------------------------------------------
    def thumbnail_rgb(self, image: np.ndarray) -> np.ndarray:
        """One stored image (C, H, W) -> (h, w, 3) uint8 for display."""
        raise NotImplementedError

    # -- data -----------------------------------------------------------------------------------------
    def read_local(self, **paths) -> Cutouts:
        raise NotImplementedError

    def fetch_cutout(self, coord, timeout: float = 20.0, cache_dir=None) -> np.ndarray:
        """Fetch one cutout centred on ``coord`` (SkyCoord) at the bundle's pixel scale and size: (C, H, W).
        The service per survey lives in ``precompute.surveys.online``."""
        from precompute.surveys.online import fetch_cutout

        image, _ = fetch_cutout(self.name, coord, self.cutout_size, self.pixel_scale_arcsec, timeout=timeout,
                                cache_dir=cache_dir)
        return np.asarray(image, dtype=np.float32).reshape(self.n_channels, self.cutout_size, self.cutout_size)


def sample_rows(images: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` images, a fixed random subset in file order (for fitting normalisation on large arrays)."""
    if len(images) <= n:
        return np.asarray(images)
    rows = np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))
    return np.asarray(images[rows])


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


_REGISTRY: dict[str, type[Survey]] = {}


def register(cls: type[Survey]) -> type[Survey]:
    _REGISTRY[cls.name] = cls
    return cls


def get_survey(name: str) -> Survey:
    """The survey object by name ('sdss', 'first')."""
    import importlib

    if name not in _REGISTRY:
        try:
            importlib.import_module(f"precompute.surveys.{name}")
        except ModuleNotFoundError:
            pass
    if name not in _REGISTRY:
        raise KeyError(f"unknown survey {name!r}; known: {sorted(_REGISTRY) or ['sdss', 'first']}")
    return _REGISTRY[name]()

"""One interface for every survey. SDSS and FIRST differ only in what a subclass of ``Survey`` says.

A survey knows:
- its bands, pixel scale, stored cutout size and the network's input crop;
- how to read its local data into a :class:`Cutouts` (catalogue + image array) and, online, how to fetch one
  cutout by position (astroquery), with a timeout;
- its normalisation (``preprocess``): the exact transform from stored pixels to encoder input. Its parameters are
  fitted once on the training images (``fit_preprocessing``) and saved with the encoder, so a cutout fetched later
  is embedded exactly as the bundle's images were;
- its augmentation recipe (a ``models.augment`` recipe and the parameters fitted for it), its colour-by columns,
  how to draw a thumbnail, its online image services and archive links, and the inputs of
  ``python -m precompute build --survey NAME``.

Adding a survey is one file in this folder with a ``@register``-ed subclass (tests/test_plugins.py builds a
bundle and a page from a toy one). Every file of this folder is a survey's but ``NOT_SURVEYS``; a survey asked for
by name is looked up in the file of that name, so nothing else lists the surveys.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd

NOT_SURVEYS = ("base", "online", "services")   # the modules of this folder that define no survey


@dataclass(frozen=True)
class SourceInput:
    """One input file of ``python -m precompute build --survey NAME`` (the option is ``--<name>``)."""

    name: str
    help: str
    required: bool = False
    many: bool = False      # several files may be given (joined by the survey's reader)


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
    title: str = ""                # what the explorer calls it, when not its name
    bands: tuple[str, ...] = ()
    pixel_scale_arcsec: float = 1.0
    cutout_size: int = 64          # stored image side, pixels
    crop_size: int = 64            # encoder input side, pixels (centre crop)
    method: str = "moco"           # default self-supervised method
    arch: str = "small"
    stem: str = "standard"
    # Training recipes, as ``precompute.config.Config`` fields: what learns in minutes on a CPU (chosen by the
    # ablations in BENCHMARKS.md) and the paper's configuration, the default when a GPU is present.
    cpu_recipe: dict = {}
    gpu_recipe: dict = {}
    colour_by: dict = {}
    augmentation_recipe: str = ""                   # a models.augment recipe name
    inputs: tuple[SourceInput, ...] = ()            # what read_local takes, as command-line options
    online_services: tuple = ()   # core.surveys.services.OnlineService objects, tried in order

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
        from core.knowledge import catalogue_tasks

        return catalogue_tasks(catalog, colour_by)

    # -- display --------------------------------------------------------------------------------------
    def thumbnail_rgb(self, image: np.ndarray) -> np.ndarray:
        """One stored image (C, H, W) -> (h, w, 3) uint8 for display."""
        raise NotImplementedError

    # -- data -----------------------------------------------------------------------------------------
    def read_local(self, **paths) -> Cutouts:
        raise NotImplementedError

    def listed_files(self, source: str, path: Path) -> list[Path] | None:
        """Files that the input ``source`` at ``path`` names and that the reader also reads (their content is part
        of the ingest stage's cache key); None when it names none."""
        return None

    def pack_fetched(self, folder: Path, fetched: pd.DataFrame) -> None:
        """After ``python -m precompute fetch``: put the fetched FITS cutouts (``fetched``: catalogue rows with their
        ``file``) into the layout ``read_local`` takes, when that is not the catalogue CSV and FITS files."""

    # -- training -------------------------------------------------------------------------------------
    def augmentation_params(self, normalised: np.ndarray, crop: int) -> dict:
        """Parameters of ``augmentation_recipe`` for these normalised training images and encoder input side."""
        return {"crop": int(crop)}

    # -- online ---------------------------------------------------------------------------------------
    @property
    def fetchable(self) -> bool:
        """Whether a cutout can be fetched by position (``core.surveys.online.fetch_cutout``)."""
        return bool(self.online_services)

    def archive_links(self, ra_deg: float, dec_deg: float) -> list[tuple[str, str]]:
        """(label, url) of archive viewers at this position: the Legacy Survey and Simbad for any survey."""
        return [legacy_survey_link("Legacy Survey", ra_deg, dec_deg, zoom=16), simbad_link(ra_deg, dec_deg)]


class AnySky(Survey):
    """``--survey none``: embeddings of any sky made elsewhere. No cutout service; links by position to Simbad, NED
    and Aladin Lite; thumbnails only from images given with the embeddings (drawn from the first three channels,
    or grey from one)."""

    name = "none"
    title = "any sky (imported embeddings)"

    def archive_links(self, ra_deg: float, dec_deg: float) -> list[tuple[str, str]]:
        return [simbad_link(ra_deg, dec_deg), ned_link(ra_deg, dec_deg), aladin_link(ra_deg, dec_deg)]

    def thumbnail_rgb(self, image: np.ndarray) -> np.ndarray:
        """asinh of each channel between its median and 99.5th percentile; 1 or 2 channels grey, else the first
        three as blue, green, red (the bluest band first, as surveys list them). North up."""
        from astropy.visualization import AsinhStretch, ManualInterval

        img = np.asarray(image, dtype=np.float32)
        img = img[None] if img.ndim == 2 else img
        planes = [img[0]] * 3 if len(img) < 3 else [img[2], img[1], img[0]]
        rgb = []
        for p in planes:
            lo, hi = float(np.median(p)), float(np.percentile(p, 99.5))
            rgb.append(AsinhStretch(0.1)(ManualInterval(lo, max(hi, lo + 1e-12))(p, clip=True), clip=True))
        return (np.stack(rgb, axis=-1)[::-1] * 255).astype(np.uint8)


def ned_link(ra_deg: float, dec_deg: float) -> tuple[str, str]:
    return "NED", "https://ned.ipac.caltech.edu/conesearch?" + urlencode(
        {"search_type": "Near Position Search", "coordinates": f"{ra_deg:.6f}d {dec_deg:+.6f}d", "radius": "0.17"})


def aladin_link(ra_deg: float, dec_deg: float) -> tuple[str, str]:
    return "Aladin Lite", "https://aladin.cds.unistra.fr/AladinLite/?" + urlencode(
        {"target": f"{ra_deg:.6f} {dec_deg:+.6f}", "fov": "0.05"})


def legacy_survey_link(label: str, ra_deg: float, dec_deg: float, zoom: int) -> tuple[str, str]:
    return label, "https://www.legacysurvey.org/viewer?" + urlencode(
        {"ra": f"{ra_deg:.6f}", "dec": f"{dec_deg:.6f}", "layer": "ls-dr10", "zoom": str(zoom)})


def simbad_link(ra_deg: float, dec_deg: float) -> tuple[str, str]:
    return "Simbad", "https://simbad.cds.unistra.fr/simbad/sim-coo?" + urlencode(
        {"Coord": f"{ra_deg:.6f} {dec_deg:+.6f}", "CooFrame": "ICRS", "Radius": "10", "Radius.unit": "arcsec"})


def sample_rows(images: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` images, a fixed random subset in file order (for fitting normalisation on large arrays)."""
    if len(images) <= n:
        return np.asarray(images)
    rows = np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))
    return np.asarray(images[rows])


def central_band_scales(images: np.ndarray, side: int) -> list[float]:
    """One flux scale per band of (N, C, H, W) images: the 99th percentile of |pixel| over their central side x side
    pixels. A pure per-band scale keeps colours, so reddening and noise augmentations act on physical ratios."""
    centre = np.asarray(centre_crop(images, side), dtype=np.float32)
    scale = np.percentile(np.abs(centre.transpose(1, 0, 2, 3).reshape(centre.shape[1], -1)), 99, axis=1)
    return [float(max(s, 1e-12)) for s in scale]


def reddening_psf_noise_params(normalised: np.ndarray, crop: int, jitter: int, pixel_scale: float, extinction,
                               wavelengths) -> dict:
    """Parameters of the ``reddening_psf_noise`` augmentation recipe: a survey's numbers, and the noise scale as the
    per-band MAD of (a sample of) its normalised training images."""
    from models.augment import compute_mad

    sample = np.asarray(normalised[: min(len(normalised), 2048)])
    return {"crop": int(crop), "jitter": int(jitter), "pixel_scale": float(pixel_scale), "extinction": extinction,
            "wavelengths": wavelengths, "mad": np.asarray(compute_mad(sample), dtype=np.float32).tolist()}


def bin_pixels(images: np.ndarray, factor: int) -> np.ndarray:
    """Mean of factor x factor pixel blocks of (N, C, H, W) images (edges that do not fill a block are dropped)."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    h2, w2 = h // factor, w // factor
    blocks = images[:, :, : h2 * factor, : w2 * factor].reshape(n, c, h2, factor, w2, factor)
    return blocks.mean(axis=(3, 5))


def second_moment_radius(r_band: np.ndarray, pixel_scale: float, aperture_pix: float = 30.0) -> np.ndarray:
    """Flux-weighted RMS radius sqrt(<r^2>) in arcsec of the background-subtracted r band within a circular
    aperture around the centre: a size proxy when no catalogue size exists."""
    n, h, w = r_band.shape
    yy, xx = np.mgrid[:h, :w] - (h - 1) / 2
    r2 = (xx**2 + yy**2).astype(np.float32)
    inside = r2 <= aperture_pix**2
    bg = np.median(r_band[:, ~inside], axis=1)[:, None, None]
    flux = np.clip(r_band - bg, 0, None) * inside
    total = flux.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        radius = np.sqrt((flux * r2).sum(axis=(1, 2)) / total) * pixel_scale
    return np.where(total > 0, radius, np.nan)


def aperture_mag(band: np.ndarray, radius_pix: float = 20.0) -> np.ndarray:
    """22.5 - 2.5 log10(flux) in a circular aperture, for images in nanomaggies (SDSS, Legacy Surveys), minus the
    median outside it; null when flux <= 0."""
    n, h, w = band.shape
    yy, xx = np.mgrid[:h, :w] - (h - 1) / 2
    inside = (xx**2 + yy**2) <= radius_pix**2
    bg = np.median(band[:, ~inside], axis=1)
    flux = band[:, inside].sum(axis=1) - bg * inside.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flux > 0, 22.5 - 2.5 * np.log10(flux), np.nan)


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


_REGISTRY: dict[str, type[Survey]] = {}


def register(cls: type[Survey]) -> type[Survey]:
    _REGISTRY[cls.name] = cls
    return cls


register(AnySky)


def get_survey(name: str) -> Survey:
    """The survey object by name ('sdss', 'first', or any registered one)."""
    if name not in _REGISTRY and name in builtin_surveys():
        importlib.import_module(f"core.surveys.{name}")
    if name not in _REGISTRY:
        raise KeyError(f"unknown survey {name!r}; known: {known_surveys()}")
    return _REGISTRY[name]()


def find_survey(name: str) -> Survey:
    """The survey of this name, or ``AnySky`` (no services, links by position) for a name none registers: a bundle
    made elsewhere may name any survey."""
    try:
        return get_survey(str(name).lower())
    except KeyError:
        return AnySky()


def known_surveys() -> list[str]:
    """Every survey name: the built-in ones and any registered since."""
    for name in builtin_surveys():
        importlib.import_module(f"core.surveys.{name}")
    return sorted(_REGISTRY)


def builtin_surveys() -> tuple[str, ...]:
    """The survey files of this folder, by name (each defines the survey of that name)."""
    import pkgutil

    here = Path(__file__).parent
    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in NOT_SURVEYS))


def buildable_surveys() -> list[str]:
    """The surveys ``python -m precompute build`` can read (those with input files)."""
    return [name for name in known_surveys() if get_survey(name).inputs]

"""Fetch one survey cutout by position from an online service, on the bundle's pixel grid, with a disk cache.

Each survey names its services in ``Survey.online_services`` (``core.surveys.services`` runs them) and they are
tried in order.

Whatever comes back is put on the bundle's grid: a TAN projection centred on the position with the bundle's
pixel scale and cutout size. When the returned pixel scale equals the bundle's (within 1 %) that is an exact
``astropy.nddata.Cutout2D`` (no resampling, so a re-fetched bundle object gets its stored pixels back); otherwise
each target pixel centre is mapped through both WCSs and the image is sampled bilinearly
(``scipy.ndimage.map_coordinates``, order 1) — a documented stand-in for ``reproject``, which is not installed.
Surface-brightness units (Jy/beam, nanomaggies per HiPS pixel at the requested scale) need no flux rescaling.

Failures raise :class:`FetchError` with one sentence naming the service and what happened: cannot connect,
timed out, HTTP status, empty / not-FITS / truncated / corrupt FITS, no celestial WCS, mostly blank (NaN) cutout.
Connection problems, timeouts, HTTP 5xx and broken files are retried ``retries`` times; HTTP 4xx is not. The whole
fetch, fallback service included, is bounded by ``timeout * (retries + 1)`` seconds. A few NaN
pixels are filled with the cutout's median and counted in the header (``NANFILL``).

Service URLs come from the survey's file (astroquery's configuration for the astroquery clients) and can be pointed
elsewhere (a mirror, or a local recorded server in tests) with the environment variable each service names.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from core.surveys.base import find_survey
from core.surveys.services import FetchError, Retryable

MAX_NAN_FRACTION = 0.10
SCALE_TOLERANCE = 0.01


# --------------------------------------------------------------------------------------------- public
def fetch_cutout(survey, coord: SkyCoord, size_pix: int, pixel_scale_arcsec: float, timeout: float = 20,
                 cache_dir: str | Path | None = None, retries: int = 1) -> tuple[np.ndarray, fits.Header]:
    """One cutout centred on ``coord``: ``(image (C, H, W) float32, header with the cutout's WCS)``.

    ``survey`` is a survey name ('first', 'sdss') or a ``Survey`` object: its ``online_services`` are tried in
    order and its ``bands`` fetched.
    A cached answer (same survey, position to 0.04″, size and scale) is returned without any request.
    """
    asked = survey if isinstance(survey, str) else survey.name
    survey = find_survey(survey) if isinstance(survey, str) else survey
    name, bands = survey.name, tuple(survey.bands)
    if not survey.online_services:
        raise FetchError(f"There is no online image service for survey {asked!r}. Upload a FITS file with a WCS "
                         "instead.")
    coord = SkyCoord(coord).icrs
    size_pix = int(size_pix)
    cache_path = _cache_path(cache_dir, name, coord, size_pix, pixel_scale_arcsec)
    if cache_path is not None and cache_path.is_file():
        cached = _read_cache(cache_path)
        if cached is not None:
            return cached
    target = target_wcs(coord, size_pix, pixel_scale_arcsec)
    budget = timeout * (retries + 1)  # the whole fetch, fallbacks included, waits no longer than one service may
    deadline = time.monotonic() + budget
    errors = []
    for service in survey.online_services:
        label = service.label
        if deadline - time.monotonic() < 0.5:
            errors.append(f"{label} was not tried: the {budget:.1f} s allowed for this fetch were spent.")
            continue
        try:
            planes = _with_retries(lambda t: service.fetch(coord, target, bands, t), retries, timeout, deadline)
            image = np.stack([resample_to_grid(data, hdr, target, label) for data, hdr in planes]).astype(np.float32)
            image, n_filled = fill_few_nans(image, label)
            header = _result_header(target, name, label, n_filled)
            break
        except FetchError as e:
            errors.append(str(e))
    else:
        where = f"RA {coord.ra.deg:.5f}°, Dec {coord.dec.deg:+.5f}°"
        raise FetchError(f"Could not fetch a {name.upper()} cutout at {where}. " + " ".join(errors)
                         + " Try again later, or upload a FITS cutout of this position instead.")
    if cache_path is not None:
        _write_cache(cache_path, image, header)
    return image, header


def target_wcs(coord: SkyCoord, size_pix: int, pixel_scale_arcsec: float) -> WCS:
    """The bundle's grid around ``coord``: TAN, north up, east left, centre between the middle pixels."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [coord.ra.deg, coord.dec.deg]
    w.wcs.crpix = [(size_pix + 1) / 2, (size_pix + 1) / 2]
    w.wcs.cdelt = [-pixel_scale_arcsec / 3600, pixel_scale_arcsec / 3600]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.pixel_shape = (size_pix, size_pix)
    return w


def fill_few_nans(image: np.ndarray, what: str, max_fraction: float = MAX_NAN_FRACTION) -> tuple[np.ndarray, int]:
    """Fill a few NaN/inf pixels with each band's median; too many is an error (off the survey's edge)."""
    bad = ~np.isfinite(image)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return image, 0
    fraction = n_bad / image.size
    if fraction > max_fraction:
        raise FetchError(f"{what}: {fraction:.0%} of the cutout is blank (NaN); the position is probably at the "
                         f"edge of or outside the survey's coverage (at most {max_fraction:.0%} blank is accepted).")
    out = image.copy()
    for band, mask in zip(out, bad):
        if mask.any():
            band[mask] = np.median(band[~mask])
    return out, n_bad


def _with_retries(attempt, retries: int, timeout: float, deadline: float):
    """``attempt(timeout)`` up to ``retries + 1`` times while time is left before ``deadline``."""
    for n in range(retries + 1):
        left = deadline - time.monotonic()
        try:
            return attempt(max(0.5, min(timeout, left)))
        except Retryable:
            if n == retries or deadline - time.monotonic() < 0.1:
                raise


def resample_to_grid(data: np.ndarray, header: fits.Header, target: WCS, what: str) -> np.ndarray:
    """Put one returned image on the target grid: exact cutout when the scales agree, else bilinear resampling."""
    from astropy.nddata import Cutout2D
    from astropy.wcs.utils import proj_plane_pixel_scales

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            source = WCS(header).celestial
        except Exception as e:   # wcslib rejects the keywords (an unknown projection code, inconsistent axes)
            raise FetchError(f"{what} has a WCS that cannot be read ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:160]}); cannot place it on the sky.") from e
    if not source.has_celestial or source.naxis != 2:
        raise FetchError(f"{what} returned a FITS image without a celestial WCS; cannot place it on the sky.")
    size = target.pixel_shape[0]
    src_scale = float(np.mean(proj_plane_pixel_scales(source)))
    tgt_scale = abs(float(target.wcs.cdelt[1]))
    centre = SkyCoord(target.wcs.crval[0], target.wcs.crval[1], unit="deg", frame="icrs")
    if abs(src_scale / tgt_scale - 1) < SCALE_TOLERANCE:
        cut = Cutout2D(data, centre, (size, size), wcs=source, mode="partial", fill_value=np.nan)
        return cut.data.astype(np.float32)
    return _resample_bilinear(data, source, target)


def _resample_bilinear(data: np.ndarray, source: WCS, target: WCS) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    ny, nx = target.pixel_shape[1], target.pixel_shape[0]
    yy, xx = np.mgrid[:ny, :nx]
    world = target.pixel_to_world(xx, yy)
    sx, sy = source.world_to_pixel(world)
    return map_coordinates(data.astype(np.float32), [sy, sx], order=1, cval=np.nan).astype(np.float32)


def _result_header(target: WCS, survey: str, service: str, n_filled: int) -> fits.Header:
    header = target.to_header()
    header["SURVEY"] = survey.upper()
    header["SERVICE"] = (service, "where this cutout was fetched")
    header["NANFILL"] = (n_filled, "blank pixels filled with the band median")
    return header


# --------------------------------------------------------------------------------------------- cache
def _cache_path(cache_dir, name: str, coord: SkyCoord, size_pix: int, scale: float) -> Path | None:
    if cache_dir is None:
        return None
    key = f"{name}|{coord.ra.deg:.5f}|{coord.dec.deg:+.5f}|{size_pix}|{scale:.4f}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / name / f"{coord.ra.deg:09.5f}{coord.dec.deg:+09.5f}_{size_pix}px_{digest}.fits"


def _read_cache(path: Path):
    try:
        with fits.open(path, memmap=False) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32), hdul[0].header.copy()
    except (OSError, ValueError):
        return None  # a damaged cache file is simply fetched again


def _write_cache(path: Path, image: np.ndarray, header: fits.Header) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        fits.PrimaryHDU(image, header=header).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

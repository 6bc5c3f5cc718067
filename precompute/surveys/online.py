"""Fetch one survey cutout by position from an online service, on the bundle's pixel grid, with a disk cache.

Services (all through astroquery's own clients, so their request code is the one that runs):

- FIRST: the FIRST cutout server at STScI (``astroquery.image_cutouts.first.FirstClass.get_images_async``, one
  POST that answers a primary-HDU FITS at the native 1.8″/px), then SkyView as a fallback
  (``astroquery.skyview.SkyViewClass.get_image_list`` with survey "VLA FIRST (1.4 GHz)", ``pixels`` and
  ``width``/``height`` set so SkyView resamples onto exactly the requested grid, then the FITS link).
- SDSS ugriz: CDS hips2fits on the SDSS9 HiPS, one request per band
  (``astroquery.hips2fits.hips2fitsClass.query_with_wcs_async`` with the target WCS, so the answer is already on
  the bundle's grid).

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

Service URLs default to astroquery's configuration and can be pointed elsewhere (a mirror, or a local recorded
server in tests) with the environment variables ``SKYQUERY_FIRST_URL``, ``SKYQUERY_SKYVIEW_URL`` and
``SKYQUERY_HIPS2FITS_URL``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

MAX_NAN_FRACTION = 0.10
SCALE_TOLERANCE = 0.01
SKYVIEW_FIRST_SURVEY = "VLA FIRST (1.4 GHz)"
SDSS_HIPS = "CDS/P/SDSS9/{band}"
SDSS_BANDS = ("u", "g", "r", "i", "z")


class FetchError(Exception):
    """A cutout could not be fetched. The message says which service failed and how."""


class _Retryable(FetchError):
    """A failure worth one more try (network, timeout, HTTP 5xx, broken file)."""


# --------------------------------------------------------------------------------------------- public
def fetch_cutout(survey, coord: SkyCoord, size_pix: int, pixel_scale_arcsec: float, timeout: float = 20,
                 cache_dir: str | Path | None = None, retries: int = 1) -> tuple[np.ndarray, fits.Header]:
    """One cutout centred on ``coord``: ``(image (C, H, W) float32, header with the cutout's WCS)``.

    ``survey`` is a survey name ('first', 'sdss') or a ``Survey`` object (its ``name`` and ``bands`` are used).
    A cached answer (same survey, position to 0.04″, size and scale) is returned without any request.
    """
    name, bands = _survey_name_and_bands(survey)
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
    for label, service in _services_for(name):
        if deadline - time.monotonic() < 0.5:
            errors.append(f"{label} was not tried: the {budget:.1f} s allowed for this fetch were spent.")
            continue
        try:
            planes = _with_retries(lambda t: service(coord, target, bands, t), retries, timeout, deadline)
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


def read_fits_image(content: bytes, what: str) -> tuple[np.ndarray, fits.Header]:
    """The first 2-D image in FITS bytes, as float32 with its header; FetchError naming ``what`` otherwise."""
    if not content:
        raise _Retryable(f"{what} returned an empty response instead of a FITS file.")
    if not content.startswith(b"SIMPLE"):
        snippet = content[:60].decode("latin-1", "replace").strip().replace("\n", " ")
        raise _Retryable(f"{what} returned something that is not a FITS file (it starts with {snippet!r}); "
                         "the service is probably reporting an error.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(content), memmap=False, lazy_load_hdus=False) as hdul:
                for hdu in hdul:
                    if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                        data = np.asarray(hdu.data, dtype=np.float32)  # astropy raises here on a short file
                        while data.ndim > 2:  # radio cubes carry degenerate frequency/Stokes axes
                            data = data[0]
                        return data, _without_commentary(hdu.header)
    except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
        raise _Retryable(f"{what} returned a truncated or corrupt FITS file ({len(content)} bytes: {e}).") from e
    raise _Retryable(f"{what} returned a FITS file without an image.")


def _without_commentary(header: fits.Header) -> fits.Header:
    # SkyView's COMMENT/HISTORY cards hold tabs that astropy's verifier complains about; only the WCS is needed.
    return fits.Header([card for card in header.cards if card.keyword not in ("COMMENT", "HISTORY", "")])


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


# --------------------------------------------------------------------------------------------- services
def service_urls() -> dict[str, str]:
    """Where each service is asked, read at call time so a test or mirror can redirect them."""
    from astroquery.hips2fits import conf as hips_conf
    from astroquery.image_cutouts.first import conf as first_conf
    from astroquery.skyview import conf as skyview_conf

    hips_default = hips_conf.server
    return {
        "first": os.environ.get("SKYQUERY_FIRST_URL", first_conf.server),
        "skyview": os.environ.get("SKYQUERY_SKYVIEW_URL", skyview_conf.url),
        "hips2fits": os.environ.get("SKYQUERY_HIPS2FITS_URL",
                                    hips_default[0] if isinstance(hips_default, list) else hips_default),
    }


def _services_for(name: str):
    if name == "first":
        return [("FIRST cutout server", _fetch_first_cutout_server), ("SkyView", _fetch_skyview_first)]
    if name == "sdss":
        return [("hips2fits (SDSS9 HiPS)", _fetch_hips2fits_sdss)]
    raise FetchError(f"There is no online image service for survey {name!r}; cutouts can be fetched for 'first' "
                     "and 'sdss'. Upload a FITS file with a WCS instead.")


def _fetch_first_cutout_server(coord, target: WCS, bands, timeout):
    from astroquery.image_cutouts.first import FirstClass

    client = _with_default_timeout(FirstClass(), timeout)
    client.URL = service_urls()["first"]
    client.TIMEOUT = timeout
    size_arcmin = _field_of_view(target).to_value(u.arcmin) * 1.1  # margin so the re-centring crop stays inside
    with _astroquery_cache_off():
        response = _call("FIRST cutout server", timeout,
                         lambda: client.get_images_async(coord, image_size=size_arcmin * u.arcmin))
    _raise_for_status(response, "FIRST cutout server")
    return [read_fits_image(response.content, "The FIRST cutout server")]


def _fetch_skyview_first(coord, target: WCS, bands, timeout):
    from astroquery.skyview import SkyViewClass

    client = _with_default_timeout(SkyViewClass(), timeout)
    client.URL = service_urls()["skyview"]
    fov = _field_of_view(target)
    with _astroquery_cache_off():
        urls = _call("SkyView", timeout, lambda: client.get_image_list(
            coord, survey=[SKYVIEW_FIRST_SURVEY], pixels=str(target.pixel_shape[0]), projection="Tan",
            width=fov, height=fov, cache=False))
        if not urls:
            raise _Retryable("SkyView answered without a FITS link (no image for this position).")
        response = _call("SkyView", timeout, lambda: client._request("GET", urls[0], timeout=timeout, cache=False))
    _raise_for_status(response, "SkyView")
    return [read_fits_image(response.content, "SkyView")]


def _fetch_hips2fits_sdss(coord, target: WCS, bands, timeout):
    from astroquery.hips2fits import hips2fitsClass

    client = _with_default_timeout(hips2fitsClass(), timeout)
    url = service_urls()["hips2fits"]
    planes = []
    for band in bands:
        what = f"hips2fits ({SDSS_HIPS.format(band=band)})"
        payload = _hips2fits_payload(SDSS_HIPS.format(band=band), target)
        with _astroquery_cache_off():
            response = _call(what, timeout, lambda: client._request("GET", url, params=payload, timeout=timeout,
                                                                    cache=False))
        _raise_for_status(response, what)
        planes.append(read_fits_image(response.content, what))
    return planes


def _hips2fits_payload(hips: str, target: WCS) -> dict:
    """The query ``hips2fitsClass.query_with_wcs`` sends, built here because astroquery 0.4.11 imports matplotlib
    (not a dependency of this project) just to name the colour map, which a FITS answer ignores."""
    header = target.to_header()
    header["NAXIS1"], header["NAXIS2"] = target.pixel_shape
    return {"hips": hips, "format": "fits", "wcs": json.dumps(dict(header.items()))}


# --------------------------------------------------------------------------------------------- plumbing
def _survey_name_and_bands(survey) -> tuple[str, tuple[str, ...]]:
    if isinstance(survey, str):
        name = survey.lower()
        return name, SDSS_BANDS if name == "sdss" else ("1.4GHz",)
    return survey.name, tuple(survey.bands)


def _field_of_view(target: WCS) -> u.Quantity:
    return abs(target.wcs.cdelt[1]) * target.pixel_shape[1] * u.deg


def _with_default_timeout(client, timeout: float):
    """Give every request of an astroquery client a timeout, including those it sends without one
    (SkyView fetches its form page with no timeout)."""
    session = client._session
    send = session.request

    def request(method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeout
        return send(method, url, **kwargs)

    session.request = request
    return client


_CACHE_CONF_LOCK = threading.Lock()


class _astroquery_cache_off:
    """Our own cache keys by position and grid; astroquery's would also keep error pages. Its switch is a global
    setting, so requests that need it off are serialised (the app runs at most a couple of fetches at once)."""

    def __enter__(self):
        from astroquery import cache_conf

        _CACHE_CONF_LOCK.acquire()
        self._ctx = cache_conf.set_temp("cache_active", False)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        try:
            return self._ctx.__exit__(*exc)
        finally:
            _CACHE_CONF_LOCK.release()


def _call(what: str, timeout: float, request):
    import requests

    try:
        return request()
    except (requests.exceptions.Timeout, TimeoutError) as e:
        raise _Retryable(f"{what} did not answer within {timeout:.1f} s (slow or down).") from e
    except requests.exceptions.ConnectionError as e:
        raise _Retryable(f"{what} could not be reached ({_connection_reason(e)}).") from e
    except requests.exceptions.HTTPError as e:
        status = getattr(e.response, "status_code", None)
        err = _Retryable if status is None or status >= 500 else FetchError
        raise err(f"{what} answered HTTP {status} ({_short(e)}).") from e
    except requests.exceptions.RequestException as e:
        raise _Retryable(f"{what} request failed ({_short(e)}).") from e
    except (AttributeError, ValueError, KeyError, TypeError) as e:
        # astroquery's HTML parsing fails this way when a service answers with an unexpected page
        raise _Retryable(f"{what} answered something unexpected ({_short(e)}).") from e


def _raise_for_status(response, what: str) -> None:
    if response.status_code >= 400:
        err = _Retryable if response.status_code >= 500 else FetchError
        raise err(f"{what} answered HTTP {response.status_code} {response.reason or ''}".rstrip() + ".")


def _connection_reason(e: Exception) -> str:
    """Why a connection failed, in words instead of urllib3's chained exception text."""
    text = repr(e)
    if "NameResolution" in text or "getaddrinfo" in text or "Name or service not known" in text:
        return "its address could not be looked up: no network, or no DNS"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "the connection was refused: the service is down"
    if "SSL" in text:
        return "the secure connection failed"
    return "no network, or the service is down"


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def _with_retries(attempt, retries: int, timeout: float, deadline: float):
    """``attempt(timeout)`` up to ``retries + 1`` times while time is left before ``deadline``."""
    for n in range(retries + 1):
        left = deadline - time.monotonic()
        try:
            return attempt(max(0.5, min(timeout, left)))
        except _Retryable:
            if n == retries or deadline - time.monotonic() < 0.1:
                raise


def resample_to_grid(data: np.ndarray, header: fits.Header, target: WCS, what: str) -> np.ndarray:
    """Put one returned image on the target grid: exact cutout when the scales agree, else bilinear resampling."""
    from astropy.nddata import Cutout2D
    from astropy.wcs.utils import proj_plane_pixel_scales

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        source = WCS(header).celestial
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

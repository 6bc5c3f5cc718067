"""The online image services a survey can name (``Survey.online_services``), each through astroquery's own client,
and the plumbing they share: where each is asked (``service_urls``: astroquery's configuration, or the environment
variables ``SKYQUERY_FIRST_URL``, ``SKYQUERY_SKYVIEW_URL``, ``SKYQUERY_HIPS2FITS_URL``), timeouts, and every failure
as one ``FetchError`` sentence. ``core.surveys.online.fetch_cutout`` tries a survey's services in order.

The services (all through astroquery's own clients, so their request code is the one that runs):

- FIRST: the FIRST cutout server at STScI (``astroquery.image_cutouts.first.FirstClass.get_images_async``, one
  POST that answers a primary-HDU FITS at the native 1.8″/px), then SkyView as a fallback
  (``astroquery.skyview.SkyViewClass.get_image_list`` with survey "VLA FIRST (1.4 GHz)", ``pixels`` and
  ``width``/``height`` set so SkyView resamples onto exactly the requested grid, then the FITS link).
- SDSS ugriz: CDS hips2fits on the SDSS9 HiPS, one request per band
  (``astroquery.hips2fits.hips2fitsClass.query_with_wcs_async`` with the target WCS, so the answer is already on
  the bundle's grid).
"""
from __future__ import annotations

import io
import json
import os
import threading
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from core.fitsguard import check_fits_headers

SKYVIEW_FIRST_SURVEY = "VLA FIRST (1.4 GHz)"
SDSS_HIPS = "CDS/P/SDSS9/{band}"


class FetchError(Exception):
    """A cutout could not be fetched. The message says which service failed and how."""


class Retryable(FetchError):
    """A failure worth one more try (network, timeout, HTTP 5xx, broken file)."""


def read_fits_image(content: bytes, what: str) -> tuple[np.ndarray, fits.Header]:
    """The first 2-D image in FITS bytes, as float32 with its header; FetchError naming ``what`` otherwise."""
    if not content:
        raise Retryable(f"{what} returned an empty response instead of a FITS file.")
    if not content.startswith(b"SIMPLE"):
        snippet = content[:60].decode("latin-1", "replace").strip().replace("\n", " ")
        raise Retryable(f"{what} returned something that is not a FITS file (it starts with {snippet!r}); "
                         "the service is probably reporting an error.")
    try:
        check_fits_headers(content, what)   # before astropy parses a card
    except ValueError as e:
        raise FetchError(str(e)) from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(content), memmap=False, lazy_load_hdus=False) as hdul:
                for hdu in hdul:
                    if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                        data = np.asarray(hdu.data, dtype=np.float32)  # astropy raises here on a short file
                        while data.ndim > 2:  # radio cubes carry degenerate frequency/Stokes axes
                            data = data[0]
                        return data, without_commentary(hdu.header)
    except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
        raise Retryable(f"{what} returned a truncated or corrupt FITS file ({len(content)} bytes: {e}).") from e
    raise Retryable(f"{what} returned a FITS file without an image.")


def without_commentary(header: fits.Header) -> fits.Header:
    # SkyView's COMMENT/HISTORY cards hold tabs that astropy's verifier complains about; only the WCS is needed.
    return fits.Header([card for card in header.cards if card.keyword not in ("COMMENT", "HISTORY", "")])


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
            raise Retryable("SkyView answered without a FITS link (no image for this position).")
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


# service name (what a survey lists in ``Survey.online_services``) -> f(coord, target WCS, bands, timeout) -> planes
SERVICES = {"first_cutout_server": _fetch_first_cutout_server, "skyview_first": _fetch_skyview_first,
            "hips2fits_sdss": _fetch_hips2fits_sdss}


def _hips2fits_payload(hips: str, target: WCS) -> dict:
    """The query ``hips2fitsClass.query_with_wcs`` sends, built here because astroquery 0.4.11 imports matplotlib
    (not a dependency of this project) just to name the colour map, which a FITS answer ignores."""
    header = target.to_header()
    header["NAXIS1"], header["NAXIS2"] = target.pixel_shape
    return {"hips": hips, "format": "fits", "wcs": json.dumps(dict(header.items()))}


# --------------------------------------------------------------------------------------------- plumbing


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
        raise Retryable(f"{what} did not answer within {timeout:.1f} s (slow or down).") from e
    except requests.exceptions.ConnectionError as e:
        raise Retryable(f"{what} could not be reached ({_connection_reason(e)}).") from e
    except requests.exceptions.HTTPError as e:
        status = getattr(e.response, "status_code", None)
        err = Retryable if status is None or status >= 500 else FetchError
        raise err(f"{what} answered HTTP {status} ({_short(e)}).") from e
    except requests.exceptions.RequestException as e:
        raise Retryable(f"{what} request failed ({_short(e)}).") from e
    except (AttributeError, ValueError, KeyError, TypeError) as e:
        # astroquery's HTML parsing fails this way when a service answers with an unexpected page
        raise Retryable(f"{what} answered something unexpected ({_short(e)}).") from e


def _raise_for_status(response, what: str) -> None:
    if response.status_code >= 400:
        err = Retryable if response.status_code >= 500 else FetchError
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

"""The kinds of online image service a survey can name (``Survey.online_services``) and the plumbing they share:
timeouts, astroquery's cache switched off, and every failure as one ``FetchError`` sentence.
``core.surveys.online.fetch_cutout`` tries a survey's services in order.

A survey's file says which services it uses and with what (the HiPS id, the SkyView survey name, the cutout
service's URL and layer); this file knows only how each kind is asked:

- ``FirstCutoutServer``: astroquery's ``FirstClass.get_images_async`` (one POST, a FITS at the native scale);
- ``SkyView``: astroquery's ``SkyViewClass.get_image_list`` resampled onto exactly the requested grid;
- ``Hips2Fits``: CDS hips2fits through astroquery's ``hips2fitsClass`` session, one request per band with the
  target WCS, so the answer is already on the bundle's grid;
- ``FitsCutoutService``: a plain GET that answers a FITS cube of every band (the Legacy Surveys ``fits-cutout``).

Each service's URL can be pointed elsewhere (a mirror, or a local recorded server in tests) by the environment
variable the survey gives it (``SKYQUERY_FIRST_URL``, ``SKYQUERY_SKYVIEW_URL``, ``SKYQUERY_HIPS2FITS_URL``, ...).
"""
from __future__ import annotations

import io
import json
import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from core.fitsguard import check_fits_headers


class FetchError(Exception):
    """A cutout could not be fetched. The message says which service failed and how."""


class Retryable(FetchError):
    """A failure worth one more try (network, timeout, HTTP 5xx, broken file)."""


def read_fits_image(content: bytes, what: str, planes: bool = False) -> tuple[np.ndarray, fits.Header]:
    """The first 2-D image in FITS bytes, as float32 with its header; FetchError naming ``what`` otherwise. With
    ``planes``, every plane of a cube as (n, H, W) instead of the first."""
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
                        if planes:
                            data = data.reshape((-1,) + data.shape[-2:])
                        while data.ndim > 2 and not planes:  # radio cubes carry degenerate frequency/Stokes axes
                            data = data[0]
                        return data, without_commentary(hdu.header)
    except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
        raise Retryable(f"{what} returned a truncated or corrupt FITS file ({len(content)} bytes: {e}).") from e
    raise Retryable(f"{what} returned a FITS file without an image.")


def without_commentary(header: fits.Header) -> fits.Header:
    # SkyView's COMMENT/HISTORY cards hold tabs that astropy's verifier complains about; only the WCS is needed.
    return fits.Header([card for card in header.cards if card.keyword not in ("COMMENT", "HISTORY", "")])


def _url(env: str, default: str) -> str:
    """Where a service is asked, read at call time so a test or a mirror can redirect it with ``env``."""
    return os.environ.get(env) or default


@dataclass(frozen=True)
class OnlineService:
    """One image service a survey names in ``Survey.online_services``, with what it needs to know (a HiPS id, a
    layer, a URL) given by the survey's file. ``fetch`` returns one (image, header) per band."""

    label: str

    def fetch(self, coord, target: WCS, bands, timeout: float) -> list[tuple[np.ndarray, fits.Header]]:
        raise NotImplementedError


@dataclass(frozen=True)
class FirstCutoutServer(OnlineService):
    """The FIRST cutout server at STScI through astroquery's ``FirstClass``: one POST, a primary-HDU FITS at the
    native 1.8″/px. ``url`` None: astroquery's configured server."""

    url: str | None = None
    env: str = "SKYQUERY_FIRST_URL"

    def fetch(self, coord, target, bands, timeout):
        from astroquery.image_cutouts.first import FirstClass, conf

        client = _with_default_timeout(FirstClass(), timeout)
        client.URL = _url(self.env, self.url or conf.server)
        client.TIMEOUT = timeout
        size_arcmin = _field_of_view(target).to_value(u.arcmin) * 1.1  # margin so the re-centring crop stays inside
        with _astroquery_cache_off():
            response = _call(self.label, timeout,
                             lambda: client.get_images_async(coord, image_size=size_arcmin * u.arcmin))
        _raise_for_status(response, self.label)
        return [read_fits_image(response.content, f"The {self.label}")]


@dataclass(frozen=True)
class SkyView(OnlineService):
    """NASA SkyView through astroquery's ``SkyViewClass``: ``pixels`` and ``width``/``height`` set so SkyView
    resamples ``survey`` onto exactly the requested grid, then the FITS link."""

    survey: str = ""
    url: str | None = None
    env: str = "SKYQUERY_SKYVIEW_URL"

    def fetch(self, coord, target, bands, timeout):
        from astroquery.skyview import SkyViewClass, conf

        client = _with_default_timeout(SkyViewClass(), timeout)
        client.URL = _url(self.env, self.url or conf.url)
        fov = _field_of_view(target)
        with _astroquery_cache_off():
            urls = _call(self.label, timeout, lambda: client.get_image_list(
                coord, survey=[self.survey], pixels=str(target.pixel_shape[0]), projection="Tan",
                width=fov, height=fov, cache=False))
            if not urls:
                raise Retryable(f"{self.label} answered without a FITS link (no image for this position).")
            response = _call(self.label, timeout,
                             lambda: client._request("GET", urls[0], timeout=timeout, cache=False))
        _raise_for_status(response, self.label)
        return [read_fits_image(response.content, self.label)]


@dataclass(frozen=True)
class Hips2Fits(OnlineService):
    """CDS hips2fits on a HiPS, one request per band (``hips`` holds ``{band}``), with the target WCS so the answer
    is already on the bundle's grid; through astroquery's ``hips2fitsClass`` session."""

    hips: str = ""
    url: str | None = None
    env: str = "SKYQUERY_HIPS2FITS_URL"

    def fetch(self, coord, target, bands, timeout):
        from astroquery.hips2fits import conf, hips2fitsClass

        client = _with_default_timeout(hips2fitsClass(), timeout)
        default = conf.server[0] if isinstance(conf.server, list) else conf.server
        url = _url(self.env, self.url or default)
        planes = []
        for band in bands:
            what = f"hips2fits ({self.hips.format(band=band)})"
            payload = _hips2fits_payload(self.hips.format(band=band), target)
            with _astroquery_cache_off():
                response = _call(what, timeout, lambda: client._request("GET", url, params=payload,
                                                                        timeout=timeout, cache=False))
            _raise_for_status(response, what)
            planes.append(read_fits_image(response.content, what))
        return planes


@dataclass(frozen=True)
class FitsCutoutService(OnlineService):
    """A cutout service that answers one FITS cube (bands, H, W) for a position, pixel scale and size in one GET
    (the Legacy Surveys viewer's ``fits-cutout``): ``params`` are its fixed query arguments (e.g. the layer)."""

    url: str = ""
    env: str = ""
    params: tuple[tuple[str, str], ...] = ()

    def fetch(self, coord, target, bands, timeout):
        import requests

        scale = abs(float(target.wcs.cdelt[1])) * 3600
        query = {"ra": f"{coord.ra.deg:.7f}", "dec": f"{coord.dec.deg:.7f}", "pixscale": f"{scale:.4f}",
                 "size": str(target.pixel_shape[0]), "bands": "".join(bands), **dict(self.params)}
        url = _url(self.env, self.url)
        response = _call(self.label, timeout, lambda: requests.get(url, params=query, timeout=timeout))
        _raise_for_status(response, self.label)
        return read_fits_cube(response.content, self.label, bands)


def read_fits_cube(content: bytes, what: str, bands) -> list[tuple[np.ndarray, fits.Header]]:
    """One (image, celestial header) per band of a FITS cube (bands, H, W); FetchError when it has fewer planes."""
    cube, cube_header = read_fits_image(content, what, planes=True)
    if len(cube) < len(bands):
        raise FetchError(f"{what} returned {len(cube)} image plane(s) for the {len(bands)} bands "
                         f"{', '.join(bands)} asked for.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # astropy's notes on fixing the cube's CD cards
        header = WCS(cube_header).celestial.to_header()
    return [(plane, header) for plane in cube[: len(bands)]]


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

"""Fetching cutouts by position: the real astroquery clients against recorded answers on a localhost server."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from core.surveys.online import fetch_cutout
from core.surveys.services import FetchError
from recorded.replay import ReplayServer, skyview_routes

pytestmark = pytest.mark.network_fixture

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "first_mirabest"
ORIGINAL = "100_010.451-009.284_0.0529_0080.60"
FIRST_PATH = "/cgi-bin/firstcutout"


def synthetic_first_fits(nan_box: int = 0) -> bytes:
    """A SkyView-like 300×300 FIRST answer (1.8″/px, TAN) with a blob; ``nan_box`` blanks a centred square."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [150.5, 150.5]
    w.wcs.cdelt = [-0.0005, 0.0005]
    yy, xx = np.mgrid[:300, :300]
    data = (1e-3 * np.exp(-((xx - 149.5) ** 2 + (yy - 149.5) ** 2) / 50)).astype(np.float32)
    if nan_box:
        lo = 150 - nan_box // 2
        data[lo : lo + nan_box, lo : lo + nan_box] = np.nan
    buf = io.BytesIO()
    fits.PrimaryHDU(data, header=w.to_header()).writeto(buf)
    return buf.getvalue()


def centre_of(fits_bytes: bytes) -> SkyCoord:
    h = fits.Header.fromstring(fits_bytes[:2880 * 40].split(b"END" + b" " * 77)[0].decode("latin-1") + "END")
    return SkyCoord(h["CRVAL1"], h["CRVAL2"], unit="deg", frame="icrs")


@pytest.fixture
def first_answer() -> bytes:
    """The real SkyView FIRST cutout when the shared data is here, else a synthetic one of the same form."""
    path = DATA / "skyview_originals" / f"{ORIGINAL}.fits"
    return path.read_bytes() if path.is_file() else synthetic_first_fits()


@pytest.fixture
def server(monkeypatch):
    with ReplayServer() as srv:
        monkeypatch.setenv("SKYQUERY_FIRST_URL", srv.url(FIRST_PATH))
        monkeypatch.setenv("SKYQUERY_SKYVIEW_URL", srv.url("/current/cgi/basicform.pl"))
        monkeypatch.setenv("SKYQUERY_HIPS2FITS_URL", srv.url("/hips2fits"))
        yield srv


def test_first_cutout_server_success_matches_stored_bundle_cutout(server):
    original = DATA / "skyview_originals" / f"{ORIGINAL}.fits"
    if not original.is_file():
        pytest.skip(f"real FIRST data not present at {DATA} (shared test data is not shipped with the project)")
    body = original.read_bytes()
    server.route("POST", FIRST_PATH, body, content_type="application/fits")
    image, header = fetch_cutout("first", centre_of(body), 150, 1.8, timeout=5)
    stored = fits.getdata(DATA / "cutouts" / f"{ORIGINAL}.fits.fz")
    assert image.shape == (1, 150, 150) and image.dtype == np.float32
    # Same pixels as the bundle's own cutout, up to the RICE quantisation of the stored copy (q = 16: a step of
    # about 1/16 of the ~0.15 mJy/beam noise, i.e. ~1e-5 Jy/beam).
    assert np.abs(image[0] - stored).max() < 2e-5
    assert header["SERVICE"] == "FIRST cutout server" and header["NANFILL"] == 0
    assert WCS(header).pixel_to_world(74.5, 74.5).separation(centre_of(body)).arcsec < 0.1


def test_resamples_when_the_service_scale_differs(server):
    body = synthetic_first_fits()  # a round blob centred on the position, sigma 5 px at 1.8″/px
    server.route("POST", FIRST_PATH, body, content_type="application/fits")
    image, _ = fetch_cutout("first", centre_of(body), 64, 3.6, timeout=5)
    assert image.shape == (1, 64, 64) and np.isfinite(image).all()
    # Twice the pixel scale: the blob stays centred and is half as wide in pixels.
    peak = np.unravel_index(np.argmax(image[0]), image[0].shape)
    assert {int(peak[0]), int(peak[1])} <= {31, 32}
    profile = image[0, 31:33].mean(axis=0)
    width_px = (profile > profile.max() / 2).sum()
    assert 4 <= width_px <= 6  # FWHM = 2.355 * 5 px / 2 ≈ 5.9 px, sampled


def test_timeout_is_retried_once_then_reported(server, first_answer):
    server.route("POST", FIRST_PATH, first_answer, delay=5.0)
    t = time.perf_counter()
    # the retry gets what is left of the 2 s budget (at least 0.5 s): under load that is less than the first 1.0 s
    with pytest.raises(FetchError, match=r"FIRST cutout server did not answer within (1\.0|0\.[5-9]) s"):
        fetch_cutout("first", centre_of(first_answer), 64, 1.8, timeout=1.0, retries=1)
    assert server.hits[("POST", FIRST_PATH)] == 2
    assert time.perf_counter() - t < 8


def test_fallback_is_skipped_when_the_time_budget_is_spent(server, first_answer):
    server.route("POST", FIRST_PATH, first_answer, delay=5.0)
    skyview_routes(server, first_answer)
    with pytest.raises(FetchError, match=r"SkyView was not tried: the 2.0 s allowed"):
        fetch_cutout("first", centre_of(first_answer), 64, 1.8, timeout=1.0, retries=1)
    assert server.hits[("GET", "/current/cgi/basicform.pl")] == 0


def test_http_500_is_retried_and_falls_back_to_skyview(server, first_answer):
    server.route("POST", FIRST_PATH, b"<html>Internal Server Error</html>", status=500, content_type="text/html")
    skyview_routes(server, first_answer)
    image, header = fetch_cutout("first", centre_of(first_answer), 150, 1.8, timeout=5)
    assert server.hits[("POST", FIRST_PATH)] == 2
    assert header["SERVICE"] == "SkyView" and image.shape == (1, 150, 150)
    assert server.hits[("GET", "/tempspace/fits/skv4242_1.fits")] == 1


def test_http_500_everywhere_names_each_service(server, first_answer):
    server.route("POST", FIRST_PATH, b"busy", status=500)
    with pytest.raises(FetchError) as err:
        fetch_cutout("first", centre_of(first_answer), 64, 1.8, timeout=2)
    msg = str(err.value)
    assert "FIRST cutout server answered HTTP 500" in msg and "SkyView" in msg and "HTTP 404" in msg


def test_client_error_is_not_retried(server, first_answer):
    server.route("POST", FIRST_PATH, b"bad request", status=400)
    with pytest.raises(FetchError, match="HTTP 400"):
        fetch_cutout("first", centre_of(first_answer), 64, 1.8, timeout=2)
    assert server.hits[("POST", FIRST_PATH)] == 1


def test_truncated_fits_is_reported(server, first_answer):
    server.route("POST", FIRST_PATH, first_answer[: len(first_answer) // 2])
    with pytest.raises(FetchError, match="truncated or corrupt FITS"):
        fetch_cutout("first", centre_of(first_answer), 64, 1.8, timeout=2)


def test_error_page_instead_of_fits_is_reported(server, first_answer):
    server.route("POST", FIRST_PATH, b"<html><body>No FIRST coverage here</body></html>", content_type="text/html")
    with pytest.raises(FetchError, match="not a FITS file.*No FIRST coverage"):
        fetch_cutout("first", centre_of(first_answer), 64, 1.8, timeout=2)


def test_empty_answer_is_reported(server, first_answer):
    server.route("POST", FIRST_PATH, b"")
    with pytest.raises(FetchError, match="empty response"):
        fetch_cutout("first", centre_of(first_answer), 64, 1.8, timeout=2)


def test_mostly_blank_cutout_is_an_error(server):
    body = synthetic_first_fits(nan_box=120)
    server.route("POST", FIRST_PATH, body)
    with pytest.raises(FetchError, match=r"blank \(NaN\).*coverage"):
        fetch_cutout("first", centre_of(body), 150, 1.8, timeout=2)


def test_a_few_nans_are_filled_and_counted(server):
    body = synthetic_first_fits(nan_box=4)
    server.route("POST", FIRST_PATH, body)
    image, header = fetch_cutout("first", centre_of(body), 150, 1.8, timeout=2)
    assert np.isfinite(image).all()
    assert header["NANFILL"] == 16


def test_cache_hit_makes_no_second_request(server, first_answer, tmp_path):
    server.route("POST", FIRST_PATH, first_answer)
    coord = centre_of(first_answer)
    first, _ = fetch_cutout("first", coord, 150, 1.8, timeout=2, cache_dir=tmp_path)
    second, header = fetch_cutout("first", coord, 150, 1.8, timeout=2, cache_dir=tmp_path)
    assert server.hits[("POST", FIRST_PATH)] == 1
    np.testing.assert_array_equal(first, second)
    assert header["SERVICE"] == "FIRST cutout server"
    # A different size is a different cutout.
    fetch_cutout("first", coord, 64, 1.8, timeout=2, cache_dir=tmp_path)
    assert server.hits[("POST", FIRST_PATH)] == 2


def test_damaged_cache_file_is_fetched_again(server, first_answer, tmp_path):
    server.route("POST", FIRST_PATH, first_answer)
    coord = centre_of(first_answer)
    fetch_cutout("first", coord, 64, 1.8, timeout=2, cache_dir=tmp_path)
    (cached,) = list(tmp_path.rglob("*.fits"))
    cached.write_bytes(b"garbage")
    image, _ = fetch_cutout("first", coord, 64, 1.8, timeout=2, cache_dir=tmp_path)
    assert image.shape == (1, 64, 64) and server.hits[("POST", FIRST_PATH)] == 2


def hips2fits_answer(query: dict) -> bytes:
    """What hips2fits does: render the requested HiPS on the WCS given in the query (band index as the value)."""
    header = fits.Header(json.loads(query["wcs"][0]))
    band = "ugriz".index(query["hips"][0].rsplit("/", 1)[1])
    data = np.full((header["NAXIS2"], header["NAXIS1"]), float(band), dtype=np.float32)
    buf = io.BytesIO()
    fits.PrimaryHDU(data, header=WCS(header).to_header()).writeto(buf)
    return buf.getvalue()


def test_sdss_bands_come_from_hips2fits_on_the_bundle_grid(server):
    server.route("GET", "/hips2fits", hips2fits_answer, content_type="application/fits")
    coord = SkyCoord(201.42, 23.38, unit="deg")
    image, header = fetch_cutout("sdss", coord, 107, 0.396, timeout=2)
    assert image.shape == (5, 107, 107)
    np.testing.assert_allclose(image[:, 53, 53], [0, 1, 2, 3, 4])
    assert server.hits[("GET", "/hips2fits")] == 5
    assert abs(header["CDELT2"] * 3600 - 0.396) < 1e-9


def test_unknown_survey_says_what_can_be_fetched():
    with pytest.raises(FetchError, match="no online image service for survey 'fixture'"):
        fetch_cutout("fixture", SkyCoord(1, 2, unit="deg"), 64, 1.0)


def test_service_down_is_reported(monkeypatch):
    # A port nobody listens on: connection refused, as when the service (or the network) is down.
    monkeypatch.setenv("SKYQUERY_FIRST_URL", "http://127.0.0.1:9/cgi-bin/firstcutout")
    monkeypatch.setenv("SKYQUERY_SKYVIEW_URL", "http://127.0.0.1:9/current/cgi/basicform.pl")
    with pytest.raises(FetchError, match="could not be reached") as err:
        fetch_cutout("first", SkyCoord(150, 2, unit="deg"), 64, 1.8, timeout=1, retries=0)
    message = str(err.value)
    assert "refused" in message and "upload a FITS" in message
    assert "HTTPConnectionPool" not in message and "Max retries" not in message  # words, not urllib3's repr

"""FITS headers are bounded on their raw bytes before astropy parses them: card count, HDU count, WCS distortion
order. A real cutout (primary image, or an image in an extension after a table) passes."""
from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from core.fitsguard import MAX_DISTORTION_ORDER, MAX_HEADER_CARDS, check_fits_headers


def fits_bytes(hdus) -> bytes:
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def cutout_header(**extra) -> fits.Header:
    h = fits.Header()
    h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0, CRPIX1=16, CRPIX2=16,
             CDELT1=-1.8 / 3600, CDELT2=1.8 / 3600, **extra)
    return h


def test_real_cutouts_pass():
    image = np.zeros((32, 32), np.float32)
    check_fits_headers(fits_bytes([fits.PrimaryHDU(image, cutout_header())]), "cutout.fits")
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(100.0))])
    check_fits_headers(fits_bytes([fits.PrimaryHDU(), table, fits.ImageHDU(image, cutout_header())]), "mef.fits")
    check_fits_headers(fits_bytes([fits.PrimaryHDU(image, cutout_header(A_ORDER=3, B_ORDER=3))]), "sip.fits")


def test_a_header_of_too_many_cards_is_refused_before_parsing():
    header = cutout_header()
    for i in range(MAX_HEADER_CARDS + 10):
        header.append((f"JUNK{i % 9999:04d}", i), useblanks=False, bottom=True)
    content = fits_bytes([fits.PrimaryHDU(np.zeros((4, 4), np.float32), header)])
    with pytest.raises(ValueError, match=r"big.fits has a header of more than 2,000 cards"):
        check_fits_headers(content, "big.fits")


def test_a_huge_distortion_order_is_refused():
    content = fits_bytes([fits.PrimaryHDU(np.zeros((4, 4), np.float32), cutout_header(A_ORDER=6000))])
    with pytest.raises(ValueError, match="order 6000 .*A_ORDER.*at most 9"):
        check_fits_headers(content, "sip.fits")
    assert MAX_DISTORTION_ORDER == 9


def test_too_many_hdus_are_refused_and_a_truncated_file_is_left_to_astropy():
    many = fits_bytes([fits.PrimaryHDU()] + [fits.ImageHDU(np.zeros((2, 2), np.float32)) for _ in range(20)])
    with pytest.raises(ValueError, match="more than 16 HDUs"):
        check_fits_headers(many, "many.fits")
    check_fits_headers(many[:3000], "short.fits")


def test_the_upload_path_says_it_in_one_message(tmp_path):
    from explorer.sky.query_embed import QueryError, _read_planes

    content = fits_bytes([fits.PrimaryHDU(np.zeros((4, 4), np.float32), cutout_header(B_ORDER=50))])
    with pytest.raises(QueryError, match="upload.fits asks for a WCS distortion of order 50"):
        _read_planes(content, "upload.fits")


def test_a_wcs_that_wcslib_rejects_is_one_message():
    """Found by benchmarks/probe_bad_input.py: one flipped byte in CTYPE1 ('RA---TAN' -> an unknown projection)
    made astropy.wcs raise InconsistentAxisTypesError through the upload."""
    from explorer.sky.query_embed import QueryError, _read_planes

    content = fits_bytes([fits.PrimaryHDU(np.zeros((4, 4), np.float32), cutout_header())])
    broken = content.replace(b"'RA---TAN'", b"'RA---T" + bytes([ord("A") ^ 0xFF]) + b"N'", 1)
    with pytest.raises(QueryError, match="upload.fits has a WCS that cannot be read"):
        _read_planes(broken, "upload.fits")

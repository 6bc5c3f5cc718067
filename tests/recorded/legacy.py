"""Answers of the Legacy Surveys' two image services, in their layouts, for the replay server (no network here, so
they are synthesised from the cutouts a test hands over rather than recorded): the viewer's ``fits-cutout`` (one cube
(3, size, size) centred on the query, a TAN WCS on axes 1-2, BAND0..BAND2 naming the planes) and CDS hips2fits on
the DESI Legacy Surveys DR10 HiPS (one band per request, on the WCS of the query)."""
from __future__ import annotations

import io
import json

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

CUTOUT_PATH = "/viewer/fits-cutout"


def cutout_service(cube, pick=None):
    """fits-cutout answering ``cube`` (3, H, W), or ``cube[pick(ra, dec)]`` when ``pick`` chooses among many."""
    def answer(query: dict) -> bytes:
        ra, dec = float(query["ra"][0]), float(query["dec"][0])
        planes = cube if pick is None else cube[pick(ra, dec)]
        size, scale = int(query["size"][0]), float(query["pixscale"][0])
        assert query["layer"] == ["ls-dr10"] and query["bands"] == ["grz"]
        header = fits.Header()
        header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=ra, CRVAL2=dec, CRPIX1=(size + 1) / 2,
                      CRPIX2=(size + 1) / 2, CD1_1=-scale / 3600, CD1_2=0.0, CD2_1=0.0, CD2_2=scale / 3600,
                      BANDS="grz", BAND0="g", BAND1="r", BAND2="z")
        buf = io.BytesIO()
        fits.PrimaryHDU(np.asarray(planes)[:, :size, :size], header=header).writeto(buf)
        return buf.getvalue()
    return answer


def hips2fits_answer(query: dict) -> bytes:
    header = fits.Header(json.loads(query["wcs"][0]))
    band = "grz".index(query["hips"][0].rsplit("/", 1)[1])
    assert query["hips"][0].startswith("CDS/P/DESI-Legacy-Surveys/DR10/")
    data = np.full((header["NAXIS2"], header["NAXIS1"]), float(band), dtype=np.float32)
    buf = io.BytesIO()
    fits.PrimaryHDU(data, header=WCS(header).to_header()).writeto(buf)
    return buf.getvalue()

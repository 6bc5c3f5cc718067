"""Positions and outbound links for one object: sexagesimal/degree RA/Dec (astropy) and archive viewers by position
(each survey's own, from its file in ``core.surveys``)."""
from __future__ import annotations

import astropy.units as u
from astropy.coordinates import SkyCoord

from core.surveys.base import find_survey


def sky_position(ra_deg: float, dec_deg: float) -> dict:
    """RA/Dec in degrees and sexagesimal (ICRS)."""
    c = SkyCoord(ra=float(ra_deg) * u.deg, dec=float(dec_deg) * u.deg, frame="icrs")
    return {
        "ra_deg": f"{c.ra.deg:.5f}",
        "dec_deg": f"{c.dec.deg:+.5f}",
        "ra_hms": c.ra.to_string(unit=u.hourangle, sep=":", precision=2, pad=True),
        "dec_dms": c.dec.to_string(unit=u.deg, sep=":", precision=1, alwayssign=True, pad=True),
        "coord": c,
    }


def archive_links(ra_deg: float, dec_deg: float, survey: str) -> list[tuple[str, str]]:
    """(label, url) pairs of archive viewers at this position, as the bundle's survey lists them
    (``Survey.archive_links``: SDSS SkyServer for SDSS, the FIRST cutout server for FIRST, Legacy Survey and Simbad
    for every survey)."""
    return find_survey(survey).archive_links(float(ra_deg), float(dec_deg))

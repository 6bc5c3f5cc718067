"""Positions and outbound links for one object: sexagesimal/degree RA/Dec (astropy) and archive viewers by position."""
from __future__ import annotations

from urllib.parse import urlencode

import astropy.units as u
from astropy.coordinates import SkyCoord

RADIO_SURVEYS = {"first", "nvss", "vlass", "mirabest"}


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
    """(label, url) pairs: SDSS SkyServer and Legacy Survey for optical, the FIRST cutout server for radio,
    and CDS Simbad for both."""
    ra, dec = float(ra_deg), float(dec_deg)
    links = []
    if survey.lower() in RADIO_SURVEYS:
        c = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
        radec = c.to_string("hmsdms", sep=" ", precision=2)
        links.append(("FIRST cutout", "https://third.ucllnl.org/cgi-bin/firstcutout?" + urlencode(
            {"RA": radec, "Dec": "", "Equinox": "J2000", "ImageSize": "4.5", "MaxInt": "10", "ImageType": "GIF"})))
        links.append(("Legacy Survey (optical host)", "https://www.legacysurvey.org/viewer?" + urlencode(
            {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "layer": "ls-dr10", "zoom": "14"})))
    else:
        links.append(("SDSS SkyServer", "https://skyserver.sdss.org/dr17/VisualTools/navi?" + urlencode(
            {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "scale": "0.2"})))
        links.append(("Legacy Survey", "https://www.legacysurvey.org/viewer?" + urlencode(
            {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}", "layer": "ls-dr10", "zoom": "16"})))
    links.append(("Simbad", "https://simbad.cds.unistra.fr/simbad/sim-coo?" + urlencode(
        {"Coord": f"{ra:.6f} {dec:+.6f}", "CooFrame": "ICRS", "Radius": "10", "Radius.unit": "arcsec"})))
    return links

"""Find a position on the sky from whatever a user pastes, then match it against the bundle's catalogue.

``parse_position(text)`` understands, in this order:

- a pasted URL with ``ra=`` and ``dec=`` (SkyServer navigate/chart tool, Legacy Survey viewer), degrees;
- IAU-style names ``J132541.2+232253`` with an optional survey prefix (``FIRST J…``, ``SDSS J…``), also the
  short ``J1325+2322`` form;
- two decimal numbers (``201.42 23.38``, ``201.42, +23.38``), degrees;
- sexagesimal (``13:25:41.2 +23:22:53``, ``13h25m41s +23d22m53s``, ``13 25 41.2 +23 22 53``), RA in hours;
- anything else as an object name, resolved by CDS Sesame through ``SkyCoord.from_name`` with a timeout.

Every position is an ICRS ``SkyCoord``. A bad input gives one message saying what was understood and what was not.

``CatalogueMatcher`` holds the catalogue ``SkyCoord`` of one bundle and its KD-tree (built once) and answers
"which object is this?" with a radius, the nearest object and its separation,
and whether the position lies inside the bundle's footprint.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord

DEFAULT_MATCH_RADIUS = 3 * u.arcsec
NAME_RESOLVE_TIMEOUT_S = 5.0
SESAME_ENV = "SKYQUERY_SESAME_URL"
# Longer than any position, J-name, object name or archive URL; a bound on the text the parsers (and Sesame) see, so a
# pasted page cannot hold the server's event loop (a 40 k-character paste took 38 s before this).
MAX_QUERY_CHARS = 500
EXAMPLE = "e.g. '201.42 +23.38', '13:25:41.2 +23:22:53' or 'J132541.2+232253'"


@dataclass(frozen=True)
class ParsedPosition:
    """What ``parse_position`` made of the text: ``coord`` is None when nothing usable was found."""

    text: str
    coord: SkyCoord | None
    how: str
    message: str

    @property
    def ok(self) -> bool:
        return self.coord is not None


class _Unparsable(ValueError):
    """Raised inside the parsers with the user-facing explanation."""


# --------------------------------------------------------------------------------------------- parsing
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)"
_DECIMAL_PAIR = re.compile(rf"^\s*({_NUMBER})\s*(?:deg|d|°)?\s*[,;\s]\s*({_NUMBER})\s*(?:deg|d|°)?\s*$", re.I)
_IAU_NAME = re.compile(
    r"^\s*(?:(?P<prefix>[A-Za-z][\w\-]*)\s*[-_ ]?\s*)?J"
    r"(?P<ra>\d{4}(?:\d{2}(?:\.\d+)?)?)(?P<dec>[+-]\d{4}(?:\d{2}(?:\.\d+)?)?)\s*$"
)
_HMS_DMS = re.compile(
    r"^\s*(?P<rh>[+-]?\d+(?:\.\d*)?)\s*h\s*(?:(?P<rm>\d+(?:\.\d*)?)\s*m\s*)?(?:(?P<rs>\d+(?:\.\d*)?)\s*s?)?"
    r"\s*[,;]?\s*(?P<dd>[+-]?\d+(?:\.\d*)?)\s*(?:d|°)\s*(?:(?P<dm>\d+(?:\.\d*)?)\s*(?:m|')\s*)?"
    r"(?:(?P<ds>\d+(?:\.\d*)?)\s*(?:s|\"|'')?)?\s*$",
    re.I,
)


def parse_position(text: str, *, resolve_names: bool = True, timeout: float = NAME_RESOLVE_TIMEOUT_S) -> ParsedPosition:
    """Turn a search-box string into an ICRS position (see the module docstring for the accepted forms)."""
    raw = (text or "").strip()
    if not raw:
        return ParsedPosition(raw, None, "empty", f"Type a position or an object name, {EXAMPLE}.")
    if len(raw) > MAX_QUERY_CHARS:
        return ParsedPosition(raw[:80] + "…", None, "too long",
                              f"That is {len(raw):,} characters; a position, name or archive URL fits in "
                              f"{MAX_QUERY_CHARS}. Paste just the position, {EXAMPLE}.")
    raw = " ".join(raw.split())   # one space between tokens: no run of blanks for the patterns to split many ways
    for how, parser in _PARSERS:
        try:
            coord = parser(raw)
        except _Unparsable as e:
            return ParsedPosition(raw, None, how, str(e))
        if coord is not None:
            how = _url_kind(raw) if how == "URL" else how
            return ParsedPosition(raw, coord, how, f"{how}: {format_coord(coord)}")
    return resolve_name(raw, enabled=resolve_names, timeout=timeout)


def format_coord(coord: SkyCoord) -> str:
    """'RA 201.42000°, Dec +23.38000° (13:25:40.80 +23:22:48.0)'."""
    sexa = coord.to_string("hmsdms", sep=":", precision=2)
    return f"RA {coord.ra.deg:.5f}°, Dec {coord.dec.deg:+.5f}° ({sexa})"


def _icrs(ra: Angle, dec: Angle) -> SkyCoord:
    return SkyCoord(ra=ra, dec=dec, frame="icrs")


def _hours(h, m, s) -> Angle:
    return Angle(float(h) + float(m) / 60 + float(s) / 3600, u.hourangle)


def _degrees(sign: str, d, m, s) -> Angle:
    # The sign is carried separately so that "-00 30 00" stays negative.
    value = abs(float(d)) + float(m) / 60 + float(s) / 3600
    return Angle(-value if sign == "-" else value, u.deg)


def _check_degrees(ra_deg: float, dec_deg: float, source: str) -> SkyCoord:
    problems = []
    if not (0 <= ra_deg < 360):
        problems.append(f"RA {ra_deg:g}° is out of range [0, 360)")
    if not (-90 <= dec_deg <= 90):
        problems.append(f"Dec {dec_deg:g}° is out of range [-90, +90]")
    if problems:
        raise _Unparsable(f"Read {source} as RA {ra_deg:g}°, Dec {dec_deg:g}° (degrees), but "
                          + " and ".join(problems) + ".")
    return _icrs(Angle(ra_deg, u.deg), Angle(dec_deg, u.deg))


def _parse_url(raw: str) -> SkyCoord | None:
    if not re.match(r"^\s*(https?://|www\.)", raw, re.I):
        return None
    url = urlparse(raw if "://" in raw else "https://" + raw)
    params = {k.lower(): v[0] for k, v in parse_qs(url.query + "&" + url.fragment.lstrip("?")).items() if v}
    if "ra" not in params or "dec" not in params:
        raise _Unparsable(f"This URL ({url.netloc}) has no ra= and dec= parameters; paste a SkyServer or Legacy "
                          f"Survey viewer link, or type coordinates, {EXAMPLE}.")
    try:
        ra, dec = float(params["ra"]), float(params["dec"])
    except ValueError:
        raise _Unparsable(f"The URL's ra={params['ra']!r} and dec={params['dec']!r} are not numbers in degrees.")
    return _check_degrees(ra, dec, "the URL's ra/dec")


def _url_kind(raw: str) -> str:
    host = urlparse(raw if "://" in raw else "https://" + raw).netloc.lower()
    if "sdss" in host:
        return "SkyServer URL"
    if "legacysurvey" in host:
        return "Legacy Survey viewer URL"
    return "URL"


def _parse_iau_name(raw: str) -> SkyCoord | None:
    m = _IAU_NAME.match(raw)
    if not m:
        return None
    ra_s, dec_s = m["ra"], m["dec"]
    rh, rm, rs = int(ra_s[:2]), int(ra_s[2:4]), float(ra_s[4:] or 0)
    sign, dd, dm, ds = dec_s[0], int(dec_s[1:3]), int(dec_s[3:5]), float(dec_s[5:] or 0)
    _check_sexagesimal((rh, rm, rs), (dd, dm, ds), f"the name {raw!r}")
    return _icrs(_hours(rh, rm, rs), _degrees(sign, dd, dm, ds))


def _parse_decimal_pair(raw: str) -> SkyCoord | None:
    m = _DECIMAL_PAIR.match(raw)
    if not m:
        return None
    return _check_degrees(float(m[1]), float(m[2]), f"{raw!r}")


def _check_sexagesimal(ra_parts, dec_parts, source: str) -> None:
    rh, rm, rs = (abs(float(p)) for p in ra_parts)
    dd, dm, ds = (abs(float(p)) for p in dec_parts)
    problems = []
    if float(ra_parts[0]) < 0 or rh >= 24:
        problems.append(f"RA {ra_parts[0]}h is out of range (0–24h)")
    if rm >= 60 or rs >= 60:
        problems.append("RA minutes and seconds must be below 60")
    if dd > 90 or (dd == 90 and (dm or ds)):
        problems.append(f"Dec {dec_parts[0]}° is out of range (−90° to +90°)")
    if dm >= 60 or ds >= 60:
        problems.append("Dec arcminutes and arcseconds must be below 60")
    if problems:
        raise _Unparsable(f"Read {source} as sexagesimal (RA in hours, Dec in degrees), but "
                          + "; ".join(problems) + ".")


def _split_sexagesimal(raw: str):
    """(ra_parts, dec_parts, dec_sign) from colon- or space-separated sexagesimal, else None."""
    tokens = raw.replace(",", " ").split()
    if len(tokens) == 2 and ":" in tokens[0] and ":" in tokens[1]:
        ra_parts, dec_parts = tokens[0].split(":"), tokens[1].split(":")
    elif len(tokens) == 6 and all(re.fullmatch(_NUMBER, t) for t in tokens):
        ra_parts, dec_parts = tokens[:3], tokens[3:]
    elif len(tokens) == 4 and all(re.fullmatch(_NUMBER, t) for t in tokens):  # "13 25 +23 22"
        ra_parts, dec_parts = tokens[:2], tokens[2:]
    else:
        return None
    if not all(re.fullmatch(_NUMBER, p) for p in ra_parts + dec_parts) or len(ra_parts) > 3 or len(dec_parts) > 3:
        raise _Unparsable(f"Read {raw!r} as sexagesimal but could not split it into RA hh:mm:ss and Dec dd:mm:ss; "
                          f"try {EXAMPLE}.")
    sign = "-" if dec_parts[0].startswith("-") else "+"
    ra_parts = (ra_parts + ["0", "0"])[:3]
    dec_parts = (dec_parts + ["0", "0"])[:3]
    return ra_parts, dec_parts, sign


def _parse_sexagesimal(raw: str) -> SkyCoord | None:
    m = _HMS_DMS.match(raw)
    if m:
        ra_parts = (m["rh"], m["rm"] or "0", m["rs"] or "0")
        dec_parts = (m["dd"], m["dm"] or "0", m["ds"] or "0")
        sign = "-" if m["dd"].startswith("-") else "+"
    else:
        split = _split_sexagesimal(raw)
        if split is None:
            return None
        ra_parts, dec_parts, sign = split
    _check_sexagesimal(ra_parts, dec_parts, repr(raw))
    dd, dm, ds = (abs(float(p)) for p in dec_parts)
    return _icrs(_hours(*(float(p) for p in ra_parts)), _degrees(sign, dd, dm, ds))


def _looks_like_coordinates(raw: str) -> bool:
    """Mostly digits, signs and separators: a mistyped position rather than an object name."""
    units_dropped = re.sub(r"(?<=[\d.])\s*[hmsd°'\"]", " ", raw, flags=re.I)
    return bool(re.fullmatch(r"[\d\s.,;:+\-]+", units_dropped)) and any(c.isdigit() for c in raw)


def _reject_coordinate_like(raw: str) -> SkyCoord | None:
    if _looks_like_coordinates(raw):
        n = len(re.findall(_NUMBER, raw))
        raise _Unparsable(f"Read {raw!r} as {n} number(s) but could not make a position of them: give RA and Dec "
                          f"as two decimal degrees or as sexagesimal, {EXAMPLE}.")
    return None


_PARSERS = (
    ("URL", _parse_url),
    ("IAU name", _parse_iau_name),
    ("decimal degrees", _parse_decimal_pair),
    ("sexagesimal", _parse_sexagesimal),
    ("coordinates", _reject_coordinate_like),
)


def resolve_name(name: str, *, enabled: bool = True, timeout: float = NAME_RESOLVE_TIMEOUT_S) -> ParsedPosition:
    """Resolve an object name with CDS Sesame (``SkyCoord.from_name``), waiting at most ``timeout`` seconds per
    Sesame mirror. ``$SKYQUERY_SESAME_URL`` (comma-separated) replaces astropy's mirror list."""
    from astropy.coordinates.name_resolve import NameResolveError, sesame_url
    from astropy.utils.data import conf as data_conf

    if not enabled:
        return ParsedPosition(name, None, "name", f"{name!r} is not a position; name resolution is switched off "
                                                  f"here, so type coordinates, {EXAMPLE}.")
    mirrors = os.environ.get(SESAME_ENV)
    try:
        with data_conf.set_temp("remote_timeout", timeout), (sesame_url.set(mirrors.split(",")) if mirrors
                                                              else contextlib.nullcontext()):
            coord = SkyCoord.from_name(name, frame="icrs", cache=False)
    except NameResolveError as e:
        detail = str(e)
        if "All Sesame queries failed" not in detail:
            return ParsedPosition(name, None, "name", f"Sesame does not know the name {name!r}; check the spelling "
                                                      f"or type coordinates, {EXAMPLE}.")
        return ParsedPosition(name, None, "name", f"{name!r} looks like an object name; resolving names needs the "
                                                  f"network (CDS Sesame), which could not be reached. Type "
                                                  f"coordinates instead, {EXAMPLE}.")
    coord = SkyCoord(ra=coord.icrs.ra, dec=coord.icrs.dec, frame="icrs")
    return ParsedPosition(name, coord, "name (Sesame)", f"{name} resolved by Sesame: {format_coord(coord)}")


# --------------------------------------------------------------------------------------------- local match
@dataclass(frozen=True)
class LocalMatch:
    """The catalogue's answer for one position. ``index`` is the matched row, or None outside ``radius``."""

    coord: SkyCoord
    index: int | None
    nearest_index: int
    nearest_separation: Angle
    in_footprint: bool
    message: str

    @property
    def matched(self) -> bool:
        return self.index is not None


class CatalogueMatcher:
    """Sky matching against one bundle's catalogue. Build once per bundle (~3 s at 1 M); ``match`` is then ~0.1 ms.

    The tree is the one ``SkyCoord.match_to_catalog_sky`` builds (a scipy KD-tree on the catalogue's unit vectors),
    held here rather than in the SkyCoord's cache because astropy re-derives the catalogue's Cartesian form from a
    fresh copy on every call (~100 ms per query at 1 M objects, measured in benchmarks/bench_skyquery.py).
    Separations come from astropy (``SkyCoord.separation``).
    """

    def __init__(self, ra_deg, dec_deg, object_ids=None, *, footprint_radius: Angle | None = None):
        from scipy.spatial import cKDTree

        ra = np.asarray(ra_deg, dtype=np.float64)
        dec = np.asarray(dec_deg, dtype=np.float64)
        if len(ra) == 0:
            raise ValueError("the catalogue is empty: there is nothing to match positions against")
        self.coords = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
        self.object_ids = None if object_ids is None else np.asarray(object_ids)
        self.tree = cKDTree(_unit_vectors(self.coords))
        self.footprint_radius = footprint_radius if footprint_radius is not None else self._typical_spacing() * 5

    @classmethod
    def from_bundle(cls, bundle, **kwargs) -> "CatalogueMatcher":
        cat = bundle.catalog
        return cls(cat["ra"].to_numpy(), cat["dec"].to_numpy(), cat["object_id"].to_numpy(), **kwargs)

    def __len__(self) -> int:
        return len(self.coords)

    def _typical_spacing(self, sample: int = 20_000, scale: float = 1.0) -> Angle:
        """Median separation between neighbouring objects of the tree (on a subsample), times ``scale`` (a sampled
        tree's spacing scaled to the whole catalogue's density), floored at 1 arcmin."""
        if len(self.tree.data) < 2:
            return Angle(1, u.deg)
        rng = np.random.default_rng(0)
        rows = rng.choice(len(self.tree.data), size=min(sample, len(self.tree.data)), replace=False)
        chord, _ = self.tree.query(self.tree.data[rows], k=2)
        sep_rad = 2 * np.arcsin(np.clip(chord[:, 1] / 2, 0, 1))
        return Angle(max(float(np.degrees(np.median(sep_rad))) * scale, 1 / 60), u.deg)

    def nearest(self, coord: SkyCoord) -> tuple[int, Angle]:
        """Row of the nearest catalogue object and its separation."""
        _, idx = self.tree.query(_unit_vectors(coord.reshape((1,)))[0])
        return int(idx), self.coords[int(idx)].separation(coord)

    def match(self, coord: SkyCoord, radius=DEFAULT_MATCH_RADIUS) -> LocalMatch:
        radius = Angle(radius)
        nearest, sep = self.nearest(coord)
        inside = bool(sep <= self.footprint_radius)
        name = self._name(nearest)
        if sep <= radius:
            msg = f"{name[0].upper()}{name[1:]} is {_fmt_angle(sep)} from the position (within {_fmt_angle(radius)})."
            return LocalMatch(coord, nearest, nearest, sep, True, msg)
        msg = f"No catalogue object within {_fmt_angle(radius)}; the nearest is {name} at {_fmt_angle(sep)}."
        if not inside:
            msg += (f" Warning: that is far — the position is outside this bundle's footprint (no object within "
                    f"{_fmt_angle(self.footprint_radius)}).")
        else:
            msg += " The position is inside the bundle's footprint."
        return LocalMatch(coord, None, nearest, sep, inside, msg)

    def positions(self, rows: np.ndarray) -> SkyCoord:
        """The sky positions of catalogue ``rows``."""
        return self.coords[rows]

    def _name(self, i: int) -> str:
        return f"object {self.object_ids[i]}" if self.object_ids is not None else f"row {i}"

    def subsample(self, max_points: int = 5000, seed: int = 0) -> np.ndarray:
        """Row indices of at most ``max_points`` catalogue objects, for drawing the footprint."""
        n = len(self)
        if n <= max_points:
            return np.arange(n)
        return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _unit_vectors(coords: SkyCoord) -> np.ndarray:
    """(N, 3) ICRS unit vectors, as astropy's sky matching uses them."""
    return np.ascontiguousarray(coords.icrs.cartesian.xyz.to_value(u.one).T)


def _fmt_angle(a) -> str:
    a = Angle(a)
    if a < 1 * u.arcmin:
        return f"{a.arcsec:.2f}″"
    if a < 1 * u.deg:
        return f"{a.arcmin:.2f}′"
    return f"{a.deg:.2f}°"


# --------------------------------------------------------------------------------------------- footprint plot
class SkyPositions:
    """Just the positions of a bundle's objects, for drawing its footprint before (or without) a matcher."""

    def __init__(self, ra_deg, dec_deg):
        self.ra, self.dec = np.asarray(ra_deg, dtype=np.float64), np.asarray(dec_deg, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.ra)

    subsample = CatalogueMatcher.subsample    # spread rows of len(self) objects

    def positions(self, rows: np.ndarray) -> SkyCoord:
        return SkyCoord(ra=self.ra[rows] * u.deg, dec=self.dec[rows] * u.deg, frame="icrs")


def footprint_plot(matcher: CatalogueMatcher | SkyPositions, coord: SkyCoord | None = None, *, max_points: int = 5000,
                   width: int = 300, height: int = 180):
    """A small RA/Dec plot of the bundle's objects (subsampled) with the query position marked."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh options used below)

    rows = matcher.subsample(max_points)
    sky = matcher.positions(rows)
    objects = hv.Points((sky.ra.deg, sky.dec.deg), kdims=["RA", "Dec"], label="bundle").opts(
        size=2, color="#7a8ca5", alpha=0.6, backend="bokeh")
    layers = [objects]
    if coord is not None:
        marker = hv.Points(([coord.ra.deg], [coord.dec.deg]), kdims=["RA", "Dec"], label="query").opts(
            size=12, color="#e4572e", marker="star", backend="bokeh")
        layers.append(marker)
    return hv.Overlay(layers).opts(
        width=width, height=height, invert_xaxis=True, show_legend=False, toolbar=None,
        title="Footprint (RA increases to the left)", fontsize={"title": 9}, backend="bokeh")


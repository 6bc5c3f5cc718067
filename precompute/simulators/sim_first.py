"""A simulated VLA FIRST 1.4 GHz survey in the layout of shared/data/first_mirabest (MiraBest sample).

Writes ``catalog.csv`` (``file``, ``ra``, ``dec``, ``fr_class``, ``confidence``, ``morphology``, ``label_code``,
``z``, ``las_arcsec``, ``log_l1p4_w_hz`` like the real one, then truth columns) and ``cutouts/*.fits.fz``:
150x150 px at 1.8"/px in Jy/beam, float32, tile-compressed (RICE_1, quantize_level 16) in HDU 1 with a TAN
celestial WCS centred on the source (CRPIX 75.5), as the real cutouts are.

Sources are sums of elliptical Gaussians convolved analytically with the 5.4" Gaussian beam (so fluxes in
Jy/beam are exact): FRI (bright core, two jets fading and widening outward), FRII (faint core, lobes brightening
outward to hotspots at the ends), compact (barely resolved) and bent tails (wide-angle and head-tail: FRI jets
swept to one side by the cluster medium). The physical size (kpc) and the redshift set the largest angular size
through a flat LCDM angular scale; the 1.4 GHz luminosity and redshift set the flux (S ∝ nu^-0.7, K-corrected).
Noise is white noise smoothed to the beam scale and scaled to ~0.15 mJy/beam rms, as in FIRST images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from precompute.simulators.sim_common import (FIRST_BOXES, STREAM_PARAMS, STREAM_PIXELS, kpc_per_arcsec,
                                           luminosity_distance_m, object_rng, offset_away_from_centre, ordered_map,
                                           sample_footprint)

IMAGE = 150
PIXEL_SCALE = 1.8                      # arcsec / px
BEAM_FWHM = 5.4                        # arcsec
NOISE_JY = 0.15e-3                     # Jy/beam rms
SPECTRAL_INDEX = 0.7                   # S ∝ nu^-alpha
CENTRE = (IMAGE - 1) / 2.0             # 0-based pixel of CRPIX 75.5
SIGMA_BEAM = BEAM_FWHM / 2.3548 / PIXEL_SCALE     # px
CLASS_PROBABILITIES = {"FRI": 0.35, "FRII": 0.35, "compact": 0.15, "bent": 0.15}
MAX_LAS = 240.0                        # arcsec: the whole source stays inside the 270" field
BACKGROUND_PER_CUTOUT, BACKGROUND_MIN_PX = 0.5, 40.0
CATALOG_COLUMNS = ["file", "ra", "dec", "fr_class", "confidence", "morphology", "label_code", "z", "las_arcsec",
                   "log_l1p4_w_hz"]

_YY, _XX = np.mgrid[0:IMAGE, 0:IMAGE].astype(np.float64) - CENTRE


# -- parameters ---------------------------------------------------------------------------------------------
def _draw_z(rng) -> float:
    while True:           # MiraBest-like: 0.03 < z < 0.5, median ~0.18
        z = rng.gamma(3.0, 0.065)
        if 0.03 <= z <= 0.5:
            return float(z)


def flux_jy(log_l: float, z: float) -> float:
    """Observed 1.4 GHz flux density (Jy) of a source of luminosity 10^log_l W/Hz at redshift z."""
    d_l = luminosity_distance_m(z)
    return float(10**log_l * (1 + z) ** (SPECTRAL_INDEX - 1) / (4 * np.pi * d_l**2) / 1e-26)


_CLASS_SETUP = {  # log L (mean, sd), linear size kpc (median, dex), minimum flux Jy
    "FRI": ((24.8, 0.45), (180.0, 0.25), 0.02),
    "FRII": ((25.1, 0.5), (110.0, 0.3), 0.02),
    "compact": ((24.3, 0.6), (3.0, 0.3), 0.003),
    "bent": ((24.8, 0.4), (150.0, 0.2), 0.02),
}


def draw_params(seed: int, index: int) -> dict:
    """The truth of radio source ``index``: class, redshift, luminosity, size, orientation and shape knobs."""
    rng = object_rng(seed, index, STREAM_PARAMS)
    cls = str(rng.choice(list(CLASS_PROBABILITIES), p=list(CLASS_PROBABILITIES.values())))
    (l_mean, l_sd), (size_med, size_dex), s_min = _CLASS_SETUP[cls]
    ra, dec = sample_footprint(rng, FIRST_BOXES)
    log_l = float(rng.normal(l_mean, l_sd))
    for _ in range(50):   # flux-limited selection: redraw z until the source is bright enough to be catalogued
        z = _draw_z(rng)
        if flux_jy(log_l, z) >= s_min:
            break
    else:
        log_l += np.log10(s_min / flux_jy(log_l, z)) + 0.1
    view = float(np.rad2deg(np.arcsin(rng.uniform(np.sin(np.deg2rad(25.0)), 1.0))))  # angle to line of sight
    lls = float(size_med * 10 ** rng.normal(0, size_dex))
    las = lls * np.sin(np.deg2rad(view)) / float(kpc_per_arcsec(z))
    if las > MAX_LAS:
        lls *= MAX_LAS / las * rng.uniform(0.7, 1.0)
        las = lls * np.sin(np.deg2rad(view)) / float(kpc_per_arcsec(z))
    p = {
        "index": index, "ra": ra, "dec": dec, "fr_class": cls, "z": z, "log_l1p4_w_hz": log_l,
        "flux_mjy": flux_jy(log_l, z) * 1e3, "lls_kpc": lls, "las_arcsec": float(las), "viewing_angle_deg": view,
        "position_angle_deg": float(rng.uniform(0, 180)), "arm_ratio": float(rng.uniform(0.7, 1.0)),
        "core_fraction": np.nan, "hotspot_fraction": 0.0, "bend_angle_deg": 0.0, "jet_opening_deg": np.nan,
        "morphology": "standard", "noise_mjy_beam": float(NOISE_JY * 1e3 * rng.uniform(0.9, 1.15)),
    }
    if cls == "FRI":
        p.update(core_fraction=float(rng.uniform(0.03, 0.15)), jet_opening_deg=float(rng.uniform(8, 25)))
    elif cls == "FRII":
        p.update(core_fraction=float(rng.uniform(0.0, 0.05)), hotspot_fraction=float(rng.uniform(0.15, 0.4)),
                 jet_opening_deg=float(rng.uniform(10, 25)))
    elif cls == "compact":
        p.update(core_fraction=1.0, las_arcsec=float(np.clip(las, 0.5, 5.0)), arm_ratio=float(rng.uniform(0.3, 1.0)))
    else:
        head_tail = rng.uniform() < 0.35
        p.update(core_fraction=float(rng.uniform(0.05, 0.2)), jet_opening_deg=float(rng.uniform(8, 20)),
                 morphology="head-tail" if head_tail else "wide-angle tail",
                 bend_angle_deg=float(rng.uniform(75, 100) if head_tail else rng.uniform(30, 75)),
                 bend_side=float(rng.choice([-1.0, 1.0])))
    p["confidence"] = _confidence(p, rng)
    p["label_code"] = _label_code(p)
    p["background"] = _background_sources(rng)
    p["n_background"] = len(p["background"])
    return p


def _background_sources(rng) -> list[list[float]]:
    """Unrelated field sources in the cutout, as Gaussian rows (x, y, sigma_maj, sigma_min, pa, flux): FIRST has
    ~90 sources per deg^2 above 1 mJy, ~0.5 per 4.5' cutout; dN/dS ∝ S^-1.8 from 1 to 50 mJy; mostly unresolved;
    kept >= BACKGROUND_MIN_PX from the centre."""
    rows = []
    for _ in range(rng.poisson(BACKGROUND_PER_CUTOUT)):
        x, y = offset_away_from_centre(rng, CENTRE, BACKGROUND_MIN_PX)
        s_min, s_max, slope = 1e-3, 50e-3, -0.8          # inverse CDF of dN/dS ∝ S^-1.8
        flux = (s_min**slope + rng.uniform() * (s_max**slope - s_min**slope)) ** (1 / slope)
        size = rng.uniform(0.0, 1.5)
        rows.append([float(x), float(y), size, size * rng.uniform(0.5, 1.0), float(rng.uniform(0, 180)), float(flux)])
    return rows


def _confidence(p: dict, rng) -> str:
    """'uncertain' for sources a classifier could not call: barely resolved, or a random ~15 %."""
    if p["fr_class"] == "compact":
        return "confident"
    return "uncertain" if p["las_arcsec"] < 4 * BEAM_FWHM or rng.uniform() < 0.15 else "confident"


def _label_code(p: dict) -> str:
    """MiraBest 3-digit code: class (1 FRI, 2 FRII), confidence (0/1), morphology (0 standard, 2 WAT, 4 HT)."""
    if p["fr_class"] == "compact":
        return ""
    first = "2" if p["fr_class"] == "FRII" else "1"
    morph = {"standard": "0", "wide-angle tail": "2", "head-tail": "4"}[p["morphology"]]
    return first + ("0" if p["confidence"] == "confident" else "1") + morph


# -- components (Gaussians in sky-plane pixel coordinates) --------------------------------------------------
def _direction(pa_deg: float) -> np.ndarray:
    """Unit pixel vector of a position angle (east of north): north = +y, east = -x (RA grows to the left)."""
    pa = np.deg2rad(pa_deg)
    return np.array([-np.sin(pa), np.cos(pa)])


def _jet_path(p: dict, side: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (n, 2) px along one side's jet/lobe axis for t in (0, 1], their local direction (deg), and t."""
    t = (np.arange(n) + 1.0) / n
    length = p["las_arcsec"] / 2 / PIXEL_SCALE * (1.0 if side == 0 else p["arm_ratio"])
    pa0 = p["position_angle_deg"] + (0.0 if side == 0 else 180.0)
    if p["fr_class"] == "bent":
        # both jets swing towards the same side (the tail), so their bend has opposite sign in each jet's frame
        # wide-angle tails bend gradually; head-tails turn sharply near the core into one shared tail
        sign = p["bend_side"] * (1 if side == 0 else -1)
        pa = pa0 + sign * p["bend_angle_deg"] * t ** (0.3 if p["morphology"] == "head-tail" else 1.3)
    else:
        pa = pa0 + np.full(n, 0.0)
    steps = np.stack([_direction(a) for a in pa]) * (length / n)
    return np.cumsum(steps, axis=0), pa, t


def source_gaussians(p: dict, rng) -> np.ndarray:
    """(K, 5) array of Gaussians: x, y (px from centre), sigma_major, sigma_minor (px, intrinsic), pa (deg),
    plus a 6th column: flux (Jy)."""
    total = p["flux_mjy"] / 1e3
    rows = []
    if p["fr_class"] == "compact":
        sigma = p["las_arcsec"] / 2.3548 / PIXEL_SCALE
        return np.array([[0.0, 0.0, sigma, sigma * p["arm_ratio"], p["position_angle_deg"], total]])
    core = total * p["core_fraction"]
    if core > 0:
        rows.append([0.0, 0.0, 0.05, 0.05, 0.0, core])
    rest = total - core
    n = int(np.clip(p["las_arcsec"] / 2 / PIXEL_SCALE, 24, 80))   # about one Gaussian per pixel along the axis
    for side in (0, 1):
        pts, pa, t = _jet_path(p, side, n)
        side_flux = rest / 2 * (1.0 if side == 0 else rng.uniform(0.6, 1.0))
        length = np.hypot(*pts[-1]) + 1e-6
        opening = np.tan(np.deg2rad(p["jet_opening_deg"]))
        if p["fr_class"] in ("FRI", "bent"):
            w = (1 + t / 0.35) ** -1.2                    # core-brightened: fading outward
            width = 0.3 + 0.5 * opening * t * length
        else:
            lobe = t > 0.45
            w = np.where(lobe, 0.2 + np.clip(t - 0.45, 0, None) ** 1.2, 0.003)  # edge-brightened lobes, faint jet
            width = np.where(lobe, 0.2 * length * np.sqrt(np.clip(1 - ((t - 0.75) / 0.33) ** 2, 0.1, 1)), 0.4)
        w = w * rng.lognormal(0, 0.45, n)                  # knotty, not a smooth ridge
        diffuse = side_flux * (1 - p["hotspot_fraction"])
        fluxes = diffuse * w / w.sum()
        jitter = rng.normal(0, 0.03 * length, (n, 2)) * (t[:, None] > 0.3)
        step = max(length / n, 0.3)
        for k in range(n):   # a ridge of overlapping Gaussians: the local width across, >= one step along
            across = max(width[k], 0.3)
            along = max(step, 0.6 * across)
            major_pa = pa[k] if along >= across else pa[k] + 90.0
            rows.append([pts[k, 0] + jitter[k, 0], pts[k, 1] + jitter[k, 1], max(along, across), min(along, across),
                         major_pa, fluxes[k]])
        if p["hotspot_fraction"] > 0:
            hs = side_flux * p["hotspot_fraction"]
            rows.append([pts[-1, 0], pts[-1, 1], 0.6, 0.4, pa[-1], hs])
    return np.array(rows)


def render_gaussians(g: np.ndarray) -> np.ndarray:
    """Sum of elliptical Gaussians convolved with the Gaussian beam, in Jy/beam on the 150x150 grid."""
    image = np.zeros((IMAGE, IMAGE))
    for x, y, s_maj, s_min, pa, flux in g:
        a2, b2 = s_maj**2 + SIGMA_BEAM**2, s_min**2 + SIGMA_BEAM**2
        ang = np.deg2rad(pa)
        half = int(np.ceil(5 * np.sqrt(max(a2, b2))))
        x0, x1 = max(int(CENTRE + x) - half, 0), min(int(CENTRE + x) + half + 2, IMAGE)
        y0, y1 = max(int(CENTRE + y) - half, 0), min(int(CENTRE + y) + half + 2, IMAGE)
        if x0 >= x1 or y0 >= y1:
            continue
        dx, dy = _XX[y0:y1, x0:x1] - x, _YY[y0:y1, x0:x1] - y
        # the major axis points along position angle pa: unit vector (-sin pa, cos pa)
        u = -dx * np.sin(ang) + dy * np.cos(ang)
        v = dx * np.cos(ang) + dy * np.sin(ang)
        peak = flux * SIGMA_BEAM**2 / np.sqrt(a2 * b2)     # a point source of S Jy has a peak of S Jy/beam
        image[y0:y1, x0:x1] += peak * np.exp(-0.5 * (u**2 / a2 + v**2 / b2))
    return image


def sidelobe_stripes(rng, image: np.ndarray) -> np.ndarray:
    """Faint residual sidelobes of a VLA snapshot: rippled ridges through the brightest pixel along the three arms
    of the Y-shaped array's beam pattern (60° apart, random orientation), ~0.1–0.5 % of the peak."""
    y0, x0 = np.unravel_index(np.argmax(image), image.shape)
    out = np.zeros_like(image)
    base = rng.uniform(0, 60)
    for k in range(3):
        a = np.deg2rad(base + 60 * k)
        along = (_XX + CENTRE - x0) * np.cos(a) + (_YY + CENTRE - y0) * np.sin(a)
        across = -(_XX + CENTRE - x0) * np.sin(a) + (_YY + CENTRE - y0) * np.cos(a)
        ripple = np.cos(2 * np.pi * across / rng.uniform(4, 8) + rng.uniform(0, 2 * np.pi))
        envelope = np.exp(-0.5 * (across / rng.uniform(6, 15)) ** 2) * (1 + np.abs(along) / 40.0) ** -0.5
        out += rng.uniform(0.001, 0.005) * image.max() * ripple * envelope
    return out


def beam_noise(rng, rms_jy: float) -> np.ndarray:
    """Gaussian noise correlated on the beam scale (white noise smoothed by the beam), scaled to ``rms_jy``."""
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal((IMAGE + 20, IMAGE + 20)), SIGMA_BEAM / np.sqrt(2), mode="wrap")
    n = n[10:-10, 10:-10]
    return n * (rms_jy / n.std())


# -- files --------------------------------------------------------------------------------------------------
def fits_header(ra: float, dec: float):
    """Celestial WCS header of a cutout centred on (ra, dec), like the SkyView FIRST cutouts."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.crpix = [(IMAGE + 1) / 2.0] * 2
    w.wcs.cdelt = [-PIXEL_SCALE / 3600.0, PIXEL_SCALE / 3600.0]
    w.wcs.crval = [ra, dec]
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "FK5"
    w.wcs.equinox = 2000.0
    h = w.to_header()
    h["BUNIT"] = "JY/BEAM"
    h["BMAJ"] = (BEAM_FWHM / 3600.0, "[deg] beam FWHM")
    h["BMIN"] = (BEAM_FWHM / 3600.0, "[deg] beam FWHM")
    h["BPA"] = (0.0, "[deg]")
    h["SURVEY"] = "FIRST"
    h["TELESCOP"] = "VLA"
    h["ORIGIN"] = "simulated VLA FIRST (precompute.simulators.sim_first)"
    return h


def cutout_name(p: dict) -> str:
    return f"{p['index']:07d}_{p['ra']:07.3f}{p['dec']:+08.3f}.fits.fz"


def write_cutout(path: Path, image: np.ndarray, header, index: int) -> None:
    from astropy.io import fits

    # Fixed dither seed: reproducible files. One tile per image (the real files use row tiles): half the CPU time
    # in astropy, and readers do not care.
    hdu = fits.CompImageHDU(data=image.astype(np.float32), header=header, compression_type="RICE_1",
                            quantize_level=16, dither_seed=1 + index % 10000, tile_shape=(IMAGE, IMAGE))
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def render_source(task: tuple[int, dict, str]) -> dict:
    """Render and write one cutout; returns its catalogue row. Deterministic in (seed, index)."""
    seed, p, out = task
    rng = object_rng(seed, p["index"], STREAM_PIXELS)
    sky = render_gaussians(source_gaussians(p, rng))
    field = render_gaussians(np.array(p["background"])) if p["background"] else 0.0
    image = sky + field + sidelobe_stripes(rng, sky) + beam_noise(rng, p["noise_mjy_beam"] / 1e3)
    rel = f"cutouts/{cutout_name(p)}"
    write_cutout(Path(out) / rel, image, fits_header(p["ra"], p["dec"]), p["index"])
    row = {k: v for k, v in p.items() if k not in ("index", "bend_side", "background")}
    row["file"] = rel
    row["peak_mjy_beam"] = float(image.max() * 1e3)
    return row


def simulate_first(n: int, out, seed: int = 0, progress: bool = True, workers: int | None = None) -> Path:
    """Write a simulated FIRST survey of ``n`` radio sources into ``out`` (catalog.csv, cutouts/*.fits.fz)."""
    from precompute.simulators.sim_common import default_workers

    if n < 1:
        raise ValueError(f"simulate_first: n must be >= 1, got {n}")
    out = Path(out)
    (out / "cutouts").mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, int(workers))
    params = [draw_params(seed, i) for i in range(n)]
    rows = list(ordered_map(render_source, ((seed, p, str(out)) for p in params), n, workers, "simulate first",
                            progress))
    cat = pd.DataFrame(rows)
    cat = cat[CATALOG_COLUMNS + [c for c in cat.columns if c not in CATALOG_COLUMNS]]
    cat.to_csv(out / "catalog.csv", index=False, float_format="%.10g")
    return out

"""A simulated SDSS ugriz survey in the layout of the Hayat et al. (2021) data release, with known truth.

Writes ``images.h5`` (``images`` (N, 5, 107, 107) float32 in nanomaggies per pixel at 0.396"/px, sky-subtracted,
with noise; ``ra``, ``dec``, ``e_bv``, ``specz_redshift``, ``specz_redshift_err``, ``ObjID``), ``gz2.csv``
(Galaxy Zoo 2 vote counts and fractions in Hart et al. 2016 naming for a brighter, larger subset, joined to the
images by sky position) and ``truth.parquet`` (the generating parameters of every object).

Physics, briefly:
- Types: smooth (Sérsic n 2.5–5.5, round to cigar), disk (featureless S0-like bulge + disk), spiral and
  barred_spiral (bulge + exponential disk + logarithmic arms with 1–5 arms and pitch 8–35°, star-forming knots
  along the arms; bars as elongated Sérsic n=0.5 components), edge_on_disk (inclination 78–90° with a dust lane),
  irregular (disk + galsim.RandomKnots clumps), merger (two galaxies and knotty tidal tails), star (point source,
  diffraction spikes when bright) and artefact (satellite trail in one band, bleed column, or the spike of a
  bright star off the stamp). Disks of every type except edge_on_disk have cos(i) uniform over i = 0–75°.
- Selection: galaxies follow the SDSS spectroscopic main galaxy sample (dereddened r 14.5–17.77, median z ≈ 0.1):
  absolute magnitudes from a per-type luminosity function weighted by the volume in which each makes the cut,
  redshifts uniform in comoving volume within it; 93 % of targets have a spectrum (fibre collisions lose the rest).
- Redshift 0.01–0.4 sets angular size (a physical half-light radius in kpc from a size–luminosity relation
  through a flat LCDM angular scale) and flux (luminosity distance). Colours come from three analytic rest-frame
  templates (old, young, starburst: power laws with a 4000 Å break and emission lines), redshifted and averaged
  through Gaussian ugriz bandpasses: bulges are old, disks a young/old mix, knots and arms starburst, so colours
  redden with redshift as the break moves through g and r, and bulges are redder than disks.
- Galactic reddening multiplies band fluxes by 10^(-0.4 R_b E(B-V)); PSF is a Kolmogorov profile with r-band FWHM
  ~1.4" (per object) scaled as lambda^-0.3; noise is sky + source Poisson in each band's electrons.
- Profiles are drawn with GalSim on the pixel grid (its no_pixel method, with an 8x supersampled patch at each
  nucleus so that cuspy profiles keep the right flux); arms, bars, knots and dust lanes are numpy maps; each band
  is the sum of components times their band fluxes, convolved once with that band's PSF.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from precompute.simulators.sim_common import (STREAM_PARAMS, STREAM_PIXELS, STREAM_VOTES, SDSS_BOXES,
                                           distance_modulus, galactic_reddening, kpc_per_arcsec,
                                           luminosity_distance_m, object_rng, offset_away_from_centre,
                                           ordered_map, sample_footprint)

# Part of the demo's simulation cache key: raise it whenever a change alters what the simulator draws.
VERSION = 2
BANDS = ("u", "g", "r", "i", "z")
R_BAND = 2
PIXEL_SCALE = 0.396          # arcsec / px
STAMP = 107                  # px
CENTRE = STAMP // 2          # GalSim's true centre of an odd stamp, 0-based
FILTERS_CSV = Path(__file__).resolve().parents[2] / "assets" / "sdss_filters.csv"

# Type mix of the simulated sample (documented choice, not a measured census). Galaxies are then selected like the
# SDSS spectroscopic main galaxy sample (Strauss et al. 2002), so that magnitudes, sizes and redshifts follow it.
TYPE_PROBABILITIES = {
    "smooth": 0.28, "disk": 0.12, "spiral": 0.22, "barred_spiral": 0.10, "edge_on_disk": 0.08,
    "irregular": 0.07, "merger": 0.05, "star": 0.05, "artefact": 0.03,
}
DISK_TYPES = ("disk", "spiral", "barred_spiral", "edge_on_disk")
TEMPLATES = ("old", "young", "starburst")
MAIN_SAMPLE_R = (14.5, 17.77)   # dereddened r range of the main galaxy sample's targets
SPEC_COMPLETENESS = 0.93        # share of targets with a spectrum: fibre collisions lose the rest, at random
GZ2_R_LIMIT, GZ2_R90_LIMIT = 17.0, 3.0    # GZ2 sample cut: r_dered < 17, petroR90_r > 3"
SEEING_R = (1.4, 0.2, 1.0, 2.1)           # mean, sd, min, max of r-band FWHM, arcsec
DISK_THICKNESS = 0.12                     # intrinsic axis ratio of a disk seen edge-on
NEIGHBOURS_PER_STAMP, NEIGHBOUR_MIN_PX = 0.6, 25.0


# -- filters and spectra ------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def filters() -> pd.DataFrame:
    """The ugriz reference table (assets/sdss_filters.csv), indexed by band."""
    if not FILTERS_CSV.exists():
        raise FileNotFoundError(f"{FILTERS_CSV} is missing; it ships with the repository (assets/).")
    return pd.read_csv(FILTERS_CSV, comment="#").set_index("band").loc[list(BANDS)]


def extinction_factors(e_bv: float) -> np.ndarray:
    """Band flux multipliers 10^(-0.4 R_b E(B-V)) for galactic reddening."""
    return 10.0 ** (-0.4 * _filter_array("extinction_R") * e_bv)


_REST_LAMBDA = np.arange(1000.0, 12005.0, 5.0)   # Å
_OBS_LAMBDA = np.arange(2500.0, 11505.0, 5.0)    # Å
_Z_TABLE = np.linspace(0.0, 0.5, 201)

# Slope of f_nu redward / blueward of 4000 Å, 4000 Å break amplitude, emission lines {Å: EW}. Tuned so that at
# z = 0.1 an old population has u-g, g-r, r-i, i-z = 1.85, 0.81, 0.42, 0.39 (red sequence) and a 25/75 old/young
# disk 0.93, 0.57, 0.32, 0.28 (blue cloud); g-r of the old template reaches 1.44 at z = 0.3 (LRG-like).
_TEMPLATE_SPECS = {
    "old": (2.0, 4.5, 2.3, {}),
    "young": (1.3, 1.8, 1.45, {6563.0: 25.0, 5007.0: 8.0, 3727.0: 15.0}),
    "starburst": (0.1, 0.3, 1.05, {6563.0: 150.0, 5007.0: 120.0, 4861.0: 35.0, 3727.0: 80.0}),
}


def template_fnu(name: str, lam: np.ndarray = _REST_LAMBDA) -> np.ndarray:
    """Rest-frame f_nu (arbitrary units) of a template: power laws joined by a smooth 4000 Å break, plus lines."""
    red, blue, d4000, lines = _TEMPLATE_SPECS[name]
    x = np.log(lam / 4000.0)
    w = 1.0 / (1.0 + np.exp(-(lam - 4000.0) / 40.0))
    cont = np.exp(w * red * x + (1.0 - w) * (blue * x - np.log(d4000)))
    sigma = 8.0
    for centre, ew in lines.items():
        cont = cont + np.interp(centre, lam, cont) * ew / (sigma * np.sqrt(2 * np.pi)) * np.exp(
            -0.5 * ((lam - centre) / sigma) ** 2)
    return cont


def _bandpasses() -> np.ndarray:
    f = filters()
    centre = f["lambda_eff_angstrom"].to_numpy()[:, None]
    sigma = f["fwhm_angstrom"].to_numpy()[:, None] / 2.3548
    t = np.exp(-0.5 * ((_OBS_LAMBDA[None, :] - centre) / sigma) ** 2)
    return t / _OBS_LAMBDA[None, :]          # photon-counting weight dλ/λ


def _band_average(fnu_obs: np.ndarray) -> np.ndarray:
    t = _bandpasses()
    return (fnu_obs @ t.T) / t.sum(axis=1)


@lru_cache(maxsize=1)
def sed_table() -> np.ndarray:
    """(template, z, band): observed band-averaged f_nu of each template at redshift z, including the (1+z)
    bandwidth factor, relative to its rest-frame r band. Multiplying 10^(-0.4 (M_r + DM(z) - 22.5)) by an entry
    gives the band flux in nanomaggies: K-corrections and colours in one table."""
    out = np.empty((len(TEMPLATES), len(_Z_TABLE), len(BANDS)))
    for t, name in enumerate(TEMPLATES):
        rest = template_fnu(name)
        for k, z in enumerate(_Z_TABLE):
            out[t, k] = (1.0 + z) * _band_average(np.interp(_OBS_LAMBDA / (1.0 + z), _REST_LAMBDA, rest))
        out[t] /= out[t, 0, R_BAND]
    return out


def sed_band_factors(weights, z: float) -> np.ndarray:
    """Band factors (5,) of a mix of templates (weights over TEMPLATES, by rest-frame r light) at redshift z."""
    table = sed_table()
    k = np.interp(z, _Z_TABLE, np.arange(len(_Z_TABLE)))
    lo = int(np.floor(k))
    hi = min(lo + 1, len(_Z_TABLE) - 1)
    per_template = table[:, lo] * (1 - (k - lo)) + table[:, hi] * (k - lo)
    return np.asarray(weights, dtype=float) @ per_template


def star_band_factors(t_eff: float) -> np.ndarray:
    """Band factors of a blackbody star, relative to its r band."""
    nu = 2.998e18 / _OBS_LAMBDA
    fnu = nu**3 / np.expm1(6.626e-27 * nu / (1.381e-16 * t_eff))
    b = _band_average(fnu)
    return b / b[R_BAND]


def nmgy(mag) -> np.ndarray:
    return 10.0 ** (-0.4 * (np.asarray(mag) - 22.5))


# -- parameters ---------------------------------------------------------------------------------------------
_Z_RANGE = (0.01, 0.4)
_ABS_MAG_RANGE = (-23.5, -17.5)
_ABS_MAG_SD = 0.75
_MEAN_ABS_MAG = {"smooth": -21.2, "irregular": -19.6, "merger": -21.5}     # others: -20.9


@lru_cache(maxsize=1)
def _z_grid():
    """Redshift grid with the comoving volume out to each z (proportional; flat LCDM as sim_common)."""
    z = np.linspace(*_Z_RANGE, 2000)
    d_c = luminosity_distance_m(z) / (1.0 + z)
    return z, d_c**3, distance_modulus(z)


def _z_max(abs_mag) -> np.ndarray:
    """Redshift at which a galaxy of absolute r magnitude ``abs_mag`` reaches the main sample's faint limit
    (before K-correction, which the final magnitude check adds)."""
    z, _, dm = _z_grid()
    return np.interp(MAIN_SAMPLE_R[1] - np.asarray(abs_mag), dm, z, left=z[0], right=z[-1])


@lru_cache(maxsize=8)
def _abs_mag_icdf(gtype: str):
    """Absolute magnitudes of a flux-limited sample: the type's Gaussian luminosity function times the volume in
    which each luminosity makes the cut (V_max), so bright galaxies are over-represented as in the real sample."""
    m = np.linspace(*_ABS_MAG_RANGE, 1200)
    z, vol, _ = _z_grid()
    mean = _MEAN_ABS_MAG.get(gtype, -20.9)
    pdf = np.exp(-0.5 * ((m - mean) / _ABS_MAG_SD) ** 2) * (np.interp(_z_max(m), z, vol) - vol[0])
    cdf = np.cumsum(pdf)
    return m, (cdf - cdf[0]) / (cdf[-1] - cdf[0])


def _draw_abs_mag_and_redshift(rng, gtype: str) -> tuple[float, float]:
    """(M_r, z) of a galaxy in the main sample: M_r from the V_max-weighted luminosity function, z uniform in
    comoving volume out to where that galaxy would drop below the magnitude limit."""
    m, cdf = _abs_mag_icdf(gtype)
    abs_mag = float(np.interp(rng.uniform(), cdf, m))
    z, vol, _ = _z_grid()
    v = vol[0] + rng.uniform() * (np.interp(_z_max(abs_mag), z, vol) - vol[0])
    return abs_mag, float(np.interp(v, vol, z))


def _size_kpc(rng, abs_mag: float, early: bool) -> float:
    """Half-light radius, kpc: a size–luminosity relation with 0.15 dex scatter (Shen et al. 2003-like)."""
    slope, zero = (0.26, 0.55) if early else (0.18, 0.70)
    return float(10 ** (zero + slope * (-abs_mag - 21.0) / 1.0 + rng.normal(0.0, 0.15)))


def _sersic_n(rng, lo: float, hi: float) -> float:
    return float(np.round(rng.uniform(lo, hi) * 4) / 4)   # quantised: GalSim caches its Sérsic tables per n


def _disk_axis_ratio(incl_deg: float) -> float:
    c = np.cos(np.deg2rad(incl_deg))
    return float(np.sqrt(c**2 * (1 - DISK_THICKNESS**2) + DISK_THICKNESS**2))


def _component(kind, frac, sed, **shape):
    return {"kind": kind, "frac": float(frac), "sed": tuple(float(s) for s in sed), **shape}


def _arcsec_of(kpc: float, z: float) -> float:
    return float(np.clip(kpc / kpc_per_arcsec(z), 0.35, 14.0))


def _galaxy_components(rng, gtype: str, z: float, abs_mag: float, truth: dict) -> list[dict]:
    """Components of one galaxy (fractions of its rest-frame r light) and the shape truth they imply."""
    pa = rng.uniform(0.0, 180.0)
    truth["position_angle_deg"] = pa
    if gtype == "smooth":
        n = _sersic_n(rng, 2.5, 5.5)
        q = float(np.clip(1.0 - abs(rng.normal(0.0, 0.3)), 0.25, 1.0))
        hlr = _arcsec_of(_size_kpc(rng, abs_mag, early=True), z)
        truth.update(sersic_index=n, axis_ratio=q, bulge_to_disk=np.inf, bulge_hlr_arcsec=hlr)
        return [_component("sersic", 1.0, (1, 0, 0), n=n, hlr=hlr, q=q, pa=pa)]
    if gtype == "irregular":
        hlr = _arcsec_of(_size_kpc(rng, abs_mag, early=False), z)
        q = float(rng.uniform(0.4, 1.0))
        knot_frac = rng.uniform(0.25, 0.5)
        truth.update(sersic_index=1.0, axis_ratio=q, bulge_to_disk=0.0, disk_hlr_arcsec=hlr)
        return [_component("sersic", 1 - knot_frac, (0.2, 0.8, 0), n=1.0, hlr=hlr, q=q, pa=pa),
                _component("knots", knot_frac, (0, 0.2, 0.8), npoints=int(rng.integers(30, 100)), hlr=hlr * 1.2,
                           dx=rng.normal(0, 0.15) * hlr, dy=rng.normal(0, 0.15) * hlr)]
    if gtype == "merger":
        comps = []
        sep = rng.uniform(1.2, 3.0)
        hlr1 = _arcsec_of(_size_kpc(rng, abs_mag, early=True), z) * 0.8
        ratio = rng.uniform(0.3, 1.0)
        ang = rng.uniform(0, 2 * np.pi)
        offsets = [(-sep * hlr1 * ratio / (1 + ratio), ang), (sep * hlr1 / (1 + ratio), ang)]
        tails = rng.uniform(0.1, 0.25)
        for k, ((dist, a), f) in enumerate(zip(offsets, (1.0, ratio))):
            n = _sersic_n(rng, 1.0, 4.0)
            frac = (1 - tails) * f / (1 + ratio)
            comps.append(_component("sersic", frac, (0.6, 0.4, 0), n=n, hlr=hlr1 * (1.0 if k == 0 else f**0.5),
                                    q=float(rng.uniform(0.5, 1.0)), pa=rng.uniform(0, 180),
                                    dx=dist * np.cos(a), dy=dist * np.sin(a)))
        comps.append(_component("tails", tails, (0.2, 0.4, 0.4), hlr=hlr1, sep=sep * hlr1, angle=ang,
                                npoints=int(rng.integers(60, 150)), curl=rng.choice([-1.0, 1.0])))
        truth.update(sersic_index=comps[0]["n"], axis_ratio=comps[0]["q"], bulge_to_disk=np.nan,
                     bulge_hlr_arcsec=hlr1, merger_separation_arcsec=sep * hlr1, merger_flux_ratio=ratio)
        return comps

    # disk galaxies: bulge + disk (+ arms, bar, knots)
    if gtype == "edge_on_disk":
        incl = rng.uniform(78.0, 90.0)
    else:
        incl = float(np.rad2deg(np.arccos(rng.uniform(np.cos(np.deg2rad(75.0)), 1.0))))
    q_disk = _disk_axis_ratio(incl)
    disk_hlr = _arcsec_of(_size_kpc(rng, abs_mag, early=False), z)
    bt = float(np.clip(rng.lognormal(np.log(0.35 if gtype == "disk" else 0.12), 0.6), 0.01, 0.8))
    bulge_n = _sersic_n(rng, 1.5, 4.0)
    bulge_hlr = float(np.clip(disk_hlr * rng.uniform(0.12, 0.3), 0.3, None))
    bulge_q = float(np.clip(max(q_disk, rng.uniform(0.6, 1.0)), 0.5, 1.0))
    young = rng.uniform(0.1, 0.35) if gtype == "disk" else rng.uniform(0.55, 0.95)
    has_arms = gtype in ("spiral", "barred_spiral")
    has_bar = gtype == "barred_spiral"
    comps = [_component("sersic", bt, (1, 0, 0), n=bulge_n, hlr=bulge_hlr, q=bulge_q, pa=pa)]
    disk_frac = 1.0 - bt
    truth.update(inclination_deg=incl, axis_ratio=q_disk, sersic_index=bulge_n, bulge_to_disk=bt / (1 - bt),
                 bulge_hlr_arcsec=bulge_hlr, disk_hlr_arcsec=disk_hlr)
    if has_bar:
        bar_frac = min(rng.uniform(0.1, 0.22), disk_frac * 0.35)
        bar_len = disk_hlr * rng.uniform(0.6, 1.1)
        bar_pa = pa + rng.uniform(-80, 80)
        comps.append(_component("bar", bar_frac, (0.8, 0.2, 0), hlr=bar_len * 0.5, q=rng.uniform(0.18, 0.3),
                                bar_pa=bar_pa, incl=incl, disk_pa=pa))
        disk_frac -= bar_frac
        truth.update(bar_length_arcsec=bar_len)
    if has_arms:
        m = int(rng.choice([1, 2, 3, 4, 5], p=[0.04, 0.56, 0.2, 0.14, 0.06]))
        pitch = float(rng.uniform(8.0, 35.0))
        strength = float(rng.uniform(0.3, 0.6))
        knots = float(rng.uniform(0.02, 0.07))
        arm_inner = max(bulge_hlr * 1.5, truth.get("bar_length_arcsec", 0.0))
        arm_args = dict(m=m, pitch=pitch, chirality=float(rng.choice([-1.0, 1.0])), phase=rng.uniform(0, 2 * np.pi),
                        sharp=float(rng.uniform(1.5, 4.0)), inner=arm_inner, hlr=disk_hlr, q=q_disk, pa=pa,
                        incl=incl)
        comps.append(_component("arms", disk_frac * strength, (0, 0.4, 0.6), **arm_args))
        comps.append(_component("arm_knots", disk_frac * knots, (0, 0, 1), npoints=int(rng.integers(20, 80)),
                                **arm_args))
        disk_frac *= 1 - strength - knots
        truth.update(arm_count=m, arm_pitch_deg=pitch, arm_strength=strength)
    comps.append(_component("sersic", disk_frac, (1 - young, young, 0), n=1.0, hlr=disk_hlr, q=q_disk, pa=pa))
    if gtype == "edge_on_disk":
        truth["dust_lane_tau_v"] = float(rng.uniform(0.8, 2.5))
    return comps


def draw_params(seed: int, index: int) -> dict:
    """Every generating parameter of object ``index``: scalar truth plus the ``components`` to render."""
    rng = object_rng(seed, index, STREAM_PARAMS)
    gtype = str(rng.choice(list(TYPE_PROBABILITIES), p=list(TYPE_PROBABILITIES.values())))
    ra, dec = sample_footprint(rng, SDSS_BOXES)
    e_bv = float(galactic_reddening(ra, dec, rng)[0])
    seeing = float(np.clip(np.round(rng.normal(*SEEING_R[:2]) / 0.05) * 0.05, *SEEING_R[2:]))
    truth = {
        "index": index, "type": gtype, "ra": ra, "dec": dec, "e_bv": e_bv, "seeing_fwhm_r_arcsec": seeing,
        "redshift": np.nan, "absolute_mag_r": np.nan, "sersic_index": np.nan, "axis_ratio": np.nan,
        "position_angle_deg": np.nan, "bulge_to_disk": np.nan, "inclination_deg": np.nan, "arm_count": 0,
        "arm_pitch_deg": np.nan, "arm_strength": 0.0, "bar": gtype == "barred_spiral", "bar_length_arcsec": np.nan,
        "bulge_hlr_arcsec": np.nan, "disk_hlr_arcsec": np.nan, "dust_lane_tau_v": 0.0, "artefact_kind": "",
        "merger_separation_arcsec": np.nan, "merger_flux_ratio": np.nan, "star_teff_k": np.nan,
        "offset_x_px": float(rng.uniform(-0.5, 0.5)), "offset_y_px": float(rng.uniform(-0.5, 0.5)),
    }
    if gtype in ("star", "artefact"):
        comps = _star_or_artefact(rng, gtype, truth)
    else:
        comps = _main_sample_galaxy(rng, gtype, truth)
    flux = sum(c["band_flux"] for c in comps)
    truth["r_mag_dered"] = float(22.5 - 2.5 * np.log10(flux[R_BAND]))
    truth["r_mag"] = float(truth["r_mag_dered"] + filters()["extinction_R"]["r"] * e_bv)
    truth["g_minus_r_dered"] = float(-2.5 * np.log10(flux[1] / flux[R_BAND]))
    truth["components"] = comps
    truth["neighbours"] = _field_neighbours(rng)
    truth["n_neighbours"] = len(truth["neighbours"])
    return truth


def _main_sample_galaxy(rng, gtype: str, truth: dict, max_tries: int = 50) -> list[dict]:
    """Components of a galaxy whose K-corrected dereddened r falls in the main sample's range (redrawn until it
    does; the K-correction moves only the galaxies near the limit, so a few tries suffice)."""
    for _ in range(max_tries):
        abs_mag, z = _draw_abs_mag_and_redshift(rng, gtype)
        trial = dict(truth)
        comps = _galaxy_components(rng, gtype, z, abs_mag, trial)
        total = nmgy(abs_mag + distance_modulus(z))
        for c in comps:
            c["band_flux"] = total * c["frac"] * sed_band_factors(c["sed"], z)
        r_mag = 22.5 - 2.5 * np.log10(sum(c["band_flux"] for c in comps)[R_BAND])
        if MAIN_SAMPLE_R[0] <= r_mag <= MAIN_SAMPLE_R[1]:
            break
    truth.update(trial, redshift=z, absolute_mag_r=abs_mag)
    return comps


def _field_neighbours(rng) -> list[dict]:
    """Unrelated faint stars and galaxies (r 19-22) elsewhere in the stamp, as in real SDSS cutouts: Poisson with
    mean NEIGHBOURS_PER_STAMP, at least NEIGHBOUR_MIN_PX from the centre. Rendered with the object's PSF and noise
    but not part of its magnitude, radii or truth."""
    out = []
    for _ in range(rng.poisson(NEIGHBOURS_PER_STAMP)):
        x, y = offset_away_from_centre(rng, CENTRE, NEIGHBOUR_MIN_PX)
        r_mag = rng.uniform(19.0, 22.0)
        if rng.uniform() < 0.4:
            c = _component("point", 1.0, (0, 0, 0), dx=x * PIXEL_SCALE, dy=y * PIXEL_SCALE)
            c["band_flux"] = nmgy(r_mag) * star_band_factors(rng.uniform(3200.0, 9500.0))
        else:
            young = rng.uniform()
            sed = sed_band_factors((1 - young, young, 0), rng.uniform(0.1, 0.4))
            c = _component("sersic", 1.0, (1 - young, young, 0), n=_sersic_n(rng, 1.0, 4.0),
                           hlr=rng.uniform(0.4, 1.5), q=rng.uniform(0.3, 1.0), pa=rng.uniform(0, 180),
                           dx=x * PIXEL_SCALE, dy=y * PIXEL_SCALE)
            c["band_flux"] = nmgy(r_mag) * sed / sed[R_BAND]
        out.append(c)
    return out


def _star_or_artefact(rng, gtype: str, truth: dict) -> list[dict]:
    teff = float(rng.uniform(3200.0, 9500.0))
    r_mag = float(rng.uniform(*MAIN_SAMPLE_R))     # stars that a photometric star/galaxy split let in
    truth.update(star_teff_k=teff, redshift=0.0 if gtype == "star" else np.nan)
    comps = [_component("point", 1.0, (0, 0, 0))]
    if gtype == "artefact":
        kind = str(rng.choice(["satellite_trail", "bleed_column", "offstamp_spike"]))
        truth["artefact_kind"] = kind
        r_mag = float(rng.uniform(17.5, 21.0)) if kind != "bleed_column" else float(rng.uniform(12.0, 13.5))
        comps.append(_component(kind, 0.0, (0, 0, 0), angle=rng.uniform(0, np.pi), band=int(rng.integers(0, 5)),
                                width=rng.uniform(0.8, 1.6), level=rng.uniform(0.3, 3.0),
                                pos=rng.uniform(-0.3, 0.3) * STAMP))
    comps[0]["band_flux"] = nmgy(r_mag) * star_band_factors(teff)
    comps[-1].setdefault("band_flux", np.zeros(len(BANDS)))
    return comps


# -- rendering ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def psf_kernels(seeing_r: float) -> np.ndarray:
    """Kolmogorov PSFs of the five bands (FWHM scaled as lambda^-0.3 from r), pixel-integrated, unit sum, 31x31."""
    import galsim

    lam = _filter_array("lambda_eff_angstrom")
    out = np.empty((len(BANDS), _PSF_SIDE, _PSF_SIDE))
    for b in range(len(BANDS)):
        fwhm = seeing_r * (lam[b] / lam[R_BAND]) ** -0.3
        k = galsim.Kolmogorov(fwhm=fwhm).drawImage(nx=_PSF_SIDE, ny=_PSF_SIDE, scale=PIXEL_SCALE).array
        out[b] = k / k.sum()
    return out


_PSF_SIDE = 31
_FFT_SIDE = 140          # >= STAMP + PSF - 1 and FFT-friendly: linear (not circular) convolution


@lru_cache(maxsize=64)
def _psf_ffts(seeing_r: float) -> np.ndarray:
    from scipy import fft

    return fft.rfft2(psf_kernels(seeing_r), s=(_FFT_SIDE, _FFT_SIDE))


def convolve_psf(pre: np.ndarray, seeing_r: float) -> np.ndarray:
    """(5, S, S) pre-PSF band images -> PSF-convolved, same size and centring."""
    from scipy import fft

    full = fft.irfft2(fft.rfft2(pre, s=(_FFT_SIDE, _FFT_SIDE)) * _psf_ffts(seeing_r), s=(_FFT_SIDE, _FFT_SIDE))
    h = _PSF_SIDE // 2
    return full[:, h: h + STAMP, h: h + STAMP]


@lru_cache(maxsize=None)
def _filter_array(column: str) -> np.ndarray:
    return filters()[column].to_numpy(dtype=float)


def _grid():
    y, x = np.mgrid[0:STAMP, 0:STAMP].astype(np.float64)
    return x - CENTRE, y - CENTRE


_XX, _YY = _grid()


def _draw_galsim(profile, dx_px: float, dy_px: float, half: int = 3, sub: int = 8) -> np.ndarray:
    """Draw a GalSim profile by sampling at pixel centres, then redo the (2*half+1)^2 pixels around its nucleus
    with ``sub``x``sub`` supersampling: plain sampling of a cuspy Sérsic puts far too much flux in one pixel."""
    img = profile.drawImage(nx=STAMP, ny=STAMP, scale=PIXEL_SCALE, method="no_pixel",
                            offset=(dx_px, dy_px)).array.astype(np.float64)
    ix, iy = int(round(dx_px)), int(round(dy_px))
    cx, cy = CENTRE + ix, CENTRE + iy
    side = 2 * half + 1
    if half <= cx < STAMP - half and half <= cy < STAMP - half:
        patch = profile.drawImage(nx=side * sub, ny=side * sub, scale=PIXEL_SCALE / sub, method="no_pixel",
                                  offset=((dx_px - ix) * sub, (dy_px - iy) * sub)).array
        img[cy - half: cy + half + 1, cx - half: cx + half + 1] = patch.reshape(side, sub, side, sub).sum(axis=(1, 3))
    return img


def _deposit(points_px: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bilinear deposit of point fluxes at (x, y) pixel offsets from the stamp centre."""
    img = np.zeros((STAMP, STAMP))
    x = points_px[:, 0] + CENTRE
    y = points_px[:, 1] + CENTRE
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for ox, oy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + ox, y0 + oy
        ok = (xi >= 0) & (xi < STAMP) & (yi >= 0) & (yi < STAMP)
        np.add.at(img, (yi[ok], xi[ok]), (weights * w)[ok])
    return img


def _disk_frame(c: dict, ox: float, oy: float):
    """Pixel coordinates in the disk plane (deprojected) of an inclined disk: radius (px) and azimuth."""
    pa = np.deg2rad(c["pa"])
    x, y = _XX - ox, _YY - oy
    u = x * np.cos(pa) + y * np.sin(pa)
    v = -x * np.sin(pa) + y * np.cos(pa)
    v_dep = v / max(np.cos(np.deg2rad(c["incl"])), 0.15)
    return np.hypot(u, v_dep), np.arctan2(v_dep, u)


def _arm_map(c: dict, ox: float, oy: float) -> np.ndarray:
    """Logarithmic spiral arms modulating an exponential disk, in the disk plane, seen at the disk's inclination."""
    r, theta = _disk_frame(c, ox, oy)
    rs = c["hlr"] / 1.678 / PIXEL_SCALE
    phase = c["m"] * (theta - c["chirality"] * np.log(r / rs + 1e-3) / np.tan(np.deg2rad(c["pitch"]))) + c["phase"]
    inner = max(c["inner"] / PIXEL_SCALE, 1.0)
    arms = np.exp(-r / rs) * ((1 + np.cos(phase)) / 2) ** c["sharp"] * (1 - np.exp(-((r / inner) ** 2)))
    return arms / max(arms.sum(), 1e-30)


def _component_map(c: dict, ox: float, oy: float, rng) -> np.ndarray:
    """Unit-flux pre-PSF map of one component; (ox, oy) is the object's sub-pixel offset."""
    import galsim

    kind = c["kind"]
    dx, dy = ox + c.get("dx", 0.0) / PIXEL_SCALE, oy + c.get("dy", 0.0) / PIXEL_SCALE
    if kind == "sersic":
        prof = galsim.Exponential(half_light_radius=c["hlr"]) if c["n"] == 1.0 else \
            galsim.Sersic(n=c["n"], half_light_radius=c["hlr"])
        return _draw_galsim(prof.shear(q=c["q"], beta=c["pa"] * galsim.degrees), dx, dy)
    if kind == "bar":
        cos_i = max(np.cos(np.deg2rad(c["incl"])), 0.15)
        # a bar in the disk plane (at bar_pa - disk_pa from the major axis), then projected like the disk
        in_plane = galsim.Gaussian(half_light_radius=c["hlr"]).shear(
            q=c["q"], beta=(c["bar_pa"] - c["disk_pa"]) * galsim.degrees)
        prof = in_plane.transform(1.0, 0.0, 0.0, cos_i).rotate(c["disk_pa"] * galsim.degrees).withFlux(1.0)
        return _draw_galsim(prof, dx, dy)
    if kind == "arms":
        return _arm_map(c, ox, oy)
    if kind == "arm_knots":
        p = _arm_map(c, ox, oy).ravel()
        idx = rng.choice(p.size, size=c["npoints"], p=p / p.sum())
        pts = np.stack([idx % STAMP - CENTRE, idx // STAMP - CENTRE], axis=1) + rng.uniform(-0.5, 0.5, (len(idx), 2))
        w = rng.lognormal(0.0, 0.6, len(idx))
        return _deposit(pts, w / w.sum())
    if kind == "knots":
        knots = galsim.RandomKnots(c["npoints"], half_light_radius=c["hlr"], flux=1.0,
                                   rng=galsim.BaseDeviate(int(rng.integers(1, 2**31 - 1))))
        pts = knots.points / PIXEL_SCALE + [dx, dy]
        return _deposit(pts, np.full(len(pts), 1.0 / len(pts)))
    if kind == "tails":
        return _tails_map(c, ox, oy, rng)
    if kind == "point":
        return _point_map(dx, dy)
    raise ValueError(f"unknown component kind {kind!r}")


def _tails_map(c: dict, ox: float, oy: float, rng) -> np.ndarray:
    """Two curved tidal tails of diffuse, knotty light leaving the merging pair in opposite directions."""
    from scipy.ndimage import gaussian_filter

    n = c["npoints"]
    t = rng.uniform(0.0, 1.0, n)
    side = np.where(rng.uniform(size=n) < 0.5, 0.0, np.pi)
    radius = c["sep"] * (0.4 + 1.6 * t) / PIXEL_SCALE
    ang = c["angle"] + side + c["curl"] * 1.8 * t
    pts = np.stack([radius * np.cos(ang), radius * np.sin(ang)], axis=1)
    pts += rng.normal(0, 0.12 * c["hlr"] / PIXEL_SCALE, pts.shape) + [ox, oy]
    w = (1.0 - 0.7 * t) * rng.lognormal(0.0, 0.5, n)
    img = gaussian_filter(_deposit(pts, w), 1.2)
    return img / max(img.sum(), 1e-30)


def _point_map(ox: float, oy: float, spike_frac: float = 0.01) -> np.ndarray:
    """A point source with faint diffraction spikes along rows and columns (visible only when bright)."""
    img = _deposit(np.array([[ox, oy]]), np.array([1.0 - spike_frac]))
    row, col = CENTRE + int(round(oy)), CENTRE + int(round(ox))
    for centre, line in ((col, img[row, :]), (row, img[:, col])):      # views: spikes along the row and column
        profile = (1.0 + np.abs(np.arange(STAMP) - centre) / 3.0) ** -2
        line += spike_frac / 2 * profile / profile.sum()
    return img


def _dust_lane(truth: dict, comps: list[dict]) -> np.ndarray | float:
    """Transmission (5, S, S) of an edge-on disk's mid-plane dust lane in each band (tau ~ 1/lambda)."""
    tau_v = truth["dust_lane_tau_v"]
    if tau_v <= 0:
        return 1.0
    disk = comps[-1]
    pa = np.deg2rad(disk["pa"])
    x, y = _XX - truth["offset_x_px"], _YY - truth["offset_y_px"]
    u = x * np.cos(pa) + y * np.sin(pa)
    v = -x * np.sin(pa) + y * np.cos(pa)
    hlr_px = disk["hlr"] / PIXEL_SCALE
    h = max(0.7, 0.25 * disk["q"] * hlr_px)
    lane = np.exp(-(((v - 0.3 * h) / h) ** 2)) * np.exp(-np.abs(u) / (1.2 * hlr_px))
    tau = tau_v * (_filter_array("lambda_eff_angstrom") / 5500.0) ** -1
    return np.exp(-tau[:, None, None] * lane[None])


def _artefact_overlay(c: dict, band: int, rng) -> np.ndarray | float:
    """Post-PSF artefact light in nanomaggies per pixel for one band."""
    ang = c["angle"]
    if c["kind"] == "satellite_trail":
        if band != c["band"]:
            return 0.0
        d = -_XX * np.sin(ang) + _YY * np.cos(ang) - c["pos"] * 0.3
        return c["level"] * np.exp(-0.5 * (d / c["width"]) ** 2)
    if c["kind"] == "bleed_column":
        length = 12 + 25 * c["level"]
        sat = 60.0 * rng.uniform(0.9, 1.1)
        return sat * np.exp(-0.5 * (_XX / (0.5 * c["width"])) ** 2) * (np.abs(_YY) < length)
    if c["kind"] == "offstamp_spike":
        colour = np.array([0.4, 0.9, 1.0, 1.0, 0.9])[band]
        along = np.abs(_XX - 90.0 * np.sign(c["pos"] + 1e-9))
        across = (_YY - c["pos"] * 0.2) / (0.6 * c["width"])
        return colour * c["level"] * (1 + along / 10.0) ** -1.0 * np.exp(-0.5 * across**2)
    return 0.0


def sky_sigma() -> np.ndarray:
    """Typical per-pixel sky noise of each band, nanomaggies."""
    return np.sqrt(nmgy(_filter_array("sky_mag_arcsec2")) * PIXEL_SCALE**2 / _filter_array("electrons_per_nmgy"))


def _light_radii(img: np.ndarray, fractions=(0.5, 0.9)) -> list[float]:
    """Circular radii (arcsec) about the light centroid enclosing the given fractions of the stamp's flux
    (cumulative profile in 0.25 px annuli, interpolated)."""
    pos = np.clip(img, 0, None)
    total = pos.sum()
    if total <= 0:
        return [np.nan for _ in fractions]
    cx, cy = (pos * _XX).sum() / total, (pos * _YY).sum() / total
    ring = (np.hypot(_XX - cx, _YY - cy) * 4).astype(np.int64).ravel()
    cum = np.cumsum(np.bincount(ring, weights=pos.ravel())) / total
    edges = (np.arange(len(cum)) + 1) / 4.0
    return [float(np.interp(f, cum, edges) * PIXEL_SCALE) for f in fractions]


_ARTEFACTS = ("satellite_trail", "bleed_column", "offstamp_spike")


def noiseless_model(p: dict, rng) -> tuple[np.ndarray, np.ndarray]:
    """(pre-PSF, PSF-convolved) noiseless band images (5, S, S) of an object's light (no artefacts, no noise),
    reddened by its E(B-V)."""
    ox, oy = p["offset_x_px"], p["offset_y_px"]
    light = [c for c in p["components"] if c["kind"] not in _ARTEFACTS]
    maps = np.stack([_component_map(c, ox, oy, rng) for c in light])
    fluxes = np.stack([c["band_flux"] for c in light])                       # (components, bands)
    pre = np.einsum("cb,cyx->byx", fluxes, maps) * _dust_lane(p, p["components"])
    pre *= extinction_factors(p["e_bv"])[:, None, None]
    return pre, convolve_psf(pre, p["seeing_fwhm_r_arcsec"])


def render_object(task: tuple[int, dict]) -> tuple[np.ndarray, dict, dict]:
    """Render one object's five bands with noise; returns (image (5,107,107) float32, measured truth, GZ2 votes).

    Deterministic in (seed, params['index']) alone."""
    seed, p = task
    rng = object_rng(seed, p["index"], STREAM_PIXELS)
    pre, model = noiseless_model(p, rng)
    measured = {"half_light_radius_arcsec": _light_radii(pre[R_BAND], (0.5,))[0]}
    measured["r50_arcsec"], measured["petro_r90_arcsec"] = _light_radii(model[R_BAND])
    if p["neighbours"]:
        _, field = noiseless_model({**p, "components": p["neighbours"], "dust_lane_tau_v": 0.0}, rng)
        model = model + field
    for c in p["components"]:
        if c["kind"] in _ARTEFACTS:
            for b in range(len(BANDS)):
                model[b] += _artefact_overlay(c, b, rng)
    sigma = sky_sigma() * rng.uniform(0.9, 1.15, len(BANDS))
    var = sigma[:, None, None] ** 2 + np.clip(model, 0, None) / _filter_array("electrons_per_nmgy")[:, None, None]
    image = (model + rng.standard_normal(model.shape) * np.sqrt(var)).astype(np.float32)
    votes = simulate_votes({**p, **measured}, object_rng(seed, p["index"], STREAM_VOTES))
    return image, measured, votes


# -- Galaxy Zoo 2 volunteers --------------------------------------------------------------------------------
# Tasks and answers in Hart et al. (2016) naming: task -> [answer column stems].
GZ2_TASKS = {
    "t01_smooth_or_features": ["a01_smooth", "a02_features_or_disk", "a03_star_or_artifact"],
    "t02_edgeon": ["a04_yes", "a05_no"],
    "t03_bar": ["a06_bar", "a07_no_bar"],
    "t04_spiral": ["a08_spiral", "a09_no_spiral"],
    "t05_bulge_prominence": ["a10_no_bulge", "a11_just_noticeable", "a12_obvious", "a13_dominant"],
    "t06_odd": ["a14_yes", "a15_no"],
    "t07_rounded": ["a16_completely_round", "a17_in_between", "a18_cigar_shaped"],
    "t10_arms_winding": ["a28_tight", "a29_medium", "a30_loose"],
    "t11_arms_number": ["a31_1", "a32_2", "a33_3", "a34_4", "a36_more_than_4", "a37_cant_tell"],
}
# How featured each type looks to a volunteer who sees it clearly.
_FEATUREDNESS = {"smooth": 0.04, "disk": 0.5, "spiral": 0.95, "barred_spiral": 0.97, "edge_on_disk": 0.92,
                 "irregular": 0.8, "merger": 0.75, "star": 0.05, "artefact": 0.2}
_ODDNESS = {"merger": 0.85, "irregular": 0.55, "artefact": 0.4}
VOLUNTEERS = (40, 50)


def gz2_columns() -> list[str]:
    cols = []
    for task, answers in GZ2_TASKS.items():
        for a in answers:
            cols += [f"{task}_{a}_count", f"{task}_{a}_fraction"]
    return cols


def visibility(p: dict) -> float:
    """0..1: how clearly a volunteer can see features: falls for small apparent size (relative to the seeing),
    faint surface brightness and, through both, redshift (GZ2's known redshift bias)."""
    r90 = p.get("petro_r90_arcsec", np.nan)
    r50 = p.get("r50_arcsec", np.nan)
    if not np.isfinite(r90) or not np.isfinite(r50):
        return 0.0
    size = 1.0 / (1.0 + (2.0 * p["seeing_fwhm_r_arcsec"] / r90) ** 3)
    mu50 = p["r_mag"] + 2.5 * np.log10(2 * np.pi * max(r50, 0.1) ** 2)
    surface = 1.0 / (1.0 + np.exp((mu50 - 22.8) / 0.6))
    return float(size * surface)


def _ask(rng, probs: np.ndarray, who: np.ndarray) -> np.ndarray:
    """Each volunteer in ``who`` picks one answer from their own probability row; returns answer index (-1 = not
    asked)."""
    out = np.full(len(who), -1)
    if who.any():
        p = probs[who]
        cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        out[who] = (rng.uniform(size=(len(p), 1)) > cum).sum(axis=1).clip(0, p.shape[1] - 1)
    return out


def simulate_votes(p: dict, rng) -> dict:
    """Counts and fractions from 40–50 simulated volunteers walking the GZ2 decision tree.

    Each volunteer has a skill (how much of the visible truth they perceive); what they cannot see defaults to
    'smooth', 'no bar', 'no spiral', so fractions are soft, noisy and biased with redshift like the real ones."""
    gtype = p["type"]
    n = int(rng.integers(VOLUNTEERS[0], VOLUNTEERS[1] + 1))
    vis = visibility(p)
    skill = rng.beta(8, 2, n)
    seen = vis * (0.6 + 0.4 * skill)
    ones = np.ones(n, dtype=bool)
    ans = {}

    p_star = np.full(n, 0.9 if gtype == "star" else (0.6 if gtype == "artefact" else 0.01))
    p_feat = (seen * _FEATUREDNESS[gtype] + (1 - seen) * 0.12) * (1 - p_star)
    ans["t01_smooth_or_features"] = _ask(rng, np.stack([1 - p_star - p_feat, p_feat, p_star], 1), ones)
    features = ans["t01_smooth_or_features"] == 1
    smooth = ans["t01_smooth_or_features"] == 0

    incl = p.get("inclination_deg", np.nan)
    edge = 1 / (1 + np.exp(-(incl - 74.0) / 4.0)) if np.isfinite(incl) else (0.15 if gtype == "merger" else 0.05)
    p_edge = np.clip(skill * edge + (1 - skill) * 0.1, 0, 1)
    ans["t02_edgeon"] = _ask(rng, np.stack([p_edge, 1 - p_edge], 1), features)
    face = features & (ans["t02_edgeon"] == 1)

    bar_visible = seen * (np.cos(np.deg2rad(incl)) if np.isfinite(incl) else 1.0) ** 0.5
    p_bar = np.clip(bar_visible * (0.9 if p["bar"] else 0.03) + (1 - bar_visible) * 0.06, 0, 1)
    ans["t03_bar"] = _ask(rng, np.stack([p_bar, 1 - p_bar], 1), face)
    arms_truth = 0.7 + 0.3 * p.get("arm_strength", 0.0) / 0.6 if p["arm_count"] > 0 else (
        0.25 if gtype in ("irregular", "merger") else 0.05)
    p_spiral = np.clip(seen * arms_truth + (1 - seen) * 0.15, 0, 1)
    ans["t04_spiral"] = _ask(rng, np.stack([p_spiral, 1 - p_spiral], 1), face)
    spiral = face & (ans["t04_spiral"] == 0)

    pitch = p.get("arm_pitch_deg", np.nan)
    perceived_pitch = (pitch if np.isfinite(pitch) else 20.0) + rng.normal(0, 6.0, n) / np.maximum(seen, 0.2)
    wind = np.stack([perceived_pitch < 15, (perceived_pitch >= 15) & (perceived_pitch < 24), perceived_pitch >= 24], 1)
    ans["t10_arms_winding"] = _ask(rng, wind.astype(float) + 1e-9, spiral)
    m = p["arm_count"] if p["arm_count"] > 0 else 2
    perceived_m = np.clip(np.round(m + rng.normal(0, 0.5, n) / np.maximum(seen, 0.2)), 1, 5).astype(int)
    p_cant = np.clip(0.1 + 0.5 * (1 - seen), 0, 0.9)
    arm_probs = np.zeros((n, 6))
    arm_probs[np.arange(n), np.minimum(perceived_m, 5) - 1 + (perceived_m >= 5)] = 1 - p_cant
    arm_probs[:, 5] += p_cant
    ans["t11_arms_number"] = _ask(rng, arm_probs + 1e-9, spiral)

    bt = p["bulge_to_disk"] / (1 + p["bulge_to_disk"]) if np.isfinite(p["bulge_to_disk"]) else 0.5
    perceived_bt = (bt if np.isfinite(bt) else 1.0) * rng.lognormal(0, 0.5, n)
    bulge = np.stack([perceived_bt < 0.05, (perceived_bt >= 0.05) & (perceived_bt < 0.2),
                      (perceived_bt >= 0.2) & (perceived_bt < 0.5), perceived_bt >= 0.5], 1)
    ans["t05_bulge_prominence"] = _ask(rng, bulge.astype(float) + 1e-9, face)

    q = p["axis_ratio"] if np.isfinite(p["axis_ratio"]) else 0.9
    perceived_q = q + rng.normal(0, 0.08, n)
    round_ = np.stack([perceived_q > 0.8, (perceived_q > 0.45) & (perceived_q <= 0.8), perceived_q <= 0.45], 1)
    ans["t07_rounded"] = _ask(rng, round_.astype(float) + 1e-9, smooth)

    p_odd = np.full(n, _ODDNESS.get(gtype, 0.08)) * (0.4 + 0.6 * vis)
    ans["t06_odd"] = _ask(rng, np.stack([p_odd, 1 - p_odd], 1), smooth | features)

    row = {"total_classifications": n}
    total_votes = 0
    for task, answers in GZ2_TASKS.items():
        counts = np.bincount(ans[task][ans[task] >= 0], minlength=len(answers))
        asked = counts.sum()
        total_votes += int(asked)
        for a, c in zip(answers, counts):
            row[f"{task}_{a}_count"] = int(c)
            # Like the published table, a task nobody reached has fraction 0 (use the counts to tell).
            row[f"{task}_{a}_fraction"] = float(c / asked) if asked else 0.0
    row["total_votes"] = total_votes
    return row


# -- the survey ---------------------------------------------------------------------------------------------
def sdss_objid(index: int, seed: int) -> int:
    """A unique SDSS-like 64-bit ObjID (skyVersion 2, rerun 301, run/camcol/field/id bit fields)."""
    run = 94 + (seed % 8000) + index // (6 * 4000 * 2000)
    camcol = 1 + (index // (4000 * 2000)) % 6
    field = 11 + (index // 2000) % 4000
    obj = 1 + index % 2000
    return (2 << 59) | (301 << 48) | (run << 32) | (camcol << 29) | (field << 16) | obj


def spectroscopic_targets(params: list[dict], seed: int) -> np.ndarray:
    """Which objects have a spectrum: every main-sample target but the ~7 % that fibre collisions lose (at random,
    not by brightness); artefacts never."""
    eligible = np.array([p["type"] != "artefact" for p in params])
    u = np.array([object_rng(seed, p["index"], STREAM_PARAMS + 3).uniform() for p in params])
    return eligible & (u < SPEC_COMPLETENESS)


def _specz(p: dict, has_spec: bool, seed: int) -> tuple[float, float]:
    if not has_spec:
        return np.nan, np.nan
    rng = object_rng(seed, p["index"], STREAM_PARAMS + 4)
    err = float(rng.uniform(1e-5, 6e-5) * (1 + p["redshift"]))
    return float(p["redshift"] + rng.normal(0, err)), err


def _truth_row(p: dict, measured: dict, objid: int, has_spec: bool) -> dict:
    row = {k: v for k, v in p.items() if k not in ("components", "neighbours", "index")}
    row.update(measured)
    row.update(ObjID=objid, has_specz=bool(has_spec))
    row["in_gz2"] = bool(row["r_mag_dered"] < GZ2_R_LIMIT and measured["petro_r90_arcsec"] > GZ2_R90_LIMIT)
    return row


def simulate_sdss(n: int, out, seed: int = 0, progress: bool = True, workers: int | None = None) -> Path:
    """Write a simulated SDSS survey of ``n`` objects into ``out`` (images.h5, gz2.csv, truth.parquet).

    Identical output for the same (n, seed) whatever ``workers`` (default: min(2, cores))."""
    import h5py

    from precompute.simulators.sim_common import default_workers

    if n < 1:
        raise ValueError(f"simulate_sdss: n must be >= 1, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, int(workers))
    sed_table(), filters()                       # computed once in the parent, inherited by forked workers
    params = [draw_params(seed, i) for i in range(n)]
    has_spec = spectroscopic_targets(params, seed)
    objids = np.array([sdss_objid(i, seed) for i in range(n)], dtype=np.int64)

    truth_rows, gz2_rows = [], []
    block = 256
    tmp = out / "images.h5.partial"
    with h5py.File(tmp, "w") as h5:
        images = h5.create_dataset("images", shape=(n, len(BANDS), STAMP, STAMP), dtype="f4",
                                   chunks=(min(n, 16), len(BANDS), STAMP, STAMP))
        h5.attrs.update(bands="ugriz", pixel_scale_arcsec=PIXEL_SCALE, units="nanomaggies per pixel",
                        simulated=True, seed=seed)
        buf = np.empty((min(block, n), len(BANDS), STAMP, STAMP), dtype=np.float32)
        tasks = ((seed, p) for p in params)
        for i, (img, measured, votes) in enumerate(ordered_map(render_object, tasks, n, workers, "simulate sdss",
                                                                progress)):
            buf[i % block] = img
            if i % block == block - 1 or i == n - 1:
                start = i - i % block
                images[start: i + 1] = buf[: i + 1 - start]
            p = params[i]
            row = _truth_row(p, measured, int(objids[i]), has_spec[i])
            truth_rows.append(row)
            if row["in_gz2"]:
                gz2_rows.append({"dr7objid": int(objids[i]), "ra": p["ra"], "dec": p["dec"], **votes})
        specz = np.array([_specz(p, s, seed) for p, s in zip(params, has_spec)]).reshape(n, 2)
        h5.create_dataset("ra", data=np.array([p["ra"] for p in params]))
        h5.create_dataset("dec", data=np.array([p["dec"] for p in params]))
        h5.create_dataset("e_bv", data=np.array([p["e_bv"] for p in params], dtype="f4"))
        h5.create_dataset("specz_redshift", data=specz[:, 0].astype("f4"))
        h5.create_dataset("specz_redshift_err", data=specz[:, 1].astype("f4"))
        h5.create_dataset("ObjID", data=objids)
    tmp.replace(out / "images.h5")
    pd.DataFrame(truth_rows).to_parquet(out / "truth.parquet", index=False)
    gz2_cols = ["dr7objid", "ra", "dec", "total_classifications", "total_votes"] + gz2_columns()
    pd.DataFrame(gz2_rows, columns=gz2_cols).to_csv(out / "gz2.csv", index=False, float_format="%.10g")
    return out

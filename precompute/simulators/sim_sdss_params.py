"""The simulated SDSS objects' parameters: the survey's constants, filters and rest-frame spectra, and the draw of
one object (type, luminosity and redshift under the main-sample selection, size, components, neighbours, seeing).
The physics is summarised in ``precompute.simulators.sim_sdss``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from precompute.simulators.sim_common import (STREAM_PARAMS, SDSS_BOXES, distance_modulus, galactic_reddening,
                                           kpc_per_arcsec, luminosity_distance_m, object_rng,
                                           offset_away_from_centre, sample_footprint)

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
    return 10.0 ** (-0.4 * filter_array("extinction_R") * e_bv)


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
    build = {"smooth": _smooth_components, "irregular": _irregular_components, "merger": _merger_components}
    return build.get(gtype, _disk_components)(rng, gtype, z, abs_mag, truth, pa)


def _smooth_components(rng, gtype, z, abs_mag, truth, pa) -> list[dict]:
    n = _sersic_n(rng, 2.5, 5.5)
    q = float(np.clip(1.0 - abs(rng.normal(0.0, 0.3)), 0.25, 1.0))
    hlr = _arcsec_of(_size_kpc(rng, abs_mag, early=True), z)
    truth.update(sersic_index=n, axis_ratio=q, bulge_to_disk=np.inf, bulge_hlr_arcsec=hlr)
    return [_component("sersic", 1.0, (1, 0, 0), n=n, hlr=hlr, q=q, pa=pa)]


def _irregular_components(rng, gtype, z, abs_mag, truth, pa) -> list[dict]:
    hlr = _arcsec_of(_size_kpc(rng, abs_mag, early=False), z)
    q = float(rng.uniform(0.4, 1.0))
    knot_frac = rng.uniform(0.25, 0.5)
    truth.update(sersic_index=1.0, axis_ratio=q, bulge_to_disk=0.0, disk_hlr_arcsec=hlr)
    return [_component("sersic", 1 - knot_frac, (0.2, 0.8, 0), n=1.0, hlr=hlr, q=q, pa=pa),
            _component("knots", knot_frac, (0, 0.2, 0.8), npoints=int(rng.integers(30, 100)), hlr=hlr * 1.2,
                       dx=rng.normal(0, 0.15) * hlr, dy=rng.normal(0, 0.15) * hlr)]


def _merger_components(rng, gtype, z, abs_mag, truth, pa) -> list[dict]:
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


def _disk_components(rng, gtype, z, abs_mag, truth, pa) -> list[dict]:
    """Bulge + disk, with a bar (barred spirals), arms and their knots (spirals), a dust lane (edge-on)."""
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
    comps = [_component("sersic", bt, (1, 0, 0), n=bulge_n, hlr=bulge_hlr, q=bulge_q, pa=pa)]
    disk_frac = 1.0 - bt
    truth.update(inclination_deg=incl, axis_ratio=q_disk, sersic_index=bulge_n, bulge_to_disk=bt / (1 - bt),
                 bulge_hlr_arcsec=bulge_hlr, disk_hlr_arcsec=disk_hlr)
    if gtype == "barred_spiral":
        disk_frac -= _add_bar(rng, comps, truth, disk_frac, disk_hlr, pa, incl)
    if gtype in ("spiral", "barred_spiral"):
        disk_frac *= _add_arms(rng, comps, truth, disk_frac, disk_hlr, bulge_hlr, q_disk, pa, incl)
    comps.append(_component("sersic", disk_frac, (1 - young, young, 0), n=1.0, hlr=disk_hlr, q=q_disk, pa=pa))
    if gtype == "edge_on_disk":
        truth["dust_lane_tau_v"] = float(rng.uniform(0.8, 2.5))
    return comps


def _add_bar(rng, comps, truth, disk_frac, disk_hlr, pa, incl) -> float:
    """Append a bar; return the share of the light it takes from the disk."""
    bar_frac = min(rng.uniform(0.1, 0.22), disk_frac * 0.35)
    bar_len = disk_hlr * rng.uniform(0.6, 1.1)
    bar_pa = pa + rng.uniform(-80, 80)
    comps.append(_component("bar", bar_frac, (0.8, 0.2, 0), hlr=bar_len * 0.5, q=rng.uniform(0.18, 0.3),
                            bar_pa=bar_pa, incl=incl, disk_pa=pa))
    truth.update(bar_length_arcsec=bar_len)
    return bar_frac


def _add_arms(rng, comps, truth, disk_frac, disk_hlr, bulge_hlr, q_disk, pa, incl) -> float:
    """Append logarithmic arms and their star-forming knots; return the factor left to the smooth disk."""
    m = int(rng.choice([1, 2, 3, 4, 5], p=[0.04, 0.56, 0.2, 0.14, 0.06]))
    pitch = float(rng.uniform(8.0, 35.0))
    strength = float(rng.uniform(0.3, 0.6))
    knots = float(rng.uniform(0.02, 0.07))
    arm_inner = max(bulge_hlr * 1.5, truth.get("bar_length_arcsec", 0.0))
    arm_args = dict(m=m, pitch=pitch, chirality=float(rng.choice([-1.0, 1.0])), phase=rng.uniform(0, 2 * np.pi),
                    sharp=float(rng.uniform(1.5, 4.0)), inner=arm_inner, hlr=disk_hlr, q=q_disk, pa=pa, incl=incl)
    comps.append(_component("arms", disk_frac * strength, (0, 0.4, 0.6), **arm_args))
    comps.append(_component("arm_knots", disk_frac * knots, (0, 0, 1), npoints=int(rng.integers(20, 80)),
                            **arm_args))
    truth.update(arm_count=m, arm_pitch_deg=pitch, arm_strength=strength)
    return 1 - strength - knots


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


def filter_array(column: str) -> np.ndarray:
    return filters()[column].to_numpy(dtype=float)

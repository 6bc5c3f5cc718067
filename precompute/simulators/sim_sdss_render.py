"""Rendering a simulated SDSS object: components drawn with GalSim and numpy maps, band fluxes, dust lanes,
artefacts, the Kolmogorov PSF per band, and sky + Poisson noise."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from precompute.simulators.sim_common import STREAM_PIXELS, STREAM_VOTES, object_rng
from precompute.simulators.sim_sdss_params import (BANDS, CENTRE, PIXEL_SCALE, R_BAND, STAMP, extinction_factors,
                                                   filter_array, nmgy)
from precompute.simulators.sim_sdss_votes import simulate_votes

# -- rendering ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def psf_kernels(seeing_r: float) -> np.ndarray:
    """Kolmogorov PSFs of the five bands (FWHM scaled as lambda^-0.3 from r), pixel-integrated, unit sum, 31x31."""
    import galsim

    lam = filter_array("lambda_eff_angstrom")
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
    tau = tau_v * (filter_array("lambda_eff_angstrom") / 5500.0) ** -1
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
    return np.sqrt(nmgy(filter_array("sky_mag_arcsec2")) * PIXEL_SCALE**2 / filter_array("electrons_per_nmgy"))


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


def render_scene(seed: int, p: dict) -> tuple[np.ndarray, dict, np.random.Generator]:
    """One object's noiseless stamp (5, 107, 107): its light, PSF-convolved, with neighbours and artefacts; and its
    measured sizes. The generator returned draws the noise next (the other simulated surveys add their own)."""
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
    return model, measured, rng


def render_object(task: tuple[int, dict]) -> tuple[np.ndarray, dict, dict]:
    """Render one object's five bands with noise; returns (image (5,107,107) float32, measured truth, GZ2 votes).

    Deterministic in (seed, params['index']) alone."""
    seed, p = task
    model, measured, rng = render_scene(seed, p)
    sigma = sky_sigma() * rng.uniform(0.9, 1.15, len(BANDS))
    var = sigma[:, None, None] ** 2 + np.clip(model, 0, None) / filter_array("electrons_per_nmgy")[:, None, None]
    image = (model + rng.standard_normal(model.shape) * np.sqrt(var)).astype(np.float32)
    votes = simulate_votes({**p, **measured}, object_rng(seed, p["index"], STREAM_VOTES))
    return image, measured, votes

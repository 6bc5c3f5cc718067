"""The simulated FIRST survey: the MiraBest/FIRST file layout (catalogue + compressed FITS with a celestial WCS),
and physics checked against truth (beam, noise, FRI vs FRII brightness profiles, sizes, determinism)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.stats import spearmanr

from precompute.simulators import sim_first
from precompute.simulators.sim_common import kpc_per_arcsec
from precompute.simulators.simulate import simulate_first

N, SEED = 80, 5
REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "first_mirabest"


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = simulate_first(N, tmp_path_factory.mktemp("first"), seed=SEED, progress=False, workers=2)
    cat = pd.read_csv(out / "catalog.csv")
    images, headers = [], []
    for f in cat["file"]:
        with fits.open(out / f) as hdul:
            images.append(hdul[1].data.astype(np.float64))
            headers.append(hdul[1].header)
    return out, cat, np.stack(images), headers


def _corner_pixels(img: np.ndarray, size: int = 30) -> np.ndarray:
    return np.concatenate([img[:size, :size].ravel(), img[:size, -size:].ravel(),
                           img[-size:, :size].ravel(), img[-size:, -size:].ravel()])


def _robust_sigma(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


# -- layout ---------------------------------------------------------------------------------------------------
def test_catalogue_has_the_mirabest_columns_and_classes(survey):
    out, cat, _, _ = survey
    assert list(cat.columns[: len(sim_first.CATALOG_COLUMNS)]) == sim_first.CATALOG_COLUMNS
    assert set(cat["fr_class"]) <= {"FRI", "FRII", "compact", "bent"} and {"FRI", "FRII"} <= set(cat["fr_class"])
    assert set(cat["confidence"]) <= {"confident", "uncertain"}
    assert cat["z"].between(0.03, 0.5).all()
    assert all((out / f).exists() for f in cat["file"])
    fr = cat[cat["fr_class"].isin(["FRI", "FRII"])]
    assert all(str(int(c))[0] == ("2" if k == "FRII" else "1") for c, k in zip(fr["label_code"], fr["fr_class"]))


def test_catalogue_columns_match_the_real_sample():
    if not REAL.exists():
        pytest.skip(f"real FIRST/MiraBest data not present at {REAL} (shared data only on the dev machine)")
    real = pd.read_csv(REAL / "catalog.csv", nrows=2)
    assert set(real.columns) <= set(sim_first.CATALOG_COLUMNS)


def test_cutouts_are_150px_float32_jy_per_beam_at_1_8_arcsec(survey):
    _, _, images, headers = survey
    assert images.shape == (N, 150, 150)
    for h in headers[:10]:
        assert h["BUNIT"] == "JY/BEAM" and h["BITPIX"] == -32
        scales = proj_plane_pixel_scales(WCS(h)) * 3600
        np.testing.assert_allclose(scales, 1.8, rtol=1e-9)
        assert WCS(h).celestial.wcs.ctype[0] == "RA---TAN"


def test_header_mimics_the_real_cutouts():
    if not REAL.exists():
        pytest.skip(f"real FIRST/MiraBest data not present at {REAL} (shared data only on the dev machine)")
    real_file = REAL / pd.read_csv(REAL / "catalog.csv", nrows=1)["file"].iloc[0]
    with fits.open(real_file) as hdul:
        real = hdul[1].header
        assert isinstance(hdul[1], fits.CompImageHDU)
    ours = sim_first.fits_header(real["CRVAL1"], real["CRVAL2"])
    for key in ("CRPIX1", "CRPIX2", "CDELT1", "CDELT2", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "BUNIT"):
        assert ours[key] == real[key], key


def test_wcs_puts_the_source_at_the_catalogue_position(survey):
    _, cat, images, headers = survey
    alone = (cat["n_background"] == 0).to_numpy()
    for i in np.flatnonzero((cat["fr_class"] == "compact").to_numpy() & alone)[:8]:
        w = WCS(headers[i])
        img = images[i]
        y, x = np.unravel_index(np.argmax(img), img.shape)
        win = np.clip(img[y - 2: y + 3, x - 2: x + 3], 0, None)
        yy, xx = np.mgrid[y - 2: y + 3, x - 2: x + 3]
        peak = w.pixel_to_world((win * xx).sum() / win.sum(), (win * yy).sum() / win.sum())
        target = SkyCoord(cat["ra"].iloc[i] * u.deg, cat["dec"].iloc[i] * u.deg, frame="fk5")
        assert peak.separation(target).arcsec < 1.0


def test_position_angle_is_east_of_north(survey):
    """A jet at PA 90 deg points east, which on these images (RA growing to the left) is towards -x."""
    p = sim_first.draw_params(SEED, 0)
    p.update(fr_class="FRII", position_angle_deg=90.0, arm_ratio=1.0, las_arcsec=100.0, core_fraction=0.0,
             hotspot_fraction=0.4, jet_opening_deg=15.0)
    g = sim_first.source_gaussians(p, np.random.default_rng(0))
    east = g[np.argmax(g[:, 5] * (g[:, 0] < 0))]
    assert east[0] < -20 and abs(east[1]) < 3


# -- physics --------------------------------------------------------------------------------------------------
def test_noise_is_0_15_mjy_per_beam_and_correlated_on_the_beam_scale(survey):
    _, cat, images, _ = survey
    quiet = (cat["las_arcsec"] < 120).to_numpy()
    sig = np.array([_robust_sigma(_corner_pixels(img)) for img in images[quiet]])
    assert 0.12e-3 < np.median(sig) < 0.18e-3
    corner = images[quiet][0][:40, :40]
    r = np.corrcoef(corner[:, :-1].ravel(), corner[:, 1:].ravel())[0, 1]
    assert r > 0.4, r                  # neighbouring pixels (1.8") share a 5.4" beam


def test_noise_level_matches_the_real_cutouts(survey):
    if not REAL.exists():
        pytest.skip(f"real FIRST/MiraBest data not present at {REAL} (shared data only on the dev machine)")
    real = pd.read_csv(REAL / "catalog.csv")
    real_sig = np.median([_robust_sigma(_corner_pixels(fits.getdata(REAL / f).astype(float)))
                          for f in real["file"].iloc[::60]])
    _, _, images, _ = survey
    ours = np.median([_robust_sigma(_corner_pixels(img)) for img in images])
    assert 0.67 < ours / real_sig < 1.5, (ours, real_sig)


def test_point_sources_have_the_beam_size_and_flux():
    p = {**sim_first.draw_params(SEED, 0), "fr_class": "compact", "las_arcsec": 0.1, "flux_mjy": 10.0}
    img = sim_first.render_gaussians(sim_first.source_gaussians(p, np.random.default_rng(0)))
    beam_area_px = 2 * np.pi * sim_first.SIGMA_BEAM**2
    assert img.sum() / beam_area_px == pytest.approx(10e-3, rel=0.01)   # Jy/beam summed over the beam = Jy
    yy, xx = np.mgrid[0:150, 0:150] - sim_first.CENTRE
    sigma_x = np.sqrt((img * xx**2).sum() / img.sum())
    assert 2.3548 * sigma_x * sim_first.PIXEL_SCALE == pytest.approx(5.4, rel=0.02)


def test_frii_brightness_peaks_farther_out_than_fri(survey):
    _, cat, images, _ = survey
    yy, xx = np.mgrid[0:150, 0:150] - sim_first.CENTRE

    def peak_offset(i):                     # distance of the brightest pixel, in units of the half-LAS
        y, x = np.unravel_index(np.argmax(images[i]), images[i].shape)
        return np.hypot(xx[y, x], yy[y, x]) * sim_first.PIXEL_SCALE / (cat["las_arcsec"].iloc[i] / 2)

    ok = (cat["las_arcsec"] > 25).to_numpy() & (cat["n_background"] == 0).to_numpy()
    fri = [peak_offset(i) for i in np.flatnonzero(ok & (cat["fr_class"] == "FRI").to_numpy())]
    frii = [peak_offset(i) for i in np.flatnonzero(ok & (cat["fr_class"] == "FRII").to_numpy())]
    assert len(fri) >= 4 and len(frii) >= 4
    assert np.median(frii) > 0.6 and np.median(fri) < 0.35 and np.median(frii) > np.median(fri) + 0.3


def test_las_follows_physical_size_and_redshift(survey):
    _, cat, images, _ = survey
    ext = cat[(cat["fr_class"] != "compact") & (cat["n_background"] == 0)]
    expected = ext["lls_kpc"] * np.sin(np.deg2rad(ext["viewing_angle_deg"])) / kpc_per_arcsec(ext["z"])
    np.testing.assert_allclose(ext["las_arcsec"], expected, rtol=1e-6)
    yy, xx = np.mgrid[0:150, 0:150] - sim_first.CENTRE
    measured = []
    for i in ext.index:   # extent of the emission above 5 sigma and above the snapshot sidelobes (<1 % of peak)
        bright = images[i] > max(5 * 0.15e-3, 0.02 * images[i].max())
        measured.append(2 * np.hypot(xx[bright], yy[bright]).max() * sim_first.PIXEL_SCALE if bright.any() else 0)
    assert spearmanr(ext["las_arcsec"], measured).statistic > 0.7
    small = ext["las_arcsec"] < 60
    assert np.median(np.array(measured)[small.to_numpy()] / ext["las_arcsec"][small]) == pytest.approx(1.0, abs=0.5)


def test_field_sources_appear_away_from_the_target(survey):
    _, cat, images, _ = survey
    assert 0.2 < cat["n_background"].mean() < 1.0
    yy, xx = np.mgrid[0:150, 0:150] - sim_first.CENTRE
    far = np.hypot(xx, yy) > 45
    busy = images[(cat["n_background"] > 0).to_numpy() & (cat["las_arcsec"] < 40).to_numpy()]
    quiet = images[(cat["n_background"] == 0).to_numpy() & (cat["las_arcsec"] < 40).to_numpy()]
    assert np.median([im[far].max() for im in busy]) > 2 * np.median([im[far].max() for im in quiet])


def test_bent_tails_bend(survey):
    _, cat, _, _ = survey
    bent = cat[cat["fr_class"] == "bent"]
    assert len(bent) and (bent["bend_angle_deg"] >= 30).all()
    assert set(bent["morphology"]) <= {"wide-angle tail", "head-tail"}
    p = sim_first.draw_params(SEED, int(bent.index[0]))
    a, _, _ = sim_first._jet_path(p, 0, 40)
    b, _, _ = sim_first._jet_path(p, 1, 40)
    ends = a[-1] + b[-1]              # straight opposed jets would end symmetric about the core
    assert np.hypot(*ends) > 0.2 * (np.hypot(*a[-1]) + np.hypot(*b[-1])) / 2


# -- determinism ----------------------------------------------------------------------------------------------
def test_same_seed_same_files_whatever_the_workers(survey, tmp_path):
    _, cat, images, _ = survey
    out = simulate_first(6, tmp_path / "again", seed=SEED, progress=False, workers=1)
    again = pd.read_csv(out / "catalog.csv")
    pd.testing.assert_frame_equal(again, cat.iloc[:6].reset_index(drop=True), check_dtype=False)
    for i, f in enumerate(again["file"]):
        np.testing.assert_array_equal(fits.getdata(out / f).astype(np.float64), images[i])
    other = simulate_first(2, tmp_path / "other", seed=SEED + 1, progress=False, workers=1)
    assert not np.array_equal(fits.getdata(other / pd.read_csv(other / "catalog.csv")["file"][0]), images[0])

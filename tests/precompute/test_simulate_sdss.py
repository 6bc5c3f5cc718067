"""The simulated SDSS survey: layout of the Hayat et al. (2021) release, and physics that can be checked against
its truth (reddening, redshift colours and sizes, inclination, GZ2 votes, spectroscopic selection, determinism)."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from precompute.simulators import sim_sdss_params, sim_sdss_render, sim_sdss_votes
from precompute.simulators.sim_common import SDSS_BOXES, STREAM_PIXELS, object_rng
from precompute.simulators.simulate import simulate_sdss

N, SEED = 160, 3
R_COEFF = np.array([4.239, 3.303, 2.285, 1.698, 1.263])


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = simulate_sdss(N, tmp_path_factory.mktemp("sdss"), seed=SEED, progress=False, workers=2)
    with h5py.File(out / "images.h5") as h:
        data = {k: h[k][:] for k in h.keys()}
    truth = pd.read_parquet(out / "truth.parquet")
    gz2 = pd.read_csv(out / "gz2.csv")
    return out, data, truth, gz2


def _moments_axis_ratio(img: np.ndarray, sigma: float) -> float:
    """b/a from the second moments of the central object: the connected pixels above 2 sigma of the smoothed
    band image that contain the stamp centre (field neighbours excluded)."""
    from scipy.ndimage import gaussian_filter, label

    regions, _ = label(gaussian_filter(img, 1.5) > 2 * sigma / 3)
    c = sim_sdss_params.CENTRE
    centre_label = np.bincount(regions[c - 2: c + 3, c - 2: c + 3].ravel()).argmax()
    mask = (regions == centre_label) & (centre_label > 0)
    w = np.where(mask, np.clip(img, 0, None), 0)
    y, x = np.mgrid[0: img.shape[0], 0: img.shape[1]]
    tot = w.sum()
    cx, cy = (w * x).sum() / tot, (w * y).sum() / tot
    cov = np.cov(np.stack([x.ravel() - cx, y.ravel() - cy]), aweights=w.ravel() + 1e-12)
    ev = np.linalg.eigvalsh(cov)
    return float(np.sqrt(ev[0] / ev[1]))


def _aperture_flux(img: np.ndarray, radius_px: float) -> np.ndarray:
    y, x = np.mgrid[0: img.shape[-2], 0: img.shape[-1]] - sim_sdss_params.CENTRE
    return (img * (np.hypot(x, y) <= radius_px)).sum(axis=(-2, -1))


# -- layout ---------------------------------------------------------------------------------------------------
def test_hdf5_layout_matches_the_hayat_release(survey):
    _, data, truth, _ = survey
    assert set(data) == {"images", "ra", "dec", "e_bv", "specz_redshift", "specz_redshift_err", "ObjID"}
    assert data["images"].shape == (N, 5, 107, 107) and data["images"].dtype == np.float32
    assert data["ObjID"].dtype == np.int64 and len(np.unique(data["ObjID"])) == N
    assert np.all((data["ObjID"] > 1.2e18) & (data["ObjID"] < 1.3e18))        # SDSS-like 64-bit IDs
    assert np.isfinite(data["images"]).all()
    assert list(truth["ObjID"]) == list(data["ObjID"])
    np.testing.assert_allclose(truth["ra"], data["ra"])


def test_positions_fall_in_the_sdss_footprint(survey):
    _, data, _, _ = survey
    inside = np.zeros(N, dtype=bool)
    for ra0, ra1, d0, d1 in SDSS_BOXES:
        in_ra = ((data["ra"] - ra0) % 360) <= ((ra1 - ra0) % 360)
        inside |= in_ra & (data["dec"] >= d0) & (data["dec"] <= d1)
    assert inside.all()


def test_truth_table_has_the_generating_parameters(survey):
    _, _, truth, _ = survey
    for col in ("ObjID", "type", "bulge_to_disk", "inclination_deg", "arm_count", "arm_pitch_deg", "bar",
                "sersic_index", "half_light_radius_arcsec", "redshift", "r_mag", "petro_r90_arcsec", "e_bv",
                "axis_ratio"):
        assert col in truth.columns, col
    assert set(truth["type"]) <= set(sim_sdss_params.TYPE_PROBABILITIES)
    gal = truth[~truth["type"].isin(["star", "artefact"])]
    assert gal["redshift"].between(0.01, 0.4).all()
    assert (truth.loc[truth["type"] == "barred_spiral", "bar"]).all()
    assert (truth.loc[truth["type"].isin(["spiral", "barred_spiral"]), "arm_count"] >= 1).all()


# -- photometry -------------------------------------------------------------------------------------------
def test_reddening_scales_band_fluxes_by_the_sdss_coefficients():
    p = sim_sdss_params.draw_params(SEED, 0)
    p = {**p, "dust_lane_tau_v": 0.0}
    _, clear = sim_sdss_render.noiseless_model({**p, "e_bv": 0.0}, object_rng(SEED, 0, STREAM_PIXELS))
    _, dusty = sim_sdss_render.noiseless_model({**p, "e_bv": 0.3}, object_rng(SEED, 0, STREAM_PIXELS))
    ratio = dusty.sum(axis=(1, 2)) / clear.sum(axis=(1, 2))
    np.testing.assert_allclose(ratio, 10 ** (-0.4 * R_COEFF * 0.3), rtol=1e-6)


def test_old_populations_redden_with_redshift_as_the_4000A_break_moves_through_g():
    def g_minus_r(weights, z):
        f = sim_sdss_params.sed_band_factors(weights, z)
        return -2.5 * np.log10(f[1] / f[2])

    g_r = [g_minus_r((1, 0, 0), z) for z in (0.02, 0.1, 0.2, 0.3, 0.4)]
    assert np.all(np.diff(g_r) > 0)
    assert 0.5 < g_r[0] < 0.9 and g_r[-1] > 1.2          # elliptical-like g-r at low z, LRG-like at z~0.4
    assert g_minus_r((0, 1, 0), 0.02) < g_r[0] - 0.2                          # disks bluer than bulges


def test_smooth_galaxies_in_the_images_are_redder_at_higher_redshift(survey):
    _, data, truth, _ = survey
    alone = (truth["n_neighbours"] == 0).to_numpy()
    sel = np.flatnonzero((truth["type"] == "smooth").to_numpy() & (truth["r_mag"] < 19.5).to_numpy() & alone)
    assert len(sel) >= 10
    flux = np.array([_aperture_flux(data["images"][i], 2.5 * truth["petro_r90_arcsec"].iloc[i] / 0.396 + 3)
                     for i in sel])
    ebv = truth["e_bv"].to_numpy()[sel]
    g_r = -2.5 * np.log10(flux[:, 1] / flux[:, 2]) - (R_COEFF[1] - R_COEFF[2]) * ebv   # dereddened
    rho = spearmanr(truth["redshift"].to_numpy()[sel], g_r).statistic
    assert rho > 0.4, rho


def test_image_flux_matches_the_catalogue_magnitude(survey):
    _, data, truth, _ = survey
    alone = truth["n_neighbours"] == 0          # the whole stamp's flux is the object's own
    bright_galaxy = truth["type"].isin(["smooth", "disk", "spiral"]) & (truth["r_mag"] < 18.5) & alone
    sel = np.flatnonzero(bright_galaxy.to_numpy())
    measured = np.array([22.5 - 2.5 * np.log10(data["images"][i, 2].sum()) for i in sel])
    assert np.median(np.abs(measured - truth["r_mag"].to_numpy()[sel])) < 0.15


# -- morphology -------------------------------------------------------------------------------------------
def test_edge_on_disks_are_elongated_in_the_images(survey):
    _, data, truth, _ = survey
    sigma_r = sim_sdss_render.sky_sigma()[2]
    bright = (truth["r_mag"] < 19.0).to_numpy() & (truth["petro_r90_arcsec"] > 2.5).to_numpy()
    edge = np.flatnonzero((truth["type"] == "edge_on_disk").to_numpy() & bright)
    face = np.flatnonzero(truth["type"].isin(["spiral", "barred_spiral", "disk"]).to_numpy()
                          & (truth["inclination_deg"] < 45).to_numpy() & bright)
    assert len(edge) >= 4 and len(face) >= 4
    q_edge = np.median([_moments_axis_ratio(data["images"][i, 2], sigma_r) for i in edge])
    q_face = np.median([_moments_axis_ratio(data["images"][i, 2], sigma_r) for i in face])
    assert q_edge < 0.55 and q_face > q_edge + 0.25, (q_edge, q_face)


def test_apparent_size_falls_with_redshift(survey):
    _, _, truth, _ = survey
    gal = truth[truth["type"].isin(["smooth", "disk", "spiral", "barred_spiral", "edge_on_disk"])]
    # at fixed luminosity: across the whole flux-limited sample, the luminous (large) galaxies sit at high z
    fixed = gal[gal["absolute_mag_r"].between(-22.0, -21.0)]
    assert spearmanr(fixed["redshift"], fixed["half_light_radius_arcsec"]).statistic < -0.4


def test_psf_is_wider_in_blue_bands():
    k = sim_sdss_render.psf_kernels(1.4)
    second_moment = [(kk * (np.mgrid[0:31, 0:31] - 15) ** 2).sum() for kk in k]
    assert np.all(np.diff(second_moment) < 0)


# -- catalogue selections and votes -------------------------------------------------------------------------
def test_main_sample_selection_sets_magnitudes_redshifts_and_spectra(survey):
    _, data, truth, _ = survey
    gal = truth[~truth["type"].isin(["star", "artefact"])]
    assert gal["r_mag_dered"].between(*sim_sdss_params.MAIN_SAMPLE_R).all()
    assert 0.07 < gal["redshift"].median() < 0.14          # the main sample's median z is about 0.10
    assert gal["r_mag_dered"].median() > 16.5               # number counts rise towards the faint limit
    has = np.isfinite(data["specz_redshift"])
    assert 0.85 < has[~truth["type"].eq("artefact").to_numpy()].mean() <= 1.0
    assert not has[truth["type"].eq("artefact").to_numpy()].any()
    z = truth["redshift"].to_numpy()
    assert np.all(np.abs(data["specz_redshift"][has] - z[has]) < 1e-3)
    assert np.all(data["specz_redshift_err"][has] > 0) and np.isnan(data["specz_redshift_err"][~has]).all()


def test_gz2_subset_is_brighter_and_larger_and_positioned_on_its_objects(survey):
    _, data, truth, gz2 = survey
    assert 5 <= len(gz2) < N
    t = truth.set_index("ObjID")
    member = t.loc[gz2["dr7objid"]]
    np.testing.assert_allclose(gz2["ra"], member["ra"], atol=1e-6)
    np.testing.assert_allclose(gz2["dec"], member["dec"], atol=1e-6)
    others = t.drop(index=gz2["dr7objid"])
    assert (member["r_mag_dered"] < sim_sdss_params.GZ2_R_LIMIT).all() and (member["petro_r90_arcsec"] > 3.0).all()
    assert member["r_mag_dered"].median() < others["r_mag_dered"].median() - 0.3
    assert member["petro_r90_arcsec"].median() > others["petro_r90_arcsec"].median()


def test_vote_table_is_consistent(survey):
    _, _, _, gz2 = survey
    assert gz2["total_classifications"].between(40, 50).all()
    t01 = [f"t01_smooth_or_features_{a}_fraction" for a in sim_sdss_votes.GZ2_TASKS["t01_smooth_or_features"]]
    np.testing.assert_allclose(gz2[t01].sum(axis=1), 1.0, atol=1e-4)
    count_cols = [c for c in gz2.columns if c.endswith("_count")]
    assert (gz2[count_cols].sum(axis=1) == gz2["total_votes"]).all()
    for col in ("t02_edgeon_a04_yes_fraction", "t03_bar_a06_bar_fraction", "t04_spiral_a08_spiral_fraction",
                "t05_bulge_prominence_a13_dominant_fraction", "t07_rounded_a18_cigar_shaped_fraction"):
        assert gz2[col].between(0, 1).all(), col


def _mean_votes(gtype: str, n: int, key: str, **override) -> float:
    out = []
    i = 0
    while len(out) < n:
        p = sim_sdss_params.draw_params(11, i)
        i += 1
        if p["type"] != gtype:
            continue
        p.update(petro_r90_arcsec=8.0, r50_arcsec=3.0, r_mag=16.0)
        p.update(override)
        out.append(sim_sdss_votes.simulate_votes(p, object_rng(11, i, 2))[key])
    return float(np.mean(out))


def test_smooth_galaxies_get_higher_smooth_fractions_than_spirals(survey):
    key = "t01_smooth_or_features_a01_smooth_fraction"
    assert _mean_votes("smooth", 12, key) > _mean_votes("spiral", 12, key) + 0.4
    _, _, truth, gz2 = survey        # the same holds in the written table
    types = truth.set_index("ObjID").loc[gz2["dr7objid"], "type"].to_numpy()
    smooth, spiral = gz2[key][types == "smooth"], gz2[key][np.isin(types, ["spiral", "barred_spiral"])]
    if len(smooth) >= 3 and len(spiral) >= 3:
        assert smooth.mean() > spiral.mean()


def test_features_fade_for_small_faint_distant_galaxies():
    """GZ2's redshift bias: the same spiral, seen smaller and fainter, collects fewer 'features' votes."""
    key = "t01_smooth_or_features_a02_features_or_disk_fraction"
    near = _mean_votes("spiral", 12, key)
    far = _mean_votes("spiral", 12, key, petro_r90_arcsec=2.5, r50_arcsec=1.2, r_mag=17.7)
    assert near > far + 0.25, (near, far)


def test_bars_and_edge_on_votes_follow_truth():
    bar_key = "t03_bar_a06_bar_fraction"
    assert _mean_votes("barred_spiral", 10, bar_key, inclination_deg=20.0) > _mean_votes("spiral", 10, bar_key) + 0.3
    edge_key = "t02_edgeon_a04_yes_fraction"
    assert _mean_votes("edge_on_disk", 10, edge_key) > _mean_votes("spiral", 10, edge_key, inclination_deg=20.0) + 0.5


# -- determinism ----------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_images_whatever_the_workers(survey, tmp_path):
    _, data, _, _ = survey
    out = simulate_sdss(12, tmp_path / "one", seed=SEED, progress=False, workers=1)
    with h5py.File(out / "images.h5") as h:
        np.testing.assert_array_equal(h["images"][:], data["images"][:12])
        np.testing.assert_array_equal(h["ObjID"][:], data["ObjID"][:12])
    other = simulate_sdss(4, tmp_path / "other", seed=SEED + 1, progress=False, workers=1)
    with h5py.File(other / "images.h5") as h:
        assert not np.array_equal(h["images"][:], data["images"][:4])


def test_cli_writes_the_three_files(tmp_path):
    from precompute.__main__ import main

    assert main(["simulate", "--survey", "sdss", "--n", "5", "--out", str(tmp_path / "s"), "--workers", "1",
                 "--no-progress"]) == 0
    assert {p.name for p in (tmp_path / "s").iterdir()} == {"images.h5", "gz2.csv", "truth.parquet"}

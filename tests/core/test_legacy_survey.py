"""The DESI Legacy Surveys grz survey (core/surveys/legacy.py): its three input layouts, GZ DECaLS votes and photo-z,
the viewer's colours, its links, and its two online services answered by a local replay server."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from core.inputs import InputError
from core.surveys.base import get_survey
from core.surveys.online import fetch_cutout
from core.surveys.services import FetchError
from precompute.simulators.sim_legacy import simulate_legacy
from tests.recorded.legacy import CUTOUT_PATH, cutout_service, hips2fits_answer
from tests.recorded.replay import ReplayServer

@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_legacy(24, tmp_path_factory.mktemp("legacy") / "sim", seed=3, progress=False, workers=1)


@pytest.fixture(scope="module")
def survey():
    return get_survey("legacy")


def test_simulated_hdf5_reads_with_votes_photo_z_and_truth(sim, survey):
    cut = survey.read_local(images=sim / "images.h5", gz_decals=sim / "gz_decals.csv", truth=sim / "truth.parquet")
    cat = cut.catalog
    assert cut.images.shape == (24, 3, 152, 152) and not cut.skipped
    assert list(cat.columns[:3]) == ["object_id", "ra", "dec"] and cat["object_id"].str.startswith("LS-SIM J").all()
    assert cat["photo_z"].notna().any() and "z_phot_std" in cat.columns and "e_bv" in cat.columns
    votes = pd.read_csv(sim / "gz_decals.csv")
    assert "smooth-or-featured_smooth_fraction" in votes.columns      # Walmsley et al. 2022's names
    joined = cat.set_index("object_id").loc[votes["iauname"], "gzd_smooth_or_featured_smooth_fraction"]
    np.testing.assert_allclose(joined.to_numpy(), votes["smooth-or-featured_smooth_fraction"].to_numpy())
    assert cat.loc[~cat["object_id"].isin(votes["iauname"]), "gzd_smooth_or_featured_smooth_fraction"].isna().all()
    assert set(cat["truth_type"]) <= {"smooth", "disk", "spiral", "barred_spiral", "edge_on_disk", "irregular",
                                      "merger", "star", "artefact"}
    # photometry in nanomaggies: bright galaxies of the main sample, redder in g - r than in nothing
    galaxies = cat["truth_type"].isin(["smooth", "disk", "spiral"])
    assert cat.loc[galaxies, "r_mag"].between(13, 19.5).all()
    assert (cat.loc[galaxies, "angular_extent_arcsec"] > 0).all()


def test_simulation_is_the_same_whatever_the_workers(tmp_path):
    a = simulate_legacy(5, tmp_path / "a", seed=1, progress=False, workers=1)
    b = simulate_legacy(5, tmp_path / "b", seed=1, progress=False, workers=2)
    import h5py

    with h5py.File(a / "images.h5") as ha, h5py.File(b / "images.h5") as hb:
        np.testing.assert_array_equal(ha["images"][:], hb["images"][:])


def test_npy_with_catalogue_and_fits_cubes_layouts(sim, survey, tmp_path):
    import h5py

    with h5py.File(sim / "images.h5") as h5:
        images, ra, dec = h5["images"][:12], h5["ra"][:12], h5["dec"][:12]
    images[3, 1, 5, 5] = np.nan                                        # a NaN pixel: skipped, said why
    np.save(tmp_path / "cutouts.npy", images)
    pd.DataFrame({"ra": ra, "dec": dec, "z_phot_median": 0.1}).to_csv(tmp_path / "rows.csv", index=False)
    cut = survey.read_local(images=tmp_path / "cutouts.npy", catalog=tmp_path / "rows.csv")
    assert len(cut.catalog) == 11 and cut.skipped[0][1] == "1 NaN/infinite pixels"
    assert cut.catalog["object_id"].iloc[0].startswith("LS J") and (cut.catalog["photo_z"] == 0.1).all()
    # the cutout service's layout: one FITS cube per object, listed in a CSV; a broken file is skipped
    files = []
    for i in range(6):
        name = f"cut_{i}.fits"
        fits.PrimaryHDU(images[i]).writeto(tmp_path / name)
        files.append(name)
    (tmp_path / "cut_5.fits").write_bytes(b"SIMPLE  = broken")
    pd.DataFrame({"file": files, "ra": ra[:6], "dec": dec[:6]}).to_csv(tmp_path / "cat.csv", index=False)
    cut = survey.read_local(catalog=tmp_path / "cat.csv")
    assert len(cut.catalog) == 4 and len(cut.skipped) == 2              # the NaN one and the broken one
    assert dict(cut.skipped)[cut.skipped[1][0]].endswith("cut_5.fits: unreadable FITS (OSError)")
    np.testing.assert_array_equal(cut.images[0], images[0])
    assert cut.catalog["source_file"].iloc[0] == "cut_0.fits"


def test_bad_inputs_get_one_message(survey, tmp_path):
    with pytest.raises(InputError, match="needs --images"):
        survey.read_local()
    np.save(tmp_path / "five.npy", np.zeros((4, 5, 20, 20), np.float32))
    pd.DataFrame({"ra": [1, 2, 3, 4], "dec": 0}).to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(InputError, match=r"expected \(N, 3, H, W\) with the g, r, z bands"):
        survey.read_local(images=tmp_path / "five.npy", catalog=tmp_path / "rows.csv")
    np.save(tmp_path / "three.npy", np.ones((3, 3, 20, 20), np.float32))
    with pytest.raises(InputError, match="4 rows but .* holds 3 images"):
        survey.read_local(images=tmp_path / "three.npy", catalog=tmp_path / "rows.csv")
    with pytest.raises(InputError, match="no positions; pass --catalog"):
        survey.read_local(images=tmp_path / "three.npy")
    pd.DataFrame({"ra": [1], "dec": [0], "t01_smooth_or_features_a01_smooth_fraction": [1]}).to_csv(
        tmp_path / "gz2.csv", index=False)
    from core.surveys.legacy import join_gz_decals

    with pytest.raises(InputError, match="no Galaxy Zoo DECaLS vote fractions"):
        join_gz_decals(pd.DataFrame({"ra": [1.0], "dec": [0.0]}), tmp_path / "gz2.csv")


def test_thumbnail_uses_the_viewers_colours(survey):
    image = np.zeros((3, 152, 152), np.float32)
    image[2, 60:90, 60:90] = 1.0                                      # light in z only
    rgb = survey.thumbnail_rgb(image)
    assert rgb.shape == (122, 122, 3) and rgb.dtype == np.uint8
    centre = rgb[61, 61].astype(int)
    assert centre[0] > 200 and centre[0] > centre[1] + 100             # z is red in the viewer's scheme


def test_links_name_the_viewer_skyserver_where_sdss_imaged_and_simbad(survey):
    north = dict(survey.archive_links(150.0, 2.0))
    assert "legacysurvey.org/viewer" in north["Legacy Surveys viewer"] and "SDSS SkyServer" in north
    assert "Simbad" in north and "SDSS SkyServer" not in dict(survey.archive_links(150.0, -40.0))


def test_cutout_service_answers_all_three_bands_on_the_bundle_grid(monkeypatch):
    cube = np.stack([np.full((152, 152), v, np.float32) for v in (1.0, 2.0, 3.0)])
    with ReplayServer() as srv:
        srv.route("GET", CUTOUT_PATH, cutout_service(cube), content_type="application/fits")
        monkeypatch.setenv("SKYQUERY_LEGACY_URL", srv.url(CUTOUT_PATH))
        image, header = fetch_cutout("legacy", SkyCoord(150.1, 2.2, unit="deg"), 152, 0.262, timeout=2)
        assert image.shape == (3, 152, 152) and srv.hits[("GET", CUTOUT_PATH)] == 1
    np.testing.assert_array_equal(image[:, 76, 76], [1, 2, 3])
    assert header["SERVICE"] == "Legacy Surveys cutout service"


def test_hips2fits_on_the_dr10_hips_when_the_cutout_service_fails(monkeypatch):
    with ReplayServer() as srv:
        srv.route("GET", CUTOUT_PATH, b"<html>busy</html>", status=503)
        srv.route("GET", "/hips2fits", hips2fits_answer, content_type="application/fits")
        monkeypatch.setenv("SKYQUERY_LEGACY_URL", srv.url(CUTOUT_PATH))
        monkeypatch.setenv("SKYQUERY_HIPS2FITS_URL", srv.url("/hips2fits"))
        image, header = fetch_cutout("legacy", SkyCoord(150.1, 2.2, unit="deg"), 152, 0.262, timeout=2, retries=0)
        assert srv.hits[("GET", "/hips2fits")] == 3
    np.testing.assert_allclose(image[:, 76, 76], [0, 1, 2])
    assert "DESI Legacy Surveys DR10" in header["SERVICE"]


def test_a_cube_with_too_few_bands_is_one_clear_error(monkeypatch):
    with ReplayServer() as srv:
        srv.route("GET", CUTOUT_PATH, cutout_service(np.ones((1, 152, 152), np.float32)))
        srv.route("GET", "/hips2fits", b"", status=404)
        monkeypatch.setenv("SKYQUERY_LEGACY_URL", srv.url(CUTOUT_PATH))
        monkeypatch.setenv("SKYQUERY_HIPS2FITS_URL", srv.url("/hips2fits"))
        with pytest.raises(FetchError, match=r"1 image plane\(s\) for the 3 bands g, r, z"):
            fetch_cutout("legacy", SkyCoord(150.1, 2.2, unit="deg"), 152, 0.262, timeout=2, retries=0)

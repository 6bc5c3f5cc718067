"""Survey readers: real FIRST cutouts (skipped when shared/data is absent), corrupt/NaN/missing FITS, missing
columns, duplicate IDs; SDSS HDF5 + GZ2 sky-position join on small fixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.inputs import InputError
from core.surveys.base import get_survey

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
MIRABEST = DATA / "first_mirabest"
needs_mirabest = pytest.mark.skipif(not (MIRABEST / "catalog.csv").is_file(),
                                    reason="real FIRST data (../shared/data/first_mirabest) is not present")


def write_fits(path: Path, data: np.ndarray, ra: float = 150.0, dec: float = 2.0, scale_deg: float = 0.0005):
    from astropy.io import fits
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(data.shape[1] + 1) / 2, (data.shape[0] + 1) / 2]
    w.wcs.cdelt = [-scale_deg, scale_deg]
    fits.PrimaryHDU(data.astype(np.float32), header=w.to_header()).writeto(path, overwrite=True)


def radio_source(rng, size=150):
    yy, xx = np.mgrid[:size, :size] - size / 2
    img = rng.normal(0, 1.5e-4, (size, size))
    for dx in (-12, 12):
        img += 5e-3 * np.exp(-((xx - dx) ** 2 + yy**2) / 20)
    return img.astype(np.float32)


@pytest.fixture
def first_catalog(tmp_path):
    """Five good synthetic cutouts plus one each: missing, corrupt, NaN, wrong shape, duplicate, bad position."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(5):
        write_fits(tmp_path / f"good{i}.fits", radio_source(rng), ra=150 + i)
        rows.append({"file": f"good{i}.fits", "ra": 150 + i, "dec": 2.0, "fr_class": "FRII", "las_arcsec": 40.0 + i})
    (tmp_path / "corrupt.fits").write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    nan = radio_source(rng)
    nan[10, 10] = np.nan
    write_fits(tmp_path / "nan.fits", nan, ra=160)
    write_fits(tmp_path / "small.fits", radio_source(rng, 100), ra=161)
    rows += [{"file": "missing.fits", "ra": 162, "dec": 2.0, "fr_class": "FRI", "las_arcsec": 10.0},
             {"file": "corrupt.fits", "ra": 163, "dec": 2.0, "fr_class": "FRI", "las_arcsec": 10.0},
             {"file": "nan.fits", "ra": 160, "dec": 2.0, "fr_class": "FRI", "las_arcsec": np.nan},
             {"file": "small.fits", "ra": 161, "dec": 2.0, "fr_class": "FRI", "las_arcsec": 10.0},
             {"file": "good0.fits", "ra": 150, "dec": 2.0, "fr_class": "FRII", "las_arcsec": 40.0},  # duplicate
             {"file": "good1.fits", "ra": 151, "dec": 95.0, "fr_class": "FRII", "las_arcsec": 40.0}]
    path = tmp_path / "catalog.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_first_reader_skips_and_reports_each_bad_object(first_catalog):
    cut = get_survey("first").read_local(first_catalog)
    assert cut.images.shape == (5, 1, 150, 150) and cut.images.dtype == np.float32
    assert list(cut.catalog["ra"]) == [150, 151, 152, 153, 154]
    assert cut.catalog["object_id"].is_unique
    assert cut.catalog["angular_extent_arcsec"].tolist() == [40.0, 41.0, 42.0, 43.0, 44.0]
    reasons = " | ".join(r for _, r in cut.skipped)
    assert len(cut.skipped) == 6, cut.skipped
    for expected in ("file not found", "unreadable FITS", "NaN", "wrong shape (100, 100)", "duplicate object_id",
                     "invalid position"):
        assert expected in reasons


def test_first_reader_missing_columns_names_the_file(tmp_path):
    path = tmp_path / "cat.csv"
    pd.DataFrame({"file": ["a.fits"], "ra": [1.0]}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"cat\.csv.*lacks required column.*'dec'"):
        get_survey("first").read_local(path)


def test_first_reader_empty_and_absent_catalogue(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("file,ra,dec\n")
    with pytest.raises(InputError, match="empty.csv: FIRST catalogue has no rows"):
        get_survey("first").read_local(path)
    with pytest.raises(InputError, match="nope.csv: FIRST catalogue file not found"):
        get_survey("first").read_local(tmp_path / "nope.csv")


@needs_mirabest
def test_first_reader_on_real_mirabest_cutouts(tmp_path):
    cat = pd.read_csv(MIRABEST / "catalog.csv").iloc[:12]
    cat["file"] = [str((MIRABEST / f).resolve()) for f in cat["file"]]
    cat.to_csv(tmp_path / "sub.csv", index=False)
    survey = get_survey("first")
    cut = survey.read_local(tmp_path / "sub.csv")
    assert cut.images.shape == (12, 1, 150, 150) and not cut.skipped
    assert np.isfinite(cut.images).all() and cut.images.max() > 1e-3  # Jy/beam: mJy sources
    assert {"fr_class", "confidence", "redshift", "angular_extent_arcsec"} <= set(cut.catalog.columns)
    params = survey.fit_preprocessing(cut.images)
    x = survey.preprocess(cut.images, params)
    assert x.shape == (12, 1, 70, 70) and np.isfinite(x).all()
    thumb = survey.thumbnail_rgb(cut.images[0])
    assert thumb.shape == (150, 150, 3) and thumb.dtype == np.uint8 and thumb.max() > 100


@needs_mirabest
def test_first_reader_cuts_raw_skyview_originals_with_wcs(tmp_path):
    originals = sorted((MIRABEST / "skyview_originals").glob("*.fits"))[:2]
    cat = pd.read_csv(MIRABEST / "catalog.csv")
    stems = {Path(f).name.split(".fits")[0]: i for i, f in enumerate(cat["file"])}
    rows = []
    for p in originals:
        row = cat.iloc[stems[p.stem]].copy()
        ref = (MIRABEST / row["file"]).resolve()
        rows.append({**row.to_dict(), "file": str(p.resolve())})
        rows.append({**row.to_dict(), "file": str(ref), "object_id": f"ref-{p.stem}"})
    for r in rows:
        r.setdefault("object_id", f"orig-{Path(r['file']).stem}")
    pd.DataFrame(rows).to_csv(tmp_path / "cat.csv", index=False)
    cut = get_survey("first").read_local(tmp_path / "cat.csv")
    assert cut.images.shape == (4, 1, 150, 150), cut.skipped
    # the WCS cut of the 300x300 original around the catalogue position is the released 150x150 crop (centred
    # on the original's grid) to within the 1-2 px between the two centres
    for k in (0, 2):
        a, b = cut.images[k, 0], cut.images[k + 1, 0]
        best = max(np.corrcoef(np.roll(a, (dy, dx), (0, 1))[5:-5, 5:-5].ravel(), b[5:-5, 5:-5].ravel())[0, 1]
                   for dy in range(-2, 3) for dx in range(-2, 3))
        assert best > 0.99


# ------------------------------------------------------------------------------------------------- SDSS
def write_sdss_h5(path: Path, n: int = 8, nan_row: int | None = 3, seed: int = 0):
    import h5py

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:107, :107] - 53
    images = rng.normal(0, 0.01, (n, 5, 107, 107)).astype(np.float32)
    for k in range(n):
        r = rng.uniform(2, 8)
        images[k] += (np.exp(-np.hypot(xx, yy) / r) * np.array([0.2, 0.6, 1.0, 1.3, 1.5])[:, None, None]).astype(np.float32)
    if nan_row is not None:
        images[nan_row, 2, 50, 50] = np.nan
    ra, dec = 150 + np.arange(n) * 0.01, np.full(n, 2.0)
    z = np.where(np.arange(n) % 2, np.nan, 0.05)
    with h5py.File(path, "w") as f:
        f["images"], f["ra"], f["dec"], f["specz_redshift"] = images, ra, dec, z
        f["e_bv"], f["ObjID"] = np.full(n, 0.02), np.arange(1000, 1000 + n, dtype=np.int64)
    return ra, dec


def test_sdss_reader_joins_gz2_within_2_arcsec(tmp_path):
    ra, dec = write_sdss_h5(tmp_path / "images.h5")
    offsets_arcsec = np.array([0.5, 1.5, 5.0, 0.2, 0.0, 30.0, 1.0, 0.1])
    gz = pd.DataFrame({
        "dr7objid": np.arange(8), "ra": ra + offsets_arcsec / 3600 / np.cos(np.radians(dec)), "dec": dec,
        "t01_smooth_or_features_a01_smooth_fraction": np.linspace(0, 0.7, 8),
        "t01_smooth_or_features_a01_smooth_count": np.full(8, 10),
        "t01_smooth_or_features_a02_features_or_disk_count": np.full(8, 30),
        "t02_edgeon_a04_yes_fraction": np.full(8, 0.25), "total_votes": np.full(8, 44)})
    gz.to_csv(tmp_path / "gz2.csv", index=False)
    cut = get_survey("sdss").read_local(images=tmp_path / "images.h5", gz2=tmp_path / "gz2.csv",
                                        out=tmp_path / "img.npy")
    cat = cut.catalog
    assert len(cat) == 7 and cut.images.shape == (7, 5, 107, 107)
    assert cut.skipped == [("1003", "1 NaN/infinite pixels")]
    frac = cat["gz2_smooth_or_features_smooth_fraction"]
    # rows 2 (5") and 5 (30") are beyond 2"; row 3 (NaN image) is skipped
    assert frac.isna().tolist() == [False, False, True, False, True, False, False]
    assert frac.iloc[0] == 0.0 and frac.iloc[3] == pytest.approx(0.4)
    assert cat["gz2_smooth_or_features_total_votes"].iloc[0] == 40
    assert "gz2_edgeon_yes_fraction" in cat and cat["gz2_total_votes"].iloc[1] == 44
    assert cat["redshift"].isna().tolist() == [False, True, False, False, True, False, True]
    assert (cat["angular_extent_arcsec"] > 0).all() and cat["object_id"].tolist()[0] == "1000"
    assert isinstance(cut.images, np.memmap) or np.load(tmp_path / "img.npy", mmap_mode="r").shape[0] == 7


def test_sdss_reader_bad_files_name_the_file(tmp_path):
    import h5py

    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["images"] = np.zeros((2, 3, 107, 107), np.float32)
        f["ra"], f["dec"] = np.zeros(2), np.zeros(2)
    with pytest.raises(InputError, match=r"bad\.h5: 'images' has shape \(2, 3, 107, 107\)"):
        get_survey("sdss").read_local(images=tmp_path / "bad.h5")
    with h5py.File(tmp_path / "nora.h5", "w") as f:
        f["images"] = np.zeros((2, 5, 107, 107), np.float32)
    with pytest.raises(InputError, match=r"nora\.h5: lacks dataset\(s\) \['ra', 'dec'\]"):
        get_survey("sdss").read_local(images=tmp_path / "nora.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="junk.h5: cannot be opened as HDF5"):
        get_survey("sdss").read_local(images=tmp_path / "junk.h5")


def test_sdss_preprocessing_is_a_per_band_linear_scale_and_thumbnail_is_rgb(tmp_path):
    write_sdss_h5(tmp_path / "images.h5", nan_row=None)
    survey = get_survey("sdss")
    cut = survey.read_local(images=tmp_path / "images.h5")
    params = survey.fit_preprocessing(cut.images)
    x = survey.normalise(cut.images, params)
    ratio = x[:, :, 53, 53] / cut.images[:, :, 53, 53]
    assert np.allclose(ratio, ratio[0], rtol=1e-4)  # same scale for every image: colours are kept
    assert survey.preprocess(cut.images, params).shape == (8, 5, 64, 64)
    rgb = survey.thumbnail_rgb(cut.images[0])
    assert rgb.shape == (80, 80, 3) and rgb.dtype == np.uint8 and rgb[40, 40].max() > rgb[2, 2].max()


def test_first_rows_with_bad_positions_are_each_reported_as_themselves(tmp_path):
    import pandas as pd

    from core.surveys.first import FIRST

    pd.DataFrame({"file": ["a.fits", "b.fits", "c.fits"], "ra": ["x", "", "12.5"],
                  "dec": ["1", "2", "95"]}).to_csv(tmp_path / "cat.csv", index=False)
    cut = FIRST().read_local(tmp_path / "cat.csv")
    ids = [oid for oid, _ in cut.skipped]
    assert ids == ["catalogue line 2", "catalogue line 3", "catalogue line 4"]
    assert not any("duplicate" in reason for _, reason in cut.skipped)

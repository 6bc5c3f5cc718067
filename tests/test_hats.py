"""The catalogue as HATS and sky queries through LSDB: the same answers as the in-memory matchers (cone/nearest
in the explorer, the positional join of from-embeddings), and a HATS catalogue of other objects refused."""
from __future__ import annotations

import json
import shutil

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord

pytest.importorskip("lsdb")


@pytest.fixture(scope="module")
def hats_bundle(make_bundle, tmp_path_factory):
    from precompute.__main__ import main

    bundle = tmp_path_factory.mktemp("hats") / "bundle"
    shutil.copytree(make_bundle("hats", n=2500, dim=16), bundle)
    assert main(["hats", "--bundle", str(bundle), "--partition-rows", "500"]) == 0
    return bundle


def query_positions(catalog: pd.DataFrame, n: int = 60, seed: int = 0) -> SkyCoord:
    """Objects' own positions nudged by up to 3", and random positions over (and a little beyond) the footprint."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(catalog), n // 2, replace=False)
    near = SkyCoord(catalog["ra"].to_numpy()[rows] * u.deg, catalog["dec"].to_numpy()[rows] * u.deg)
    near = near.directional_offset_by(rng.uniform(0, 360, len(rows)) * u.deg, rng.uniform(0, 3, len(rows)) * u.arcsec)
    ra = rng.uniform(115, 245, n - len(rows))
    dec = rng.uniform(-8, 63, n - len(rows))
    return SkyCoord(np.r_[near.ra.deg, ra] * u.deg, np.r_[near.dec.deg, dec] * u.deg)


def test_lsdb_matcher_answers_as_the_kd_tree(hats_bundle):
    from core.bundle import Bundle
    from core.hats import open_hats
    from explorer.sky.hats_match import HatsMatcher
    from explorer.sky.skyquery import CatalogueMatcher

    bundle = Bundle.open(hats_bundle)
    cat = bundle.catalog
    hats = open_hats(hats_bundle, bundle.n, bundle.manifest["created"], cat["object_id"].to_numpy())
    assert hats.npartitions >= 5, "partition_rows=500 splits 2,500 objects over several HEALPix pixels"
    tree = CatalogueMatcher(cat["ra"], cat["dec"], cat["object_id"])
    lsdb_matcher = HatsMatcher(hats, cat["ra"], cat["dec"], cat["object_id"], footprint_radius=tree.footprint_radius)
    for coord in query_positions(cat):
        a, b = tree.match(coord, radius=5 * u.arcsec), lsdb_matcher.match(coord, radius=5 * u.arcsec)
        assert (a.index, a.nearest_index, a.in_footprint) == (b.index, b.nearest_index, b.in_footprint), coord
        assert abs((a.nearest_separation - b.nearest_separation).to_value(u.arcsec)) < 1e-6
        assert a.message == b.message
    assert sum(tree.match(c, radius=5 * u.arcsec).matched for c in query_positions(cat)) == 30


def test_lsdb_join_answers_as_astropy(hats_bundle, tmp_path):
    from core.inputs import join_by_position
    from precompute.from_embeddings import join_by_position_lsdb_frame

    cat = pd.read_parquet(hats_bundle / "catalog.parquet")
    rng = np.random.default_rng(3)
    rows = rng.choice(len(cat), 800, replace=False)
    offsets = rng.uniform(0, 4, len(rows)) * u.arcsec        # some inside 2", some outside
    moved = SkyCoord(cat["ra"].to_numpy()[rows] * u.deg, cat["dec"].to_numpy()[rows] * u.deg).directional_offset_by(
        rng.uniform(0, 360, len(rows)) * u.deg, offsets)
    table = pd.DataFrame({"ra": moved.ra.deg, "dec": moved.dec.deg, "z_spec": rng.uniform(0, 1, len(rows)),
                          "flag": rng.integers(0, 5, len(rows))})
    expected = join_by_position(cat, table, ["z_spec", "flag"], 2.0)[["z_spec", "flag"]]
    got = join_by_position_lsdb_frame(cat, table, ["z_spec", "flag"], 2.0)
    assert 200 < expected["z_spec"].notna().sum() < 800
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_a_hats_catalogue_of_other_objects_is_refused_naming_both(hats_bundle, make_bundle, tmp_path):
    from core.bundle import Bundle
    from core.hats import HatsError, open_hats, write_hats

    bundle = Bundle.open(hats_bundle)
    ids = bundle.catalog["object_id"].to_numpy()
    other = tmp_path / "other"
    shutil.copytree(make_bundle("hats-other", n=1200, dim=16), other)
    shutil.copytree(hats_bundle / "hats", other / "hats")                 # hats/ of 2,500 objects, bundle of 1,200
    with pytest.raises(HatsError, match=r"holds 2,500 objects but the bundle .*other holds 1,200"):
        open_hats(other, 1200, Bundle.open(other).manifest["created"], None)
    with pytest.raises(HatsError, match="was written for the bundle built"):
        open_hats(hats_bundle, bundle.n, "2001-01-01T00:00:00", ids)
    shuffled = bundle.catalog.assign(object_id=np.roll(ids, 1))           # same rows and stamp, other ids
    stale = tmp_path / "stale"
    shutil.copytree(hats_bundle, stale)
    write_hats(stale, shuffled, bundle.manifest["created"], 500)
    with pytest.raises(HatsError, match=r"names row \d+ '.*' but the bundle .*stale names it"):
        open_hats(stale, bundle.n, bundle.manifest["created"], ids)


def test_explorer_uses_lsdb_above_the_threshold_and_refuses_a_mismatch(hats_bundle, tmp_path, monkeypatch):
    import explorer.data as data_module
    from core.hats import HatsError
    from explorer.sky.hats_match import HatsMatcher

    monkeypatch.setattr(data_module, "LSDB_ABOVE", 100)
    data_module.clear_cache()
    data = data_module.load_explorer_data(hats_bundle)
    assert isinstance(data.matcher, HatsMatcher)
    row = 17
    coord = SkyCoord(data.ra[row] * u.deg, data.dec[row] * u.deg)
    assert data.matcher.match(coord, radius=1 * u.arcsec).index == row
    broken = tmp_path / "broken"
    shutil.copytree(hats_bundle, broken)
    stamp = json.loads((broken / "hats" / "hats_bundle.json").read_text())
    (broken / "hats" / "hats_bundle.json").write_text(json.dumps({**stamp, "bundle_created": "another build"}))
    with pytest.raises(HatsError, match="another build"):
        data_module.load_explorer_data(broken)
    data_module.clear_cache()


def test_from_embeddings_joins_by_position_and_writes_hats(tmp_path):
    from core.bundle import Bundle
    from core.hats import open_hats
    from precompute.__main__ import main

    rng = np.random.default_rng(0)
    n = 400
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    cat = pd.DataFrame({"object_id": [f"g{i}" for i in range(n)], "ra": rng.uniform(150, 152, n),
                        "dec": rng.uniform(1, 3, n)})
    table = pd.DataFrame({"RAJ2000": cat["ra"][:100] + 0.3 / 3600, "DEJ2000": cat["dec"][:100],
                          "z_spec": np.linspace(0.01, 0.5, 100)})
    np.save(tmp_path / "emb.npy", emb)
    cat.to_csv(tmp_path / "cat.csv", index=False)
    table.to_csv(tmp_path / "spec.csv", index=False)
    out = tmp_path / "b"
    assert main(["from-embeddings", "--embeddings", str(tmp_path / "emb.npy"), "--catalog", str(tmp_path / "cat.csv"),
                 "--out", str(out), "--survey", "none", "--join", str(tmp_path / "spec.csv"), "--hats",
                 "--no-progress"]) == 0
    bundle = Bundle.open(out)
    joined = bundle.catalog.set_index("object_id")["z_spec"]
    assert joined.notna().sum() == 100 and joined["g10"] == pytest.approx(table["z_spec"][10])
    assert "z_spec" in bundle.colour_by
    open_hats(out, n, bundle.manifest["created"], bundle.catalog["object_id"].to_numpy())


def test_lsdb_matcher_footprint_follows_the_catalogue_density(hats_bundle):
    """Without a footprint radius given, the sampled estimate stays near the KD-tree's (it scales the sample's
    spacing to the catalogue's density), and drawing the footprint needs no SkyCoord of every object."""
    from core.bundle import Bundle
    from core.hats import open_hats
    from explorer.sky.hats_match import HatsMatcher
    from explorer.sky.skyquery import CatalogueMatcher, footprint_plot

    bundle = Bundle.open(hats_bundle)
    cat = bundle.catalog
    hats = open_hats(hats_bundle, bundle.n, bundle.manifest["created"])
    tree = CatalogueMatcher(cat["ra"], cat["dec"], cat["object_id"])
    sampled = HatsMatcher(hats, cat["ra"], cat["dec"], cat["object_id"], sample=500)
    assert 0.6 < (sampled.footprint_radius / tree.footprint_radius).decompose().value < 1.6
    assert footprint_plot(sampled) is not None and len(sampled.positions(np.arange(10))) == 10

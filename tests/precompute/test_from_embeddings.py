"""`python -m precompute from-embeddings`: bundles from vectors made elsewhere, in every input format, with bad rows
left out with one message each, and an explorer that copes without thumbnails."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from precompute.__main__ import main
from core.bundle import Bundle
from core.validate import validate_bundle
from precompute.from_embeddings import open_embeddings, read_catalogue

N, DIM = 240, 16


def clustered(seed: int = 0):
    """Three families of objects, each a cluster in the embedding; ids, positions and labels for the catalogue."""
    rng = np.random.default_rng(seed)
    kind = np.array(["ring", "spiral", "smooth"])[np.arange(N) % 3]
    centres = rng.normal(size=(3, DIM)) * 4
    vectors = (centres[np.arange(N) % 3] + rng.normal(size=(N, DIM))).astype(np.float32)
    catalogue = pd.DataFrame({"objid": [f"obj{i:04d}" for i in range(N)], "RA": 150 + rng.uniform(0, 2, N),
                              "DEC": rng.uniform(0, 2, N), "kind": kind,
                              "smooth_fraction": np.where(kind == "smooth", 0.9, 0.1) + rng.uniform(-0.05, 0.05, N)})
    return vectors, catalogue


def build(tmp_path, embeddings, catalog, *extra) -> int:
    return main(["from-embeddings", "--survey", "sdss", "--embeddings", str(embeddings), "--catalog", str(catalog),
                 "--out", str(tmp_path / "bundle"), "--no-progress", "--n-neighbors", "10", *extra])


def test_parquet_list_column_and_fits_catalogue_without_images(tmp_path, capsys):
    vectors, catalogue = clustered()
    vectors[5] = np.nan                                          # a NaN vector
    ids = catalogue["objid"].tolist()
    ids[7] = ids[6]                                               # a duplicate id
    ids[9] = "not-in-catalogue"                                   # an id the catalogue lacks
    pd.DataFrame({"objid": ids, "embedding": list(vectors)}).to_parquet(tmp_path / "emb.parquet", row_group_size=50)
    Table.from_pandas(catalogue).write(tmp_path / "cat.fits")
    assert build(tmp_path, tmp_path / "emb.parquet", tmp_path / "cat.fits") == 0
    out = capsys.readouterr().out
    assert "1 embeddings are NaN, zero" in out and "1 duplicate ids in emb.parquet" in out
    assert "1 embeddings have no row in cat.fits" in out
    man = validate_bundle(tmp_path / "bundle")
    assert man["n_objects"] == N - 3 and man["thumbnails"]["format"] == "none"
    assert man["colour_by"]["kind"]["kind"] == "categorical"
    assert man["colour_by"]["smooth_fraction"]["kind"] == "fraction"
    bundle = Bundle.open(tmp_path / "bundle")
    cat = bundle.catalog
    assert cat["object_id"].iloc[0] == "obj0000" and "obj0005" not in set(cat["object_id"])
    # the stored vector of an object is its input vector, normalised
    v = vectors[11] / np.linalg.norm(vectors[11])
    row = int(np.flatnonzero(cat["object_id"] == "obj0011")[0])
    np.testing.assert_allclose(np.asarray(bundle.embeddings[row], np.float32), v, atol=2e-3)

    from explorer.cards import hover_card_html
    from explorer.data import NO_IMAGE_URI, load_explorer_data

    data = load_explorer_data(tmp_path / "bundle")
    assert data.thumbnail_uri(0) == NO_IMAGE_URI and "obj0000" in hover_card_html(data, 0)


def test_astroclip_hdf5_and_votable_catalogue(tmp_path):
    vectors, catalogue = clustered(1)
    with h5py.File(tmp_path / "astroclip.h5", "w") as h5:
        h5["image_embeddings"] = vectors
        h5["object_id"] = np.array(catalogue["objid"].tolist(), dtype="S")
    Table.from_pandas(catalogue.iloc[::-1]).write(tmp_path / "cat.vot", format="votable")   # any row order
    assert build(tmp_path, tmp_path / "astroclip.h5", tmp_path / "cat.vot") == 0
    bundle = Bundle.open(tmp_path / "bundle")
    assert len(bundle.catalog) == N and (bundle.catalog["object_id"] == catalogue["objid"]).all()
    report = (tmp_path / "bundle" / "report.json").read_text()
    assert "kind" in report   # the report scores the catalogue's own labels


def test_npy_in_catalogue_order_with_images_gets_thumbnails(tmp_path):
    vectors, catalogue = clustered(2)
    np.save(tmp_path / "emb.npy", vectors)
    catalogue.to_csv(tmp_path / "cat.csv", index=False)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cutouts.npy", rng.normal(0, 0.01, (N, 5, 107, 107)).astype(np.float32))
    assert build(tmp_path, tmp_path / "emb.npy", tmp_path / "cat.csv", "--images", str(tmp_path / "cutouts.npy")) == 0
    man = validate_bundle(tmp_path / "bundle")
    assert man["thumbnails"]["format"] == "webp" and man["model"]["method"] == "imported embeddings"


def test_feature_columns_parquet_reads_in_chunks(tmp_path):
    vectors, catalogue = clustered(3)
    frame = pd.DataFrame(vectors, columns=[f"feat_{i}" for i in range(DIM)]).assign(object_id=catalogue["objid"])
    frame.to_parquet(tmp_path / "feats.parquet", row_group_size=37)
    src = open_embeddings(tmp_path / "feats.parquet")
    assert (src.n, src.dim) == (N, DIM) and src.ids[3] == "obj0003"
    got = np.concatenate([block for _, block in src.chunks(size=50)])
    np.testing.assert_array_equal(got, vectors)
    catalogue.to_parquet(tmp_path / "cat.parquet")   # a Parquet catalogue, RA/DEC in capitals
    cat = read_catalogue(tmp_path / "cat.parquet")
    assert list(cat.columns[:3]) == ["object_id", "ra", "dec"] and cat["object_id"].iloc[2] == "obj0002"


def test_bad_inputs_get_one_clear_message(tmp_path, capsys):
    vectors, catalogue = clustered()
    np.save(tmp_path / "emb.npy", vectors[:-1])
    catalogue.to_csv(tmp_path / "cat.csv", index=False)
    assert build(tmp_path, tmp_path / "emb.npy", tmp_path / "cat.csv") == 1
    assert "must follow the catalogue row for row" in capsys.readouterr().err
    catalogue.drop(columns=["RA"]).to_csv(tmp_path / "nora.csv", index=False)
    with pytest.raises(Exception, match="no RA column"):
        read_catalogue(tmp_path / "nora.csv")
    pd.DataFrame({"objid": ["a"], "x": [1.0]}).to_parquet(tmp_path / "novec.parquet")
    with pytest.raises(Exception, match="no vector column"):
        open_embeddings(tmp_path / "novec.parquet")
    pd.DataFrame({"objid": [f"z{i}" for i in range(N)], "embedding": list(vectors)}).to_parquet(tmp_path / "z.parquet")
    assert build(tmp_path, tmp_path / "z.parquet", tmp_path / "cat.csv") == 1
    assert "check that the id columns hold the same ids" in capsys.readouterr().err


def test_ragged_or_null_vectors_are_left_out_not_shifted(tmp_path, capsys):
    """A list column whose rows differ in length used to be reshaped as one block: every vector after a short row
    moved to the wrong object. Now a null or wrong-length row is left out and counted, and the rest stay aligned."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors, catalogue = clustered()
    dim = vectors.shape[1]
    rows = [list(map(float, v)) for v in vectors]
    rows[3], rows[4], rows[9] = rows[3] + [1.0], rows[4][:-1], None          # same total length: 3 and 4 cancel
    pq.write_table(pa.table({"objid": catalogue["objid"], "emb": rows}), tmp_path / "emb.parquet")
    catalogue.to_csv(tmp_path / "cat.csv", index=False)
    assert build(tmp_path, tmp_path / "emb.parquet", tmp_path / "cat.csv") == 0
    assert "3 embeddings are NaN, zero, infinite or of the wrong length" in capsys.readouterr().out
    from core.bundle import Bundle

    b = Bundle.open(tmp_path / "bundle")
    ids = list(b.catalog["object_id"])
    assert not {"obj0003", "obj0004", "obj0009"} & set(ids) and len(ids) == len(vectors) - 3
    row = ids.index("obj0010")
    expected = vectors[10] / np.linalg.norm(vectors[10])
    assert np.allclose(np.asarray(b.embeddings[row], np.float32), expected, atol=2e-3) and dim == b.embeddings.shape[1]


BAD_EMBEDDINGS = {
    "not an npy": lambda p: (p / "e.npy").write_bytes(b"garbage" * 10),
    "pickled objects": lambda p: np.save(p / "e.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True),
    "text vectors": lambda p: np.save(p / "e.npy", np.array([["x"] * 4] * 4)),
    "complex vectors": lambda p: np.save(p / "e.npy", np.ones((4, 4), np.complex64)),
    "no vector component": lambda p: np.save(p / "e.npy", np.zeros((4, 0), np.float32)),
    "not a parquet": lambda p: (p / "e.parquet").write_bytes(b"PAR1garbagePAR1"),
    "not an hdf5": lambda p: (p / "e.h5").write_bytes(b"garbage"),
    "missing": lambda p: None,
}


@pytest.mark.parametrize("damage", list(BAD_EMBEDDINGS))
def test_unusable_embeddings_are_one_message_naming_the_file(tmp_path, capsys, damage):
    _, catalogue = clustered()
    catalogue.to_csv(tmp_path / "cat.csv", index=False)
    BAD_EMBEDDINGS[damage](tmp_path)
    made = sorted(tmp_path.glob("e.*"))
    path = made[0] if made else tmp_path / "e.npy"
    assert build(tmp_path, path, tmp_path / "cat.csv") == 1
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err and not (tmp_path / "bundle").exists()


def test_positions_outside_the_sky_are_left_out_with_a_note(tmp_path, capsys):
    vectors, catalogue = clustered()
    catalogue.loc[:4, "RA"] = [400.0, -1.0, np.inf, 360.0, 12.0]
    catalogue.loc[5, "DEC"] = -95.0
    np.save(tmp_path / "e.npy", vectors)
    catalogue.to_csv(tmp_path / "cat.csv", index=False)
    assert build(tmp_path, tmp_path / "e.npy", tmp_path / "cat.csv") == 0
    assert "5 matched rows have no RA/Dec in [0, 360) x [-90, 90]" in capsys.readouterr().out

"""The notebook API (explorer/notebook.py): search by id, position and image, labels, probes, the page."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.notebook import open_bundle


@pytest.fixture(scope="module")
def nb(small_bundle, tmp_path_factory):
    return open_bundle(small_bundle, labels=tmp_path_factory.mktemp("nb") / "labels.sqlite")


def test_similar_by_object_id_is_a_table_of_the_same_family(nb):
    first = nb.catalog["object_id"].iloc[0]
    table = nb.similar(first, k=8)
    assert len(table) == 8 and first not in set(table["object_id"])
    assert list(table.columns[:3]) == ["object_id", "cosine", "closer_than_random_pairs_percent"]
    assert (np.diff(table["cosine"]) <= 1e-6).all() and (table["closer_than_random_pairs_percent"] > 90).all()
    assert "morph_class" in table.columns   # the catalogue's own columns come along
    with pytest.raises(KeyError, match="no object 'nope'"):
        nb.similar("nope")


def test_similar_to_position_matches_the_catalogue(nb):
    row = nb.catalog.iloc[5]
    by_position = nb.similar_to_position(f"{row['ra']:.6f} {row['dec']:+.6f}", k=5)
    assert list(by_position["object_id"]) == list(nb.similar(row["object_id"], k=5)["object_id"])
    with pytest.raises(LookupError):
        nb.similar_to_position("0.5 -80.0")
    with pytest.raises(ValueError, match="out of range"):
        nb.similar_to_position("25:00:00 +10:00:00")


def test_labels_and_probes_from_python(nb):
    from explorer.labels.labels_ui import store_for

    store = store_for(nb.data, nb.settings)
    store.add("blob", list(nb.catalog["object_id"].iloc[:5]), author="notebook", method="import")
    labels = nb.labels()
    assert set(labels["label"]) == {"blob"} and len(labels) == 5
    fit = nb.fit_probe("redshift")
    assert fit.method == "ridge" and "r2" in fit.metrics
    curve = nb.label_efficiency("redshift", sizes=(50, 400, 10**9))
    assert list(curve["n_train"]) == [50, 400] and "r2" in curve.columns
    assert isinstance(fit.predictions, pd.Series) and len(fit.predictions) == nb.data.n


def test_similar_to_images_uses_the_bundles_encoder(nb):
    from explorer.sky.query_embed import QueryError

    with pytest.raises(QueryError, match="no encoder/ folder"):
        nb.similar_to_images(np.zeros((5, 32, 32), np.float32))


def test_show_builds_the_page(nb):
    page = nb.show()
    assert page.explorer_state is not None


def test_similar_to_images_searches_each_embedded_image(nb):
    """With an encoder that maps every image to object 7's vector, each image's best match is object 7."""
    from explorer.sky.query_embed import QueryEmbedder

    target = np.asarray(nb.data.bundle.embeddings[7], np.float32)
    nb.data.__dict__["_query_embedder"] = QueryEmbedder(
        nb.data.bundle, embedder=lambda imgs: np.repeat(target[None], len(imgs), axis=0))
    try:
        tables = nb.similar_to_images(np.zeros((2, 5, 32, 32), np.float32), k=4)
    finally:
        nb.data.__dict__.pop("_query_embedder", None)
    assert len(tables) == 2 and all(t["object_id"].iloc[0] == nb.catalog["object_id"].iloc[7] for t in tables)
    assert tables[0]["cosine"].iloc[0] == pytest.approx(1, abs=2e-3)

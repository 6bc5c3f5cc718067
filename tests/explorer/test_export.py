"""Export round-trips (CSV, VOTable, FITS), label import by id and by sky position, SAMP to a local hub."""
import threading

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from core.labels import LabelStore
from explorer.labels import export as X


@pytest.fixture
def catalog():
    rng = np.random.default_rng(3)
    n = 200
    return pd.DataFrame({
        "object_id": [f"OBJ{i}" for i in range(n)],
        "ra": rng.uniform(120, 240, n),
        "dec": rng.uniform(-5, 60, n),
        "umap_x": rng.normal(size=n), "umap_y": rng.normal(size=n),
        "split": "train",
        "redshift": np.where(np.arange(n) % 3 == 0, np.nan, rng.uniform(0, 0.3, n)),
        "morph_class": np.where(np.arange(n) % 4 == 0, None, "spiral").astype(object),
    })


@pytest.fixture
def store(tmp_path):
    s = LabelStore(tmp_path / "labels.sqlite")
    s.add("spiral", ["OBJ1", "OBJ2", "OBJ3"], author="ann", method="lasso")
    s.add("merger", ["OBJ3", "OBJ9", "NOT_IN_BUNDLE"], author="bob", method="click")
    return s


def _rows(t: Table, cols):
    return [tuple(None if np.ma.is_masked(r[c]) else (round(float(r[c]), 9) if isinstance(r[c], (float, np.floating)) else str(r[c]))
                  for c in cols) for r in t]


@pytest.mark.parametrize("suffix", [".csv", ".vot", ".fits"])
def test_labels_round_trip_through_every_format(tmp_path, catalog, store, suffix):
    table = X.labels_table(catalog, store.current(), columns=["redshift", "morph_class"])
    assert table.colnames == ["object_id", "ra", "dec", "label", "author", "time", "redshift", "morph_class"]
    assert len(table) == 5  # NOT_IN_BUNDLE is not in this bundle
    assert table["ra"].unit == u.deg
    path = X.write_table(table, tmp_path / f"labels{suffix}")
    back = Table.read(path)
    cols = ["object_id", "ra", "dec", "label", "author", "time", "redshift"]
    assert _rows(back, cols) == _rows(table, cols)
    assert set(back["time"].astype(str)) == set(store.current()["time"])
    row9 = back[np.asarray(back["object_id"]).astype(str) == "OBJ9"][0]
    assert np.ma.is_masked(row9["redshift"]) or np.isnan(row9["redshift"])  # null stays null, never 0


def test_selection_table_and_bad_names(tmp_path, catalog):
    t = X.selection_table(catalog, np.array([5, 7]), columns=["redshift"])
    assert list(t["object_id"]) == ["OBJ5", "OBJ7"] and t.colnames == ["object_id", "ra", "dec", "redshift"]
    with pytest.raises(X.ExportError, match="no column"):
        X.selection_table(catalog, np.array([5]), columns=["nope"])
    with pytest.raises(X.ExportError, match="unknown table type"):
        X.write_table(t, tmp_path / "t.xlsx")
    (tmp_path / "bad.vot").write_text("not xml")
    with pytest.raises(X.ExportError, match="bad.vot"):
        X.read_table(tmp_path / "bad.vot")


def test_import_by_object_id_reports_unmatched(tmp_path, catalog):
    src = tmp_path / "in.csv"
    Table({"object_id": ["OBJ10", "OBJ11", "GHOST", "OBJ12"], "label": ["bar", "bar", "bar", "ring"]}).write(src)
    store = LabelStore(tmp_path / "l.sqlite")
    rep = X.import_labels(store, catalog, src, author="imp")
    assert (rep.n_rows, rep.n_matched) == (4, 3)
    assert list(rep.unmatched["object_id"]) == ["GHOST"]
    assert store.label_counts() == {"bar": 2, "ring": 1}
    assert set(store.events()["method"]) == {"import"}
    assert "3 of 4 rows matched" in rep.summary()


def test_an_import_is_bounded_in_distinct_labels_and_rows(tmp_path, catalog, monkeypatch):
    """20,000 distinct labels (one per object) wrote 20,000 events and held the server for seconds: refused in one
    message before anything is written; so is a table of more rows than an import takes."""
    src = tmp_path / "many.csv"
    n = X.MAX_IMPORT_LABELS + 1
    Table({"object_id": [f"OBJ{i % len(catalog)}" for i in range(n)], "label": [f"L{i}" for i in range(n)]}).write(src)
    store = LabelStore(tmp_path / "l.sqlite")
    with pytest.raises(X.ExportError, match=r"many.csv: 1,001 distinct labels, more than the 1,000"):
        X.import_labels(store, catalog, src, author="imp")
    assert store.events().empty
    monkeypatch.setattr(X, "MAX_IMPORT_ROWS", 100)
    with pytest.raises(X.ExportError, match=r"many.csv: 1,001 rows, more than the 100"):
        X.import_labels(store, catalog, src, author="imp")


def test_import_by_sky_position_with_adjustable_radius(tmp_path, catalog):
    cos = np.cos(np.radians(catalog["dec"][[20, 21]].to_numpy()))
    t = Table({"RA": catalog["ra"][[20, 21]].to_numpy() + np.array([0.5, 3.0]) / 3600 / cos,  # 0.5" and 3" off
               "DEC": catalog["dec"][[20, 21]].to_numpy()})
    src = X.write_table(t, tmp_path / "pos.vot")
    s1 = LabelStore(tmp_path / "a.sqlite")
    rep = X.import_labels(s1, catalog, src, author="imp", by="sky", label="nearby")
    assert rep.n_matched == 1 and s1.members("nearby") == ["OBJ20"]
    s2 = LabelStore(tmp_path / "b.sqlite")
    rep = X.import_labels(s2, catalog, src, author="imp", by="sky", radius=5 * u.arcsec, label="nearby")
    assert rep.n_matched == 2 and s2.members("nearby") == ["OBJ20", "OBJ21"]
    with pytest.raises(X.ExportError, match="no 'label' column"):
        X.import_labels(s2, catalog, src, author="imp", by="sky")


def test_send_to_samp_reaches_a_listening_client(tmp_path, catalog):
    samp = X._samp()
    lockfile = str(tmp_path / "samp.lock")
    hub = samp.SAMPHubServer(web_profile=False, lockfile=lockfile, addr="127.0.0.1")
    hub.start()
    params = dict(hub.params)  # what a client reads from the hub's lockfile
    received, got = {}, threading.Event()

    def on_table(private_key, sender_id, mtype, params_, extra):
        received["table"] = Table.read(params_["url"].replace("file://", ""), format="votable")
        received["name"] = params_["name"]
        got.set()

    receiver = samp.SAMPIntegratedClient(name="fake TOPCAT", addr="127.0.0.1")
    try:
        assert X.samp_hub_running(params)
        with pytest.raises(X.SampError, match="no client loads tables"):
            X.send_to_samp(X.selection_table(catalog, np.array([1])), hub_params=params)
        receiver.connect(hub_params=params)
        receiver.bind_receive_notification("table.load.votable", on_table)
        sent = X.selection_table(catalog, np.array([4, 8, 15]), columns=["redshift"])
        assert X.send_to_samp(sent, "my lasso", hub_params=params, folder=tmp_path) == 1
        assert got.wait(20)
        assert received["name"] == "my lasso"
        assert list(received["table"]["object_id"]) == ["OBJ4", "OBJ8", "OBJ15"]
        np.testing.assert_allclose(received["table"]["ra"], sent["ra"])
    finally:
        if receiver.is_connected:
            receiver.disconnect()
        hub.stop()
    assert not X.samp_hub_running(params)
    with pytest.raises(X.SampError, match="no SAMP hub"):
        X.send_to_samp(sent, hub_params=params)


def test_csv_neutralises_formulas_and_fits_keeps_non_ascii_labels(tmp_path):
    import pandas as pd

    from explorer.labels.export import _table, read_table, write_table

    df = pd.DataFrame({"object_id": ["a", "b", "c"], "ra": [1.0, 2.0, 3.0], "dec": [3.0, 4.0, 5.0],
                       "label": ['=HYPERLINK("http://x","click")', "galaxie é", "+cmd|' /C calc'!A0"]})
    text = write_table(_table(df), tmp_path / "l.csv").read_text()
    assert "'=HYPERLINK" in text and "'+cmd" in text and "\n=" not in text and ",=" not in text
    labels = read_table(write_table(_table(df), tmp_path / "l.fits"))["label"].tolist()
    assert labels[1] == "galaxie \\xe9"


def test_label_names_are_capped(tmp_path):
    import pytest

    from core.labels import LabelStore

    store = LabelStore(tmp_path / "l.sqlite")
    with pytest.raises(ValueError, match="characters long"):
        store.add("x" * 1_000_000, ["1"], author="me", method="click")


def test_a_sky_import_with_positions_off_the_sky_is_one_message(tmp_path, catalog):
    """Found by benchmarks/probe_bad_input.py: Dec -100 raised astropy's ValueError through the import."""
    src = tmp_path / "off.csv"
    Table({"ra": [10.0, 400.0], "dec": [-100.0, 5.0], "label": ["a", "b"]}).write(src)
    with pytest.raises(X.ExportError, match=r"off.csv: 1 rows have no position on the sky \(first: row 0"):
        X.import_labels(LabelStore(tmp_path / "l.sqlite"), catalog, src, author="imp", by="sky")

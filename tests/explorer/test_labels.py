"""The label store: event semantics, undo, durability under SIGKILL, concurrent writers."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from core.labels import LabelStore, LabelStoreError, default_labels_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    s = LabelStore(tmp_path / "labels.sqlite")
    yield s
    s.close()


def test_default_path_is_beside_the_bundle_not_inside(tmp_path):
    bundle = tmp_path / "bundles" / "demo"
    assert default_labels_path(bundle) == (tmp_path / "bundles" / "demo.labels.sqlite").resolve()


def test_store_uses_wal_full_sync_and_busy_timeout(store):
    con = store._con
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert con.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_add_records_who_when_and_how(store):
    eid = store.add("spiral", ["A", "B", "B", 7], author="ann", method="lasso")
    ev = store.events().set_index("id").loc[eid]
    assert (ev["kind"], ev["label"], ev["author"], ev["method"], ev["n_objects"]) == ("add", "spiral", "ann", "lasso", 3)
    assert ev["time"].endswith("+00:00")
    assert store.event_members(eid) == ["7", "A", "B"]
    assert store.label_counts() == {"spiral": 3}


def test_latest_event_wins_per_object_and_label(store):
    store.add("spiral", ["A", "B", "C"], author="ann", method="lasso")
    store.add("bar", ["B"], author="bob", method="click")
    store.remove("spiral", ["B", "C"], author="bob")
    store.add("spiral", ["C"], author="ann", method="box")
    cur = store.current()
    assert sorted(map(tuple, cur[["object_id", "label"]].values)) == [("A", "spiral"), ("B", "bar"), ("C", "spiral")]
    assert cur.set_index(["object_id", "label"]).loc[("C", "spiral"), "method"] == "box"
    assert store.labels_of("B") == ["bar"]
    assert store.members("spiral") == ["A", "C"]


def test_undo_walks_back_events_and_keeps_history(store):
    e1 = store.add("spiral", ["A", "B"], author="ann", method="lasso")
    e2 = store.remove("spiral", ["A"], author="ann")
    e3 = store.add("bar", ["C"], author="bob", method="box")
    assert store.undo_last(author="ann", only_by="ann") == e2  # bob's newer event is not ann's to undo
    assert store.label_counts() == {"spiral": 2, "bar": 1}
    assert store.undo_last(author="ann") == e3
    assert store.undo_last(author="ann") == e1
    assert store.label_counts() == {}
    assert store.undo_last(author="ann") is None
    ev = store.events()
    assert list(ev["kind"]) == ["add", "remove", "add", "undo", "undo", "undo"]
    assert ev.loc[ev["kind"] != "undo", "undone"].all()


@pytest.mark.parametrize("kwargs,msg", [(dict(label="", object_ids=["A"], author="a", method="lasso"), "label"),
                                        (dict(label="x", object_ids=["A"], author=" ", method="lasso"), "author"),
                                        (dict(label="x", object_ids=["A"], author="a", method="magic"), "method"),
                                        (dict(label="x", object_ids=[], author="a", method="box"), "no objects")])
def test_bad_events_are_refused_with_a_clear_message(store, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        store.add(**kwargs)
    assert store.events().empty


def test_unusable_paths_name_the_file(tmp_path):
    with pytest.raises(LabelStoreError, match="is a folder"):
        LabelStore(tmp_path)
    with pytest.raises(LabelStoreError, match="does not exist"):
        LabelStore(tmp_path / "nope" / "labels.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LabelStoreError, match="junk.sqlite"):
        LabelStore(junk)


WRITER = textwrap.dedent("""
    import sys
    from core.labels import LabelStore
    store = LabelStore(sys.argv[1])
    tag = sys.argv[2]
    for i in range(int(sys.argv[3])):
        eid = store.add(f"{tag}-{i % 3}", [f"{tag}{i}-{k}" for k in range(50)], author=tag, method="lasso")
        print(eid, flush=True)
""")


def _writer(path, tag, n):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(n)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_sigkill_mid_burst_leaves_a_clean_store_with_every_acknowledged_event(tmp_path):
    path = tmp_path / "labels.sqlite"
    proc = _writer(path, "k", 100_000)
    acked = [int(proc.stdout.readline()) for _ in range(40)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    acked += [int(line) for line in proc.stdout.read().split()]  # acks already in the pipe
    assert proc.returncode == -signal.SIGKILL
    store = LabelStore(path)
    assert store.integrity_check() == "ok"
    ev = store.events().set_index("id")
    assert set(acked) <= set(ev.index)
    for eid in (acked[0], acked[-1]):
        assert len(store.event_members(eid)) == 50
    assert (ev["n_objects"] == [len(store.event_members(i)) for i in ev.index]).all()  # no half-written event


def test_two_writer_processes_lose_nothing_and_see_each_other(tmp_path):
    path = tmp_path / "labels.sqlite"
    LabelStore(path).close()
    procs = [_writer(path, tag, 60) for tag in ("p", "q")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    ids = [int(x) for out in outs for x in out.split()]
    assert len(ids) == len(set(ids)) == 120
    counts = LabelStore(path).label_counts()
    assert counts == {f"{t}-{j}": 20 * 50 for t in "pq" for j in range(3)}


def test_two_writer_threads_share_one_store_object(store):
    errors = []

    def burst(tag):
        try:
            for i in range(40):
                store.add(tag, [f"{tag}{i}"], author=tag, method="click")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=burst, args=(t,)) for t in ("x", "y")]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors
    assert store.label_counts() == {"x": 40, "y": 40}
    other = LabelStore(store.path)  # a second reader sees both writers' labels
    assert other.label_counts() == {"x": 40, "y": 40}


# ------------------------------------------------------------------------------------------ the sidebar section
def test_labels_path_precedence(tmp_path):
    from explorer.settings import Settings

    bundle = tmp_path / "demo"

    def labels(argv, environ):
        return Settings.parse(argv, environ).labels_path(bundle)

    assert labels(["--bundle", str(bundle)], {}) == default_labels_path(bundle)
    assert labels([], {"EXPLORER_LABELS": "/x/env.sqlite"}) == Path("/x/env.sqlite")
    assert labels(["--labels", "/x/arg.sqlite"], {"EXPLORER_LABELS": "/x/env.sqlite"}) == Path("/x/arg.sqlite")


def test_section_labels_a_map_lasso_and_exports_it(small_bundle, tmp_path):
    import io as _io

    import numpy as np
    import panel as pn
    from astropy.table import Table

    from explorer.app import build_page
    from explorer.data import load_explorer_data
    from explorer.labels.labels_ui import build_labels_section
    from explorer.map.selection_ui import attach_map_selection
    from explorer.settings import Settings

    data = load_explorer_data(small_bundle)
    settings = Settings(bundle=small_bundle, labels=tmp_path / "ui.sqlite")
    page = build_page(data, sections=[lambda d, s: build_labels_section(d, s, settings)])
    state = page.explorer_state
    lasso, box = attach_map_selection(page.explorer_view)
    x, y = data.frame["x"].to_numpy(), data.frame["y"].to_numpy()
    lasso.event(geometry=np.array([[x.min(), y.min()], [0, y.min()], [0, 0], [x.min(), 0]]))
    expected = np.flatnonzero((x <= 0) & (y <= 0))
    np.testing.assert_array_equal(state.selection_ids, expected)

    section = page.sidebar[0]
    buttons = {b.name: b for b in section.select(pn.widgets.Button)}
    name = next(w for w in section.select(pn.widgets.TextInput) if w.name == "Label name")
    name.value = "lower-left"
    buttons["Label selection"].clicks += 1
    store = LabelStore(tmp_path / "ui.sqlite")
    assert store.label_counts() == {"lower-left": len(expected)}
    assert store.events()["method"].tolist() == ["lasso"]

    box.event(bounds=(x.min(), y.min(), 0, 0))  # the same rectangle as a box: edges included
    np.testing.assert_array_equal(state.selection_ids, expected)
    buttons["Remove selection from label"].clicks += 1
    assert store.label_counts() == {}
    # another person's later change is not this author's to undo
    store.add("theirs", [str(data.catalog["object_id"].iat[0])], author="someone-else", method="click")
    buttons["Undo my last"].clicks += 1
    assert store.label_counts() == {"lower-left": len(expected), "theirs": 1}
    store.undo_last(author="someone-else", only_by="someone-else")

    download = next(iter(section.select(pn.widgets.FileDownload)))
    table = Table.read(_io.BytesIO(download.callback().getvalue()), format="ascii.csv")
    assert len(table) == len(expected) and set(table["label"]) == {"lower-left"}

    state.select(5)  # a click on the map
    name.value = "single"
    buttons["Label clicked object"].clicks += 1
    assert store.members("single") == [str(data.catalog["object_id"].iat[5])]
    assert store.events()["method"].tolist()[-1] == "click"


def test_export_file_names_carry_the_bundle_and_the_date():
    import re

    from explorer.labels.labels_ui import export_stem

    assert re.fullmatch(r"demo-labels-\d{8}", export_stem("demo"))
    assert re.fullmatch(r"my_bundle_v2-labels-\d{8}", export_stem("my bundle/v2"))


def test_the_label_store_comes_from_the_apps_own_arguments_not_the_process_argv(small_bundle, tmp_path, monkeypatch):
    """``--labels`` reaches the sections through create_page's settings; a notebook kernel's sys.argv is ignored."""
    import sys

    from explorer.app import create_page
    from explorer.labels.labels_ui import store_for

    monkeypatch.setattr(sys, "argv", ["ipykernel", "--labels", str(tmp_path / "kernel.sqlite")])
    page = create_page(["--bundle", str(small_bundle), "--labels", str(tmp_path / "mine.sqlite")])
    state = page.explorer_state
    assert state.settings.labels == tmp_path / "mine.sqlite"
    assert (tmp_path / "mine.sqlite").exists() and not (tmp_path / "kernel.sqlite").exists()
    assert store_for(page.explorer_view.data, None).path.name != "kernel.sqlite"


def test_another_programs_sqlite_database_is_refused_and_left_untouched(tmp_path):
    import hashlib
    import sqlite3

    from core.labels import LabelStore, LabelStoreError

    foreign = tmp_path / "observing-log.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE events (night TEXT, seeing REAL)")
    con.execute("INSERT INTO events VALUES ('2026-12-01', 0.8)")
    con.commit()
    con.close()
    before = hashlib.sha256(foreign.read_bytes()).hexdigest()
    with pytest.raises(LabelStoreError, match="observing-log.sqlite: is an SQLite database but not a label store"):
        LabelStore(foreign)
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == before
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(LabelStoreError, match="garbage.sqlite: is not an SQLite label store"):
        LabelStore(tmp_path / "garbage.sqlite")
    store = LabelStore(tmp_path / "labels.sqlite")        # a new store, then the same file again
    store.add("ring", ["a"], author="ada", method="click")
    assert LabelStore(tmp_path / "labels.sqlite").label_counts() == {"ring": 1}

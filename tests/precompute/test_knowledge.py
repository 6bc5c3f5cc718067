"""The report's figures against hand computations on small fixtures, and a collapsed embedding flagged."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core import knowledge as kn
from core.contract import read_report
from core.knowledge import catalogue_tasks
from precompute.report import build_report, format_table, write_report


def test_knn_purity_by_hand():
    # train: two tight groups on the x and y axes; the test points sit on the axes too
    train = np.array([[1, 0.0], [1, 0.1], [1, -0.1], [0, 1.0], [0.1, 1], [-0.1, 1]])
    labels = np.array(["a", "a", "a", "b", "b", "b"])
    test = np.array([[1, 0.05], [0.05, 1]])
    # k = 3: all three neighbours share the label -> 1; k = 4: 3 of 4 -> 0.75
    assert kn.knn_purity(train, labels, test, np.array(["a", "b"]), k=3) == 1.0
    assert kn.knn_purity(train, labels, test, np.array(["a", "b"]), k=4) == 0.75
    # a test point labelled against its neighbours scores 0
    assert kn.knn_purity(train, labels, test[:1], np.array(["b"]), k=3) == 0.0


def test_knn_uses_cosine_not_euclidean():
    train = np.array([[10.0, 0.0], [0.0, 0.1]])
    # (0.1, 0.01) is euclidean-close to (0, 0.1) but points along (10, 0)
    assert kn.knn_indices(train, np.array([[0.1, 0.01]]), 1)[0, 0] == 0


def test_health_by_hand():
    # all variance along one axis: first PC share 1, participation ratio 1 -> flagged collapsed
    rng = np.random.default_rng(0)
    line = np.zeros((500, 8), np.float32)
    line[:, 0] = rng.normal(size=500)
    line[:, 1] = 5.0                     # a constant offset makes random pairs look alike too
    h = kn.health(line)
    assert h["first_pc_share"] == pytest.approx(1.0, abs=1e-6)
    assert h["participation_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert any(f.startswith("collapsed") for f in h["flags"])
    assert h["median_random_cosine"] > 0.9 and any(f.startswith("crowded") for f in h["flags"])
    # isotropic: equal eigenvalues -> participation ratio ~ D, first PC ~ 1 / D, no flags
    iso = kn.health(rng.normal(size=(20_000, 8)).astype(np.float32))
    assert iso["participation_ratio"] == pytest.approx(8, rel=0.02)
    assert iso["first_pc_share"] == pytest.approx(1 / 8, rel=0.1)
    assert abs(iso["median_random_cosine"]) < 0.05 and iso["flags"] == []


def test_participation_ratio_of_known_spectrum():
    # variances 4, 1, 1 along three axes: PR = (4+1+1)^2 / (16+1+1) = 2
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200_000, 3)) * np.array([2.0, 1.0, 1.0])
    h = kn.health(x.astype(np.float32), max_rows=200_000)
    assert h["participation_ratio"] == pytest.approx(2.0, rel=0.02)
    assert h["first_pc_share"] == pytest.approx(4 / 6, rel=0.02)


def test_probe_error_separable_and_random():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = np.where(x[:, 0] > 0, "a", "b")
    assert kn.probe_error(x[:300], y[:300], x[300:], y[300:]) < 0.05
    noise = rng.permutation(y)
    assert kn.probe_error(x[:300], noise[:300], x[300:], noise[300:]) > 0.3


def test_continuous_scores_by_hand():
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 1, 600)
    perfect = np.stack([np.cos(v), np.sin(v)], axis=1)   # the value is the angle: cosine neighbours share it
    s = kn.continuous_scores(perfect, v, kn.plain_splits(600))
    assert s["knn_spearman"]["mean"] > 0.99 and s["knn_r2"]["mean"] > 0.99 and s["ridge_r2"]["mean"] > 0.9
    blind = kn.continuous_scores(rng.normal(size=(600, 4)), v, kn.plain_splits(600))
    assert abs(blind["knn_spearman"]["mean"]) < 0.2 and blind["ridge_r2"]["mean"] < 0.1


def test_mean_se_and_beats():
    assert kn.mean_se([1.0, 2.0, 3.0]) == {"mean": 2.0, "se": pytest.approx(1 / np.sqrt(3))}
    assert kn.mean_se([np.nan, np.nan]) == {"mean": None, "se": None}
    a, b = {"mean": 0.8, "se": 0.01}, {"mean": 0.7, "se": 0.01}
    assert kn.beats(a, b, higher_is_better=True) and not kn.beats(b, a, higher_is_better=True)
    assert not kn.beats({"mean": 0.72, "se": 0.01}, b, higher_is_better=True)   # 2 SE only
    assert kn.beats({"mean": 0.1, "se": 0.01}, {"mean": 0.3, "se": 0.01}, higher_is_better=False)


def test_similarity_percentile_ranks_scores():
    rng = np.random.default_rng(0)
    emb = kn.l2_normalise(rng.normal(size=(3000, 16)))
    ref = kn.similarity_reference(emb)
    assert kn.percentile(ref, -1.0) == 0 and kn.percentile(ref, 1.0) == 100
    assert kn.percentile(ref, ref["quantiles"][50]) == pytest.approx(50, abs=0.5)
    assert 99 < float(kn.percentile(ref, 0.75)) <= 100


def labelled_fixture(n=400, seed=0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 2, n)
    size = rng.uniform(1, 100, n)
    signal = np.stack([cls + 0.1 * rng.normal(size=n), np.log10(size)], axis=1)
    informative = np.concatenate([(signal - signal.mean(axis=0)) / signal.std(axis=0), 0.3 * rng.normal(size=(n, 6))], axis=1)
    catalog = pd.DataFrame({"morph": np.where(cls, "disk", "bulge"), "size": size,
                            "frac": np.clip(cls * 0.9 + 0.05 + 0.02 * rng.normal(size=n), 0, 1),
                            "split": "train"})
    colour_by = {"morph": {"title": "Morphology", "kind": "categorical"},
                 "size": {"title": "Size", "kind": "continuous"},
                 "frac": {"title": "Disk fraction", "kind": "fraction"},
                 "split": {"title": "split", "kind": "categorical"}}
    return catalog, colour_by, informative.astype(np.float32), rng


def test_report_compares_sources_and_flags_a_collapsed_embedding(tmp_path):
    catalog, colour_by, good, rng = labelled_fixture()
    tasks = catalogue_tasks(catalog, colour_by)
    assert [t["name"] for t in tasks] == ["morph", "size", "frac>0.8"]          # split is bookkeeping
    assert tasks[1]["title"] == "log10 Size"                                     # spans > 30x: scored in log
    rows = np.arange(len(catalog))
    collapsed = np.ones((len(catalog), 3), np.float32) + 1e-3 * rng.normal(size=(len(catalog), 3)).astype(np.float32)
    collapsed[:, 0] += 0.01 * rng.normal(size=len(catalog)).astype(np.float32)
    features = {"embedding": collapsed, "untrained": good, "pixel_pca": rng.normal(size=(len(catalog), 8))}
    rep = build_report(tasks, features, rows, collapsed)
    assert rep["summary"]["beats_untrained"] is False
    assert "collapsed" in rep["summary"]["message"] or "crowded" in rep["summary"]["message"]
    assert "Does not beat its untrained twin on any of 3" in rep["summary"]["message"]
    morph = rep["tasks"][0]
    assert morph["scores"]["untrained"]["knn_purity"]["mean"] > 0.95
    assert morph["beats"]["untrained"]["knn_purity"] == -1
    # the same report with the informative features as the embedding beats both baselines
    good_rep = build_report(tasks, {**features, "embedding": good, "untrained": collapsed}, rows, good)
    assert good_rep["summary"]["beats_untrained"] is True and not good_rep["health"]["flags"]
    path = write_report(good_rep, tmp_path / "report.json")
    assert read_report(path)["summary"] == json.loads(path.read_text())["summary"]
    assert "Morphology" in format_table(good_rep)


def test_read_report_refuses_malformed(tmp_path):
    path = tmp_path / "report.json"
    assert read_report(path) is None
    for bad in ("null", "[]", '{"summary": {}, "health": {}, "tasks": []}', "\xff\xfe"):
        path.write_bytes(bad.encode("latin-1"))
        with pytest.raises(ValueError, match="report.json"):
            read_report(path)


@pytest.mark.parametrize("damage", [
    lambda r: r.__setitem__("n_splits", "<script>alert(1)</script>"),
    lambda r: r["health"].__setitem__("first_pc_share", "63 %"),
    lambda r: r["summary"].__setitem__("message", {"text": "x"}),
    lambda r: r["tasks"].__setitem__(0, "morph"),
    lambda r: r["tasks"][0].__setitem__("kind", "ordinal"),
    lambda r: r["tasks"][0]["scores"]["embedding"].__setitem__("knn_purity", {"mean": "0.9"}),
    lambda r: r["tasks"][0].__setitem__("title", None),
    lambda r: r.__setitem__("sources", []),
], ids=["n_splits text", "health text", "message object", "task not object", "unknown kind", "score text",
        "title null", "sources list"])
def test_read_report_refuses_every_shape_the_page_cannot_show(tmp_path, damage):
    """Each field the About card formats is typed when the report is read: a malformed one is one ValueError naming
    the file and the field, not a traceback or a blank page later."""
    catalog, colour_by, good, rng = labelled_fixture()
    rep = build_report(catalogue_tasks(catalog, colour_by), {"embedding": good, "untrained": good[:, ::-1],
                       "pixel_pca": good}, np.arange(len(catalog)), good)
    rep = json.loads(json.dumps(rep))
    damage(rep)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(rep))
    with pytest.raises(ValueError, match="report.json: .*must"):
        read_report(path)


def test_report_command_on_a_bundle_alone(small_bundle, capsys):
    """Old bundles (no report.json): the command prints health and embedding-only figures and says why the
    baselines are missing."""
    from precompute.__main__ import main

    assert main(["report", str(small_bundle)]) == 0
    out = capsys.readouterr().out
    assert "health: first PC" in out and "Baselines were not computed" in out


def test_about_card_says_plainly_when_the_embedding_does_not_beat_its_twin():
    from explorer.about import about_html

    catalog, colour_by, good, rng = labelled_fixture()
    tasks = catalogue_tasks(catalog, colour_by)
    rows = np.arange(len(catalog))
    noise = rng.normal(size=(len(catalog), 8)).astype(np.float32)
    bad = build_report(tasks, {"embedding": noise, "untrained": good, "pixel_pca": good}, rows, noise)
    card = about_html(bad)
    assert "about-bad" in card and "Does not beat its untrained twin on any of 3" in card
    assert "<script" not in card and "Morphology" in card
    assert "no report.json" in about_html(None)
    hostile = json.loads(json.dumps(bad))
    hostile["tasks"][0]["title"] = "<img src=x onerror=alert(1)>"
    assert "<img src=x" not in about_html(hostile) and "&lt;img src=x" in about_html(hostile)


def test_neighbour_rank_text():
    from explorer.cards import rank_text

    assert rank_text(99.7) == "top 0.3 %" and rank_text(100.0) == "top 0.01 %" and rank_text(50.0) == "top 50 %"

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
    lambda r: r.__setitem__("stability", {"perturbations": [{"name": 3}], "median_rank": {},
                                          "median_map_shift": {}}),
], ids=["n_splits text", "health text", "message object", "task not object", "unknown kind", "score text",
        "title null", "sources list", "stability name not text"])
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
    assert "about-bad" in card and "On none of 3 labelled tests does it beat the same network with random" in card
    assert "<script" not in card and "Morphology" in card
    assert "no report.json" in about_html(None)
    hostile = json.loads(json.dumps(bad))
    hostile["tasks"][0]["title"] = "<img src=x onerror=alert(1)>"
    assert "<img src=x" not in about_html(hostile) and "&lt;img src=x" in about_html(hostile)


def test_neighbour_rank_text():
    from explorer.cards import rank_text

    assert rank_text(99.7) == "top 0.3 %" and rank_text(100.0) == "top 0.01 %" and rank_text(50.0) == "top 50 %"


# ------------------------------------------------------------------------------ what "similar" means, per column
def test_neighbour_agreement_by_hand():
    """Four tight pairs on the axes: each object's nearest neighbour is its twin. Categorical: the share of pairs
    with the same value; continuous: the median absolute difference, beside random pairs."""
    features = np.array([[1, 0.01], [1, -0.01], [-1, 0.01], [-1, -0.01], [0.01, 1], [-0.01, 1], [0.01, -1],
                         [-0.01, -1]], dtype=np.float32)
    features = np.repeat(features, 5, axis=0) + 1e-4 * np.arange(40, dtype=np.float32)[:, None]   # 40 rows
    group = np.repeat(np.arange(4), 10)
    catalog = pd.DataFrame({"kind": np.array(["a", "b", "c", "d"])[group], "mag": 15.0 + group + 0.01 * np.arange(40)})
    cols = kn.agreement_columns(catalog)
    assert [c["column"] for c in cols] == ["kind", "mag"]
    out = kn.neighbour_agreement({"embedding": features}, np.arange(40), cols, k=3)
    kind, mag = ({s["column"]: s for s in out}[c]["sources"]["embedding"] for c in ("kind", "mag"))
    assert kind["neighbours"] == 1.0 and 0.1 < kind["random"] < 0.45 and kind["agreement"] == 1.0
    assert mag["neighbours"] < 0.1 < 1.0 < mag["random"] and mag["agreement"] > 0.8


def test_agreement_columns_leave_out_identifiers_positions_and_vote_counts():
    n = 60
    rng = np.random.default_rng(0)
    catalog = pd.DataFrame({"object_id": np.arange(n), "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-5, 5, n),
                            "redshift_err": rng.uniform(size=n), "gz2_bar_bar_count": rng.integers(0, 9, n),
                            "gz2_total_votes": rng.integers(0, 50, n), "size": 10 ** rng.uniform(0, 2, n),
                            "name": [f"G{i}" for i in range(n)], "flag": rng.integers(0, 2, n).astype(bool)})
    cols = {c["column"]: c for c in kn.agreement_columns(catalog)}
    assert set(cols) == {"size", "flag"}                      # 60 distinct names are not categories
    assert cols["size"]["log"] and cols["flag"]["kind"] == "categorical"


def test_report_says_what_neighbours_share_for_every_source():
    catalog, colour_by, good, rng = labelled_fixture()
    tasks = catalogue_tasks(catalog, colour_by)
    rows = np.arange(len(catalog))
    noise = rng.normal(size=(len(catalog), 8)).astype(np.float32)
    rep = build_report(tasks, {"embedding": good, "untrained": noise}, rows, good, catalog=catalog,
                       columns=colour_by)
    meaning = {c["column"]: c for c in rep["similarity_meaning"]["columns"]}
    morph = meaning["morph"]
    assert morph["title"] == "Morphology" and morph["kind"] == "categorical"
    assert morph["sources"]["embedding"]["neighbours"] > 0.95 > 0.6 > morph["sources"]["untrained"]["neighbours"]
    assert abs(morph["sources"]["embedding"]["random"] - 0.5) < 0.05
    assert meaning["size"]["log"] and meaning["size"]["sources"]["embedding"]["agreement"] > 0.3
    assert rep["similarity_meaning"]["columns"][0]["column"] in ("morph", "frac")   # strongest first


def test_whitening_gives_the_training_features_equal_variance_in_every_direction():
    import torch

    from models.embed import embed, fit_whitening

    rng = np.random.default_rng(0)
    features = rng.normal(size=(4000, 6)) * np.array([10, 3, 1, 1, 0.5, 0.1]) + 2.0
    w = fit_whitening(features, floor=0.0)
    white = (features - np.array(w["mean"])) @ np.array(w["matrix"])
    np.testing.assert_allclose(np.cov(white.T), np.eye(6), atol=0.02)
    floored = fit_whitening(features, floor=0.1)
    spread = np.var((features - np.array(floored["mean"])) @ np.array(floored["matrix"]), axis=0)
    assert spread.max() < 1.01 and spread[-1] < 0.2              # the near-empty direction is not blown up
    # embed applies it after the encoder: unit vectors, and a different ranking than without it
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6))
    encoder.out_dim = 6
    images = rng.normal(size=(50, 3, 2, 2)).astype(np.float32)
    plain = embed(encoder, images, dtype=np.float32)
    whitened = embed(encoder, images, dtype=np.float32, whiten=fit_whitening(plain))
    np.testing.assert_allclose(np.linalg.norm(whitened, axis=1), 1, atol=1e-5)
    assert not np.allclose(plain, whitened, atol=1e-2)


def test_about_card_verdict_in_words_opens_on_warnings():
    from explorer.about import about_html, verdict

    catalog, colour_by, good, rng = labelled_fixture()
    tasks = catalogue_tasks(catalog, colour_by)
    rows = np.arange(len(catalog))
    noise = rng.normal(size=(len(catalog), 8)).astype(np.float32)
    sources = {"embedding": good, "untrained": noise, "pixel_pca": noise}
    rep = json.loads(json.dumps(build_report(tasks, sources, rows, good, catalog=catalog, columns=colour_by)))
    css, head, points = verdict(rep)
    assert css == "about-good" and "Better than the same network untrained on 3 of 3 labelled tests" in points[0]
    card = about_html(rep)
    assert "Neighbours share morphology" in card and "random pairs" in card and "What neighbours have" in card
    for jargon in ("10-NN", "purity", "linear-probe", "participation", "principal component", "twin"):
        assert jargon not in card, jargon
    # one dominant direction: amber, said as what it means for a search and what to do
    rep["health"].update(first_pc_share=0.63, participation_ratio=2.4, flags=["collapsed"])
    css, _, _ = verdict(rep)
    card = about_html(rep)
    assert css == "about-warn" and "lies along one direction" in card and "--whiten yes" in card
    # stability under augmentations (the build's stability stage), in words beside the pixels
    rep["stability"] = {"perturbations": [], "median_rank": {"embedding": 0.0002, "pixels": 0.0327},
                        "median_map_shift": {"embedding": 0.027, "pixels": 0.1}, "rank_ratio": 0.006,
                        "map_shift_ratio": 0.27, "n_objects": 150}
    card = about_html(rep)
    assert "noisy copies of an object stay nearer to it than 99.98 % of random pairs" in card
    assert "(in raw pixels: 96.73 %)" in card and "(on a map of their pixels: 0.1)" in card
    # worse than the untrained network somewhere: amber, and the test named
    rep["health"]["flags"] = []
    rep["tasks"][0]["beats"]["untrained"]["knn_purity"] = -1
    assert verdict(rep)[0] == "about-warn" and "worse on Morphology" in verdict(rep)[2][0]


def test_whitening_travels_in_the_weights_file_and_a_missing_one_is_refused(tmp_path):
    import torch

    from models.embed import fit_whitening
    from models.encoders import build_encoder
    from models.io import WHITEN_MATRIX, load_encoder, save_encoder

    encoder = build_encoder("small", 5, "standard", 8)
    whiten = fit_whitening(np.random.default_rng(0).normal(size=(300, encoder.out_dim)))
    config = {"arch": "small", "in_channels": 5, "stem": "standard", "width": 8, "whiten": whiten}
    save_encoder(encoder, config, tmp_path / "enc")
    assert len((tmp_path / "enc" / "config.json").read_text()) < 1000          # the matrix is not JSON text
    _, loaded = load_encoder(tmp_path / "enc")
    np.testing.assert_allclose(loaded["whiten"]["matrix"], np.asarray(whiten["matrix"]), rtol=1e-6)
    state = torch.load(tmp_path / "enc" / "weights.pt", weights_only=True)
    del state[WHITEN_MATRIX]
    torch.save(state, tmp_path / "enc" / "weights.pt")
    with pytest.raises(ValueError, match="whitening"):
        load_encoder(tmp_path / "enc")


def test_report_scores_are_the_same_in_one_process_or_several():
    """The report's fits run one process per core: the same splits and seeds give the same figures."""
    from precompute.report import score_tasks

    catalog, colour_by, good, rng = labelled_fixture()
    tasks = catalogue_tasks(catalog, colour_by)
    features = {"embedding": good, "untrained": rng.normal(size=good.shape).astype(np.float32)}
    rows = np.arange(len(catalog))
    assert score_tasks(tasks, features, rows, n_jobs=1) == score_tasks(tasks, features, rows, n_jobs=2)

"""Linear probes: metrics against hand-computed values, fits that recover planted signals, scoring, candidates,
trust, label targets and the off-thread runner. Small arrays only (the 2-core box is shared)."""
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from core.labels import LabelStore
from explorer.jobs import Cancelled, JobRunner
from explorer.probes import probes as P

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ metrics by hand
def test_redshift_metrics_match_hand_computation():
    z_true = np.array([0.0, 0.1, 0.2, 0.3])
    z_pred = np.array([0.01, 0.1, 0.3, 0.3])
    # dz = [0.01, 0, 0.1/1.2, 0]; median 0.005; |dz - med| = [.005, .005, .07833, .005] -> MAD 0.005
    m = P.redshift_metrics(z_pred, z_true)
    assert m["bias"] == pytest.approx((0.01 + 0.1 / 1.2) / 4)
    assert m["sigma_mad"] == pytest.approx(1.4826 * 0.005)
    assert m["eta_percent"] == pytest.approx(25.0)


def test_fraction_metrics_use_high_quality_labels_only():
    p_true = np.array([0.9, 0.95, 0.1, 0.05, 0.5, 0.85])  # 0.5 is not high quality
    p_pred = np.array([0.8, 0.4, 0.3, 0.6, 0.9, 0.7])
    m = P.fraction_metrics(p_true, p_pred)
    # binarised: y = [1, 1, 0, 0, 1], yhat = [1, 0, 0, 1, 1]
    assert m["n_high_quality"] == 5
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["prec"] == pytest.approx(2 / 3) and m["rec"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs ordered correctly
    bce = -np.mean(p_true * np.log(p_pred) + (1 - p_true) * np.log(1 - p_pred))
    assert m["bce"] == pytest.approx(bce)


def test_categorical_and_regression_metrics_by_hand():
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    m = P.categorical_metrics(np.array(["a", "b", "a", "b"]), proba, ["a", "b"])
    assert m["acc"] == pytest.approx(0.5) and m["balanced_acc"] == pytest.approx(0.5)
    assert m["prec"] == pytest.approx(0.5) and m["rec"] == pytest.approx(0.5)
    assert m["auc"] == pytest.approx(0.5)  # b-scores [0.6, 0.4] vs a-scores [0.1, 0.7]: 2 of 4 pairs right
    r = P.regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 3.0]))
    assert r["rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert r["r2"] == pytest.approx(1 - (2 / 3) / np.var([1.0, 3.0, 3.0]))


# ------------------------------------------------------------------------------------------ planted signals
@pytest.fixture(scope="module")
def planted():
    """Unit-vector embeddings (float16, as in bundles) with targets that are functions of one direction."""
    rng = np.random.default_rng(0)
    n, d = 3000, 24
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    emb = x.astype(np.float16)
    s = x[:, 0] * np.sqrt(d)  # ~ N(0, 1)
    split = np.where(np.arange(n) % 5 == 0, "test", "train").astype(object)
    frac = 1 / (1 + np.exp(-3 * s))
    frac[rng.random(n) < 0.2] = np.nan  # missing labels are skipped
    z = np.clip(0.2 + 0.06 * s, 0.01, 0.39)
    cls = np.where(s > 0.5, "disk", np.where(s < -0.5, "smooth", "mid")).astype(object)
    return emb, split, frac, z, cls


def test_soft_bce_probe_recovers_a_fraction(planted):
    emb, split, frac, _, _ = planted
    target = P.ProbeTarget("gz2_smooth_fraction", "fraction", frac)
    probe = P.fit_probe(emb, target, split)
    assert probe.method == "soft-bce"
    assert probe.n_train == int(np.sum(np.isfinite(frac) & (split == "train")))
    assert probe.metrics["auc"] > 0.98 and probe.metrics["acc"] > 0.9
    pred = P.score_all(probe, emb, chunk=700)  # several chunks, float16 mat-vec path
    direct = P.raw_outputs(probe, emb.astype(np.float32))[:, 0]
    np.testing.assert_allclose(pred.value, direct, atol=2e-3)
    np.testing.assert_allclose(pred.uncertainty, 1 - np.abs(2 * direct - 1), atol=4e-3)


def test_ridge_and_redshift_bins_recover_z(planted):
    emb, split, _, z, _ = planted
    target = P.ProbeTarget("redshift", "continuous", z)
    ridge = P.fit_probe(emb, target, split, method="ridge")
    assert ridge.metrics["r2"] > 0.95 and abs(ridge.metrics["bias"]) < 0.005
    bins = P.fit_probe(emb, target, split, method="z-bins", max_iter=60)
    assert len(bins.classes) == 180 and bins.classes[0] == pytest.approx(0.2 / 180)
    assert bins.metrics["sigma_mad"] < 0.03 and bins.metrics["eta_percent"] < 10
    pred = P.score_all(bins, emb)
    assert np.all((pred.value > 0) & (pred.value < 0.4)) and np.all(pred.uncertainty >= 0)


def test_multinomial_and_one_vs_rest_on_classes(planted):
    emb, split, _, _, cls = planted
    multi = P.fit_probe(emb, P.ProbeTarget("morph", "categorical", cls), split)
    assert multi.classes == ["disk", "mid", "smooth"] and multi.metrics["acc"] > 0.85
    pred = P.score_all(multi, emb)
    assert set(np.unique(pred.value)) <= {0.0, 1.0, 2.0}
    assert np.mean(np.array(multi.classes)[pred.value.astype(int)] == cls) > 0.85
    ovr = P.fit_probe(emb, P.ProbeTarget("morph", "categorical", cls, positive="disk"), split)
    assert ovr.method == "one-vs-rest" and ovr.metrics["auc"] > 0.97


def test_label_efficiency_improves_with_more_labels(planted):
    emb, split, frac, _, _ = planted
    curve = P.label_efficiency(emb, P.ProbeTarget("f", "fraction", frac), split, [20, 1500, 10**9])
    assert list(curve["n_train"]) == [20, 1500]  # sizes beyond what is labelled are dropped
    assert curve["bce"].iloc[1] < curve["bce"].iloc[0]


def test_wrong_method_and_too_few_labels_are_explained(planted):
    emb, split, frac, _, cls = planted
    with pytest.raises(P.ProbeError, match="does not fit a fraction"):
        P.fit_probe(emb, P.ProbeTarget("f", "fraction", frac), split, method="ridge")
    with pytest.raises(P.ProbeError, match="label more"):
        P.fit_probe(emb, P.ProbeTarget("f", "fraction", np.full(len(frac), np.nan)), split)
    with pytest.raises(P.ProbeError, match="not a fraction"):
        P.target_from_column(pd.DataFrame({"r_mag": [15.0, 17.0]}), "r_mag", kind="fraction")


# ------------------------------------------------------------------------------------------ candidates, trust
def test_uncertain_candidates_skip_labelled_objects():
    pred = P.Predictions(np.zeros(6, np.float32), np.array([0.1, 0.9, 0.8, 0.95, np.nan, 0.5], np.float32), [])
    labelled = np.array([False, False, False, True, False, False])
    assert P.uncertain_candidates(pred, labelled, k=3).tolist() == [1, 2, 5]
    assert P.uncertain_candidates(pred, np.ones(6, bool), k=3).size == 0


def test_trust_distance_is_cosine_distance_to_nearest_labelled_object(planted):
    emb = planted[0]
    train = np.array([5, 17, 400, 2999])
    d = P.trust_distance(emb, train, batch=512)
    x = emb.astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    brute = 1 - (x @ x[train].T).max(axis=1)
    np.testing.assert_allclose(d, np.clip(brute, 0, 2), atol=1e-5)
    assert np.all(d[train] < 1e-5) and d.dtype == np.float32


# ------------------------------------------------------------------------------------------ label targets
def test_target_from_user_labels(tmp_path):
    store = LabelStore(tmp_path / "l.sqlite")
    store.add("spiral", ["a", "b"], author="t", method="lasso")
    store.add("elliptical", ["c"], author="t", method="box")
    store.add("merger", ["b"], author="t", method="click")  # newest label wins for the target
    target = P.target_from_labels(store.current(), ["a", "b", "c", "d"])
    assert list(target.values) == ["spiral", "merger", "elliptical", None]
    assert target.labelled.tolist() == [True, True, True, False]
    one = LabelStore(tmp_path / "one.sqlite")
    one.add("spiral", ["a"], author="t", method="click")
    with pytest.raises(P.ProbeError, match="at least two labels"):
        P.target_from_labels(one.current(), ["a", "b"])


# ------------------------------------------------------------------------------------------ jobs
def _slow_count(n, *, progress, cancel, step=0.01):
    for i in range(n):
        if cancel.is_set():
            raise Cancelled()
        time.sleep(step)
        progress((i + 1) / n, f"{i + 1} of {n}")
    return n


def test_a_job_reports_progress_and_its_result_off_the_calling_thread(planted):
    from explorer.jobs import current_document

    seen, done = [], []
    runner = JobRunner("probe")
    current_document()   # imports panel (a second on a busy box): not what the page waits for
    t0 = time.perf_counter()
    emb, split, frac, _, _ = planted
    job = runner.submit(P.fit_probe, emb, P.ProbeTarget("f", "fraction", frac), split,
                        on_progress=lambda f, m: seen.append((f, threading.current_thread().name)),
                        on_done=done.append)
    assert time.perf_counter() - t0 < 0.1  # the caller (the page) is not blocked
    probe = job.future.result(timeout=60)
    assert probe.metrics["auc"] > 0.95 and job.progress == 1.0 and job.done and not job.cancelled
    assert seen and all(name.startswith("probe") for _, name in seen) and seen[-1][0] == 1.0
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == [probe]
    runner.shutdown()


def test_a_job_is_cancelled_and_a_new_submission_replaces_the_old():
    runner = JobRunner("probe")
    heard = []
    first = runner.submit(_slow_count, 500, on_done=heard.append, on_error=heard.append)
    while first.progress == 0:
        time.sleep(0.005)
    second = runner.submit(_slow_count, 5)  # the user changed the target: the old fit stops
    assert second.future.result(timeout=10) == 5
    assert first.cancelled and first.progress < 1
    with pytest.raises(Cancelled):
        first.future.result()
    third = runner.submit(_slow_count, 500)
    time.sleep(0.05)
    third.cancel()
    with pytest.raises((Cancelled, Exception)):
        third.future.result(timeout=10)
    assert third.cancelled and heard == []   # a cancelled job calls back nothing
    runner.shutdown()


def test_a_failing_job_reports_its_message():
    runner = JobRunner("probe")
    errors = []

    def broken(*, progress, cancel):
        raise ValueError("the probe needs labels")

    runner.submit(broken, on_error=errors.append).future.exception(timeout=10)
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert errors == ["the probe needs labels"]
    runner.shutdown()


def test_probe_panel_explains_its_metrics_and_why_ridge_suggests_nothing(planted):
    import html

    from explorer.probes.probe_ui import (
        METRIC_WORDS,
        _candidates_html,
        _metrics_html,
    )

    emb, split, _, z, _ = planted
    probe = P.fit_probe(emb, P.ProbeTarget("redshift", "continuous", z), split, method="ridge")
    table = _metrics_html(probe, "Redshift (ridge probe)")
    assert "Redshift (ridge probe)" in table and "σ_MAD" in table and "sigma_mad" not in table
    assert all(html.escape(METRIC_WORDS[k][1]) in table for k in probe.metrics)
    pred = P.score_all(probe, emb)
    assert len(P.uncertain_candidates(pred, np.zeros(len(z), bool), 8)) == 0
    assert "z-bins" in _candidates_html(None, np.zeros(0, np.int64), pred, "ridge")

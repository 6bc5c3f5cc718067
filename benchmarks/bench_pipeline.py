"""BENCHMARK: the precompute pipeline, end to end, and what its embeddings are worth.

    # demo: wall time cold and warm (second run = cache hits), peak memory
    python -m benchmarks.bench_pipeline demo --n 20000 --out bundles/bench-demo
    # real FIRST (MiraBest, 1,255 cutouts): build time, then 10-NN FR purity, linear probe vs raw-pixel PCA, LAS
    python -m benchmarks.bench_pipeline first --catalog ../shared/data/first_mirabest/catalog.csv --out bundles/mirabest
    # simulated SDSS bundle (e.g. the demo's): linear-probe AUC smooth vs featured against truth, 1,000 labels
    python -m benchmarks.bench_pipeline sdss-probe --bundle bundles/bench-demo

Each sub-command prints one JSON line of figures. Builds run as a subprocess (`python -m precompute ...`) so the
wall time and peak RSS are those a user sees; extra arguments after ``--`` go to that command.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.quick import add_quick, parse_quick, scratch_dir

ROOT = Path(__file__).parents[1]


def run_precompute(args: list[str]) -> dict:
    """Run ``python -m precompute ARGS``; wall seconds and the peak RSS of the child (MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "precompute", *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"precompute {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    stages = {}
    for line in proc.stdout.splitlines():  # "[stage] done in 12.3 s"
        if "] done in " in line:
            stages[line[1 : line.index("]")]] = float(line.split("done in ")[1].split()[0])
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(max(peak, before) / 1024, 0), "stages_s": stages}


# ------------------------------------------------------------------------------------------------- metrics
def knn_ids(emb: np.ndarray, k: int) -> np.ndarray:
    """k nearest neighbours by cosine, excluding the object itself (exact, faiss)."""
    from core.index import exact_search

    _, ids = exact_search(emb, emb, k=k + 1)
    return ids[:, 1:]


def knn_purity(emb: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    ids = knn_ids(emb, k)
    return float((labels[ids] == labels[:, None]).mean())


def linear_probe_error(x: np.ndarray, y: np.ndarray, split: np.ndarray) -> float:
    """Logistic regression on standardised features, C by 5-fold CV on train+val; error on the test split."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit = split != "test"
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=5, max_iter=5000))
    clf.fit(x[fit], y[fit])
    return float((clf.predict(x[~fit]) != y[~fit]).mean())


def raw_pixel_pca(images: np.ndarray, survey, params: dict, n_components: int = 50, seed: int = 0) -> np.ndarray:
    """The baseline representation: PCA of the preprocessed (normalised, centre-cropped) pixels."""
    from sklearn.decomposition import PCA

    x = survey.preprocess(np.asarray(images), params).reshape(len(images), -1)
    return PCA(n_components=min(n_components, len(x) - 1), random_state=seed).fit_transform(x)


def spearman_with_neighbours(emb: np.ndarray, values: np.ndarray, k: int = 10) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(values)
    ids = knn_ids(emb[ok], k)
    v = values[ok]
    return float(spearmanr(v, v[ids].mean(axis=1)).statistic)


def ingest_images(bundle: Path) -> np.ndarray:
    """The raw images the bundle was built from (the ingest stage's cache in the work folder)."""
    man = json.loads((bundle / "manifest.json").read_text())
    work = Path(man["source"]["skipped_report"]).parent
    key = man["source"]["stage_keys"]["ingest"]
    return np.load(work / f"ingest-{key}" / "images.npy", mmap_mode="r")


def first_metrics(bundle: Path) -> dict:
    from core.bundle import Bundle
    from core.surveys.base import get_survey

    b = Bundle.open(bundle)
    cat = b.catalog
    emb = np.asarray(b.embeddings, dtype=np.float32)
    conf = ((cat["confidence"] == "confident") & cat["fr_class"].isin(["FRI", "FRII"])).to_numpy()
    y = cat["fr_class"].to_numpy()[conf]
    split = cat["split"].to_numpy()[conf]
    survey = get_survey("first")
    cfg = json.loads((bundle / "encoder" / "config.json").read_text())
    images = ingest_images(bundle)
    baseline = raw_pixel_pca(np.asarray(images)[conf], survey, cfg["preprocessing"])
    return {
        "n_confident_fri_frii": int(conf.sum()), "n_test": int((split == "test").sum()),
        "knn10_purity": round(knn_purity(emb[conf], y), 4),
        "knn10_purity_raw_pca": round(knn_purity(baseline / np.linalg.norm(baseline, axis=1, keepdims=True), y), 4),
        "linear_probe_test_error": round(linear_probe_error(emb[conf], y, split), 4),
        "linear_probe_test_error_raw_pca": round(linear_probe_error(baseline, y, split), 4),
        "spearman_las_vs_knn10_mean": round(spearman_with_neighbours(emb, cat["angular_extent_arcsec"].to_numpy(float)), 4),
        "majority_class_error": round(1 - pd.Series(y[split == "test"]).value_counts(normalize=True).iloc[0], 4),
    }


SMOOTH, FEATURED = ("smooth",), ("spiral", "barred_spiral", "edge_on_disk")


def sdss_probe(bundle: Path, n_labels: int = 1000, seed: int = 0) -> dict:
    """Smooth (0) vs featured (1) from the simulator's truth type; a logistic probe trained on ``n_labels``
    train-split objects, AUC on the test split; the same on PCA-50 of the raw pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from core.bundle import Bundle
    from core.surveys.base import get_survey

    b = Bundle.open(bundle)
    cat = b.catalog
    kind = cat["truth_type"].astype(str)
    use = (kind.isin(SMOOTH) | kind.isin(FEATURED)).to_numpy()
    y = kind.isin(FEATURED).to_numpy().astype(int)
    split = cat["split"].to_numpy()
    rng = np.random.default_rng(seed)
    train_rows = np.flatnonzero(use & (split == "train"))
    train_rows = np.sort(rng.choice(train_rows, min(n_labels, len(train_rows)), replace=False))
    test_rows = np.flatnonzero(use & (split == "test"))
    emb = np.asarray(b.embeddings, dtype=np.float32)
    images = ingest_images(bundle)
    rows = np.concatenate([train_rows, test_rows])
    cfg = json.loads((bundle / "encoder" / "config.json").read_text())
    raw = raw_pixel_pca(np.asarray(images[np.sort(rows)]), get_survey("sdss"), cfg["preprocessing"])
    raw_by_row = dict(zip(np.sort(rows), raw))

    def auc(features_of):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        clf.fit(features_of(train_rows), y[train_rows])
        return float(roc_auc_score(y[test_rows], clf.predict_proba(features_of(test_rows))[:, 1]))

    return {"n_train_labels": int(len(train_rows)), "n_test": int(len(test_rows)),
            "auc_embeddings": round(auc(lambda r: emb[r]), 4),
            "auc_raw_pixel_pca50": round(auc(lambda r: np.stack([raw_by_row[i] for i in r])), 4)}


# ------------------------------------------------------------------------------------------------- commands
def bench_demo(a, extra) -> dict:
    out = Path(a.out)
    if a.fresh:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name(out.name + ".work"), ignore_errors=True)
    args = ["demo", "--out", str(out), "--n", str(a.n), "--no-progress", *extra]
    cold = run_precompute(args)
    warm = run_precompute(args)
    return {"bench": "demo", "n": a.n, "cold": cold, "warm": warm}


def bench_first(a, extra) -> dict:
    out = Path(a.out)
    if a.fresh:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name(out.name + ".work"), ignore_errors=True)
    build = run_precompute(["build", "--survey", "first", "--catalog", a.catalog, "--out", str(out),
                            "--no-progress", *extra])
    return {"bench": "first", "build": build, **first_metrics(out)}


def main(argv=None):
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # sklearn 1.9 API-transition notices
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo")
    d.add_argument("--n", type=int, default=20_000)
    d.add_argument("--out", default="bundles/bench-demo")
    d.add_argument("--fresh", action="store_true", help="delete the bundle and work folder first (cold run)")
    add_quick(d, n=200, out=lambda: str(scratch_dir() / "demo"), fresh=True)
    f = sub.add_parser("first")
    f.add_argument("--catalog", default=str(ROOT / ".." / "shared" / "data" / "first_mirabest" / "catalog.csv"))
    f.add_argument("--out", default="bundles/mirabest")
    f.add_argument("--fresh", action="store_true")
    fm = sub.add_parser("first-metrics", help="metrics only, on an existing FIRST bundle")
    fm.add_argument("--bundle", default="bundles/mirabest")
    s = sub.add_parser("sdss-probe")
    s.add_argument("--bundle", default="bundles/bench-demo")
    s.add_argument("--n-labels", type=int, default=1000)
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    a = parse_quick(p, argv[: argv.index("--")] if "--" in argv else argv)
    if getattr(a, "quick", False):
        extra = [*extra, "--epochs", "1", "--batch-size", "32", "--n-neighbors", "10"]
    if a.cmd == "demo":
        result = bench_demo(a, extra)
    elif a.cmd == "first":
        result = bench_first(a, extra)
    elif a.cmd == "first-metrics":
        result = {"bench": "first-metrics", **first_metrics(Path(a.bundle))}
    else:
        result = {"bench": "sdss-probe", **sdss_probe(Path(a.bundle), a.n_labels)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

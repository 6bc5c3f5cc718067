"""BENCHMARK: lasso selection, linear-probe fitting and scoring, trust distance, label store, in one run.

Targets (issues 6, 23): lasso over 1 M objects with ~250 k inside <= 200 ms; probe fit on 100 k labels x 2048 dims
<= 1 s (issue 23; the reference fit of before is timed beside it, with the AUC both reach); scoring 1 M objects
<= 0.5 s. Data: clustered random arrays made here (or the 1 M fixture bundle at
bundles/bench-1m when it exists, for the map and scoring).

    .venv/bin/python -m benchmarks.bench_labels_probes                # full size
    .venv/bin/python -m benchmarks.bench_labels_probes --n 200000     # smaller, for a quick look
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.quick import add_quick, parse_quick
from core.labels import LabelStore
from explorer.map.selection import lasso_select
from explorer.probes import probes as P


def _timed(fn, repeat: int = 3):
    """Best and median wall time of fn() over repeats, and its last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times)), out


def clustered_map(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.uniform(-10, 10, (40, 2))
    lab = rng.integers(0, 40, n)
    xy = centres[lab] + rng.normal(size=(n, 2)) * rng.uniform(0.3, 1.2, 40)[lab, None]
    return xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)


def lasso_with_fraction(x, y, fraction: float):
    """A wobbly (concave) 200-vertex loop around the map's median holding about ``fraction`` of the points."""
    cx, cy = float(np.median(x)), float(np.median(y))
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    wobble = 1 + 0.15 * np.sin(7 * t)
    r = np.quantile(np.hypot(x - cx, y - cy), fraction)
    return cx + r * wobble * np.cos(t), cy + r * wobble * np.sin(t)


def clustered_embeddings(n: int, d: int, rng, n_clusters: int = 40, chunk: int = 50_000):
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), np.float16)
    lab = rng.integers(0, n_clusters, n)
    for s in range(0, n, chunk):
        v = centres[lab[s : s + chunk]] + rng.normal(scale=2.4 / np.sqrt(d), size=(len(lab[s : s + chunk]), d)).astype(np.float32)
        out[s : s + chunk] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def bench_lasso(args, rng, results):
    bundle = Path("bundles/bench-1m")
    if (bundle / "catalog.parquet").exists() and not args.quick:
        import pandas as pd

        cat = pd.read_parquet(bundle / "catalog.parquet", columns=["umap_x", "umap_y"])
        x, y, source = cat["umap_x"].to_numpy(), cat["umap_y"].to_numpy(), str(bundle)
    else:
        x, y = clustered_map(args.n, rng)
        source = "clustered random"
    xs, ys = lasso_with_fraction(x, y, 0.25)
    best, med, rows = _timed(lambda: lasso_select(x, y, xs, ys), repeat=5)
    results["lasso"] = {"n": len(x), "inside": int(len(rows)), "best_ms": best * 1e3, "median_ms": med * 1e3,
                        "target_ms": 200, "data": source}


def bench_fit(args, rng, results):
    d, n_train, n_test = args.dim, args.n_train, args.n_train // 5
    emb = clustered_embeddings(n_train + n_test, d, rng)
    direction = rng.normal(size=d).astype(np.float32)
    s = emb[:, :].astype(np.float32) @ direction
    s = (s - s.mean()) / s.std()
    frac = 1 / (1 + np.exp(-(2 * s + rng.normal(scale=1.5, size=len(s)))))  # noisy: not perfectly separable
    split = np.array(["train"] * n_train + ["test"] * n_test, dtype=object)
    target = P.ProbeTarget("planted_fraction", "fraction", frac)
    P.fit_probe(emb[:2000], P.ProbeTarget("w", "fraction", frac[:2000]), np.where(np.arange(2000) % 5 == 0, "test", "train").astype(object))  # warm-up (imports, code paths)
    best, med, probe = _timed(lambda: P.fit_probe(emb, target, split, max_iter=args.max_iter), repeat=args.repeat)
    ref_best, ref_med, ref = _timed(lambda: P.fit_probe(emb, target, split, max_iter=args.max_iter, reference=True),
                                    repeat=args.repeat)
    results["probe_fit"] = {"n_train": probe.n_train, "dim": d, "best_s": best, "median_s": med,
                            "stages": probe.timings, "max_iter": args.max_iter, "target_s": 1,
                            "test_auc": probe.metrics.get("auc"), "test_acc": probe.metrics.get("acc"),
                            "reference": {"what": "float32 rows, every L-BFGS step on all rows (the fit until issue 23)",
                                          "best_s": ref_best, "median_s": ref_med, "stages": ref.timings,
                                          "test_auc": ref.metrics.get("auc"), "test_acc": ref.metrics.get("acc")},
                            "auc_cost": ref.metrics.get("auc", np.nan) - probe.metrics.get("auc", np.nan),
                            "auc_cost_target": 0.005}
    return probe


def bench_score(args, rng, results, probe):
    bundle = Path("bundles/bench-1m")
    if not args.quick and (bundle / "embeddings.npy").exists() and np.load(bundle / "embeddings.npy", mmap_mode="r").shape[1] == probe.weight.shape[0]:
        emb, source = np.load(bundle / "embeddings.npy", mmap_mode="r"), str(bundle) + " (memory-mapped)"
    else:
        block = clustered_embeddings(min(args.n, 125_000), probe.weight.shape[0], rng)
        emb, source = np.concatenate([block] * int(np.ceil(args.n / len(block))))[: args.n], "clustered random, in memory"
    P.score_all(probe, emb[:100_000])  # warm the page cache / code paths
    best, med, pred = _timed(lambda: P.score_all(probe, emb), repeat=3)
    results["score_binary"] = {"n": len(emb), "best_s": best, "median_s": med, "target_s": 0.5, "data": source}
    multi = P.LinearProbe("m", "categorical", "multinomial", rng.normal(size=(emb.shape[1], 8)).astype(np.float32),
                          np.zeros(8, np.float32), [str(i) for i in range(8)])
    best, med, _ = _timed(lambda: P.score_all(multi, emb[:200_000]), repeat=1)
    results["score_8_classes_200k"] = {"n": 200_000, "seconds": best}
    labelled = np.zeros(len(emb), bool)
    labelled[:100_000] = True
    best, _, _ = _timed(lambda: P.uncertain_candidates(pred, labelled, 50), repeat=3)
    results["uncertain_candidates_ms"] = best * 1e3
    n_q = min(len(emb), args.trust_queries)
    train = np.sort(rng.choice(n_q, size=min(args.trust_labels, n_q), replace=False))
    best, _, _ = _timed(lambda: P.trust_distance(emb[:n_q], train), repeat=1)
    results["trust"] = {"queries": n_q, "labelled": len(train), "seconds": best,
                        "note": "cost is linear in queries x labelled x dim"}


def bench_store(results, n: int = 250_000):
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(Path(tmp) / "labels.sqlite")
        ids = [f"OBJ{i}" for i in range(n)]
        best, _, _ = _timed(lambda: store.add("big lasso", ids, author="bench", method="lasso"), repeat=1)
        small, _, _ = _timed(lambda: store.add("click", ids[:1], author="bench", method="click"), repeat=5)
        cur, _, _ = _timed(lambda: store.current(), repeat=1)
        cached, _, _ = _timed(lambda: store.label_counts(), repeat=3)
        results["label_store"] = {"add_250k_s": best, "add_1_ms": small * 1e3, "current_after_250k_s": cur,
                                  "label_counts_cached_ms": cached * 1e3}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="objects on the map and to score")
    p.add_argument("--n-train", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--max-iter", type=int, default=30)
    p.add_argument("--repeat", type=int, default=3, help="fits timed per variant (best and median reported)")
    p.add_argument("--trust-labels", type=int, default=1000)
    p.add_argument("--trust-queries", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=["lasso", "fit", "score", "store"], nargs="*")
    add_quick(p, n=20_000, n_train=2_000, dim=64, max_iter=5, trust_labels=50, trust_queries=2_000, repeat=1)
    a = parse_quick(p, argv)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    from explorer.probes.linear_fit import fit_device

    results = {"device": str(fit_device()), "torch_threads": torch.get_num_threads()}
    only = set(a.only or ["lasso", "fit", "score", "store"])
    if "lasso" in only:
        bench_lasso(a, rng, results)
        print(json.dumps({"lasso": results["lasso"]}), flush=True)
    probe = None
    if "fit" in only or "score" in only:
        probe = bench_fit(a, rng, results)
        print(json.dumps({"probe_fit": results["probe_fit"]}), flush=True)
    if "score" in only:
        bench_score(a, rng, results, probe)
    if "store" in only:
        bench_store(results, 2_000 if a.quick else 250_000)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""UMAP on everything against UMAP on a sample with the rest placed (``precompute.project``), on the same
embeddings in the same run: time, peak memory and how well each 2-D map keeps the embedding's neighbourhoods.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_projection --n 1000000 --dim 128 --json proj-1m.json

Embeddings: ``benchmarks.fixture_bundle.clustered_embeddings`` (40 families of very different sizes), or
``--embeddings FILE.npy``. Both maps start from the same PCA-50 vectors. Quality, on the same ``--eval`` objects
for both maps:

* **k-NN preservation**: the share of an object's 15 nearest neighbours among all N in the PCA space (exact, faiss)
  that are also among its 15 nearest on the map (all N, KD-tree), and among its 150 nearest on the map (at 1 M the
  15 exact neighbours are too local for any 2-D map to keep in order: the looser figure says whether they are near);
* **trustworthiness** (Venna & Kaski; scikit-learn) of the map restricted to a random ``--trust`` objects;
* **family purity**: the share of an object's 15 map neighbours in its own family, for all and for the rarest
  families (the sample is meant to keep them);
* for the sampled map, the same figures split into fitted and placed objects.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from benchmarks.quick import add_quick, parse_quick
from benchmarks.run import finish, machine


def neighbours_in_space(reduced: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Exact k nearest neighbours (excluding the object itself) among all rows of ``reduced``, in its space."""
    import faiss

    index = faiss.IndexFlatL2(reduced.shape[1])
    index.add(np.ascontiguousarray(reduced, dtype=np.float32))
    _, ids = index.search(np.ascontiguousarray(reduced[rows], dtype=np.float32), k + 1)
    return drop_self(ids, rows, k)


def neighbours_on_map(coords: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    _, ids = cKDTree(coords).query(coords[rows], k + 1)
    return drop_self(ids, rows, k)


def drop_self(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(rows), k), dtype=np.int64)
    for i, (found, row) in enumerate(zip(ids, rows)):
        out[i] = [j for j in found if j != row][:k]
    return out


def map_quality(reduced, coords, labels, eval_rows, trust_rows, truth_nb, rare, k: int = 15) -> dict:
    from sklearn.manifold import trustworthiness

    wide = neighbours_on_map(coords, eval_rows, 10 * k)
    map_nb = wide[:, :k]
    kept = np.array([len(np.intersect1d(a, b)) / k for a, b in zip(truth_nb, map_nb)])
    near = np.array([len(np.intersect1d(a, b)) / k for a, b in zip(truth_nb, wide)])
    purity = (labels[map_nb] == labels[eval_rows, None]).mean(axis=1)
    is_rare = np.isin(labels[eval_rows], rare)
    trust = trustworthiness(reduced[trust_rows], coords[trust_rows], n_neighbors=k)
    return {"knn_preservation": round(float(kept.mean()), 4), "knn_in_150_on_map": round(float(near.mean()), 4),
            "trustworthiness": round(float(trust), 4),
            "family_purity": round(float(purity.mean()), 4),
            "rare_family_purity": round(float(purity[is_rare].mean()), 4) if is_rare.any() else None,
            "rare_family_objects": int(is_rare.sum()), "_kept": kept, "_purity": purity}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--embeddings", help="an (N, D) .npy instead of the synthetic embeddings")
    p.add_argument("--sample-size", type=int, default=200_000)
    p.add_argument("--eval", type=int, default=5_000, help="objects whose neighbourhoods are compared")
    p.add_argument("--trust", type=int, default=5_000, help="objects of the trustworthiness subset")
    p.add_argument("--skip-full", action="store_true", help="only the sampled map")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    p.add_argument("--save-coords", help="write both maps' coordinates to this .npz")
    add_quick(p, n=5_000, dim=16, sample_size=1_500, eval=300, trust=300)
    args = parse_quick(p, argv)

    from benchmarks.fixture_bundle import clustered_embeddings
    from precompute.project import choose_sample, fit_umap, place_rest, reduce_with_pca

    results = {"machine": machine(), "args": vars(args)}
    t0 = time.perf_counter()
    if args.embeddings:
        emb, labels = np.load(args.embeddings, mmap_mode="r"), None
    else:
        emb, labels, _ = clustered_embeddings(args.n, args.dim, seed=args.seed)
    results["generate_s"] = round(time.perf_counter() - t0, 1)
    n = len(emb)
    if labels is None:
        from precompute.project import group_labels

        labels = group_labels(np.asarray(emb[:], dtype=np.float32), 40, args.seed)
    counts = np.bincount(labels)
    rare = np.argsort(counts)[:5]
    results["families"] = {"n": int((counts > 0).sum()), "smallest": sorted(int(c) for c in counts[rare]),
                           "largest": int(counts.max())}

    t0 = time.perf_counter()
    _, reduced = reduce_with_pca(emb, 50, args.seed)
    results["pca_s"] = round(time.perf_counter() - t0, 1)
    del emb
    rng = np.random.default_rng(args.seed + 7)
    eval_rows = np.sort(rng.choice(n, min(n, args.eval), replace=False))
    trust_rows = np.sort(rng.choice(n, min(n, args.trust), replace=False))
    t0 = time.perf_counter()
    truth_nb = neighbours_in_space(reduced, eval_rows, 15)
    results["truth_knn_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    rows = choose_sample(reduced, args.sample_size, args.seed)
    t_choose = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, fitted_xy = fit_umap(reduced[rows], 15, 0.1, "euclidean", args.seed)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    coords = place_rest(reduced, rows, fitted_xy)
    t_place = time.perf_counter() - t0
    q = map_quality(reduced, coords, labels, eval_rows, trust_rows, truth_nb, rare)
    fitted = np.isin(eval_rows, rows)
    sample_share = np.bincount(labels[rows], minlength=len(counts))[rare] / np.maximum(counts[rare], 1)
    results["sampled"] = {
        "sample": len(rows), "choose_s": round(t_choose, 1), "umap_s": round(t_fit, 1), "place_s": round(t_place, 1),
        "total_s": round(t_choose + t_fit + t_place, 1), "peak_rss_mb": round(peak_rss_mb()),
        "rare_families_share_in_sample": [round(float(s), 3) for s in sample_share],
        "overall_share_in_sample": round(len(rows) / n, 3),
        "knn_preservation_fitted": round(float(q["_kept"][fitted].mean()), 4) if fitted.any() else None,
        "knn_preservation_placed": round(float(q["_kept"][~fitted].mean()), 4) if (~fitted).any() else None,
        **{k: v for k, v in q.items() if not k.startswith("_")}}
    print("sampled:", results["sampled"], flush=True)

    if not args.skip_full:
        t0 = time.perf_counter()
        _, full_xy = fit_umap(reduced, 15, 0.1, "euclidean", args.seed)
        t_full = time.perf_counter() - t0
        q = map_quality(reduced, full_xy, labels, eval_rows, trust_rows, truth_nb, rare)
        results["full"] = {"umap_s": round(t_full, 1), "peak_rss_mb": round(peak_rss_mb()),
                           **{k: v for k, v in q.items() if not k.startswith("_")}}
        results["speedup"] = round(t_full / results["sampled"]["total_s"], 2)
        if args.save_coords:
            np.savez(args.save_coords, sampled=coords, full=full_xy, sample_rows=rows, eval_rows=eval_rows)
    finish(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

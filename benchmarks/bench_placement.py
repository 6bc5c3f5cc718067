"""Where a new object lands on the map: neighbour placement (what the explorer does, no pickles) vs umap.transform.

Holds out ``--held-out`` objects of a bundle, fits PCA + UMAP on the rest exactly as the project stage does, then
places each held-out object (a) with ``umap.transform`` of the fitted reducer and (b) with
``core.placement.place_by_neighbours`` from its 15 nearest fitted objects by cosine. Distances are in units of
the map's scale (the median distance of a point to the map's centre); also reported: how far each held-out object's
own 15 neighbours sit from one another on the map (the scale below which placement cannot be judged).

    .venv/bin/python benchmarks/bench_placement.py --bundle bundles/demo --held-out 500
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.quick import add_quick, parse_quick, quick_bundle


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle")
    p.add_argument("--held-out", type=int, default=500)
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    add_quick(p, bundle=lambda: str(quick_bundle(n=1_500, dim=16)), held_out=50)
    args = parse_quick(p, argv)
    if args.bundle is None:
        p.error("--bundle is required (or --quick)")

    from core.knowledge import knn_indices, l2_normalise
    from core.placement import place_by_neighbours
    from precompute.project import fit_umap, reduce_with_pca

    emb = l2_normalise(np.load(Path(args.bundle) / "embeddings.npy", mmap_mode="r"))
    rng = np.random.default_rng(args.seed)
    held = np.sort(rng.choice(len(emb), args.held_out, replace=False))
    fitted = np.setdiff1d(np.arange(len(emb)), held)
    t0 = time.perf_counter()
    pca, reduced = reduce_with_pca(emb[fitted], 50, args.seed)
    reducer, coords = fit_umap(reduced, 15, 0.1, "euclidean", args.seed)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    by_umap = np.asarray(reducer.transform(pca.transform(emb[held])), dtype=np.float64)
    umap_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nb = knn_indices(emb[fitted], emb[held], args.k)
    sims = np.take_along_axis(emb[held] @ emb[fitted].T, nb, axis=1)
    order = np.argsort(-sims, axis=1)
    nb, sims = np.take_along_axis(nb, order, axis=1), np.take_along_axis(sims, order, axis=1)
    by_neighbours = np.stack([place_by_neighbours(coords[n], s) for n, s in zip(nb, sims)])
    nearest_only = coords[nb[:, 0]]
    nb_s = time.perf_counter() - t0
    scale = float(np.median(np.linalg.norm(coords - coords.mean(axis=0), axis=1)))
    spread = np.median([np.median(np.linalg.norm(coords[n] - coords[n].mean(axis=0), axis=1)) for n in nb])

    def dist(a):
        return np.linalg.norm(a - by_umap, axis=1) / scale

    row = {"bundle": str(args.bundle), "n_fitted": int(len(fitted)), "held_out": int(len(held)),
           "umap_fit_s": round(fit_s, 1), "umap_transform_s": round(umap_s, 2),
           "neighbour_placement_s": round(nb_s, 3), "map_scale": scale,
           "neighbours_spread_median": float(spread / scale),
           "weighted_vs_umap_median": float(np.median(dist(by_neighbours))),
           "weighted_vs_umap_p90": float(np.percentile(dist(by_neighbours), 90)),
           "nearest_vs_umap_median": float(np.median(dist(nearest_only))),
           "nearest_vs_umap_p90": float(np.percentile(dist(nearest_only), 90))}
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""2-D map of the embeddings: PCA to ~50 dimensions, then UMAP (n_neighbors 15, low_memory, init="pca"; cuML's
UMAP when a GPU and cuml are present).

Above ``SAMPLE_ABOVE`` objects UMAP is fitted on a sample of ``SAMPLE_SIZE`` (``choose_sample``: every family of
the embedding keeps a share, so rare kinds of object are on the fitted map) and every other object is placed from
its 15 nearest sampled objects in the PCA space, weighted as UMAP weighs a point's neighbours (``place_rest``, faiss
k-NN in chunks): UMAP's cost grows with N log N on one core, placement is one k-NN query per object
(benchmarks/bench_projection.py compares the two at 1 M).

Nothing fitted is saved as a pickle: bundles travel between people, and unpickling one runs whatever it holds. A new
cutout is placed on the map from its neighbours' map positions (``core.placement``), weighted the way UMAP
weighs a point's neighbours when it starts ``transform`` (benchmarks/bench_placement.py measures how close that
lands to ``umap.transform``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def fit_pca(x: np.ndarray, n_components: int, seed: int = 0):
    from sklearn.decomposition import PCA

    n_components = int(min(n_components, x.shape[1], max(1, x.shape[0] - 1)))
    return PCA(n_components=n_components, random_state=seed, svd_solver="randomized" if x.shape[0] > 5000 else "auto").fit(x)


def _cuml_available() -> bool:
    try:
        import cuml  # noqa: F401
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def fit_umap(x: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "euclidean", seed: int = 0):
    """Return (reducer, coords). Coordinates are float32 (N, 2)."""
    n_neighbors = int(max(2, min(n_neighbors, len(x) - 1)))
    if _cuml_available():
        from cuml.manifold import UMAP as CuUMAP

        reducer = CuUMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, init="spectral", random_state=seed)
        coords = reducer.fit_transform(x)
        return reducer, np.asarray(coords, dtype=np.float32)
    import umap

    # With random_state set umap-learn runs single-threaded; the map is then reproducible, which the cache needs.
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, init="pca", low_memory=True,
                        random_state=seed, n_jobs=1, n_components=2, verbose=False)
    coords = reducer.fit_transform(x)
    return reducer, np.asarray(coords, dtype=np.float32)


# PCA is fitted on at most this many rows: 50 components of a 2048-d embedding are settled long before that, and the
# float32 copy it needs (1.6 GB here) stays bounded however many objects there are (8 GB at 1 M x 2048 otherwise).
PCA_FIT_ROWS = 200_000


def reduce_with_pca(embeddings: np.ndarray, pca_dim: int, seed: int = 0, fit_rows: int = PCA_FIT_ROWS,
                    chunk: int = 65_536):
    """(fitted PCA, (N, pca_dim) float32 projections) of ``embeddings`` (array or memory map, any float dtype),
    fitting on a seeded sample of ``fit_rows`` rows (all of them when fewer) and transforming chunk by chunk."""
    n = len(embeddings)
    rows = np.arange(n) if n <= fit_rows else np.sort(np.random.default_rng(seed).choice(n, fit_rows, replace=False))
    pca = fit_pca(np.asarray(embeddings[rows], dtype=np.float32), pca_dim, seed)
    from core.arrays import release_pages

    reduced = np.empty((n, pca.n_components_), dtype=np.float32)
    for start in range(0, n, chunk):
        reduced[start:start + chunk] = pca.transform(np.asarray(embeddings[start:start + chunk], dtype=np.float32))
        if start // chunk % 16 == 15:
            release_pages(embeddings)
    release_pages(embeddings)
    return pca, reduced


SAMPLE_ABOVE = 250_000      # more objects than this: fit UMAP on a sample and place the rest
SAMPLE_SIZE = 200_000
SAMPLE_GROUPS = 256          # k-means families the sample is stratified by
PLACE_K = 15


def fitted_objects(n: int, sample_above: int = SAMPLE_ABOVE, sample_size: int = SAMPLE_SIZE) -> int:
    """How many of ``n`` objects UMAP is fitted on: all of them, or a sample above ``sample_above``."""
    return min(n, sample_size) if n > sample_above else n


def group_labels(reduced: np.ndarray, n_groups: int = SAMPLE_GROUPS, seed: int = 0, chunk: int = 262_144) -> np.ndarray:
    """k-means family (0..n_groups-1) of every row, the centres trained on at most 256 rows per family."""
    import faiss

    n, d = reduced.shape
    n_groups = int(min(n_groups, max(1, n // 40)))
    rng = np.random.default_rng(seed)
    train = reduced[np.sort(rng.choice(n, min(n, n_groups * 256), replace=False))]
    km = faiss.Kmeans(d, n_groups, niter=15, seed=int(seed), verbose=False)
    km.train(np.ascontiguousarray(train, dtype=np.float32))
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk):
        labels[start:start + chunk] = km.index.search(np.ascontiguousarray(reduced[start:start + chunk]), 1)[1][:, 0]
    return labels


def sample_quotas(counts: np.ndarray, size: int) -> np.ndarray:
    """How many rows of each family the sample takes: every family at least ``size / (4 x families)`` rows (all of
    it when smaller), the rest of the sample in proportion to what each family has left."""
    counts = np.asarray(counts, dtype=np.int64)
    floor = np.minimum(counts, max(1, size // (4 * max(1, len(counts)))))
    left, spare = counts - floor, size - int(floor.sum())
    extra = np.floor(left * (spare / max(1, int(left.sum())))).astype(np.int64) if spare > 0 else 0
    return np.minimum(counts, floor + extra)


def choose_sample(reduced: np.ndarray, size: int = SAMPLE_SIZE, seed: int = 0,
                  n_groups: int = SAMPLE_GROUPS) -> np.ndarray:
    """Sorted row numbers of a sample of about ``size`` rows, stratified by k-means family (``sample_quotas``)."""
    n = len(reduced)
    if n <= size:
        return np.arange(n)
    labels = group_labels(reduced, n_groups, seed)
    quotas = sample_quotas(np.bincount(labels), size)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(n)
    order = order[np.argsort(labels[order], kind="stable")]      # families in turn, random order inside each
    starts = np.searchsorted(labels[order], np.arange(len(quotas)))
    rank = np.arange(n) - starts[labels[order]]
    return np.sort(order[rank < quotas[labels[order]]])


def place_rest(reduced: np.ndarray, fitted_rows: np.ndarray, fitted_xy: np.ndarray, k: int = PLACE_K,
               chunk: int = 131_072, nprobe: int = 16) -> np.ndarray:
    """(N, 2) map positions of every row: the fitted rows keep theirs, the others are placed from their ``k``
    nearest fitted rows (faiss IVF k-NN in the PCA space, Euclidean as UMAP's) with UMAP's membership weights."""
    import faiss

    from core.placement import place_rows

    fitted = np.ascontiguousarray(reduced[fitted_rows], dtype=np.float32)
    m, d = fitted.shape
    nlist = int(max(1, min(4 * np.sqrt(m), m // 39)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    index.train(fitted)
    index.add(fitted)
    index.nprobe = min(nprobe, nlist)
    coords = np.empty((len(reduced), 2), dtype=np.float32)
    coords[fitted_rows] = fitted_xy
    rest = np.setdiff1d(np.arange(len(reduced)), fitted_rows)
    for start in range(0, len(rest), chunk):
        rows = rest[start:start + chunk]
        dist2, ids = index.search(np.ascontiguousarray(reduced[rows], dtype=np.float32), k)
        missing = ids < 0                      # fewer than k found in the probed lists: weight those zero
        ids = np.where(missing, ids[:, :1], ids)
        dist = np.where(missing, np.inf, np.sqrt(np.maximum(dist2, 0)))
        coords[rows] = place_rows(ids, dist, fitted_xy)
    return coords


def project(embeddings: np.ndarray, folder: str | Path, pca_dim: int = 50, n_neighbors: int = 15,
            min_dist: float = 0.1, metric: str = "euclidean", seed: int = 0, sample_above: int = SAMPLE_ABOVE,
            sample_size: int = SAMPLE_SIZE, log=None) -> tuple[np.ndarray, dict]:
    """Fit PCA then UMAP on ``embeddings`` (on a sample, the rest placed, above ``sample_above`` objects); write
    ``projection.json`` (the parameters) into ``folder``; return (coords (N, 2) float32, the parameters used)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pca, reduced = reduce_with_pca(embeddings, pca_dim, seed)
    sample = np.round(reduced[:10_000], 5)
    if len(reduced) > 2 and len(np.unique(sample, axis=0)) < 3:   # UMAP spends minutes on this, then fails
        from core.contract import BundleError

        raise BundleError(f"the embeddings hold fewer than 3 distinct vectors among their first {len(sample):,} rows: "
                          "there is nothing to map (check that they are not one vector repeated)")
    sampled = fitted_objects(len(reduced), sample_above, sample_size) < len(reduced)
    if sampled:
        rows = choose_sample(reduced, sample_size, seed)
        if log:
            log(f"[project] {len(reduced):,} objects is more than {sample_above:,}: UMAP of a {len(rows):,}-object "
                f"sample (every k-means family kept), the other {len(reduced) - len(rows):,} placed from their "
                f"{PLACE_K} nearest sampled objects")
        _, fitted_xy = fit_umap(reduced[rows], n_neighbors, min_dist, metric, seed)
        coords = place_rest(reduced, rows, fitted_xy)
    else:
        _, coords = fit_umap(reduced, n_neighbors, min_dist, metric, seed)
    if not np.isfinite(coords).all():
        from core.contract import BundleError

        raise BundleError("UMAP produced non-finite map positions; check the embeddings for near-duplicate vectors")
    params = {"pca_dim": int(pca.n_components_), "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
              "pca_fit_rows": int(min(len(reduced), PCA_FIT_ROWS)),
              "n_neighbors": int(min(n_neighbors, len(reduced) - 1)), "min_dist": min_dist, "metric": metric,
              "seed": seed, "init": "pca", "low_memory": True,
              "backend": "cuml" if _cuml_available() else "umap-learn",
              "placement": "new objects: UMAP-weighted mean of their neighbours' map positions",
              "strategy": "sampled" if sampled else "full",
              "fitted_objects": int(len(rows) if sampled else len(reduced))}
    if sampled:
        params["sampled"] = {"above": int(sample_above), "size": int(sample_size), "groups": SAMPLE_GROUPS,
                             "place_k": PLACE_K, "how": "UMAP fitted on a sample stratified by k-means family of the "
                             "PCA vectors; every other object at the UMAP-weighted mean of its nearest sampled objects"}
    (folder / "projection.json").write_text(json.dumps(params, indent=2))
    return coords, params

"""2-D map of the embeddings: PCA to ~50 dimensions, then UMAP (n_neighbors 15, low_memory, init="pca"; cuML's
UMAP when a GPU and cuml are present).

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
    reduced = np.empty((n, pca.n_components_), dtype=np.float32)
    for start in range(0, n, chunk):
        reduced[start:start + chunk] = pca.transform(np.asarray(embeddings[start:start + chunk], dtype=np.float32))
    return pca, reduced


def project(embeddings: np.ndarray, folder: str | Path, pca_dim: int = 50, n_neighbors: int = 15,
            min_dist: float = 0.1, metric: str = "euclidean", seed: int = 0) -> tuple[np.ndarray, dict]:
    """Fit PCA then UMAP on ``embeddings``; write ``projection.json`` (the parameters) into ``folder``; return
    (coords (N, 2) float32, the parameters used)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pca, reduced = reduce_with_pca(embeddings, pca_dim, seed)
    sample = np.round(reduced[:10_000], 5)
    if len(reduced) > 2 and len(np.unique(sample, axis=0)) < 3:   # UMAP spends minutes on this, then fails
        from core.contract import BundleError

        raise BundleError(f"the embeddings hold fewer than 3 distinct vectors among their first {len(sample):,} rows: "
                          "there is nothing to map (check that they are not one vector repeated)")
    _, coords = fit_umap(reduced, n_neighbors, min_dist, metric, seed)
    if not np.isfinite(coords).all():
        from core.contract import BundleError

        raise BundleError("UMAP produced non-finite map positions; check the embeddings for near-duplicate vectors")
    params = {"pca_dim": int(pca.n_components_), "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
              "pca_fit_rows": int(min(len(reduced), PCA_FIT_ROWS)),
              "n_neighbors": int(min(n_neighbors, len(reduced) - 1)), "min_dist": min_dist, "metric": metric,
              "seed": seed, "init": "pca", "low_memory": True,
              "backend": "cuml" if _cuml_available() else "umap-learn",
              "placement": "new objects: UMAP-weighted mean of their neighbours' map positions"}
    (folder / "projection.json").write_text(json.dumps(params, indent=2))
    return coords, params

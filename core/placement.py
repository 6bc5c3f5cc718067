"""Placing a new object on a bundle's map without refitting or unpickling anything: the UMAP-weighted mean of its
nearest objects' map positions (the weights UMAP itself gives a point's neighbours)."""
from __future__ import annotations

import numpy as np


def neighbour_weights(similarities: np.ndarray, n_iter: int = 64) -> np.ndarray:
    """UMAP's membership strengths of a point's k neighbours (smooth_knn_dist): w_i = exp(-(d_i - rho) / sigma),
    d = 1 - cosine, rho the nearest distance, sigma such that the weights sum to log2(k); normalised to sum 1."""
    d = 1.0 - np.asarray(similarities, dtype=np.float64)
    k = len(d)
    if k == 1:
        return np.ones(1)
    excess = np.maximum(d - d.min(), 0.0)
    target = np.log2(k)
    lo, hi = 1e-12, 1e6
    for _ in range(n_iter):     # bisection in log space: the sum rises monotonically with sigma
        sigma = np.sqrt(lo * hi)
        if np.exp(-excess / sigma).sum() > target:
            hi = sigma
        else:
            lo = sigma
    w = np.exp(-excess / np.sqrt(lo * hi))
    return w / w.sum()


def place_by_neighbours(neighbour_xy: np.ndarray, similarities: np.ndarray, k: int = 15) -> np.ndarray:
    """Map position (2,) of a new object from its nearest objects' positions (best first) and cosine similarities."""
    xy = np.asarray(neighbour_xy, dtype=np.float64)[:k]
    if len(xy) == 0:
        raise ValueError("no neighbours to place the object by")
    return neighbour_weights(np.asarray(similarities)[: len(xy)]) @ xy

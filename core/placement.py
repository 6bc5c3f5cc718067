"""Placing objects on a map without refitting or unpickling anything: the UMAP-weighted mean of their nearest
fitted objects' map positions (the weights UMAP itself gives a point's neighbours). One object at a time for a
fetched cutout, millions at once for the objects a sampled projection did not fit (``precompute.project``)."""
from __future__ import annotations

import numpy as np


def membership_weights(distances: np.ndarray, n_iter: int = 64) -> np.ndarray:
    """UMAP's membership strengths (smooth_knn_dist) of each row's k neighbours: w_i = exp(-(d_i - rho) / sigma),
    rho the row's nearest distance, sigma such that a row's weights sum to log2(k); normalised to sum 1 per row.
    ``distances`` is (N, k) or (k,); the bisection on sigma runs for all rows at once."""
    d = np.asarray(distances, dtype=np.float64)
    one = d.ndim == 1
    d = np.atleast_2d(d)
    k = d.shape[1]
    if k == 1:
        w = np.ones_like(d)
        return w[0] if one else w
    excess = np.maximum(d - d.min(axis=1, keepdims=True), 0.0)
    target = np.log2(k)
    lo, hi = np.full((len(d), 1), 1e-12), np.full((len(d), 1), 1e6)
    for _ in range(n_iter):     # bisection in log space: the sum rises monotonically with sigma
        sigma = np.sqrt(lo * hi)
        above = np.exp(-excess / sigma).sum(axis=1, keepdims=True) > target
        hi = np.where(above, sigma, hi)
        lo = np.where(above, lo, sigma)
    w = np.exp(-excess / np.sqrt(lo * hi))
    w /= w.sum(axis=1, keepdims=True)
    return w[0] if one else w


def neighbour_weights(similarities: np.ndarray, n_iter: int = 64) -> np.ndarray:
    """Membership weights of one object's neighbours from their cosine similarities (d = 1 - cosine)."""
    return membership_weights(1.0 - np.asarray(similarities, dtype=np.float64), n_iter)


def place_by_neighbours(neighbour_xy: np.ndarray, similarities: np.ndarray, k: int = 15) -> np.ndarray:
    """Map position (2,) of a new object from its nearest objects' positions (best first) and cosine similarities."""
    xy = np.asarray(neighbour_xy, dtype=np.float64)[:k]
    if len(xy) == 0:
        raise ValueError("no neighbours to place the object by")
    return neighbour_weights(np.asarray(similarities)[: len(xy)]) @ xy


def place_rows(neighbour_ids: np.ndarray, distances: np.ndarray, fitted_xy: np.ndarray) -> np.ndarray:
    """(N, 2) float32 map positions of N objects from their k nearest fitted objects (ids into ``fitted_xy``) and
    the distances to them, in the space the map was fitted in."""
    w = membership_weights(distances)
    return np.einsum("nk,nkd->nd", w, np.asarray(fitted_xy, dtype=np.float64)[neighbour_ids]).astype(np.float32)

"""The projection stage's PCA: fitted on a bounded sample, applied chunk by chunk to a memory map."""
from __future__ import annotations

import numpy as np

from precompute.project import fit_pca, reduce_with_pca


def _embeddings(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(8, dim))
    x = rng.normal(size=(n, 8)) * np.linspace(3, 0.5, 8) @ basis + 0.05 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def test_all_rows_fit_when_few_and_chunks_match_one_transform(tmp_path):
    x = _embeddings(3000)
    np.save(tmp_path / "e.npy", x)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    pca, reduced = reduce_with_pca(mapped, 5, seed=0, chunk=700)
    whole = fit_pca(x.astype(np.float32), 5, 0)
    assert reduced.dtype == np.float32 and reduced.shape == (3000, 5)
    np.testing.assert_allclose(pca.components_, whole.components_, atol=1e-6)
    np.testing.assert_allclose(reduced, whole.transform(x.astype(np.float32)), atol=1e-5)


def test_sampled_fit_finds_the_same_subspace(tmp_path):
    x = _embeddings(6000, seed=1)
    sampled, reduced = reduce_with_pca(x, 4, seed=0, fit_rows=1500, chunk=1000)
    full = fit_pca(x.astype(np.float32), 4, 0)
    # principal angles between the two 4-d subspaces: all cosines near 1
    cosines = np.linalg.svd(sampled.components_ @ full.components_.T, compute_uv=False)
    assert cosines.min() > 0.98, cosines
    assert np.isfinite(reduced).all() and reduced.shape == (6000, 4)

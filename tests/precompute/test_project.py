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


# ------------------------------------------------------------------------------------------------ sampled UMAP
def _families(seed: int = 0):
    """Three families in 8-d, one of them rare (60 of 20,060 objects)."""
    rng = np.random.default_rng(seed)
    sizes, centres = (14_000, 6_000, 60), (0.0, 6.0, -6.0)
    x = np.concatenate([rng.normal(c, 1.0, (m, 8)) for m, c in zip(sizes, centres)]).astype(np.float32)
    return x, np.repeat(np.arange(3), sizes)


def test_quotas_fill_the_sample_and_keep_a_floor_for_every_family():
    from precompute.project import sample_quotas

    counts = np.array([10, 5_000, 40, 100_000])
    q = sample_quotas(counts, 2_000)
    assert (q <= counts).all() and 1_900 <= q.sum() <= 2_000
    assert q[0] == 10 and q[2] == 40, "small families keep a floor (here all of them), not their 0.04 % share"
    assert q[3] > q[1] > q[2]


def test_the_sample_keeps_a_rare_family_that_a_uniform_sample_would_thin_out():
    from precompute.project import choose_sample

    x, family = _families()
    rows = choose_sample(x, 2_000, seed=0, n_groups=16)
    assert len(np.unique(rows)) == len(rows) and 1_800 <= len(rows) <= 2_000
    assert (family[rows] == 2).sum() >= 30, "a uniform 10 % sample would hold ~6 of the 60"


def test_vectorised_membership_weights_equal_the_per_object_ones():
    from core.placement import membership_weights, neighbour_weights

    rng = np.random.default_rng(1)
    sims = np.sort(rng.uniform(0.2, 0.99, (50, 15)), axis=1)[:, ::-1]
    together = membership_weights(1.0 - sims)
    one_by_one = np.stack([neighbour_weights(s) for s in sims])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-10)
    np.testing.assert_allclose(together.sum(axis=1), 1.0)


def test_above_the_threshold_umap_is_fitted_on_a_sample_and_the_rest_placed_beside_their_family(tmp_path):
    import json

    from scipy.spatial import cKDTree

    from precompute.project import project

    x, family = _families(2)
    logged = []
    coords, params = project(x, tmp_path, pca_dim=8, sample_above=5_000, sample_size=2_000, log=logged.append)
    assert params["strategy"] == "sampled" and 1_800 <= params["fitted_objects"] <= 2_000
    assert json.loads((tmp_path / "projection.json").read_text())["sampled"]["size"] == 2_000
    assert "UMAP of a" in logged[0] and "placed from their 15 nearest sampled objects" in logged[0]
    assert coords.shape == (len(x), 2) and np.isfinite(coords).all()
    _, nb = cKDTree(coords).query(coords, 11)
    same = (family[nb[:, 1:]] == family[:, None]).mean(axis=1)
    assert same.mean() > 0.97 and same[family == 2].mean() > 0.9
    _, small = project(x[:3_000], tmp_path / "small", pca_dim=8, sample_above=5_000)
    assert small["strategy"] == "full" and small["fitted_objects"] == 3_000

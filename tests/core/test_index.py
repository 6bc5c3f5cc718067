"""Similarity index: each kind's recall against exact search, exact re-ranking, k > n, float16 input."""
import numpy as np
import pytest

from benchmarks.fixture_bundle import clustered_embeddings
from core.index import (KINDS, SimilaritySearch, build_index, choose_kind, exact_search, index_bytes,
                              recall_at_k)

N, DIM = 4000, 96


@pytest.fixture(scope="module")
def emb16():
    return clustered_embeddings(N, DIM, n_clusters=12, seed=3, intrinsic_dim=12)[0]


@pytest.fixture(scope="module")
def queries(emb16):
    rows = np.random.default_rng(0).choice(N, 40, replace=False)
    return np.asarray(emb16[rows], dtype=np.float32)


def brute_force(emb, q, k):
    s = np.asarray(emb, dtype=np.float32) @ (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    ids = np.argsort(-s, axis=0, kind="stable")[:k].T
    return np.take_along_axis(s.T, ids, axis=1), ids


def test_exact_search_matches_brute_force_on_float16(emb16, queries):
    sims, ids = exact_search(emb16, queries, k=10, chunk=1000)  # several chunks exercise the merge
    ref_s, ref_i = brute_force(emb16, queries, 10)
    assert np.array_equal(ids, ref_i)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)


def test_exact_search_single_query_uses_float16_path(emb16, queries):
    sims, ids = exact_search(emb16, queries[:1], k=5)
    ref_s, ref_i = brute_force(emb16, queries[:1], 5)
    assert np.array_equal(ids, ref_i)
    assert ids[0, 0] == np.flatnonzero((np.asarray(emb16, np.float32) == queries[0].astype(np.float16)).all(1))[0]


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_recalls_exact_neighbours(kind, emb16, queries):
    index = build_index(emb16, kind=kind, pca_dim=48)
    assert index.ntotal == N
    _, truth = exact_search(emb16, queries, 10)
    _, found = SimilaritySearch(index, emb16).search(queries, 10)
    assert recall_at_k(found, truth) >= 0.95, kind


@pytest.mark.parametrize("kind", ["pca_hnsw", "pca_ivf", "ivf_sq8"])
def test_compressed_candidates_are_reranked_exactly(kind, emb16, queries):
    search = SimilaritySearch(build_index(emb16, kind=kind, pca_dim=48), emb16)
    sims, ids = search.search(queries, 10)
    exact = np.einsum("qd,qkd->qk", queries / np.linalg.norm(queries, axis=1, keepdims=True),
                      np.asarray(emb16, np.float32)[ids])
    np.testing.assert_allclose(sims, exact, atol=1e-5)  # the similarities shown are exact cosines
    assert (np.diff(sims, axis=1) <= 1e-7).all()  # best first
    assert all(len(set(row)) == 10 for row in ids)  # no duplicate candidates


def test_query_that_is_an_object_finds_itself_first(emb16):
    search = SimilaritySearch(build_index(emb16, kind="pca_ivf", pca_dim=48), emb16)
    _, ids = search.search(np.asarray(emb16[[7, 123, 3999]], np.float32), 3)
    assert list(ids[:, 0]) == [7, 123, 3999]


@pytest.mark.parametrize("kind", KINDS)
def test_k_larger_than_n_returns_every_object_once(kind):
    emb = clustered_embeddings(300, 32, n_clusters=3, seed=1, intrinsic_dim=4)[0]
    search = SimilaritySearch(build_index(emb, kind=kind, pca_dim=16), emb, rerank=50)
    sims, ids = search.search(emb[:2], k=1000)
    assert ids.shape == (2, 300)
    valid = ids[ids >= 0]
    if kind == "flat":
        assert sorted(ids[0]) == list(range(300))
    else:  # a candidate index returns at most max(k, rerank) candidates, padded with -1 and -inf
        assert len(set(ids[0][ids[0] >= 0])) == (ids[0] >= 0).sum()
        assert np.isneginf(sims[ids < 0]).all() and len(valid) > 0


def test_unnormalised_float16_queries_are_normalised(emb16):
    search = SimilaritySearch(build_index(emb16, kind="flat"), emb16)
    q = (np.asarray(emb16[:3], np.float32) * 7).astype(np.float16)
    sims, ids = search.search(q, 1)
    assert list(ids[:, 0]) == [0, 1, 2]
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=2e-3)


def test_kind_is_chosen_by_size():
    assert choose_kind(5_000, 2048) == "flat"
    assert choose_kind(1_000_000, 2048) == "pca_ivf"
    assert choose_kind(60_000, 128) == "flat"
    assert choose_kind(60_000, 2048) == "pca_ivf"  # a 480 MB float32 copy is no longer cheap
    assert choose_kind(10_000_000, 128) == "pca_ivf"      # 1.36 GB of 8-bit codes
    assert choose_kind(20_000_000, 128) == "opq_ivfpq"    # 2.7 GB: product quantisation, 40 B/object
    assert choose_kind(10_000_000, 2048) == "opq_ivfpq"
    emb = clustered_embeddings(500, 16, n_clusters=2, intrinsic_dim=2)[0]
    assert type(build_index(emb)).__name__ == "IndexFlatIP"
    assert index_bytes(build_index(emb)) >= 500 * 16 * 4


def test_index_and_embeddings_of_different_length_are_refused(emb16):
    index = build_index(emb16[:100], kind="flat")
    with pytest.raises(ValueError, match="rebuild index.faiss"):
        SimilaritySearch(index, emb16)


def test_unknown_kind_is_refused(emb16):
    with pytest.raises(ValueError, match="unknown index kind"):
        build_index(emb16, kind="lsh")

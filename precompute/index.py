"""Similarity index over L2-normalised embeddings (cosine = inner product).

Chosen by size (DESIGN.md section 4): exact ``IndexFlatIP`` below ``EXACT_BELOW`` objects; above it a compressed
candidate index (IVF + SQ8) whose top ``rerank`` candidates are re-scored exactly on the stored float16 vectors.
The same ``SimilaritySearch`` object serves the pipeline's checks, the explorer and the benchmarks.
"""
from __future__ import annotations

import numpy as np

EXACT_BELOW = 100_000


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def build_index(embeddings: np.ndarray, exact_below: int = EXACT_BELOW, seed: int = 0, train_size: int = 200_000):
    """Return a faiss index over ``embeddings`` (rows must already be L2-normalised)."""
    import faiss

    n, d = embeddings.shape
    if n < exact_below:
        index = faiss.IndexFlatIP(d)
        for start in range(0, n, 100_000):
            index.add(_as_f32(embeddings[start : start + 100_000]))
        return index
    nlist = int(min(65536, max(256, 4 * np.sqrt(n))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max(train_size, 40 * nlist)), replace=False))
    index.train(_as_f32(embeddings[sample]))
    for start in range(0, n, 100_000):
        index.add(_as_f32(embeddings[start : start + 100_000]))
    index.nprobe = 32
    return index


class SimilaritySearch:
    """k-nearest neighbours by cosine similarity, exact re-ranking of compressed candidates."""

    def __init__(self, index, embeddings: np.ndarray, nprobe: int = 32, rerank: int = 100):
        import faiss

        self.index = index
        self.embeddings = embeddings
        self.rerank = rerank
        self.exact = isinstance(index, faiss.IndexFlat)
        if hasattr(index, "nprobe"):
            index.nprobe = nprobe

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Return (similarities, ids), each (n_queries, k), best first. Queries are normalised here."""
        q = _as_f32(np.atleast_2d(queries))
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        k = int(min(k, self.index.ntotal))
        if self.exact:
            sims, ids = self.index.search(q, k)
            return sims, ids
        kp = max(k, self.rerank)
        _, cand = self.index.search(q, kp)
        sims_out = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids_out = np.full((len(q), k), -1, dtype=np.int64)
        for row, (qv, c) in enumerate(zip(q, cand)):
            c = c[c >= 0]
            c_sorted = np.sort(c)  # sorted ids read the memory map sequentially
            s = np.asarray(self.embeddings[c_sorted], dtype=np.float32) @ qv
            top = np.argsort(-s)[:k]
            sims_out[row, : len(top)] = s[top]
            ids_out[row, : len(top)] = c_sorted[top]
        return sims_out, ids_out


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int = 10, chunk: int = 100_000):
    """Brute-force cosine top-k in chunks: the ground truth for recall measurements."""
    q = _as_f32(np.atleast_2d(queries))
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for start in range(0, len(embeddings), chunk):
        s = _as_f32(embeddings[start : start + chunk]) @ q.T  # (chunk, nq)
        kk = min(k, s.shape[0])
        part = np.argpartition(-s, kk - 1, axis=0)[:kk].T  # (nq, kk)
        cand_s = np.take_along_axis(s.T, part, axis=1)
        all_s = np.concatenate([best_s, cand_s], axis=1)
        all_i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(-all_s, axis=1)[:, :k]
        best_s = np.take_along_axis(all_s, order, axis=1)
        best_i = np.take_along_axis(all_i, order, axis=1)
    return best_s, best_i

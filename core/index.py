"""Similarity index over L2-normalised embeddings (cosine = inner product).

Chosen by size (docs/ARCHITECTURE.md "Measured choices", figures in docs/SCALING.md): an exact ``IndexFlatIP``
below ``EXACT_BELOW`` objects; above it a small candidate index whose top ``rerank`` candidates are re-scored exactly on the bundle's
own float16 vectors, so the similarities the app shows are always exact cosines.

Kinds (``build_index(..., kind=...)``), measured in docs/SCALING.md:

``flat``       exact inner product; 4 bytes × dim per object on top of the embeddings.
``pca_ivf``    PCA to ``pca_dim`` (default 256), then inverted lists (≈ √N lists) of 8-bit scalar-quantised codes,
               searched with the L2 metric. Default above the flat limit: at 1 M × 2048, nprobe 32 and 200
               re-ranked candidates gave recall@10 0.977 at ≈ 3 ms per query on a quiet 2-core box (nprobe 64:
               the same recall at 6 ms; the re-rank count, not nprobe, sets the recall), 284 B/object, 3 min to
               build.
``pca_hnsw``   PCA, then an HNSW graph over 8-bit codes. Fast (≈ 1–2 ms) but its recall stalls at ≈ 0.94 on
               clustered embeddings whatever efSearch (probably greedy search from one entry point staying in the
               wrong family), and it builds ~8× slower; kept for comparison.
``ivf_sq8``    inverted lists over the full dimension with 8-bit codes; k-means in 2048-d makes it slow to build.
``opq_ivfpq``  for 100 M+: an OPQ rotation, inverted lists (≈ 4√N) and product-quantised codes of ``pq_bytes``
               (default 32) bytes, searched with L2: ≈ 40 B/object in RAM (4 GB at 100 M) against ≈ 270 B for
               ``pca_ivf``. Chosen when ``pca_ivf`` would pass ``INDEX_RAM_BUDGET``; searched by default with
               nprobe 128 and 400 candidates re-ranked on the full float16 vectors from the bundle's memory map
               (recall@10 0.952 at 200 k × 2048, 0.887 with 64 and 200; ``pca_ivf`` 0.995 with 64 and 200).

Why L2 after PCA: faiss' PCA centres the data, and inner products of centred projections no longer rank like
cosines (the common direction of the embeddings moves into a per-object offset), while distances are unchanged
by centring, and for unit vectors ‖q − x‖² = 2 − 2 q·x ranks exactly like cosine.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

EXACT_BELOW = 100_000
FLAT_MAX_BYTES = 256 * 2**20
INDEX_RAM_BUDGET = 2 * 2**30    # bytes of pca_ivf codes above which the PQ index is chosen
KINDS = ("flat", "pca_hnsw", "pca_ivf", "ivf_sq8", "opq_ivfpq")


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _add_in_chunks(index, embeddings: np.ndarray, chunk: int = 100_000) -> None:
    from core.arrays import release_pages

    for start in range(0, len(embeddings), chunk):
        index.add(_as_f32(embeddings[start : start + chunk]))
        release_pages(embeddings)    # the file's pages stay cached, not counted against this process


def _training_sample(embeddings: np.ndarray, size: int, seed: int) -> np.ndarray:
    n = len(embeddings)
    from core.arrays import release_pages

    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, size), replace=False))
    sample = _as_f32(embeddings[rows])  # sorted rows read a memory map front to back
    release_pages(embeddings)
    return sample


def _nlist(n: int) -> int:
    return int(min(65536, max(64, 4 * np.sqrt(n))))


def pca_ivf_bytes(n: int, dim: int, pca_dim: int = 256) -> int:
    """RAM of a ``pca_ivf`` index: one 8-bit code per PCA dimension and an 8-byte id per object."""
    return n * (min(dim, pca_dim) + 8)


def _pq_subquantizers(dim: int, pq_bytes: int) -> int:
    """The largest number of 8-bit sub-quantisers up to ``pq_bytes`` that divides the OPQ output dimension."""
    out = min(4 * pq_bytes, dim)
    return next(m for m in range(min(pq_bytes, out), 0, -1) if out % m == 0)


def choose_kind(n: int, dim: int, exact_below: int = EXACT_BELOW, flat_max_bytes: int = FLAT_MAX_BYTES,
                ram_budget: int = INDEX_RAM_BUDGET) -> str:
    """The index kind ``build_index`` uses for ``n`` objects of ``dim`` dimensions.

    Exact while it stays small: fewer than ``exact_below`` objects and a float32 copy under ``flat_max_bytes``
    (a flat index duplicates the embeddings in float32 and one query reads all of it); ``pca_ivf`` while its codes
    fit ``ram_budget``; product quantisation (``opq_ivfpq``, ≈ 40 B/object) beyond.
    """
    if n < exact_below and n * dim * 4 <= flat_max_bytes:
        return "flat"
    return "pca_ivf" if pca_ivf_bytes(n, dim) <= ram_budget else "opq_ivfpq"


def build_index(embeddings: np.ndarray, exact_below: int = EXACT_BELOW, seed: int = 0, train_size: int = 200_000,
                kind: str | None = None, pca_dim: int = 256, hnsw_m: int = 32, ef_construction: int = 64,
                hnsw_storage: str = "sq8", pq_bytes: int = 32):
    """Return a faiss index over ``embeddings`` (rows already L2-normalised; float16 memory maps are fine).

    ``kind`` is one of ``KINDS``; by default ``choose_kind(n, dim, exact_below)``.
    """
    import faiss

    n, d = embeddings.shape
    kind = kind or choose_kind(n, d, exact_below)
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "pca_hnsw":
        pca_dim = min(pca_dim, d)
        if hnsw_storage == "sq8":
            inner = faiss.IndexHNSWSQ(pca_dim, faiss.ScalarQuantizer.QT_8bit, hnsw_m, faiss.METRIC_L2)
        else:
            inner = faiss.IndexHNSWFlat(pca_dim, hnsw_m, faiss.METRIC_L2)
        inner.hnsw.efConstruction = ef_construction
        index = faiss.IndexPreTransform(faiss.PCAMatrix(d, pca_dim), inner)
        index.train(_training_sample(embeddings, min(train_size, max(10 * pca_dim, 50_000)), seed))
    elif kind == "pca_ivf":
        pca_dim = min(pca_dim, d)
        nlist = int(max(16, min(65536, np.sqrt(n))))  # ~1 000 lists of ~1 000 at 1 M: cheap k-means, fine scans
        inner = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(pca_dim), pca_dim, nlist,
                                              faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        inner.cp.niter = 10
        index = faiss.IndexPreTransform(faiss.PCAMatrix(d, pca_dim), inner)
        index.train(_training_sample(embeddings, min(n, max(50_000, 50 * nlist)), seed))
    elif kind == "opq_ivfpq":
        m = _pq_subquantizers(d, pq_bytes)
        nlist = _nlist(n)
        index = faiss.index_factory(d, f"OPQ{m}_{min(4 * m, d)},IVF{nlist},PQ{m}", faiss.METRIC_L2)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.cp.niter = 10
        # Polysemous training only reorders each sub-quantiser's codes for Hamming pre-filtering, which search never
        # uses (polysemous_ht 0): 37 s of a 4,000-object test's build, 12 s at 1 M x 128; recall unchanged.
        ivf.do_polysemous_training = False
        index.train(_training_sample(embeddings, min(n, max(100_000, 40 * nlist)), seed))
    else:
        nlist = _nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(embeddings, max(train_size, 40 * nlist), seed))
    _add_in_chunks(index, embeddings)
    return index


def index_bytes(index) -> int:
    """Serialised size of a faiss index (what ``index.faiss`` takes on disk)."""
    import faiss

    return int(faiss.serialize_index(index).size)


# opq_ivfpq at 200 k x 2048 (docs/SCALING.md): recall@10 0.887 with nprobe 64 and 200 re-ranked, 0.952 with
# 128 and 400 (5.7 ms); pca_ivf reaches 0.995 with 64 and 200.
PQ_NPROBE, PQ_RERANK = 128, 400


def _is_product_quantised(index) -> bool:
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    return isinstance(faiss.downcast_index(inner), faiss.IndexIVFPQ)


def _set_search_params(index, params: dict) -> None:
    import faiss

    space = faiss.ParameterSpace()
    for name, value in params.items():
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:
            pass  # the parameter does not apply to this kind of index (e.g. nprobe on HNSW)


@contextmanager
def _faiss_threads(n: int | None):
    """Run faiss with ``n`` OpenMP threads (None: leave as is), restoring the setting afterwards."""
    import faiss

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class SimilaritySearch:
    """k-nearest neighbours by cosine similarity; compressed candidates are re-ranked exactly.

    ``embeddings`` are the bundle's (memory-mapped) vectors; ``rerank`` candidates per query are read from them.
    Small batches run on one faiss thread: on a busy server OpenMP's thread start-up and spinning cost more than
    the search itself (measured 16 ms with 2 threads vs 0.05 ms with 1 for one HNSW query on a loaded 2-core box).
    """

    single_thread_below = 16

    def __init__(self, index, embeddings: np.ndarray, nprobe: int | None = None, rerank: int | None = None,
                 ef_search: int = 256):
        import faiss

        if index.ntotal != len(embeddings):
            raise ValueError(f"the index holds {index.ntotal} vectors but there are {len(embeddings)} embeddings; "
                             "rebuild index.faiss from embeddings.npy")
        self.index = index
        self.embeddings = embeddings
        # defaults by kind: product-quantised codes are coarser and need more lists and candidates
        pq = _is_product_quantised(index)
        nprobe = nprobe if nprobe is not None else (PQ_NPROBE if pq else 32)
        rerank = rerank if rerank is not None else (PQ_RERANK if pq else 200)
        self.rerank = rerank
        self.exact = isinstance(index, faiss.IndexFlat)
        _set_search_params(index, {"nprobe": nprobe, "efSearch": max(ef_search, rerank)})

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Return (similarities, ids), each (n_queries, k), best first. Queries are normalised here."""
        q = _as_f32(np.atleast_2d(queries))
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        k = int(min(k, self.index.ntotal))
        with _faiss_threads(1 if len(q) <= self.single_thread_below else None):
            if self.exact:
                return self.index.search(q, k)
            _, cand = self.index.search(q, max(k, self.rerank))
        return self._rerank(q, cand, k)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims_out = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids_out = np.full((len(q), k), -1, dtype=np.int64)
        for row, (qv, c) in enumerate(zip(q, cand)):
            c_sorted = np.unique(c[c >= 0])  # sorted ids read the memory map front to back
            s = np.asarray(self.embeddings[c_sorted], dtype=np.float32) @ qv
            top = np.argsort(-s, kind="stable")[:k]
            sims_out[row, : len(top)] = s[top]
            ids_out[row, : len(top)] = c_sorted[top]
        return sims_out, ids_out


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int = 10, chunk: int = 65_536):
    """Brute-force cosine top-k over (memory-mapped) embeddings: the ground truth for recall measurements.

    Scores each chunk with torch: a few queries in the embeddings' own dtype (a float16 matrix-vector product reads
    2 bytes per value instead of converting the chunk to float32 first: ≈ 20× faster than numpy here), batches in
    float32 after one conversion per chunk; on a GPU every chunk is multiplied there in its own dtype. Keeps a
    generous shortlist per chunk and re-scores it in float32, so ties at float16 resolution cannot change the answer.
    """
    import torch

    q = _as_f32(np.atleast_2d(queries))
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    n = len(embeddings)
    k = int(min(k, n))
    shortlist = min(n, 4 * k + 32)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.empty((len(q), 0), dtype=np.int64)
    gpu = torch.cuda.is_available()
    tq = torch.from_numpy(q).to("cuda" if gpu else "cpu")
    for start in range(0, n, chunk):
        if len(q) > 8 and not gpu:  # CPU float16 matrix-matrix products are slow: convert once, float32 BLAS
            block = torch.from_numpy(_as_f32(embeddings[start : start + chunk]))
        else:
            block = _as_torch(embeddings[start : start + chunk]).to(tq.device, non_blocking=True)
        s = (tq.to(block.dtype) @ block.T).float()  # (nq, rows)
        top = torch.topk(s, min(shortlist, s.shape[1]), dim=1)
        all_s = np.concatenate([best_s, top.values.cpu().numpy()], axis=1)
        all_i = np.concatenate([best_i, top.indices.cpu().numpy() + start], axis=1)
        keep = np.argsort(-all_s, axis=1, kind="stable")[:, :shortlist]
        best_s, best_i = np.take_along_axis(all_s, keep, axis=1), np.take_along_axis(all_i, keep, axis=1)
    return _rescore(embeddings, q, best_i, k)


def _as_torch(block: np.ndarray):
    import warnings

    import torch

    block = np.asarray(block)
    if block.dtype not in (np.float16, np.float32):
        block = block.astype(np.float32)
    with warnings.catch_warnings():  # a read-only memory map: torch only reads it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(block))


def _rescore(embeddings: np.ndarray, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact float32 cosine of each query against its candidate ids; keep the best ``k`` per query."""
    sims = np.empty((len(q), k), dtype=np.float32)
    ids = np.empty((len(q), k), dtype=np.int64)
    for row, (qv, c) in enumerate(zip(q, cand)):
        c = np.unique(c)
        s = _as_f32(embeddings[c]) @ qv
        top = np.argsort(-s, kind="stable")[:k]
        sims[row], ids[row] = s[top], c[top]
    return sims, ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids that ``found`` contains (rows are queries)."""
    hits = [len(np.intersect1d(f[f >= 0], t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in zip(found, truth)]
    return float(np.mean(hits))

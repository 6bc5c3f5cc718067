"""Compare similarity-index kinds: build time, bytes per object, single-query latency and recall@10 vs exact.

    python -m benchmarks.bench_index --n 200000 --dim 2048                 # synthetic clustered embeddings
    python -m benchmarks.bench_index --bundle bundles/bench-1m --kinds pca_hnsw ivf_sq8 --json idx.json

Queries are objects of the set itself (the explorer's "more like this one"), timed one at a time after warm-up,
as the app issues them. Recall is measured against ``exact_search`` on the same float16 vectors.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from core.index import KINDS, SimilaritySearch, build_index, exact_search, index_bytes, recall_at_k
from benchmarks.quick import add_quick, parse_quick


def time_queries(search, queries: np.ndarray, k: int = 10, warmup: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Run each query alone; return (per-query milliseconds, ids found)."""
    for q in queries[:warmup]:
        search(q[None], k)
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = search(q[None], k)
        times.append((time.perf_counter() - t) * 1e3)
        found.append(ids[0])
    return np.array(times), np.array(found)


def measure_kind(kind: str, emb: np.ndarray, queries: np.ndarray, truth: np.ndarray, exact_ms: float,
                 settings: list[dict], index=None) -> list[dict]:
    """Build an index of ``kind`` (or measure the given prebuilt ``index``) under each search setting."""
    t = time.perf_counter()
    index = build_index(emb, kind=kind) if index is None else index
    build_s = time.perf_counter() - t if kind != "prebuilt" else float("nan")
    nbytes = index_bytes(index)
    rows = []
    for s in settings if kind != "flat" else [{}]:
        if not _applies(index, s):
            continue
        search = SimilaritySearch(index, emb, **s).search
        ms, found = time_queries(search, queries)
        rows.append({
            "kind": kind, **s, "build_s": round(build_s, 1),
            "index_bytes_per_object": round(nbytes / len(emb), 1),
            "bytes_per_object_with_fp16": round(nbytes / len(emb) + emb.shape[1] * 2, 1),
            "p50_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "recall_at_10": round(recall_at_k(found, truth), 4),
            "speedup_vs_exact": round(exact_ms / float(np.median(ms)), 1),
        })
        print(rows[-1], flush=True)
    return rows


def _applies(index, setting: dict) -> bool:
    """Whether a search setting changes anything for this index (nprobe means nothing to HNSW and vice versa)."""
    import faiss

    text = type(faiss.downcast_index(index.index if isinstance(index, faiss.IndexPreTransform) else index)).__name__
    return ("nprobe" in setting) == ("IVF" in text) or text.startswith("IndexFlat")


def exact_baseline_ms(emb: np.ndarray, queries: np.ndarray, repeats: int = 3) -> float:
    """Median time of one exact query with exact_search on the (memory-mapped) float16 embeddings."""
    exact_search(emb, queries[:1])
    ts = []
    for q in queries[:repeats]:
        t = time.perf_counter()
        exact_search(emb, q[None])
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="use this bundle's embeddings.npy instead of synthetic ones")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--kinds", nargs="+", default=[k for k in KINDS if k != "flat"], choices=KINDS)
    p.add_argument("--bundle-index", action="store_true", help="measure the bundle's index.faiss, build nothing")
    p.add_argument("--json")
    add_quick(p, n=5_000, dim=32, queries=20)
    a = parse_quick(p, argv)
    if a.bundle:
        emb = np.load(f"{a.bundle}/embeddings.npy", mmap_mode="r")
    else:
        from benchmarks.fixture_bundle import clustered_embeddings

        emb = clustered_embeddings(a.n, a.dim)[0]
    rng = np.random.default_rng(1)
    queries = np.asarray(emb[np.sort(rng.choice(len(emb), a.queries, replace=False))], dtype=np.float32)
    t = time.perf_counter()
    _, truth = exact_search(emb, queries, 10)
    print(f"exact ground truth for {a.queries} queries: {time.perf_counter() - t:.1f} s", flush=True)
    exact_ms = exact_baseline_ms(emb, queries)
    print(f"exact single query: {exact_ms:.1f} ms", flush=True)
    settings = [{"ef_search": ef, "rerank": rr} for ef, rr in ((64, 50), (128, 100), (256, 200), (512, 400))]
    grid = settings + [{"nprobe": npb, "rerank": rr} for npb, rr in ((16, 100), (32, 100), (64, 200), (128, 400))]
    rows = []
    if a.bundle_index:
        import faiss

        index = faiss.read_index(f"{a.bundle}/index.faiss")
        a.kinds = []
        rows += measure_kind("prebuilt", emb, queries, truth, exact_ms, grid, index=index)
    for kind in a.kinds:
        rows += measure_kind(kind, emb, queries, truth, exact_ms, grid)
    result = {"n": len(emb), "dim": emb.shape[1], "dtype": str(emb.dtype), "exact_single_query_ms": exact_ms,
              "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

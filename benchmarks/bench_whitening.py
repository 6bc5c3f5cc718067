"""Does whitening a bundle's embeddings help its neighbours? 10-NN purity of a categorical column for the stored
(L2-normalised) embeddings and for PCA-whitened ones (eigenvalues floored at a fraction of the largest).

    .venv/bin/python benchmarks/bench_whitening.py --embeddings W/embed-KEY/embeddings.npy \\
        --catalog W/ingest-KEY/catalog.parquet --column truth_type

(a bundle's embeddings.npy and catalog.parquet work as well). 3,000 objects, 3 stratified splits.
"""
from __future__ import annotations

import argparse
import functools

from pathlib import Path

import numpy as np
import pandas as pd

from core import knowledge as kn
from benchmarks.quick import add_quick, parse_quick, quick_bundle


def whiten(x: np.ndarray, floor: float) -> np.ndarray:
    centred = x - x.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov(centred.T))
    return centred @ (eigvec / np.sqrt(eigval + floor * eigval.max()))


@functools.cache
def _quick_bundle() -> Path:
    return quick_bundle(n=1_000, dim=16)


def _quick_bundle_file(name: str) -> Path:
    return _quick_bundle() / name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--embeddings")
    p.add_argument("--catalog")
    p.add_argument("--column")
    p.add_argument("--n", type=int, default=3000)
    add_quick(p, embeddings=lambda: str(_quick_bundle_file("embeddings.npy")),
              catalog=lambda: str(_quick_bundle_file("catalog.parquet")), column="morph_class", n=500)
    args = parse_quick(p, argv)
    if not (args.embeddings and args.catalog and args.column):
        p.error("--embeddings, --catalog and --column are required (or --quick)")
    emb = np.load(args.embeddings).astype(np.float32)
    labels = pd.read_parquet(args.catalog)[args.column].astype(str).to_numpy()
    rows = np.sort(np.random.default_rng(0).choice(len(emb), min(args.n, len(emb)), replace=False))
    splits = kn.stratified_splits(labels[rows])[:3]
    for name, features in (("stored", emb), *((f"whitened, floor {f:g}", whiten(emb, f)) for f in (1e-3, 1e-2, 1e-1))):
        x, y = features[rows], labels[rows]
        purity = [kn.knn_purity(x[tr], y[tr], x[te], y[te]) for tr, te in splits]
        print(f"{name:24s} 10-NN purity {np.mean(purity):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

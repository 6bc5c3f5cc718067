"""Similarity search for the explorer: the query from positive/negative sets, faiss k-NN, and a sky duplicate filter.

Query vector (Rocchio-style relevance feedback)::

    q = normalise( mean(positives) - w * mean(negatives) )

Embeddings are L2-normalised and similarity is the inner product, so the mean of the positives points at the
centre of what the user likes; subtracting the (down-weighted, default w = 0.5) mean of the negatives turns the
query away from what they rejected without letting a single negative dominate. Renormalising keeps the scores
cosine similarities in [-1, 1], comparable with a single-object search.
"""
from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

DEFAULT_K = 12
DEFAULT_DUPLICATE_ARCSEC = 3.0
DEFAULT_NEGATIVE_WEIGHT = 0.5


@dataclass(frozen=True)
class Neighbours:
    ids: np.ndarray  # row indices into the bundle, best first
    similarities: np.ndarray  # cosine similarity to the query
    dropped_duplicates: int = 0


def query_vector(embeddings: np.ndarray, positives, negatives=(), negative_weight: float = DEFAULT_NEGATIVE_WEIGHT
                 ) -> np.ndarray:
    """The unit query vector from row ids of positive (required) and negative examples."""
    pos = np.asarray(sorted(set(int(i) for i in positives)), dtype=np.int64)
    if pos.size == 0:
        raise ValueError("a similarity search needs at least one positive example")
    q = np.asarray(embeddings[pos], dtype=np.float32).mean(axis=0)
    neg = np.asarray(sorted(set(int(i) for i in negatives) - set(pos.tolist())), dtype=np.int64)
    if neg.size:
        q = q - negative_weight * np.asarray(embeddings[neg], dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(q))
    if norm < 1e-6:  # positives and negatives cancel: fall back to the positives alone
        q = np.asarray(embeddings[pos], dtype=np.float32).mean(axis=0)
        norm = float(np.linalg.norm(q))
    return (q / max(norm, 1e-12)).astype(np.float32)


def drop_sky_duplicates(ids: np.ndarray, ra: np.ndarray, dec: np.ndarray, reference_ids, min_sep_arcsec: float
                        ) -> np.ndarray:
    """Boolean mask over ``ids`` keeping matches at least ``min_sep_arcsec`` from every reference object and from
    every better-ranked kept match (the same source catalogued twice, or overlapping cutouts)."""
    ids = np.asarray(ids, dtype=np.int64)
    keep = np.ones(len(ids), dtype=bool)
    if min_sep_arcsec <= 0 or len(ids) == 0:
        return keep
    ref = np.asarray(list(reference_ids), dtype=np.int64)
    allrows = np.concatenate([ref, ids])
    coords = SkyCoord(ra=np.asarray(ra)[allrows] * u.deg, dec=np.asarray(dec)[allrows] * u.deg, frame="icrs")
    sep = coords[:, None].separation(coords[None, :]).to_value(u.arcsec)  # (R+M, R+M), small: M ~ k
    close = sep < min_sep_arcsec
    nref = len(ref)
    for j in range(len(ids)):
        m = nref + j
        if close[m, :nref].any():
            keep[j] = False
            continue
        earlier = np.flatnonzero(keep[:j]) + nref
        if close[m, earlier].any():
            keep[j] = False
    return keep


def find_neighbours(searcher, embeddings: np.ndarray, ra: np.ndarray, dec: np.ndarray, positives, negatives=(),
                    k: int = DEFAULT_K, min_sep_arcsec: float = DEFAULT_DUPLICATE_ARCSEC,
                    negative_weight: float = DEFAULT_NEGATIVE_WEIGHT) -> Neighbours:
    """k most similar objects to the positives (minus negatives), excluding the examples themselves and sky
    duplicates. ``searcher`` is a ``core.index.SimilaritySearch``."""
    positives = [int(i) for i in positives]
    negatives = [int(i) for i in negatives]
    q = query_vector(embeddings, positives, negatives, negative_weight)
    examples = set(positives) | set(negatives)
    # Over-fetch: the examples themselves and duplicates are removed afterwards.
    fetch = k + len(examples) + max(8, k)
    sims, ids = searcher.search(q[None, :], k=fetch)
    sims, ids = sims[0], ids[0]
    ok = (ids >= 0) & ~np.isin(ids, list(examples))
    sims, ids = sims[ok], ids[ok]
    keep = drop_sky_duplicates(ids, ra, dec, positives, min_sep_arcsec)
    dropped = int((~keep).sum())
    return Neighbours(ids=ids[keep][:k].astype(np.int64), similarities=sims[keep][:k].astype(np.float32),
                      dropped_duplicates=dropped)

"""Stability under augmentations (Hayat et al. 2021, Fig. 9): does a galaxy rotated, shifted or given noise stay put
in the representation, while it wanders in pixel space?

Each sampled object gets fixed perturbed copies of its raw cutout (``PERTURBATIONS``: rotations, shifts, noise at
1-3 x the per-band MAD of the sample, the augmentations every survey's recipe trains with), and both spaces are
measured the same way:

- **rank**: the share of random pairs of objects that are closer to each other than the object is to its copy
  (distance 1 - cosine; 0 = the copy is nearer than any random pair, 0.5 = as far as a typical random pair). In the
  embedding space the vectors are the bundle's own (the encoder's preprocessing, views, centring and whitening); in
  pixel space they are the encoder's preprocessed inputs, flattened and centred;
- **map shift**: the distance between original and copy on a 2-D map of that space, divided by the median distance
  between random reference objects on it. With the caller's ``plane`` (the pipeline: UMAP with the bundle map's
  settings) each space gets its own map fitted on the reference objects, the originals and their copies together, as
  Hayat et al. drew Fig. 9 (representation plane against pixel plane); without, original and copy are placed on the
  bundle's map from their 15 nearest reference objects (``core.placement``), as the app places a clicked object's
  copies (a placement that hardly moves under isotropic noise in either space).

The summary is the median over all copies; ``rank_ratio`` = embedding / pixels (below 1: the embedding is the more
stable space). Nothing here is fitted or unpickled: embeddings come from the caller's ``embed`` function.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from core.placement import place_by_neighbours

NOISE_LEVELS = (1.0, 2.0, 3.0)
PERTURBATIONS = ("rotated 45°", "rotated 90°", "rotated 180°", "shifted 2 px", "shifted 4 px",
                 *(f"noise {k:g}× MAD" for k in NOISE_LEVELS))
PLACEMENT_K = 15
RANDOM_PAIRS = 20_000


def band_mad(images: np.ndarray) -> np.ndarray:
    """Per-band median absolute deviation of (N, C, H, W) images: the noise scale (as the reddening_psf_noise recipe's)."""
    per_band = np.moveaxis(np.asarray(images, np.float32), 1, 0).reshape(images.shape[1], -1)
    return np.median(np.abs(per_band - np.median(per_band, axis=1, keepdims=True)), axis=1)


def perturb(image: np.ndarray, name: str, mad: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One named perturbation of a raw (C, H, W) cutout, same shape (edges filled from the nearest pixels)."""
    image = np.asarray(image, np.float32)
    if name.startswith("rotated"):
        angle = float(name.split()[1].rstrip("°"))
        if angle % 90 == 0:
            return np.rot90(image, k=int(angle // 90), axes=(1, 2)).copy()
        return ndimage.rotate(image, angle, axes=(2, 1), reshape=False, order=1, mode="nearest")
    if name.startswith("shifted"):
        step = float(name.split()[1])
        dy, dx = step * np.array([np.sin(0.6), np.cos(0.6)])   # one fixed oblique direction
        return ndimage.shift(image, (0, dy, dx), order=1, mode="nearest")
    if name.startswith("noise"):
        k = float(name.split()[1].rstrip("×"))
        return image + rng.standard_normal(image.shape).astype(np.float32) * (k * mad)[:, None, None]
    raise ValueError(f"unknown perturbation {name!r}; known: {PERTURBATIONS}")


def perturbed_copies(images: np.ndarray, mad: np.ndarray, seed: int = 0,
                     names=PERTURBATIONS) -> np.ndarray:
    """(N, P, C, H, W): every perturbation of every image, noise seeded."""
    rng = np.random.default_rng(seed)
    return np.stack([np.stack([perturb(im, name, mad, rng) for name in names]) for im in np.asarray(images)])


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def random_pair_distances(vectors: np.ndarray, n_pairs: int = RANDOM_PAIRS, seed: int = 0) -> np.ndarray:
    """Sorted 1 - cosine between random pairs of distinct rows of (unit) ``vectors``."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n
    return np.sort(1.0 - np.einsum("ij,ij->i", vectors[i], vectors[j]))


def rank_among_random(distances: np.ndarray, random_sorted: np.ndarray) -> np.ndarray:
    """Share of random pairs closer than each distance (0: nearer than any random pair)."""
    return np.searchsorted(random_sorted, distances, side="left") / max(len(random_sorted), 1)


def place_on_map(queries: np.ndarray, reference: np.ndarray, reference_xy: np.ndarray,
                 k: int = PLACEMENT_K) -> np.ndarray:
    """(Q, 2) map positions of unit ``queries`` from their ``k`` most similar unit ``reference`` rows."""
    sims = queries @ reference.T
    k = min(k, reference.shape[0])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    out = np.empty((len(queries), 2))
    for q in range(len(queries)):
        order = top[q][np.argsort(-sims[q, top[q]])]
        out[q] = place_by_neighbours(reference_xy[order], sims[q, order], k)
    return out


def space_displacements(originals: np.ndarray, copies: np.ndarray, reference: np.ndarray,
                        reference_xy: np.ndarray | None, plane: Callable[[np.ndarray], np.ndarray] | None = None,
                        seed: int = 0) -> dict:
    """Per copy (N, P): rank among random pairs and map shift, for unit vectors of one space. With ``plane`` the
    map is fitted on the reference objects, originals and copies together (Hayat et al.'s Fig. 9); without, both are
    placed on ``reference_xy`` from their nearest reference objects."""
    n, p = copies.shape[:2]
    dist = 1.0 - np.einsum("nd,npd->np", originals, copies)
    ranks = rank_among_random(dist, random_pair_distances(reference, seed=seed))
    flat = copies.reshape(n * p, -1)
    if plane is not None:
        xy = np.asarray(plane(np.concatenate([reference, originals, flat])), np.float64)
        reference_xy, here, there = xy[:len(reference)], xy[len(reference):len(reference) + n], xy[len(reference) + n:]
    else:
        here, there = place_on_map(originals, reference, reference_xy), place_on_map(flat, reference, reference_xy)
    there = there.reshape(n, p, 2)
    shift = np.hypot(*(there - here[:, None, :]).transpose(2, 0, 1)) / median_map_distance(reference_xy, seed=seed)
    return {"rank": ranks, "map_shift": shift, "placed": here, "copies_placed": there}


def pixel_vectors(preprocessed: np.ndarray) -> np.ndarray:
    """Unit, centred, flattened preprocessed inputs: the pixel space the encoder starts from."""
    flat = np.asarray(preprocessed, np.float32).reshape(len(preprocessed), -1)
    return unit(flat - flat.mean(axis=1, keepdims=True))


def median_map_distance(xy: np.ndarray, n_pairs: int = RANDOM_PAIRS, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(xy), (2, n_pairs))
    return float(np.median(np.hypot(*(xy[i] - xy[j]).T))) or 1.0


def measure(images: np.ndarray, reference_images: np.ndarray, reference_xy: np.ndarray,
            embed: Callable[[np.ndarray], np.ndarray], preprocess: Callable[[np.ndarray], np.ndarray],
            seed: int = 0, names=PERTURBATIONS, plane: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Stability of ``images`` (N, C, H, W raw) under ``names``, against ``reference_images`` (their bundle-map
    positions ``reference_xy``) for the random pairs and the maps; ``embed``: raw images -> the bundle's embeddings,
    ``preprocess``: raw images -> the encoder's inputs; ``plane``: unit vectors -> their (M, 2) map. Returns the
    per-copy arrays and the summary."""
    images = np.asarray(images, np.float32)
    mad = band_mad(reference_images)
    copies = perturbed_copies(images, mad, seed, names)
    n, p = copies.shape[:2]
    flat = copies.reshape(n * p, *images.shape[1:])
    spaces = {}
    for space, to_vectors in (("embedding", lambda x: unit(embed(x))),
                              ("pixels", lambda x: pixel_vectors(preprocess(x)))):
        ref = to_vectors(reference_images)
        spaces[space] = space_displacements(to_vectors(images), to_vectors(flat).reshape(n, p, -1), ref,
                                            reference_xy, plane, seed)
    return {"names": list(names), "spaces": spaces, "summary": summarise(list(names), spaces, n, len(ref))}


def _median(x) -> float:
    return round(float(np.median(x)), 4)


def summarise(names: list[str], spaces: dict, n_objects: int, n_reference: int) -> dict:
    """The report's ``stability`` section: medians per perturbation and over all copies, and the two ratios."""
    emb, pix = spaces["embedding"], spaces["pixels"]
    rows = [{"name": name, "embedding_rank": _median(emb["rank"][:, a]), "pixel_rank": _median(pix["rank"][:, a]),
             "embedding_map_shift": _median(emb["map_shift"][:, a]), "pixel_map_shift": _median(pix["map_shift"][:, a])}
            for a, name in enumerate(names)]
    ranks = {"embedding": _median(emb["rank"]), "pixels": _median(pix["rank"])}
    shifts = {"embedding": _median(emb["map_shift"]), "pixels": _median(pix["map_shift"])}
    return {"n_objects": int(n_objects), "n_reference": int(n_reference), "perturbations": rows,
            "median_rank": ranks, "median_map_shift": shifts,
            "rank_ratio": round(ranks["embedding"] / ranks["pixels"], 4) if ranks["pixels"] > 0 else None,
            "map_shift_ratio": round(shifts["embedding"] / shifts["pixels"], 4) if shifts["pixels"] > 0 else None}

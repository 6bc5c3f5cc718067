"""Stability under augmentations (core/stability.py): the perturbations, the ranks and the summary."""
from __future__ import annotations

import numpy as np
import pytest

from core.contract import _stability_problem
from core.stability import (
    PERTURBATIONS,
    band_mad,
    measure,
    perturb,
    perturbed_copies,
    random_pair_distances,
    rank_among_random,
    unit,
)


def _galaxies(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Elongated Gaussian blobs at random angles and widths, on a faint noisy sky: (n, 2, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for _ in range(n):
        a, w, e = rng.uniform(0, np.pi), rng.uniform(1.5, 6), rng.uniform(0.2, 1)
        u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        blob = np.exp(-(u**2 + (v / e) ** 2) / (2 * w**2))
        out.append(np.stack([blob, 0.5 * blob]) + rng.normal(0, 0.01, (2, size, size)))
    return np.asarray(out, np.float32)


def test_perturbations_keep_the_shape_and_do_what_they_say():
    img = _galaxies(1)[0]
    mad = band_mad(img[None])
    rng = np.random.default_rng(0)
    for name in PERTURBATIONS:
        assert perturb(img, name, mad, rng).shape == img.shape
    assert np.array_equal(perturb(img, "rotated 180°", mad, rng), img[:, ::-1, ::-1])
    noisy = perturb(img, "noise 3× MAD", mad, rng)
    assert np.std(noisy - img, axis=(1, 2)) == pytest.approx(3 * mad, rel=0.1)
    shifted = perturb(img, "shifted 4 px", mad, rng)
    peak = np.unravel_index(np.argmax(shifted[0]), shifted[0].shape)
    assert np.hypot(peak[0] - 15.5, peak[1] - 15.5) > 2.5
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(img, "squashed", mad, rng)
    assert perturbed_copies(_galaxies(3), mad).shape == (3, len(PERTURBATIONS), 2, 32, 32)


def test_rank_is_the_share_of_random_pairs_closer():
    reference = np.sort(np.linspace(0.0, 1.0, 101))
    assert rank_among_random(np.array([0.0, 0.5, 2.0]), reference).tolist() == pytest.approx([0.0, 50 / 101, 1.0])
    vectors = unit(np.random.default_rng(0).normal(size=(200, 8)))
    d = random_pair_distances(vectors, n_pairs=1000)
    assert (np.diff(d) >= 0).all() and d.min() > 1e-6, "pairs are of distinct rows"


def _radial_profile(images: np.ndarray) -> np.ndarray:
    """A rotation-invariant 'encoder': the sorted pixel values of each band's centre (plus total flux)."""
    flat = np.asarray(images, np.float32)[:, :, 8:24, 8:24].reshape(len(images), -1)
    return np.sort(flat, axis=1)[:, ::16]


def _pca2(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(axis=0)
    return centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T


def test_an_invariant_embedding_is_more_stable_than_pixels():
    images, reference = _galaxies(20, seed=1), _galaxies(300, seed=2)
    xy = np.random.default_rng(3).normal(size=(300, 2))
    placed = measure(images, reference, xy, embed=_radial_profile, preprocess=lambda x: x, seed=0)
    assert placed["summary"]["median_map_shift"]["embedding"] >= 0, "copies placed on the bundle's map"
    result = measure(images, reference, xy, embed=_radial_profile, preprocess=lambda x: x, seed=0, plane=_pca2)
    assert result["summary"]["median_rank"] == placed["summary"]["median_rank"], "ranks do not depend on the map"
    assert result["summary"]["map_shift_ratio"] < 1, "on maps of their own spaces the pixel copies move farther"
    summary = result["summary"]
    assert summary["n_objects"] == 20 and [r["name"] for r in summary["perturbations"]] == list(PERTURBATIONS)
    by_name = {r["name"]: r for r in summary["perturbations"]}
    assert by_name["rotated 90°"]["embedding_rank"] < by_name["rotated 90°"]["pixel_rank"]
    assert summary["median_rank"]["embedding"] < summary["median_rank"]["pixels"]
    assert summary["rank_ratio"] < 1
    assert result["spaces"]["embedding"]["copies_placed"].shape == (20, len(PERTURBATIONS), 2)
    assert _stability_problem(summary) is None


def test_the_contract_refuses_a_stability_section_that_is_not_numbers():
    good = {"perturbations": [{"name": "rotated 45°", "embedding_rank": 0.1, "pixel_rank": 0.2,
                               "embedding_map_shift": None, "pixel_map_shift": 0.3}],
            "median_rank": {"embedding": 0.1, "pixels": 0.2}, "median_map_shift": {"embedding": 0.1, "pixels": 0.3},
            "rank_ratio": 0.5, "map_shift_ratio": None, "n_objects": 3}
    assert _stability_problem(good) is None
    assert "perturbations[0]" in _stability_problem({**good, "perturbations": [{"name": "<b>x</b>",
                                                                                "embedding_rank": "0.1"}]})
    assert "medians" in _stability_problem({**good, "rank_ratio": "1e9"})
    assert "must be an object" in _stability_problem([1, 2])

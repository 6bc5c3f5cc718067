"""BENCHMARK / TEST FIXTURE: a synthetic bundle with survey-like structure but no trained model.

Clustered unit vectors stand in for embeddings (each cluster a "family" of galaxies), 2-D coordinates are the
cluster centres plus scatter (UMAP-like islands), catalogue columns correlate with the clusters, and thumbnails are
small WebP images drawn from a pool. Written through the real bundle writer, so the explorer and the benchmarks
read it exactly as they read a real bundle.

    python -m benchmarks.fixture_bundle --n 1000000 --out bundles/bench-1m
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.write import assign_splits, pack_thumbnails, write_bundle

COLOUR_BY = {
    "gz2_smooth_fraction": {"title": "GZ2 smooth fraction", "kind": "fraction", "units": ""},
    "redshift": {"title": "Redshift", "kind": "continuous", "units": ""},
    "angular_extent_arcsec": {"title": "Angular extent", "kind": "continuous", "units": "arcsec"},
    "r_mag": {"title": "r magnitude", "kind": "continuous", "units": "mag"},
    "morph_class": {"title": "Morphology (truth)", "kind": "categorical", "units": ""},
}
CLASSES = np.array(["smooth", "disk", "edge-on", "spiral", "bar", "irregular", "star", "artefact"], dtype=object)


def _thumbnail_pool(n_pool: int, size: int, rng) -> list[bytes]:
    from PIL import Image

    yy, xx = np.mgrid[:size, :size] - size / 2
    pool = []
    for _ in range(n_pool):
        q, theta, r = rng.uniform(0.3, 1), rng.uniform(0, np.pi), rng.uniform(2, size / 5)
        xr = xx * np.cos(theta) + yy * np.sin(theta)
        yr = -xx * np.sin(theta) + yy * np.cos(theta)
        img = np.exp(-np.hypot(xr, yr / q) / r)[..., None] * rng.uniform(0.4, 1, 3)
        img = img + rng.normal(0, 0.03, img.shape)
        buf = io.BytesIO()
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="WEBP", quality=80)
        pool.append(buf.getvalue())
    return pool


def clustered_embeddings(n: int, dim: int, n_clusters: int = 40, seed: int = 0, dtype=np.float16,
                         intrinsic_dim: int = 32, noise: float = 0.35, shared: float = 1.0,
                         chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors shaped like self-supervised embeddings: return (embeddings, cluster labels, 2-D latent).

    Real SSL embeddings are not isotropic noise: they share a common direction (random pairs have cosine
    ≈ 0.3–0.5), fall into families, and vary inside a family along a few dozen directions with a decaying
    spectrum, plus a little full-rank noise. Each vector is ``shared·m + centre_c + B_c·z + noise`` with
    z ~ N(0, diag(1/j)) in ``intrinsic_dim`` dimensions, so near neighbours are meaningful (as with a trained
    encoder) but not trivially separable. The first two latent coordinates are returned for a UMAP-like map.
    """
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres = shared * common + centres
    basis = rng.normal(size=(n_clusters, intrinsic_dim, dim)).astype(np.float32) / np.sqrt(dim)
    spectrum = (1.0 / np.sqrt(np.arange(1, intrinsic_dim + 1))).astype(np.float32) * 0.7
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    labels = rng.choice(n_clusters, size=n, p=weights)
    emb = np.empty((n, dim), dtype=dtype)
    latent2 = np.empty((n, 2), dtype=np.float32)
    for s in range(0, n, chunk):
        lab = labels[s : s + chunk]
        z = rng.standard_normal(size=(len(lab), intrinsic_dim), dtype=np.float32) * spectrum
        v = rng.standard_normal(size=(len(lab), dim), dtype=np.float32)
        v *= noise / np.sqrt(dim)
        v += centres[lab]
        for c in np.unique(lab):
            rows = np.flatnonzero(lab == c)
            v[rows] += z[rows] @ basis[c]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        emb[s : s + chunk] = v.astype(dtype)
        latent2[s : s + chunk] = z[:, :2] / spectrum[:2]
    return emb, labels, latent2


def make_fixture_bundle(out, n: int = 10_000, dim: int = 128, n_clusters: int = 40, seed: int = 0,
                        dtype=np.float16, chunk: int = 200_000, index=None) -> Path:
    """Write a fixture bundle of ``n`` objects with ``dim``-d embeddings to ``out`` and return its path.

    ``index``: a prebuilt faiss index to store (default: ``build_index`` chooses by size, as the pipeline does).
    """
    emb, labels, latent2 = clustered_embeddings(n, dim, n_clusters, seed, dtype, chunk=chunk)
    rng = np.random.default_rng(seed + 1)
    plane = rng.uniform(-10, 10, size=(n_clusters, 2))
    spread = rng.uniform(0.3, 1.2, size=n_clusters)
    xy = plane[labels] + latent2 * spread[labels, None]
    smooth_p = rng.uniform(0, 1, n_clusters)
    z = np.clip(rng.gamma(2.0, 0.04, n) + 0.02 * (labels % 5), 0.005, 0.6)
    catalog = pd.DataFrame({
        "object_id": np.char.add("FIX", np.arange(n).astype(str)).astype(object),
        "ra": rng.uniform(120, 240, n),
        "dec": np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-5)), np.sin(np.radians(60)), n))),
        "umap_x": xy[:, 0].astype(np.float32),
        "umap_y": xy[:, 1].astype(np.float32),
        "split": assign_splits(n, seed),
        "gz2_smooth_fraction": np.clip(smooth_p[labels] + rng.normal(0, 0.1, n), 0, 1),
        "redshift": z,
        "angular_extent_arcsec": np.clip(8 / (z + 0.02) * rng.lognormal(0, 0.3, n) / 10, 1, 120),
        "r_mag": np.clip(14 + 2.5 * np.log10(z / 0.02 + 1) * 2 + rng.normal(0, 0.5, n), 12, 22),
        "morph_class": CLASSES[labels % len(CLASSES)],
        "cluster": labels.astype(np.int32),
    })
    # Missing labels are null, as in real catalogues: GZ2 covers a bright subset, spectra ~40 %.
    catalog.loc[rng.random(n) > 0.6, "redshift"] = np.nan
    catalog.loc[rng.random(n) > 0.5, "gz2_smooth_fraction"] = np.nan

    pool = _thumbnail_pool(min(n, 512), 64, rng)
    blob, offsets = pack_thumbnails(pool[i] for i in labels * 7 % len(pool) + rng.integers(0, 7, n) % len(pool))
    manifest = {
        "survey": "fixture",
        "bands": ["g", "r", "i"],
        "pixel_scale_arcsec": 0.396,
        "model": {"method": "none (benchmark fixture)", "architecture": "none"},
        "umap": {"note": "fixture: cluster centres plus scatter, not a UMAP fit"},
        "colour_by": COLOUR_BY,
        "source": {"fixture": "benchmarks/fixture_bundle.py", "seed": seed, "n_clusters": n_clusters},
    }
    return write_bundle(out, catalog=catalog, embeddings=emb, thumbnails=(blob, offsets), manifest=manifest,
                        index=index)


def copy_bundle(src: Path, dst: Path, sealed: bool = True) -> Path:
    """A fresh copy of the bundle ``src`` at ``dst`` (replacing what is there), to damage in a test or a probe;
    ``sealed=False`` drops the manifest's inventory of sizes and hashes (a bundle from before it, or one re-sealed
    by whoever changed it), so that the checks behind the hashes are exercised too."""
    import json
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    if not sealed:
        man = json.loads((dst / "manifest.json").read_text())
        man.pop("files", None)
        (dst / "manifest.json").write_text(json.dumps(man))
    return dst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--out", default="bundles/bench")
    p.add_argument("--seed", type=int, default=0)
    from benchmarks.quick import add_quick, parse_quick, scratch_dir

    add_quick(p, n=1_000, dim=16, out=lambda: str(scratch_dir() / "bundle"))
    a = parse_quick(p, argv)
    t = time.perf_counter()
    make_fixture_bundle(a.out, n=a.n, dim=a.dim, seed=a.seed)
    print(f"wrote {a.out}: {a.n} objects x {a.dim} in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()

"""Which density rendering reads best: the same map drawn several ways, scored and saved as PNGs to look at.

    .venv/bin/python -m benchmarks.bench_density_render --bundle bundles/demo --out /tmp/density

For the bundle's own UMAP points (20 k in the demo) and for 10 M points with the same structure (each object
replaced by 500 jittered copies), the density is drawn at the map's size (explorer.map.plot.MAP_FRAME square) as

- ``log-white``   log10(count) from 1, the app's palette (colorcet fire, light to dark) on white, dynspread (the app)
- ``linear-white``  count on a linear scale, otherwise the same
- ``eqhist-white``  histogram-equalised counts (Datashader ``eq_hist``)
- ``log-dark``    log10(count), colorcet fire (dark to light) on black
- ``log-nospread``  the app without dynspread (one pixel per lone object)

and scored:

- ``inked``: share of the whole frame that is not background (spreading makes lone objects bigger);

then on the pixels that hold objects:

- ``visible``: share whose colour stands out from the background (CIE76 colour difference > 20);
- ``levels_bits``: entropy of their lightness L* in 1-unit bins: how many density levels the eye can tell apart;
- ``rank_rho``: Spearman correlation of |L* - background L*| with log count: does darker-on-white (lighter-on-black)
  mean more objects, everywhere on the scale (1 = perfectly ordered).

Rows go to stdout as JSON; PNGs to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import colorcet
import datashader as ds
import datashader.transfer_functions as tf
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from benchmarks.quick import add_quick, parse_quick, quick_bundle, scratch_dir
from explorer.map import colour
from explorer.map.kernels import SPREAD
from explorer.map.plot import MAP_FRAME

WIDTH = HEIGHT = MAP_FRAME


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in 0..255 -> CIE L*a*b* (D65)."""
    c = rgb / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def rendering(counts, how: str, cmap, background: str, spread: bool):
    img = tf.shade(counts.where(counts > 0), cmap=cmap, how=how)
    if spread:
        img = tf.dynspread(img, **SPREAD)
    return tf.set_background(img, background)


def score(img, counts, background: str) -> dict:
    rgba = img.to_numpy().view(np.uint8).reshape(HEIGHT, WIDTH, 4)[..., :3].astype(np.float64)
    bg_rgb = np.array([255.0, 255.0, 255.0] if background == "white" else [0.0, 0.0, 0.0])
    inked = float(np.mean(np.abs(rgba - bg_rgb).sum(axis=-1) > 0))
    occupied = counts.values > 0
    lab = srgb_to_lab(rgba[occupied])
    bg = srgb_to_lab(np.array([[255.0, 255.0, 255.0] if background == "white" else [0.0, 0.0, 0.0]]))[0]
    delta = np.linalg.norm(lab - bg, axis=1)
    hist = np.bincount(np.clip(lab[:, 0], 0, 100).astype(int), minlength=101) / len(lab)
    hist = hist[hist > 0]
    rho = spearmanr(np.log10(counts.values[occupied]), np.abs(lab[:, 0] - bg[0])).statistic
    return {"inked": round(inked, 4), "visible": round(float(np.mean(delta > 20)), 4), "levels_bits": round(float(-(hist * np.log2(hist)).sum()), 2),
            "rank_rho": round(float(rho), 3), "occupied_pixels": int(occupied.sum()),
            "peak_count": int(counts.values.max())}


RENDERINGS = {
    "log-white": ("log", colour.palette_for(colour.density_spec()), "white", True),
    "linear-white": ("linear", colour.palette_for(colour.density_spec()), "white", True),
    "eqhist-white": ("eq_hist", colour.palette_for(colour.density_spec()), "white", True),
    "log-dark": ("log", colorcet.fire, "black", True),
    "log-nospread": ("log", colour.palette_for(colour.density_spec()), "white", False),
}


def points_of(bundle: Path, copies: int, seed: int = 0) -> pd.DataFrame:
    """The bundle's map positions, each replaced by ``copies`` jittered copies when ``copies`` > 1."""
    xy = pd.read_parquet(bundle / "catalog.parquet", columns=["umap_x", "umap_y"]).to_numpy(np.float32)
    if copies > 1:
        rng = np.random.default_rng(seed)
        scale = 0.004 * (xy.max(0) - xy.min(0))
        xy = np.repeat(xy, copies, axis=0) + rng.normal(size=(len(xy) * copies, 2)).astype(np.float32) * scale
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/density"))
    ap.add_argument("--copies", type=int, default=500, help="jittered copies per object for the large map")
    add_quick(ap, bundle=quick_bundle, out=scratch_dir, copies=2)
    a = parse_quick(ap, argv)
    if a.bundle is None:
        ap.error("--bundle is required (or --quick)")
    a.out.mkdir(parents=True, exist_ok=True)
    for copies in (1, a.copies):
        frame = points_of(a.bundle, copies)
        t0 = time.perf_counter()
        cvs = ds.Canvas(plot_width=WIDTH, plot_height=HEIGHT)
        counts = cvs.points(frame, "x", "y", ds.count())
        agg_s = time.perf_counter() - t0
        for name, (how, cmap, background, spread) in RENDERINGS.items():
            img = rendering(counts, how, cmap, background, spread)
            img.to_pil().save(a.out / f"density-{len(frame)}-{name}.png")
            print(json.dumps({"n": len(frame), "rendering": name, **score(img, counts, background),
                              "aggregate_s": round(agg_s, 2)}), flush=True)


if __name__ == "__main__":
    main()

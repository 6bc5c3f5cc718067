"""A simulated DESI Legacy Surveys grz survey: the SDSS simulator's galaxies seen by DECam, with known truth.

The same objects as ``sim_sdss`` for the same (n, seed): types, redshifts, sizes, colours, neighbours, artefacts and
seeing come from its draws and its noiseless scene (``render_scene``). What changes is the camera: its g, r and z
light is resampled onto 152 x 152 pixels of 0.262" (bicubic, surface brightness kept), and the noise is the Legacy
Surveys' depth: per-pixel sky noise from the DR8 5-sigma depths g 24.0, r 23.4, z 22.5 over the noise-equivalent area
of a 1.3" PSF, plus the source's own Poisson noise at a coadd's gain. Approximations, said here once: the SDSS and
DECam g, r, z bandpasses are taken as the same (their colour terms are a few hundredths of a magnitude), and the PSF is
the SDSS draw's (1.0-2.1" in r; DECam's median is ~1.2-1.3").

Writes ``images.h5`` (Stein et al.'s layout: ``images`` (N, 3, 152, 152) float32 nanomaggies, ``ra``, ``dec``,
``ebv``, ``z_phot_median``, ``z_phot_std``, ``z_spec`` (-1 where no spectrum), ``object_id``), ``gz_decals.csv``
(vote counts and fractions under Walmsley et al. 2022 names, for the same brighter subset GZ2 saw) and
``truth.parquet``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from precompute.simulators.sim_common import (
    STREAM_PARAMS,
    STREAM_VOTES,
    object_rng,
    ordered_map,
)
from precompute.simulators.sim_sdss import spectroscopic_targets, truth_row
from precompute.simulators.sim_sdss_params import PIXEL_SCALE as SDSS_PIXEL_SCALE
from precompute.simulators.sim_sdss_params import STAMP as SDSS_STAMP
from precompute.simulators.sim_sdss_params import draw_params, filters, nmgy, sed_table
from precompute.simulators.sim_sdss_render import render_scene
from precompute.simulators.sim_sdss_votes import simulate_votes

VERSION = 1
BANDS = ("g", "r", "z")
SDSS_BAND = (1, 2, 4)                 # g, r, z in the SDSS simulator's ugriz
PIXEL_SCALE = 0.262                   # arcsec / px
STAMP = 152
DEPTH_5SIGMA = (24.0, 23.4, 22.5)     # DECaLS DR8 target depths, AB
PSF_NEA_ARCSEC2 = 4 * np.pi * (1.3 / 2.3548) ** 2   # noise-equivalent area of a 1.3" FWHM Gaussian
ELECTRONS_PER_NMGY = (4000.0, 4000.0, 2000.0)       # effective gain of a several-exposure coadd
PHOTO_Z_SCATTER, PHOTO_Z_OUTLIERS = 0.015, 0.02       # sigma / (1 + z) and the share of catastrophic outliers
# GZ2 question/answer (Hart et al. names, as the SDSS simulator's volunteers answer) -> GZ DECaLS (Walmsley et al.)
GZD_ANSWERS = {
    ("t01_smooth_or_features", "a01_smooth"): ("smooth-or-featured", "smooth"),
    ("t01_smooth_or_features", "a02_features_or_disk"): ("smooth-or-featured", "featured-or-disk"),
    ("t01_smooth_or_features", "a03_star_or_artifact"): ("smooth-or-featured", "artifact"),
    ("t02_edgeon", "a04_yes"): ("disk-edge-on", "yes"),
    ("t02_edgeon", "a05_no"): ("disk-edge-on", "no"),
    ("t04_spiral", "a08_spiral"): ("has-spiral-arms", "yes"),
    ("t04_spiral", "a09_no_spiral"): ("has-spiral-arms", "no"),
    ("t07_rounded", "a16_completely_round"): ("how-rounded", "round"),
    ("t07_rounded", "a17_in_between"): ("how-rounded", "in-between"),
    ("t07_rounded", "a18_cigar_shaped"): ("how-rounded", "cigar-shaped"),
}


def sky_sigma() -> np.ndarray:
    """Per-pixel sky noise (nanomaggies) of g, r, z at the survey's depth."""
    point_sigma = nmgy(np.asarray(DEPTH_5SIGMA)) / 5
    return point_sigma / np.sqrt(PSF_NEA_ARCSEC2 / PIXEL_SCALE**2)


def to_decam_grid(model: np.ndarray) -> np.ndarray:
    """(bands, 107, 107) nanomaggies per 0.396" pixel -> (bands, 152, 152) per 0.262" pixel, same centre."""
    from scipy.ndimage import map_coordinates

    centre_in, centre_out = (SDSS_STAMP - 1) / 2, (STAMP - 1) / 2
    axis = (np.arange(STAMP) - centre_out) * PIXEL_SCALE / SDSS_PIXEL_SCALE + centre_in
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    area = (PIXEL_SCALE / SDSS_PIXEL_SCALE) ** 2
    return np.stack([map_coordinates(band, [yy, xx], order=3, mode="nearest") * area for band in model])


def render_legacy(task: tuple[int, dict]) -> tuple[np.ndarray, dict, dict]:
    """One object's g, r, z (3, 152, 152) float32 with the survey's noise, its measured truth and its votes."""
    seed, p = task
    model, measured, rng = render_scene(seed, p)
    grz = to_decam_grid(model[list(SDSS_BAND)])
    sigma = sky_sigma() * rng.uniform(0.85, 1.2, len(BANDS))
    var = sigma[:, None, None] ** 2 + np.clip(grz, 0, None) / np.asarray(ELECTRONS_PER_NMGY)[:, None, None]
    image = (grz + rng.standard_normal(grz.shape) * np.sqrt(var)).astype(np.float32)
    votes = simulate_votes({**p, **measured}, object_rng(seed, p["index"], STREAM_VOTES))
    return image, measured, gz_decals_votes(votes)


def gz_decals_votes(gz2: dict) -> dict:
    """The GZ2 tree's answers under GZ DECaLS names: counts ``q_a``, fractions ``q_a_fraction``, ``q_total-votes``."""
    out: dict = {}
    for (question, answer), (q, a) in GZD_ANSWERS.items():
        count = gz2.get(f"{question}_{answer}_count")
        if count is None:
            continue
        out[f"{q}_{a}"] = count
        out[f"{q}_total-votes"] = out.get(f"{q}_total-votes", 0) + count
    for (question, answer), (q, a) in GZD_ANSWERS.items():
        if f"{q}_{a}" in out:
            total = out[f"{q}_total-votes"]
            out[f"{q}_{a}_fraction"] = out[f"{q}_{a}"] / total if total else np.nan
    return out


def photo_z(p: dict, seed: int) -> tuple[float, float]:
    """A photometric redshift like Zhou et al. (2021)'s for bright galaxies: Gaussian scatter 0.015 (1 + z), 2 %
    catastrophic outliers; NaN for stars and artefacts."""
    if not np.isfinite(p["redshift"]):
        return np.nan, np.nan
    rng = object_rng(seed, p["index"], STREAM_PARAMS + 5)
    sigma = PHOTO_Z_SCATTER * (1 + p["redshift"])
    z = rng.uniform(0.0, 0.8) if rng.uniform() < PHOTO_Z_OUTLIERS else p["redshift"] + rng.normal(0, sigma)
    return float(max(z, 0.0)), float(sigma * rng.uniform(0.8, 1.3))


def legacy_id(p: dict) -> str:
    return f"LS-SIM J{p['ra']:09.5f}{p['dec']:+09.5f}"


def simulate_legacy(n: int, out, seed: int = 0, progress: bool = True, workers: int | None = None) -> Path:
    """Write a simulated Legacy Surveys grz survey of ``n`` objects into ``out`` (images.h5, gz_decals.csv,
    truth.parquet); identical output for the same (n, seed) whatever ``workers``."""
    import h5py

    from precompute.simulators.sim_common import default_workers

    if n < 1:
        raise ValueError(f"simulate_legacy: n must be >= 1, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, int(workers))
    sed_table(), filters()
    params = [draw_params(seed, i) for i in range(n)]
    has_spec = spectroscopic_targets(params, seed)
    ids = [legacy_id(p) for p in params]
    truth_rows, vote_rows = [], []
    tmp = out / "images.h5.partial"
    with h5py.File(tmp, "w") as h5:
        images = h5.create_dataset("images", shape=(n, len(BANDS), STAMP, STAMP), dtype="f4",
                                   chunks=(min(n, 16), len(BANDS), STAMP, STAMP))
        h5.attrs.update(bands="grz", pixel_scale_arcsec=PIXEL_SCALE, units="nanomaggies per pixel", simulated=True,
                        seed=seed)
        tasks = ((seed, p) for p in params)
        for i, (img, measured, votes) in enumerate(ordered_map(render_legacy, tasks, n, workers, "simulate legacy",
                                                                progress)):
            images[i] = img
            row = truth_row(params[i], measured, 0, has_spec[i])
            row.pop("ObjID")
            truth_rows.append({"object_id": ids[i], **row})
            if row["in_gz2"]:
                vote_rows.append({"iauname": ids[i], "ra": params[i]["ra"], "dec": params[i]["dec"], **votes})
        zp = np.array([photo_z(p, seed) for p in params]).reshape(n, 2)
        h5.create_dataset("ra", data=np.array([p["ra"] for p in params]))
        h5.create_dataset("dec", data=np.array([p["dec"] for p in params]))
        h5.create_dataset("ebv", data=np.array([p["e_bv"] for p in params], dtype="f4"))
        h5.create_dataset("z_phot_median", data=zp[:, 0].astype("f4"))
        h5.create_dataset("z_phot_std", data=zp[:, 1].astype("f4"))
        h5.create_dataset("z_spec", data=np.where(has_spec, [p["redshift"] for p in params], -1.0).astype("f4"))
        h5.create_dataset("object_id", data=np.array(ids, dtype="S"))
    tmp.replace(out / "images.h5")
    pd.DataFrame(truth_rows).to_parquet(out / "truth.parquet", index=False)
    pd.DataFrame(vote_rows).to_csv(out / "gz_decals.csv", index=False, float_format="%.10g")
    return out

"""Shared machinery of the simulated surveys: per-object random streams, survey footprints, cosmology look-ups
and an ordered, deterministic process pool with a progress bar.

Determinism: every object draws from its own ``numpy`` generator seeded by (seed, index, stream), so the output
is identical whatever the number of workers or the order in which they finish.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from functools import lru_cache
from typing import Callable, Iterable, Iterator

import numpy as np

# Streams of one object's randomness: parameters (drawn in the parent), pixels noise and rendering, volunteers.
STREAM_PARAMS, STREAM_PIXELS, STREAM_VOTES = 0, 1, 2


def object_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The random generator of object ``index`` for one purpose (``stream``), independent of all others."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


# -- footprints --------------------------------------------------------------------------------------------
# (ra_min, ra_max, dec_min, dec_max) boxes, degrees; RA ranges may wrap (ra_min > ra_max).
SDSS_BOXES = ((120.0, 250.0, 0.0, 60.0), (310.0, 60.0, -1.26, 1.26))   # northern cap, stripe 82
FIRST_BOXES = ((112.5, 247.5, -8.0, 57.0), (315.0, 45.0, -11.0, 1.6))  # north galactic cap, south equatorial strip


def _box_area(box) -> float:
    ra0, ra1, d0, d1 = box
    width = (ra1 - ra0) % 360.0
    return np.deg2rad(width) * (np.sin(np.deg2rad(d1)) - np.sin(np.deg2rad(d0)))


def sample_footprint(rng: np.random.Generator, boxes=SDSS_BOXES) -> tuple[float, float]:
    """One position (RA, Dec in degrees) uniform on the sphere inside the union of ``boxes``."""
    areas = np.array([_box_area(b) for b in boxes])
    ra0, ra1, d0, d1 = boxes[rng.choice(len(boxes), p=areas / areas.sum())]
    ra = (ra0 + rng.uniform(0.0, (ra1 - ra0) % 360.0)) % 360.0
    dec = np.rad2deg(np.arcsin(rng.uniform(np.sin(np.deg2rad(d0)), np.sin(np.deg2rad(d1)))))
    return float(ra), float(dec)


def galactic_reddening(ra_deg, dec_deg, rng: np.random.Generator) -> np.ndarray:
    """E(B-V) from a cosecant law in galactic latitude with log-normal patchiness (a stand-in for the SFD map,
    which is not available offline): ~0.02 mag at the galactic pole, rising towards the plane; clipped at 0.5."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    b = SkyCoord(ra=np.atleast_1d(ra_deg) * u.deg, dec=np.atleast_1d(dec_deg) * u.deg, frame="icrs").galactic.b
    csc = 1.0 / np.maximum(np.abs(np.sin(b.radian)), 0.1)
    return np.clip(0.02 * csc * rng.lognormal(0.0, 0.4, size=csc.shape), 0.0, 0.5)


# -- cosmology ---------------------------------------------------------------------------------------------
_Z_GRID = np.linspace(0.0, 1.0, 2001)


@lru_cache(maxsize=1)
def _distance_tables():
    from astropy import units as u
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=70.0, Om0=0.3)
    z = _Z_GRID[1:]
    kpc_per_arcsec = cosmo.kpc_proper_per_arcmin(z).to_value(u.kpc / u.arcmin) / 60.0
    d_l_m = cosmo.luminosity_distance(z).to_value(u.m)
    return z, kpc_per_arcsec, d_l_m


def kpc_per_arcsec(z) -> np.ndarray:
    """Proper kpc per arcsec at redshift z (flat LCDM, H0=70, Om=0.3)."""
    zg, k, _ = _distance_tables()
    return np.interp(z, zg, k)


def luminosity_distance_m(z) -> np.ndarray:
    zg, _, d = _distance_tables()
    return np.exp(np.interp(z, zg, np.log(d)))


def distance_modulus(z) -> np.ndarray:
    return 5.0 * np.log10(luminosity_distance_m(z) / 3.0856775814913673e17)


def offset_away_from_centre(rng, half: float, min_px: float) -> tuple[float, float]:
    """A uniform position in the stamp (pixels from its centre, within +-``half``) at least ``min_px`` from it:
    where unrelated field sources go, clear of the object itself."""
    while True:
        x, y = rng.uniform(-half, half, 2)
        if np.hypot(x, y) >= min_px:
            return x, y


# -- parallel map ------------------------------------------------------------------------------------------
def ordered_map(func: Callable, items: Iterable, n_items: int, workers: int, desc: str,
                progress: bool = True, chunksize: int = 8) -> Iterator:
    """``map(func, items)`` in order, over ``workers`` processes (1 = in this process), with a tqdm bar on stderr.

    ``func`` must be a module-level function so it pickles under the 'spawn' start method too.
    """
    from tqdm import tqdm

    bar = tqdm(total=n_items, desc=desc, unit="obj", file=sys.stderr, disable=not progress, smoothing=0.1)
    try:
        if workers <= 1:
            for item in items:
                yield func(item)
                bar.update(1)
            return
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers, initializer=_limit_threads) as pool:
            for result in pool.imap(func, items, chunksize=chunksize):
                yield result
                bar.update(1)
    finally:
        bar.close()


def _limit_threads():
    # Workers are the parallelism; BLAS/FFT threads inside each would oversubscribe the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass

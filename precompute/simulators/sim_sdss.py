"""A simulated SDSS ugriz survey in the layout of the Hayat et al. (2021) data release, with known truth.

Writes ``images.h5`` (``images`` (N, 5, 107, 107) float32 in nanomaggies per pixel at 0.396"/px, sky-subtracted,
with noise; ``ra``, ``dec``, ``e_bv``, ``specz_redshift``, ``specz_redshift_err``, ``ObjID``), ``gz2.csv``
(Galaxy Zoo 2 vote counts and fractions in Hart et al. 2016 naming for a brighter, larger subset, joined to the
images by sky position) and ``truth.parquet`` (the generating parameters of every object).

Physics, briefly:
- Types: smooth (Sérsic n 2.5–5.5, round to cigar), disk (featureless S0-like bulge + disk), spiral and
  barred_spiral (bulge + exponential disk + logarithmic arms with 1–5 arms and pitch 8–35°, star-forming knots
  along the arms; bars as elongated Sérsic n=0.5 components), edge_on_disk (inclination 78–90° with a dust lane),
  irregular (disk + galsim.RandomKnots clumps), merger (two galaxies and knotty tidal tails), star (point source,
  diffraction spikes when bright) and artefact (satellite trail in one band, bleed column, or the spike of a
  bright star off the stamp). Disks of every type except edge_on_disk have cos(i) uniform over i = 0–75°.
- Selection: galaxies follow the SDSS spectroscopic main galaxy sample (dereddened r 14.5–17.77, median z ≈ 0.1):
  absolute magnitudes from a per-type luminosity function weighted by the volume in which each makes the cut,
  redshifts uniform in comoving volume within it; 93 % of targets have a spectrum (fibre collisions lose the rest).
- Redshift 0.01–0.4 sets angular size (a physical half-light radius in kpc from a size–luminosity relation
  through a flat LCDM angular scale) and flux (luminosity distance). Colours come from three analytic rest-frame
  templates (old, young, starburst: power laws with a 4000 Å break and emission lines), redshifted and averaged
  through Gaussian ugriz bandpasses: bulges are old, disks a young/old mix, knots and arms starburst, so colours
  redden with redshift as the break moves through g and r, and bulges are redder than disks.
- Galactic reddening multiplies band fluxes by 10^(-0.4 R_b E(B-V)); PSF is a Kolmogorov profile with r-band FWHM
  ~1.4" (per object) scaled as lambda^-0.3; noise is sky + source Poisson in each band's electrons.
- Profiles are drawn with GalSim on the pixel grid (its no_pixel method, with an 8x supersampled patch at each
  nucleus so that cuspy profiles keep the right flux); arms, bars, knots and dust lanes are numpy maps; each band
  is the sum of components times their band fluxes, convolved once with that band's PSF.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from precompute.simulators.sim_common import STREAM_PARAMS, object_rng, ordered_map
from precompute.simulators.sim_sdss_params import (BANDS, GZ2_R90_LIMIT, GZ2_R_LIMIT, PIXEL_SCALE,
                                                   SPEC_COMPLETENESS, STAMP, draw_params, filters, sed_table)
from precompute.simulators.sim_sdss_render import render_object
from precompute.simulators.sim_sdss_votes import gz2_columns

# Part of the demo's simulation cache key: raise it whenever a change alters what the simulator draws.
VERSION = 2


# -- the survey ---------------------------------------------------------------------------------------------
def sdss_objid(index: int, seed: int) -> int:
    """A unique SDSS-like 64-bit ObjID (skyVersion 2, rerun 301, run/camcol/field/id bit fields)."""
    run = 94 + (seed % 8000) + index // (6 * 4000 * 2000)
    camcol = 1 + (index // (4000 * 2000)) % 6
    field = 11 + (index // 2000) % 4000
    obj = 1 + index % 2000
    return (2 << 59) | (301 << 48) | (run << 32) | (camcol << 29) | (field << 16) | obj


def spectroscopic_targets(params: list[dict], seed: int) -> np.ndarray:
    """Which objects have a spectrum: every main-sample target but the ~7 % that fibre collisions lose (at random,
    not by brightness); artefacts never."""
    eligible = np.array([p["type"] != "artefact" for p in params])
    u = np.array([object_rng(seed, p["index"], STREAM_PARAMS + 3).uniform() for p in params])
    return eligible & (u < SPEC_COMPLETENESS)


def _specz(p: dict, has_spec: bool, seed: int) -> tuple[float, float]:
    if not has_spec:
        return np.nan, np.nan
    rng = object_rng(seed, p["index"], STREAM_PARAMS + 4)
    err = float(rng.uniform(1e-5, 6e-5) * (1 + p["redshift"]))
    return float(p["redshift"] + rng.normal(0, err)), err


def truth_row(p: dict, measured: dict, objid: int, has_spec: bool) -> dict:
    row = {k: v for k, v in p.items() if k not in ("components", "neighbours", "index")}
    row.update(measured)
    row.update(ObjID=objid, has_specz=bool(has_spec))
    row["in_gz2"] = bool(row["r_mag_dered"] < GZ2_R_LIMIT and measured["petro_r90_arcsec"] > GZ2_R90_LIMIT)
    return row


def simulate_sdss(n: int, out, seed: int = 0, progress: bool = True, workers: int | None = None) -> Path:
    """Write a simulated SDSS survey of ``n`` objects into ``out`` (images.h5, gz2.csv, truth.parquet).

    Identical output for the same (n, seed) whatever ``workers`` (default: min(2, cores))."""
    import h5py

    from precompute.simulators.sim_common import default_workers

    if n < 1:
        raise ValueError(f"simulate_sdss: n must be >= 1, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, int(workers))
    sed_table(), filters()                       # computed once in the parent, inherited by forked workers
    params = [draw_params(seed, i) for i in range(n)]
    has_spec = spectroscopic_targets(params, seed)
    objids = np.array([sdss_objid(i, seed) for i in range(n)], dtype=np.int64)

    truth_rows, gz2_rows = [], []
    block = 256
    tmp = out / "images.h5.partial"
    with h5py.File(tmp, "w") as h5:
        images = h5.create_dataset("images", shape=(n, len(BANDS), STAMP, STAMP), dtype="f4",
                                   chunks=(min(n, 16), len(BANDS), STAMP, STAMP))
        h5.attrs.update(bands="ugriz", pixel_scale_arcsec=PIXEL_SCALE, units="nanomaggies per pixel",
                        simulated=True, seed=seed)
        buf = np.empty((min(block, n), len(BANDS), STAMP, STAMP), dtype=np.float32)
        tasks = ((seed, p) for p in params)
        for i, (img, measured, votes) in enumerate(ordered_map(render_object, tasks, n, workers, "simulate sdss",
                                                                progress)):
            buf[i % block] = img
            if i % block == block - 1 or i == n - 1:
                start = i - i % block
                images[start: i + 1] = buf[: i + 1 - start]
            p = params[i]
            row = truth_row(p, measured, int(objids[i]), has_spec[i])
            truth_rows.append(row)
            if row["in_gz2"]:
                gz2_rows.append({"dr7objid": int(objids[i]), "ra": p["ra"], "dec": p["dec"], **votes})
        specz = np.array([_specz(p, s, seed) for p, s in zip(params, has_spec)]).reshape(n, 2)
        h5.create_dataset("ra", data=np.array([p["ra"] for p in params]))
        h5.create_dataset("dec", data=np.array([p["dec"] for p in params]))
        h5.create_dataset("e_bv", data=np.array([p["e_bv"] for p in params], dtype="f4"))
        h5.create_dataset("specz_redshift", data=specz[:, 0].astype("f4"))
        h5.create_dataset("specz_redshift_err", data=specz[:, 1].astype("f4"))
        h5.create_dataset("ObjID", data=objids)
    tmp.replace(out / "images.h5")
    pd.DataFrame(truth_rows).to_parquet(out / "truth.parquet", index=False)
    gz2_cols = ["dr7objid", "ra", "dec", "total_classifications", "total_votes"] + gz2_columns()
    pd.DataFrame(gz2_rows, columns=gz2_cols).to_csv(out / "gz2.csv", index=False, float_format="%.10g")
    return out

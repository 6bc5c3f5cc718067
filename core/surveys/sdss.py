"""SDSS ugriz galaxies (Hayat et al. 2021): five channels, 107x107 at 0.396"/px, MoCo v2 on 64x64 crops.

Local data: the Hayat et al. release layout, an HDF5 file with ``images`` (N, 5, 107, 107), ``ra``, ``dec``,
``e_bv``, ``specz_redshift`` (NaN when there is no spectrum), ``specz_redshift_err``, ``ObjID``; optionally a
Galaxy Zoo 2 table (Hart et al. 2016 column names) joined by sky position, and a ``truth.parquet`` from the
simulator.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from core.inputs import InputError, join_by_position, read_catalog_csv
from core.surveys.base import (
    Cutouts,
    SourceInput,
    Survey,
    aperture_mag,
    central_band_scales,
    legacy_survey_link,
    reddening_psf_noise_params,
    register,
    sample_rows,
    second_moment_radius,
    simbad_link,
)
from core.surveys.services import Hips2Fits

GZ2_MATCH_ARCSEC = 2.0
# Hart et al. (2016): t01_smooth_or_features_a01_smooth_fraction -> question, answer, statistic
GZ2_COLUMN = re.compile(r"^t\d\d_(?P<question>.+?)_a\d\d_(?P<answer>.+)_(?P<stat>fraction|weighted_fraction|debiased|count)$")
# truth columns (simulator) that give an object's size, preferred over the measured second moment
# Schlafly & Finkbeiner (2011) A_b / E(B-V) for u, g, r, i, z (as used by Hayat et al. 2021).
EXTINCTION_R = (4.239, 3.303, 2.285, 1.698, 1.263)
# effective wavelengths (Angstrom) of u, g, r, i, z, for the lambda^-0.3 PSF scaling; r is the reference band
WAVELENGTH_A = (3551.0, 4686.0, 6166.0, 7480.0, 8932.0)
SIZE_COLUMNS = ("petroR90_r_arcsec", "petro_r90_arcsec", "petroR90_r", "r90_arcsec")
H5_KEYS = ("images", "ra", "dec")
THUMBNAIL_FIELD_PIX = 80


@register
class SDSS(Survey):
    name = "sdss"
    bands = ("u", "g", "r", "i", "z")
    pixel_scale_arcsec = 0.396
    cutout_size = 107
    crop_size = 64
    method = "moco"
    arch = "resnet50"
    stem = "hayat"
    # CPU: SimCLR on the small encoder, which also learns that brightness and apparent size do not change what a
    # galaxy is, with whitened stored vectors: it beat MoCo v2 and BYOL on the demo survey in less time
    # (BENCHMARKS.md, issue 21). GPU: Hayat et al.'s MoCo v2 ResNet-50.
    cpu_recipe = {"method": "simclr", "arch": "small", "stem": "standard", "epochs": 10, "batch_size": 256,
                  "views": "d4", "centre": True, "whiten": True, "augment": {"enable": ["brightness", "size"]}}
    gpu_recipe = {"method": "moco", "arch": "resnet50", "stem": "hayat", "epochs": 200, "batch_size": 256,
                  "views": "identity"}
    augmentation_recipe = "reddening_psf_noise"
    inputs = (SourceInput("images", "SDSS: HDF5 of cutouts (Hayat et al. layout: images, ra, dec, ObjID ...)",
                          required=True),
              SourceInput("gz2", "SDSS: Galaxy Zoo 2 CSV (Hart et al. 2016 columns), joined within 2\""),
              SourceInput("truth", "SDSS: simulator truth.parquet (optional)"))
    online_services = (Hips2Fits("hips2fits (SDSS9 HiPS)", hips="CDS/P/SDSS9/{band}"),)
    colour_by = {
        "gz2_smooth_or_features_smooth_fraction": {"title": "GZ2 smooth fraction", "kind": "fraction", "units": ""},
        "gz2_smooth_or_features_features_or_disk_fraction": {"title": "GZ2 features/disk fraction",
                                                             "kind": "fraction", "units": ""},
        "gz2_edgeon_yes_fraction": {"title": "GZ2 edge-on fraction", "kind": "fraction", "units": ""},
        "gz2_bar_bar_fraction": {"title": "GZ2 bar fraction", "kind": "fraction", "units": ""},
        "gz2_spiral_spiral_fraction": {"title": "GZ2 spiral fraction", "kind": "fraction", "units": ""},
        "gz2_odd_yes_fraction": {"title": "GZ2 odd fraction", "kind": "fraction", "units": ""},
        "gz2_rounded_completely_round_fraction": {"title": "GZ2 completely round fraction", "kind": "fraction",
                                                  "units": ""},
        "redshift": {"title": "Spectroscopic redshift", "kind": "continuous", "units": ""},
        "angular_extent_arcsec": {"title": "Angular extent (petroR90, or r-band second moment)",
                                  "kind": "continuous", "units": "arcsec"},
        "r_mag": {"title": "r aperture magnitude", "kind": "continuous", "units": "mag"},
        "g_minus_r": {"title": "g - r colour", "kind": "continuous", "units": "mag"},
        "e_bv": {"title": "Galactic E(B-V)", "kind": "continuous", "units": "mag"},
    }

    # -- training and links ---------------------------------------------------------------------------
    def augmentation_params(self, normalised: np.ndarray, crop: int) -> dict:
        """Hayat et al.'s recipe with this survey's numbers; the noise scale is the training images' per-band MAD."""
        return reddening_psf_noise_params(normalised, crop, 7, self.pixel_scale_arcsec, EXTINCTION_R, WAVELENGTH_A)

    def pack_fetched(self, folder: Path, fetched: pd.DataFrame) -> None:
        """Fetched cutouts -> ``images.h5`` in the Hayat et al. layout (images, ra, dec, ObjID), for ``--images``."""
        import h5py
        from astropy.io import fits

        shape = (self.n_channels, self.cutout_size, self.cutout_size)
        tmp = folder / "images.h5.partial"
        with h5py.File(tmp, "w") as h5:
            ds = h5.create_dataset("images", shape=(len(fetched), *shape), dtype=np.float32, chunks=(1, *shape))
            for k, rel in enumerate(fetched["file"]):
                ds[k] = fits.getdata(folder / rel).astype(np.float32)
            h5["ra"] = fetched["ra"].to_numpy(float)
            h5["dec"] = fetched["dec"].to_numpy(float)
            h5["ObjID"] = fetched["object_id"].astype(str).to_numpy().astype("S")
        os.replace(tmp, folder / "images.h5")

    def archive_links(self, ra_deg: float, dec_deg: float) -> list[tuple[str, str]]:
        skyserver = "https://skyserver.sdss.org/dr17/VisualTools/navi?" + urlencode(
            {"ra": f"{ra_deg:.6f}", "dec": f"{dec_deg:.6f}", "scale": "0.2"})
        return [("SDSS SkyServer", skyserver), legacy_survey_link("Legacy Survey", ra_deg, dec_deg, zoom=16),
                simbad_link(ra_deg, dec_deg)]

    # -- normalisation --------------------------------------------------------------------------------
    def fit_preprocessing(self, images: np.ndarray, bin: int = 1, crop: int | None = None) -> dict:
        """One linear scale per band: the 99th percentile of the central 32x32 pixels over a sample. A pure
        per-band scale keeps colours, so the reddening and noise augmentations act on physical ratios."""
        if bin != 1:
            raise ValueError("SDSS cutouts are not binned: the 0.396\" pixels already sample the 1.4\" seeing")
        return {"band_scale": central_band_scales(sample_rows(images, 2048), 32), "bands": list(self.bands),
                "crop": int(crop or self.crop_size)}

    def normalise(self, images: np.ndarray, params: dict) -> np.ndarray:
        """Per-band scaling; ``transpose_xy`` swaps the image axes as Hayat et al.'s data loader does (their
        published encoder saw every galaxy mirrored about the diagonal)."""
        scale = np.asarray(params["band_scale"], dtype=np.float32)[None, :, None, None]
        x = (np.asarray(images, dtype=np.float32) / scale).astype(np.float32)
        return np.swapaxes(x, -1, -2) if params.get("transpose_xy") else x

    # -- evaluation -----------------------------------------------------------------------------------
    def report_tasks(self, catalog: pd.DataFrame, colour_by: dict) -> list[dict]:
        """With simulator truth: its galaxy type, and smooth vs featured (the question GZ2 asks first); then the
        colour-by columns (GZ2 fractions as > 0.8 vs < 0.2, redshift, size, ...)."""
        from core.knowledge import galaxy_type_tasks

        tasks = galaxy_type_tasks(catalog)
        skip = {"truth_type"}
        return tasks + [t for t in super().report_tasks(catalog, colour_by) if t["column"] not in skip]

    # -- display --------------------------------------------------------------------------------------
    def thumbnail_rgb(self, image: np.ndarray) -> np.ndarray:
        """Lupton et al. (2004) asinh RGB from i, r, g, with the stretch set from the r band so that images in
        any linear flux unit come out visible."""
        from astropy.visualization import make_lupton_rgb

        from core.surveys.base import centre_crop

        # the central 80 px (32"): the 64 px the encoder sees plus the jitter margin, so galaxies fill the thumbnail
        image = centre_crop(np.asarray(image), THUMBNAIL_FIELD_PIX)
        g, r, i = (np.asarray(image[k], dtype=np.float32) for k in (1, 2, 3))
        c = r.shape[0] // 2
        peak = float(np.percentile(r[c - 8 : c + 8, c - 8 : c + 8], 99))
        noise = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        stretch = max(0.5 * peak, 5 * noise, 1e-12)
        rgb = make_lupton_rgb(i, r, g, minimum=0.0, stretch=stretch, Q=8)
        return rgb[::-1]  # north up

    # -- data -----------------------------------------------------------------------------------------
    def read_local(self, images: str | Path, gz2: str | Path | None = None, truth: str | Path | None = None,
                   out: str | Path | None = None, progress: bool = False, chunk: int = 1024, **_) -> Cutouts:
        """HDF5 (+ GZ2 CSV, + simulator truth) -> Cutouts. Rows with NaN pixels or bad positions are skipped
        and reported. With ``out`` the images are streamed to a .npy there and returned memory-mapped."""
        import h5py

        path = Path(images)
        if not path.is_file():
            raise InputError(f"{path}: SDSS images HDF5 not found; pass --images with the file "
                             f"(Hayat et al. layout, or `python -m precompute simulate --survey sdss`)")
        try:
            h5 = h5py.File(path, "r")
        except OSError as e:
            raise InputError(f"{path}: cannot be opened as HDF5 ({e}); check the file") from None
        with h5:
            missing = [k for k in H5_KEYS if k not in h5]
            if missing:
                raise InputError(f"{path}: lacks dataset(s) {missing} (has {sorted(h5.keys())}); expected the "
                                 f"Hayat et al. layout: images (N,5,107,107), ra, dec, ObjID, specz_redshift")
            shape = h5["images"].shape
            expected = (self.n_channels, self.cutout_size, self.cutout_size)
            if len(shape) != 4 or tuple(shape[1:]) != expected:
                raise InputError(f"{path}: 'images' has shape {shape}, expected (N, {', '.join(map(str, expected))})")
            if shape[0] == 0:
                raise InputError(f"{path}: 'images' is empty; nothing to build")
            table = _h5_table(h5, shape[0])
            good, skipped, stack = _read_images(h5["images"], table, out, progress, chunk)
        cat = table.loc[good].reset_index(drop=True)
        cat = _add_measurements(cat, stack, self.pixel_scale_arcsec, chunk)
        if truth is not None and Path(truth).is_file():
            cat = _join_truth(cat, Path(truth), table["object_id"].to_numpy(), good)
        if gz2 is not None:
            cat = join_gz2(cat, Path(gz2))
        return Cutouts(catalog=cat, images=stack, skipped=skipped)




def _h5_table(h5, n: int) -> pd.DataFrame:
    ids = _h5_column(h5, "ObjID", n, text=True) if "ObjID" in h5 else np.arange(n)
    ids = np.array([i.decode() if isinstance(i, bytes) else str(i) for i in np.asarray(ids).ravel()], dtype=object)
    table = pd.DataFrame({"object_id": ids, "ra": _h5_column(h5, "ra", n), "dec": _h5_column(h5, "dec", n)})
    for key, col in (("specz_redshift", "redshift"), ("specz_redshift_err", "redshift_err"), ("e_bv", "e_bv")):
        if key in h5:
            values = _h5_column(h5, key, n)
            table[col] = np.where(np.isfinite(values) & (values > -1), values, np.nan)
    return table


def _h5_column(h5, key: str, n: int, text: bool = False) -> np.ndarray:
    """One per-object HDF5 dataset, checked: n values (one per image), numeric unless ``text``."""
    values = np.asarray(h5[key][:]).ravel()
    where = f"{h5.filename}: dataset '{key}'"
    if len(values) != n:
        raise InputError(f"{where} has {len(values)} values but 'images' has {n}; every per-object dataset "
                         f"needs one value per image")
    if text:
        return values
    try:
        return values.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"{where} holds {values.dtype} values, not numbers; write it as float") from None


def _read_images(dataset, table: pd.DataFrame, out, progress: bool, chunk: int):
    """Stream the images chunk by chunk, dropping rows with NaN pixels, bad positions or repeated IDs."""
    from core.inputs import check_positions, duplicate_ids, invalid_positions

    n = len(table)
    ids = table["object_id"]
    skipped = check_positions(table, ids) + duplicate_ids(ids)
    usable = ~(invalid_positions(table) | ids.duplicated(keep="first").to_numpy())
    shape = (n,) + tuple(dataset.shape[1:])
    stack = (np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=shape) if out is not None
             else np.empty(shape, np.float32))
    starts = range(0, n, chunk)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="read HDF5", unit="chunk")
    written = 0
    for s in starts:
        block = np.asarray(dataset[s : s + chunk], dtype=np.float32)
        finite = np.isfinite(block).all(axis=(1, 2, 3))
        for j in np.flatnonzero(~finite & usable[s : s + chunk]):
            skipped.append((table["object_id"].iat[s + j], f"{int((~np.isfinite(block[j])).sum())} NaN/infinite pixels"))
        ok = finite & usable[s : s + chunk]
        usable[s : s + chunk] = ok
        stack[written : written + ok.sum()] = block[ok]
        written += int(ok.sum())
    if written < n:
        stack = _truncate(stack, written, out)
    return np.flatnonzero(usable), skipped, stack


def _truncate(stack: np.ndarray, n: int, out):
    """Keep the first n rows (rare: only when rows were skipped)."""
    if out is None:
        return stack[:n].copy()
    tmp = Path(str(out) + ".tmp.npy")
    small = np.lib.format.open_memmap(tmp, mode="w+", dtype=stack.dtype, shape=(n,) + stack.shape[1:])
    for s in range(0, n, 4096):
        small[s : s + 4096] = stack[s : min(n, s + 4096)]
    small.flush()
    del small, stack
    tmp.replace(out)
    return np.load(out, mmap_mode="r")


def _add_measurements(cat: pd.DataFrame, stack: np.ndarray, pixel_scale: float, chunk: int) -> pd.DataFrame:
    size, r_mag, g_mag = (np.full(len(cat), np.nan) for _ in range(3))
    for s in range(0, len(cat), chunk):
        block = np.asarray(stack[s : s + chunk], dtype=np.float32)
        size[s : s + chunk] = second_moment_radius(block[:, 2], pixel_scale)
        r_mag[s : s + chunk] = aperture_mag(block[:, 2])
        g_mag[s : s + chunk] = aperture_mag(block[:, 1])
    return cat.assign(angular_extent_arcsec=size, r_mag=r_mag, g_minus_r=g_mag - r_mag)


def _join_truth(cat: pd.DataFrame, path: Path, all_ids: np.ndarray, good: np.ndarray) -> pd.DataFrame:
    """Simulator truth, keyed by ObjID (or row-aligned with the HDF5), as ``truth_<column>`` columns."""
    truth = pd.read_parquet(path)
    key = next((k for k in ("ObjID", "object_id", "objid") if k in truth.columns), None)
    if key is not None:
        truth = truth.assign(_id=truth[key].astype(str)).drop_duplicates("_id").set_index("_id")
        truth = truth.reindex(all_ids[good]).drop(columns=[key])
    elif len(truth) == len(all_ids):
        truth = truth.iloc[good]
    else:
        return cat  # neither keyed nor aligned: cannot be attached safely
    truth = truth.reset_index(drop=True)
    size_col = next((c for c in SIZE_COLUMNS if c in truth.columns), None)
    out = cat.copy()
    if size_col is not None:
        out["angular_extent_arcsec"] = pd.to_numeric(truth[size_col], errors="coerce").to_numpy()
    for col in truth.columns:
        if col not in ("ra", "dec"):
            out[f"truth_{col}"] = truth[col].to_numpy()
    return out


def rename_gz2_columns(columns) -> dict[str, str]:
    """Hart et al. (2016) column -> bundle column, e.g. t01_smooth_or_features_a01_smooth_fraction ->
    gz2_smooth_or_features_smooth_fraction (``_weighted_fraction``, ``_debiased`` and ``_count`` keep their
    suffix)."""
    out = {}
    for c in columns:
        m = GZ2_COLUMN.match(c)
        if m:
            out[c] = f"gz2_{m['question']}_{m['answer']}_{m['stat']}"
    return out


def join_gz2(cat: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Attach GZ2 votes to the nearest catalogue object within 2 arcsec (astropy match_to_catalog_sky); objects
    with no match get nulls."""
    gz = read_catalog_csv(path, ("ra", "dec"), what="Galaxy Zoo 2 table")
    renames = rename_gz2_columns(gz.columns)
    if not renames:
        raise InputError(f"{path}: no Galaxy Zoo 2 vote columns (expected Hart et al. 2016 names such as "
                         f"t01_smooth_or_features_a01_smooth_fraction)")
    votes = gz.rename(columns=renames)
    keep = list(renames.values())
    for question in sorted({GZ2_COLUMN.match(c)["question"] for c in renames}):
        counts = [c for c in keep if c.startswith(f"gz2_{question}_") and c.endswith("_count")]
        if counts:
            votes[f"gz2_{question}_total_votes"] = votes[counts].sum(axis=1, min_count=1)
            keep.append(f"gz2_{question}_total_votes")
    if "total_votes" in votes.columns:
        votes["gz2_total_votes"] = votes["total_votes"]
        keep.append("gz2_total_votes")
    return join_by_position(cat, votes, keep, GZ2_MATCH_ARCSEC)

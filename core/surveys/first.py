"""VLA FIRST 1.4 GHz radio cutouts (Slijepcevic et al. 2023): one channel, 150x150 at 1.8"/px, BYOL on 70x70
centre crops.

Local data: a catalogue CSV with ``file`` (FITS path relative to the CSV's folder), ``ra``, ``dec`` and any label
columns (MiraBest: ``fr_class``, ``confidence``, ``morphology``, ``z``, ``las_arcsec`` ...), as in
``shared/data/first_mirabest`` and the output of ``python -m precompute simulate --survey first``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from core.inputs import (
    bad_pixels_reason,
    check_positions,
    duplicate_ids,
    invalid_positions,
    read_catalog_csv,
)
from core.surveys.base import (
    Cutouts,
    SourceInput,
    Survey,
    bin_pixels,
    legacy_survey_link,
    register,
    sample_rows,
    simbad_link,
)
from core.surveys.services import FirstCutoutServer, SkyView

# catalogue column -> bundle column (labels only; anything else is carried through under its own name)
RENAME = {"z": "redshift", "las_arcsec": "angular_extent_arcsec"}
NOISE_CLIP_SIGMA = 3.0
MAD_TO_SIGMA = 1.4826
STRETCHES = ("linear", "asinh")
ASINH_SOFTENING = 0.05


@register
class FIRST(Survey):
    name = "first"
    bands = ("1.4GHz",)
    pixel_scale_arcsec = 1.8
    cutout_size = 150
    crop_size = 70
    method = "byol"
    arch = "resnet18"
    stem = "standard"
    # CPU: SimCLR on a narrow ResNet at 2x2-binned 64 px learns in ~15 min where BYOL ResNet-18 did not (BENCHMARKS.md,
    # "What the embedding knows"). GPU: Slijepcevic et al.'s BYOL ResNet-18 on 70 px centre crops.
    # Whitened: on real FIRST it lifts MiraBest purity 0.769 -> 0.780 and spreads the variance (first PC 27 % -> 4 %).
    cpu_recipe = {"method": "simclr", "arch": "small", "width": 32, "stem": "standard", "epochs": 100,
                  "batch_size": 128, "bin": 2, "crop": 64, "views": "d4", "centre": True, "whiten": True}
    gpu_recipe = {"method": "byol", "arch": "resnet18", "stem": "standard", "epochs": 300, "batch_size": 256,
                  "bin": 1, "crop": 70, "views": "d4", "centre": False}
    augmentation_recipe = "rotate_crop_flip_jitter"
    inputs = (SourceInput("catalog", "FIRST: catalogue CSV(s) (file, ra, dec, labels; FITS paths relative to each); "
                                     "several are joined, e.g. MiraBest and FRDEEP", required=True, many=True),)
    online_services = (FirstCutoutServer("FIRST cutout server"), SkyView("SkyView", survey="VLA FIRST (1.4 GHz)"))
    colour_by = {
        "angular_extent_arcsec": {"title": "Largest angular size", "kind": "continuous", "units": "arcsec"},
        "fr_class": {"title": "Fanaroff-Riley class", "kind": "categorical", "units": ""},
        "confidence": {"title": "Label confidence", "kind": "categorical", "units": ""},
        "morphology": {"title": "Morphology", "kind": "categorical", "units": ""},
        "redshift": {"title": "Redshift", "kind": "continuous", "units": ""},
        "log_l1p4_w_hz": {"title": "log10 L(1.4 GHz)", "kind": "continuous", "units": "W/Hz"},
        "peak_flux_mjy": {"title": "Peak brightness (cutout maximum)", "kind": "continuous", "units": "mJy/beam"},
        "flux_mjy": {"title": "Integrated flux density", "kind": "continuous", "units": "mJy"},
    }

    # -- normalisation --------------------------------------------------------------------------------
    def fit_preprocessing(self, images: np.ndarray, bin: int = 1, crop: int | None = None,
                          stretch: str = "linear") -> dict:
        """Per-image noise clipping and peak scaling are fixed; only the dataset mean/std of the result is
        fitted, so the encoder sees zero-mean, unit-variance input. ``bin`` averages bin x bin pixel blocks (2: 3.6"
        pixels, still finer than FIRST's 5.4" beam, and a 64 px input then sees 230" instead of 115");
        ``crop`` is the encoder's input side in binned pixels (default: the survey's). ``stretch="asinh"`` maps the
        peak-scaled flux through asinh(x / 0.05) / asinh(1 / 0.05), lifting faint lobes and plumes (a few per cent
        of the peak) to where the network sees them."""
        if stretch not in STRETCHES:
            raise ValueError(f"unknown stretch {stretch!r}; choose one of {STRETCHES}")
        params = {"clip_sigma": NOISE_CLIP_SIGMA, "mean": 0.0, "std": 1.0, "bin": int(bin),
                  "crop": int(crop or self.crop_size), "stretch": stretch}
        sample = sample_rows(images, 4096)
        scaled = self.normalise(sample, params)
        return {**params, "mean": float(scaled.mean()), "std": float(max(scaled.std(), 1e-6))}

    def normalise(self, images: np.ndarray, params: dict) -> np.ndarray:
        """Clip everything below ``clip_sigma`` x the image's robust noise to zero, scale each image to a peak of
        1 (Slijepcevic et al.; FIRST fluxes span decades), then standardise with the fitted mean/std."""
        x = bin_pixels(np.asarray(images, dtype=np.float32), int(params.get("bin", 1)))
        flat = x.reshape(len(x), -1)
        med = np.median(flat, axis=1)
        sigma = MAD_TO_SIGMA * np.median(np.abs(flat - med[:, None]), axis=1)
        floor = (med + params["clip_sigma"] * sigma)[:, None, None, None]
        x = np.where(x > floor, x - floor, 0.0).astype(np.float32)
        peak = x.reshape(len(x), -1).max(axis=1)[:, None, None, None]
        x = x / np.maximum(peak, 1e-12)
        if params.get("stretch", "linear") == "asinh":
            x = np.arcsinh(x / ASINH_SOFTENING) / np.arcsinh(1 / ASINH_SOFTENING)
        return ((x - params["mean"]) / params["std"]).astype(np.float32)

    # -- evaluation -----------------------------------------------------------------------------------
    def report_tasks(self, catalog: pd.DataFrame, colour_by: dict) -> list[dict]:
        """The standard FR test first: confident FRI vs FRII (MiraBest; Slijepcevic et al. Table 6), then FRDEEP's
        FRI/FRII without the objects also in MiraBest when both samples were built together."""
        tasks = []
        fr = catalog["fr_class"].astype(str) if "fr_class" in catalog.columns else None
        if fr is not None and "confidence" in catalog.columns:
            mask = (catalog["confidence"].astype(str).eq("confident") & fr.isin(["FRI", "FRII"])).to_numpy()
            tasks.append(_fr_task("fr_confident", "FRI/FRII, confident (MiraBest)", mask, fr))
        if fr is not None and "in_mirabest" in catalog.columns:
            mask = (catalog["in_mirabest"].astype(str).eq("False") & fr.isin(["FRI", "FRII"])).to_numpy()
            tasks.append(_fr_task("fr_frdeep", "FRI/FRII, FRDEEP not in MiraBest", mask, fr))
        return [t for t in tasks if len(t["rows"]) >= 40] + super().report_tasks(catalog, colour_by)

    # -- inputs and links -----------------------------------------------------------------------------
    def listed_files(self, source: str, path: Path) -> list[Path] | None:
        """The FITS cutouts a catalogue's ``file`` column names (relative to its folder)."""
        if source != "catalog":
            return None
        try:
            files = pd.read_csv(path, usecols=["file"])["file"].astype(str)
        except ValueError:
            return None  # no 'file' column: read_local reports it with the file named
        folder = Path(path).resolve().parent  # same key however the path was spelt
        return [folder / f for f in files]

    def archive_links(self, ra_deg: float, dec_deg: float) -> list[tuple[str, str]]:
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        radec = SkyCoord(ra=ra_deg * u.deg, dec=dec_deg * u.deg, frame="icrs").to_string("hmsdms", sep=" ",
                                                                                           precision=2)
        cutout = "https://third.ucllnl.org/cgi-bin/firstcutout?" + urlencode(
            {"RA": radec, "Dec": "", "Equinox": "J2000", "ImageSize": "4.5", "MaxInt": "10", "ImageType": "GIF"})
        return [("FIRST cutout", cutout), legacy_survey_link("Legacy Survey (optical host)", ra_deg, dec_deg, zoom=14),
                simbad_link(ra_deg, dec_deg)]

    # -- display --------------------------------------------------------------------------------------
    def thumbnail_rgb(self, image: np.ndarray) -> np.ndarray:
        """asinh stretch between the noise floor and the 99.9th percentile, grey."""
        from astropy.visualization import AsinhStretch, ManualInterval

        img = np.asarray(image, dtype=np.float32).reshape(image.shape[-2:])
        med = float(np.median(img))
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(img - med)))
        vmax = float(np.percentile(img, 99.9))
        unit = ManualInterval(med + sigma, max(vmax, med + 2 * sigma))(img, clip=True)
        grey = (AsinhStretch(0.05)(unit, clip=True) * 255).astype(np.uint8)
        # FITS rows run south to north; flip so north is up on screen.
        return np.repeat(grey[::-1, :, None], 3, axis=2)

    # -- data -----------------------------------------------------------------------------------------
    def read_local(self, catalog: str | Path | list, progress: bool = False, **_) -> Cutouts:
        """Catalogue CSV(s) + FITS cutouts (paths relative to each CSV's folder) -> Cutouts. Unreadable, missing,
        NaN or wrongly shaped cutouts are skipped and reported, not fatal. Several catalogues are read in order and
        joined; the ``sample`` column names the folder each object came from, and an object id seen in an earlier
        catalogue is skipped as a duplicate."""
        if isinstance(catalog, (list, tuple)):
            return self._read_many([Path(c) for c in catalog], progress)
        catalog = Path(catalog)
        df = read_catalog_csv(catalog, ("file", "ra", "dec"), what="FIRST catalogue")
        ids = _object_ids(df)
        skipped = check_positions(df, ids) + duplicate_ids(ids)
        unusable = invalid_positions(df) | ids.duplicated(keep="first").to_numpy()
        shape = (self.cutout_size, self.cutout_size)
        keep, images = [], []
        rows = range(len(df))
        if progress:
            from tqdm import tqdm
            rows = tqdm(rows, desc="read FITS", unit="cutout")
        for i in rows:
            if unusable[i]:
                continue
            oid = str(ids.iloc[i])
            path = catalog.parent / str(df["file"].iloc[i])
            image, reason = read_fits_cutout(path, float(df["ra"].iloc[i]), float(df["dec"].iloc[i]), shape)
            if reason is None:
                reason = bad_pixels_reason(image, shape)
            if reason is not None:
                skipped.append((oid, f"{path}: {reason}"))
                continue
            keep.append(i)
            images.append(image)
        cat = self._catalog_columns(df.iloc[keep].reset_index(drop=True), ids.iloc[keep].reset_index(drop=True))
        stack = (np.stack(images)[:, None] if images else np.zeros((0, 1) + shape, np.float32)).astype(np.float32)
        if len(stack):
            cat["peak_flux_mjy"] = stack.reshape(len(stack), -1).max(axis=1) * 1e3
        return Cutouts(catalog=cat, images=stack, skipped=skipped)

    def _read_many(self, catalogs: list[Path], progress: bool) -> Cutouts:
        parts, images, skipped, seen = [], [], [], set()
        for path in catalogs:
            cut = self.read_local(path, progress=progress)
            dup = cut.catalog["object_id"].isin(seen).to_numpy()
            skipped += cut.skipped + [(oid, f"{path}: duplicate object_id (already read from an earlier catalogue)")
                                      for oid in cut.catalog["object_id"][dup]]
            parts.append(cut.catalog[~dup].assign(sample=path.resolve().parent.name))
            images.append(cut.images[~dup])
            seen.update(cut.catalog["object_id"])
        catalog = pd.concat(parts, ignore_index=True)
        return Cutouts(catalog=catalog, images=np.concatenate(images), skipped=skipped)

    def _catalog_columns(self, df: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
        out = pd.DataFrame({"object_id": ids.astype(str).to_numpy(),
                            "ra": pd.to_numeric(df["ra"]).to_numpy(float),
                            "dec": pd.to_numeric(df["dec"]).to_numpy(float)})
        for col in df.columns:
            if col in ("object_id", "ra", "dec"):
                continue
            name = "source_file" if col == "file" else RENAME.get(col, col)
            values = df[col]
            if name in ("redshift", "angular_extent_arcsec", "log_l1p4_w_hz"):
                values = pd.to_numeric(values, errors="coerce")
            out[name] = values.to_numpy()
        return out




def _fr_task(name: str, title: str, mask: np.ndarray, fr: pd.Series) -> dict:
    return {"name": name, "column": "fr_class", "title": title, "kind": "categorical",
            "rows": np.flatnonzero(mask), "labels": fr.to_numpy()[mask]}


def _object_ids(df: pd.DataFrame) -> pd.Series:
    """The catalogue's own ``object_id`` when it has one, else an IAU-style name from the position."""
    if "object_id" in df.columns:
        return df["object_id"].astype(str)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ra = pd.to_numeric(df["ra"], errors="coerce").to_numpy(float)
    dec = pd.to_numeric(df["dec"], errors="coerce").to_numpy(float)
    ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    c = SkyCoord(np.where(ok, ra, 0) * u.deg, np.where(ok, dec, 0) * u.deg, frame="icrs")
    names = c.to_string("hmsdms", sep="", precision=1, pad=True)
    # a row without a usable position is named by its line in the CSV (header = line 1), so each bad row is
    # reported once as itself, not as one more duplicate of a made-up position
    return pd.Series(["FIRST J" + s.replace(" ", "") if good else f"catalogue line {i + 2}"
                      for i, (s, good) in enumerate(zip(names, ok))], index=df.index)


def read_fits_cutout(path: Path, ra: float, dec: float, shape: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """The 2-D image of the first image HDU of ``path``; a larger image (e.g. a raw 300x300 SkyView cutout) is
    cut to ``shape`` around (ra, dec) with its WCS. Returns (image, None) or (None, reason)."""
    from astropy.io import fits

    if not path.is_file():
        return None, "file not found"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.size), None)
                if hdu is None:
                    return None, "no image data in any HDU"
                data = np.asarray(hdu.data, dtype=np.float32)
                header = hdu.header
    except Exception as e:  # astropy raises several types for truncated/corrupt files
        return None, f"unreadable FITS ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    data = data.reshape(data.shape[-2:]) if data.ndim > 2 and all(s == 1 for s in data.shape[:-2]) else data
    if data.ndim != 2:
        return None, f"image has {data.ndim} dimensions, expected 2"
    if data.shape[0] > shape[0] and data.shape[1] > shape[1]:
        return _cut_around(data, header, ra, dec, shape)
    return data, None


def _cut_around(data, header, ra, dec, shape):
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wcs = WCS(header).celestial
    if not wcs.has_celestial:
        return None, f"image is {data.shape} and has no celestial WCS to cut a {shape} cutout from"
    try:
        cut = Cutout2D(data, SkyCoord(ra * u.deg, dec * u.deg), shape, wcs=wcs, mode="strict")
    except Exception as e:  # position off the image or partially outside
        return None, f"cannot cut {shape} around the catalogue position ({e})"
    return np.asarray(cut.data, dtype=np.float32), None

"""DESI Legacy Imaging Surveys grz galaxies (Stein et al. 2021's 42 M-galaxy search; the images of Zoobot and
AstroCLIP): three channels g, r, z at 0.262"/px, 152 px cutouts (Stein et al.'s), fluxes in nanomaggies.

Local data, in any of three layouts (``--images`` and/or ``--catalog``):
- an HDF5 of cutouts in Stein et al.'s layout: ``images`` (N, 3, H, W), ``ra``, ``dec`` and any other per-object
  datasets (``z_phot_median``, ``z_spec``, ``ebv``, ``iauname`` ...), carried into the catalogue (read whole into
  memory: split a survey-sized file, or pass a .npy, which is memory-mapped);
- a ``.npy`` (N, 3, H, W) with ``--catalog``, a CSV whose rows are the images' (``ra``, ``dec``, any columns);
- ``--catalog`` alone with a ``file`` column: one FITS cube (3, H, W) per object, as the Legacy Surveys cutout service
  (``/viewer/fits-cutout?...&bands=grz``) writes them, paths relative to the CSV.
Optionally ``--gz-decals``, a Galaxy Zoo DECaLS table (Walmsley et al. 2022 column names, e.g.
``smooth-or-featured_smooth_fraction``) joined by position within 2", and ``--truth`` from the simulator.

Online: the Legacy Surveys cutout service (one FITS cube per position), then CDS hips2fits on the DESI Legacy
Surveys DR10 HiPS (one band each). Links: the Legacy Surveys viewer, SDSS SkyServer where SDSS imaged, Simbad.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from core.inputs import (
    InputError,
    bad_pixels_reason,
    check_positions,
    duplicate_ids,
    invalid_positions,
    join_by_position,
    read_catalog_csv,
)
from core.surveys.base import (
    Cutouts,
    SourceInput,
    Survey,
    aperture_mag,
    bin_pixels,
    central_band_scales,
    centre_crop,
    legacy_survey_link,
    reddening_psf_noise_params,
    register,
    sample_rows,
    second_moment_radius,
    simbad_link,
)
from core.surveys.services import FitsCutoutService, Hips2Fits

# Schlafly & Finkbeiner (2011) A_b / E(B-V) for DECam g, r, z, as the Legacy Surveys catalogues use them.
EXTINCTION_R = (3.214, 2.165, 1.211)
# effective wavelengths (Angstrom) of DECam g, r, z, for the lambda^-0.3 PSF scaling of the augmentations
WAVELENGTH_A = (4800.0, 6400.0, 9200.0)
# the Legacy Surveys viewer's grz -> RGB (Lang's legacypipe): band -> (RGB plane, scale), offset m, softening Q
RGB_SCALES = {"g": (2, 6.0), "r": (1, 3.4), "z": (0, 2.2)}
RGB_OFFSET, RGB_Q = 0.03, 20.0
THUMBNAIL_FIELD_ARCSEC = 32.0
GZD_MATCH_ARCSEC = 2.0
# Walmsley et al. (2022): smooth-or-featured_featured-or-disk_fraction -> question, answer
GZD_FRACTION = re.compile(r"^(?P<question>[a-z0-9]+(?:-[a-z0-9]+)*)_(?P<answer>[a-z0-9]+(?:-[a-z0-9]+)*)_fraction$")
PHOTO_Z_COLUMNS = ("z_phot_median", "z_phot_mean", "photo_z")
ID_COLUMNS = ("object_id", "iauname", "objid", "id", "ls_id")
SDSS_SOUTH_LIMIT_DEG = -11.3     # no SDSS imaging south of this declination: no SkyServer link there


def gzd_column(question: str, answer: str) -> str:
    """Bundle column of a GZ DECaLS vote fraction: gzd_smooth_or_featured_smooth_fraction."""
    return f"gzd_{question}_{answer}_fraction".replace("-", "_")


def _fraction(question: str, answer: str, title: str) -> tuple[str, dict]:
    return gzd_column(question, answer), {"title": f"GZ DECaLS {title} fraction", "kind": "fraction", "units": ""}


@register
class LegacySurveys(Survey):
    name = "legacy"
    bands = ("g", "r", "z")
    pixel_scale_arcsec = 0.262
    cutout_size = 152
    crop_size = 96
    method = "moco"
    arch = "resnet50"
    stem = "standard"
    # CPU: the SDSS CPU recipe (SimCLR, small encoder, brightness and size invariance, whitened) on the native
    # 0.262" pixels, 64 px = 16.8" inputs: on the simulated survey 2x2-binned 48 px inputs (25") lost 0.05 of type
    # purity at the same cost (BENCHMARKS.md, issue 26). GPU: Stein et al.'s MoCo v2 ResNet-50 on 96 px crops.
    cpu_recipe = {"method": "simclr", "arch": "small", "stem": "standard", "epochs": 10, "batch_size": 256,
                  "bin": 1, "crop": 64, "views": "d4", "centre": True, "whiten": True,
                  "augment": {"enable": ["brightness", "size"]}}
    gpu_recipe = {"method": "moco", "arch": "resnet50", "stem": "standard", "epochs": 200, "batch_size": 256,
                  "crop": 96, "views": "identity"}
    augmentation_recipe = "reddening_psf_noise"
    inputs = (SourceInput("images", "Legacy Surveys: HDF5 (Stein et al. layout: images, ra, dec, ...) or .npy of "
                                    "(N, 3, H, W) grz cutouts (with --catalog)"),
              SourceInput("catalog", "Legacy Surveys: catalogue CSV (ra, dec, ...; a 'file' column of FITS cubes "
                                     "from the cutout service, or the rows of --images)"),
              SourceInput("gz_decals", "Legacy Surveys: Galaxy Zoo DECaLS table (Walmsley et al. 2022 columns), "
                                       "joined within 2\""),
              SourceInput("truth", "Legacy Surveys: simulator truth.parquet (optional)"))
    online_services = (
        FitsCutoutService("Legacy Surveys cutout service", url="https://www.legacysurvey.org/viewer/fits-cutout",
                          env="SKYQUERY_LEGACY_URL", params=(("layer", "ls-dr10"),)),
        Hips2Fits("hips2fits (DESI Legacy Surveys DR10 HiPS)", hips="CDS/P/DESI-Legacy-Surveys/DR10/{band}"),
    )
    colour_by = dict([
        _fraction("smooth-or-featured", "smooth", "smooth"),
        _fraction("smooth-or-featured", "featured-or-disk", "featured/disk"),
        _fraction("smooth-or-featured", "artifact", "star/artefact"),
        _fraction("disk-edge-on", "yes", "edge-on"),
        _fraction("has-spiral-arms", "yes", "spiral arms"),
        _fraction("bar", "strong", "strong bar"),
        _fraction("how-rounded", "round", "round"),
        _fraction("merging", "merger", "merger"),
        ("photo_z", {"title": "Photometric redshift", "kind": "continuous", "units": ""}),
        ("redshift", {"title": "Spectroscopic redshift", "kind": "continuous", "units": ""}),
        ("angular_extent_arcsec", {"title": "Angular extent (r-band second moment)", "kind": "continuous",
                                   "units": "arcsec"}),
        ("r_mag", {"title": "r aperture magnitude", "kind": "continuous", "units": "mag"}),
        ("g_minus_r", {"title": "g - r colour", "kind": "continuous", "units": "mag"}),
        ("r_minus_z", {"title": "r - z colour", "kind": "continuous", "units": "mag"}),
        ("e_bv", {"title": "Galactic E(B-V)", "kind": "continuous", "units": "mag"}),
    ])

    # -- normalisation --------------------------------------------------------------------------------
    def fit_preprocessing(self, images: np.ndarray, bin: int = 1, crop: int | None = None) -> dict:
        """One linear scale per band (the 99th percentile of the central 12.6" over a sample), after binning: a pure
        per-band scale keeps colours, so the reddening and noise augmentations act on physical ratios."""
        if bin not in (1, 2):
            raise ValueError(f"Legacy Surveys cutouts bin by 1 or 2 (0.262\" or 0.524\" pixels), not {bin}")
        sample = bin_pixels(np.asarray(sample_rows(images, 2048), dtype=np.float32), bin)
        return {"band_scale": central_band_scales(sample, 48 // bin), "bands": list(self.bands), "bin": int(bin),
                "crop": int(crop or self.crop_size)}

    def normalise(self, images: np.ndarray, params: dict) -> np.ndarray:
        x = bin_pixels(np.asarray(images, dtype=np.float32), int(params.get("bin", 1)))
        return (x / np.asarray(params["band_scale"], dtype=np.float32)[None, :, None, None]).astype(np.float32)

    # -- training -------------------------------------------------------------------------------------
    def augmentation_params(self, normalised: np.ndarray, crop: int) -> dict:
        """Stein et al.'s recipe (DECam extinction, PSF, jitter, noise) with this survey's numbers at the training
        images' pixel size (binned or not); the noise scale is their per-band MAD."""
        pixel = self.pixel_scale_arcsec * self.cutout_size / normalised.shape[-1]
        return reddening_psf_noise_params(normalised, crop, max(1, round(2.8 / pixel)), pixel, EXTINCTION_R,
                                          WAVELENGTH_A)

    # -- evaluation -----------------------------------------------------------------------------------
    def report_tasks(self, catalog: pd.DataFrame, colour_by: dict) -> list[dict]:
        """With simulator truth: its galaxy type, and smooth vs featured; then the colour-by columns (GZ DECaLS
        fractions as > 0.8 vs < 0.2, photo-z, size, ...)."""
        from core.knowledge import galaxy_type_tasks

        tasks = galaxy_type_tasks(catalog)
        return tasks + [t for t in super().report_tasks(catalog, colour_by) if t["column"] != "truth_type"]

    # -- display and links ----------------------------------------------------------------------------
    def thumbnail_rgb(self, image: np.ndarray) -> np.ndarray:
        """The Legacy Surveys viewer's colours: each band scaled (z red, r green, g blue), then the mean intensity
        through asinh(Q I) / sqrt(Q), on the central 32"; north up."""
        field = round(THUMBNAIL_FIELD_ARCSEC / self.pixel_scale_arcsec)
        planes = centre_crop(np.asarray(image, dtype=np.float32), min(field, image.shape[-1]))
        scaled = [np.maximum(0, p * RGB_SCALES[b][1] + RGB_OFFSET) for b, p in zip(self.bands, planes)]
        intensity = sum(scaled) / len(scaled) + 1e-9
        stretch = np.arcsinh(RGB_Q * intensity) / np.sqrt(RGB_Q) / intensity
        rgb = np.zeros(planes.shape[1:] + (3,), np.float32)
        for band, plane in zip(self.bands, scaled):
            rgb[..., RGB_SCALES[band][0]] = plane * stretch
        return (np.clip(rgb, 0, 1)[::-1] * 255).astype(np.uint8)

    def archive_links(self, ra_deg: float, dec_deg: float) -> list[tuple[str, str]]:
        links = [legacy_survey_link("Legacy Surveys viewer", ra_deg, dec_deg, zoom=16)]
        if dec_deg >= SDSS_SOUTH_LIMIT_DEG:
            links.append(("SDSS SkyServer", "https://skyserver.sdss.org/dr17/VisualTools/navi?" + urlencode(
                {"ra": f"{ra_deg:.6f}", "dec": f"{dec_deg:.6f}", "scale": "0.2"})))
        return links + [simbad_link(ra_deg, dec_deg)]

    # -- data -----------------------------------------------------------------------------------------
    def read_local(self, images: str | Path | None = None, catalog: str | Path | None = None,
                   gz_decals: str | Path | None = None, truth: str | Path | None = None, out=None,
                   progress: bool = False, **_) -> Cutouts:
        """Any of the three layouts -> Cutouts; objects with bad positions, repeated ids or NaN pixels are skipped
        and reported. Adds photometry (r magnitude, g - r, r - z, r-band size)."""
        if images is None and catalog is None:
            raise InputError("--survey legacy needs --images (HDF5, or .npy with --catalog) or --catalog (with a "
                             "'file' column of FITS cutouts)")
        unreadable: dict[int, str] = {}
        if images is not None and Path(images).suffix.lower() in (".h5", ".hdf5"):
            table, stack = _read_hdf5(Path(images), self.n_channels)
        elif images is not None:
            table, stack = _read_npy(Path(images), catalog, self.n_channels)
        else:
            table, stack, unreadable = _read_fits_cubes(Path(catalog), self.n_channels, progress)
        cut = _usable(table, stack, out, unreadable)
        cat = _catalogue_columns(cut.catalog)
        cat = _add_photometry(cat, cut.images, self.pixel_scale_arcsec)
        if truth is not None and Path(truth).is_file():
            cat = _join_truth(cat, Path(truth))
        if gz_decals is not None:
            cat = join_gz_decals(cat, Path(gz_decals))
        return Cutouts(catalog=cat, images=cut.images, skipped=cut.skipped)


def _read_hdf5(path: Path, n_channels: int) -> tuple[pd.DataFrame, np.ndarray]:
    import h5py

    if not path.is_file():
        raise InputError(f"{path}: Legacy Surveys images HDF5 not found; check --images")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: cannot be opened as HDF5 ({e}); check the file") from None
    with h5:
        missing = [k for k in ("images", "ra", "dec") if k not in h5]
        if missing:
            raise InputError(f"{path}: lacks dataset(s) {missing} (has {sorted(h5.keys())}); expected Stein et al.'s "
                             "layout: images (N, 3, H, W), ra, dec, and per-object columns")
        n = h5["images"].shape[0]
        columns = {}
        for key in h5:
            data = h5[key]
            if key != "images" and getattr(data, "ndim", 0) == 1 and len(data) == n:
                values = np.asarray(data[:])
                columns[key] = [v.decode() for v in values] if values.dtype.kind == "S" else values
        stack = np.asarray(h5["images"][:], dtype=np.float32)
    _check_shape(stack, n_channels, path)
    return pd.DataFrame(columns), stack


def _read_npy(path: Path, catalog, n_channels: int) -> tuple[pd.DataFrame, np.ndarray]:
    if catalog is None:
        raise InputError(f"{path}: a .npy of cutouts has no positions; pass --catalog, a CSV with one row per "
                         "image (ra, dec, ...)")
    try:
        stack = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot be read as a .npy array ({e}); check --images") from None
    _check_shape(stack, n_channels, path)
    table = read_catalog_csv(catalog, ("ra", "dec"), what="Legacy Surveys catalogue")
    if len(table) != len(stack):
        raise InputError(f"{catalog}: {len(table)} rows but {path} holds {len(stack)} images; the catalogue's rows "
                         "must be the images'")
    return table, np.asarray(stack, dtype=np.float32)


def _read_fits_cubes(catalog: Path, n_channels: int, progress: bool) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """One FITS cube (3, H, W) per row, named by the ``file`` column; a missing, unreadable or differently shaped
    one is skipped, its reason kept by row."""
    from astropy.io import fits

    table = read_catalog_csv(catalog, ("file", "ra", "dec"), what="Legacy Surveys catalogue")
    rows = range(len(table))
    if progress:
        from tqdm import tqdm
        rows = tqdm(rows, desc="read FITS", unit="cutout")
    cubes, shape, reasons = [], None, {}
    for i in rows:
        path = catalog.parent / str(table["file"].iloc[i])
        try:
            with fits.open(path, memmap=False) as hdul:
                hdu = next(h for h in hdul if h.is_image and h.data is not None and h.data.ndim == 3)
                cube = np.asarray(hdu.data, dtype=np.float32)
        except StopIteration:
            cube, reasons[i] = None, f"{path}: no (bands, H, W) image cube in any HDU"
        except (OSError, ValueError, TypeError) as e:
            cube, reasons[i] = None, f"{path}: unreadable FITS ({type(e).__name__})"
        shape = shape or (cube.shape if cube is not None else None)
        if cube is not None and cube.shape != shape:
            cube, reasons[i] = None, f"{path}: shape {cube.shape}, but the first cutout's is {shape}"
        cubes.append(cube)
    if shape is None:
        raise InputError(f"{catalog}: none of the {len(table)} files holds a FITS cube (bands, H, W); expected the "
                         "Legacy Surveys cutout service's fits-cutout answers")
    stack = np.stack([c if c is not None else np.full(shape, np.nan, np.float32) for c in cubes])
    _check_shape(stack, n_channels, catalog)
    return table, stack, reasons


def _check_shape(stack: np.ndarray, n_channels: int, path) -> None:
    if stack.ndim != 4 or stack.shape[1] != n_channels or stack.shape[0] == 0:
        raise InputError(f"{path}: cutouts have shape {stack.shape}, expected (N, {n_channels}, H, W) with the "
                         "g, r, z bands in that order")


def _usable(table: pd.DataFrame, stack: np.ndarray, out, unreadable: dict[int, str]) -> Cutouts:
    """Rows with a position, a first-seen id, a readable file and finite pixels; the images written to ``out``
    (.npy) when given."""
    ids = _object_ids(table)
    skipped = check_positions(table, ids) + duplicate_ids(ids)
    keep = ~(invalid_positions(table) | ids.duplicated(keep="first").to_numpy())
    for i in np.flatnonzero(keep):
        reason = unreadable.get(i) or bad_pixels_reason(stack[i], stack.shape[1:])
        if reason is not None:
            skipped.append((str(ids.iloc[i]), reason))
            keep[i] = False
    rows = np.flatnonzero(keep)
    images = stack[rows]
    if out is not None:
        np.save(out, images)
        images = np.load(out, mmap_mode="r")
    catalog = table.iloc[rows].assign(object_id=ids.iloc[rows].to_numpy()).reset_index(drop=True)
    return Cutouts(catalog=catalog, images=images, skipped=skipped)


def _object_ids(table: pd.DataFrame) -> pd.Series:
    """The table's own id column when it has one, else a Legacy Surveys style name from the position."""
    column = next((c for c in ID_COLUMNS if c in table.columns), None)
    if column is not None:
        return table[column].astype(str).reset_index(drop=True)
    ra = pd.to_numeric(table["ra"], errors="coerce").to_numpy(float)
    dec = pd.to_numeric(table["dec"], errors="coerce").to_numpy(float)
    return pd.Series([f"LS J{r:09.5f}{d:+09.5f}" if np.isfinite(r) and np.isfinite(d) else f"row {i + 1}"
                      for i, (r, d) in enumerate(zip(ra, dec))])


def _catalogue_columns(cat: pd.DataFrame) -> pd.DataFrame:
    """object_id, ra, dec first; photo-z as ``photo_z``, a positive spectroscopic redshift as ``redshift``,
    ``ebv`` as ``e_bv``, the FITS path as ``source_file``; every other column carried under its own name."""
    out = pd.DataFrame({"object_id": cat["object_id"].astype(str).to_numpy(),
                        "ra": pd.to_numeric(cat["ra"]).to_numpy(float),
                        "dec": pd.to_numeric(cat["dec"]).to_numpy(float)})
    photo_z = next((c for c in PHOTO_Z_COLUMNS if c in cat.columns), None)
    renames = {photo_z: "photo_z", "z_spec": "redshift", "ebv": "e_bv", "file": "source_file"}
    for col in cat.columns:
        if col in ("object_id", "ra", "dec") or col in ID_COLUMNS:
            continue
        name = renames.get(col, col)
        values = cat[col].to_numpy()
        if name == "redshift":
            values = np.where(pd.to_numeric(cat[col], errors="coerce") > 0, cat[col], np.nan)
        out[name] = values
    return out


def _add_photometry(cat: pd.DataFrame, images: np.ndarray, pixel_scale: float, chunk: int = 1024) -> pd.DataFrame:
    """r-band size (second moment within 12"), and 22.5 - 2.5 log10 of the flux within 8" in g, r, z."""
    size, mags = np.full(len(cat), np.nan), np.full((len(cat), 3), np.nan)
    aperture = 8.0 / pixel_scale
    for s in range(0, len(cat), chunk):
        block = np.asarray(images[s : s + chunk], dtype=np.float32)
        size[s : s + chunk] = second_moment_radius(block[:, 1], pixel_scale, aperture_pix=12.0 / pixel_scale)
        for b in range(3):
            mags[s : s + chunk, b] = aperture_mag(block[:, b], radius_pix=aperture)
    return cat.assign(angular_extent_arcsec=size, r_mag=mags[:, 1], g_minus_r=mags[:, 0] - mags[:, 1],
                      r_minus_z=mags[:, 1] - mags[:, 2])


def _join_truth(cat: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Simulator truth keyed by object_id, as ``truth_<column>`` columns."""
    truth = pd.read_parquet(path)
    if "object_id" not in truth.columns:
        return cat
    truth = truth.assign(object_id=truth["object_id"].astype(str)).drop_duplicates("object_id").set_index("object_id")
    truth = truth.reindex(cat["object_id"].astype(str)).reset_index(drop=True)
    extra = {f"truth_{c}": truth[c].to_numpy() for c in truth.columns if c not in ("ra", "dec")}
    return cat.assign(**extra)


def join_gz_decals(cat: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Attach GZ DECaLS vote fractions (and each question's total votes) to the nearest object within 2"."""
    gz = read_catalog_csv(path, ("ra", "dec"), what="Galaxy Zoo DECaLS table")
    fractions = {c: gzd_column(m["question"], m["answer"]) for c in gz.columns if (m := GZD_FRACTION.match(c))}
    if not fractions:
        raise InputError(f"{path}: no Galaxy Zoo DECaLS vote fractions (expected Walmsley et al. 2022 names such as "
                         "smooth-or-featured_smooth_fraction)")
    totals = {c: "gzd_" + c.replace("-", "_") for c in gz.columns if c.endswith("_total-votes")}
    votes = gz.rename(columns={**fractions, **totals})
    return join_by_position(cat, votes, list(fractions.values()) + list(totals.values()), GZD_MATCH_ARCSEC)

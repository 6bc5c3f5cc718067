"""A cutout that is not in the bundle -> the bundle's encoder -> its neighbours and a place on the map.

    q = QueryEmbedder(bundle, cache_dir="~/.cache/skyquery")
    result = q.from_position(SkyCoord(...))         # fetch (core.surveys.online) then embed and search
    result = q.from_fits(uploaded_bytes)             # a FITS image with a celestial WCS

The cutout is put on the bundle's grid (pixel scale from the manifest, cutout size and bands from the encoder
config or the survey), passed through the encoder's own preprocessing (``core.encoder.load_embedder``), then
searched with ``core.index.SimilaritySearch``. Its map position is the UMAP-weighted mean of its neighbours'
positions (``core.placement.place_by_neighbours``): no fitted reducer is unpickled from a bundle. Everything here
blocks: the UI calls it off the Bokeh thread.
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits

from core.fitsguard import check_fits_headers
from core.surveys import online, services

PLACED_BY_NEIGHBOURS = "among its nearest neighbours on the map (UMAP-weighted mean of their positions)"
MAX_UPLOAD_PIXELS = 16 * 2**20   # 4096 x 4096 (64 MB as float32): any cutout, refusing survey tiles and bombs


class QueryError(Exception):
    """The query cannot be embedded (no encoder, wrong bands, a FITS without WCS...). Says what to do."""


@dataclass
class QueryResult:
    image: np.ndarray                 # (C, H, W) raw cutout on the bundle's grid, survey units
    header: fits.Header               # its WCS and where it came from
    embedding: np.ndarray             # (D,) float32, L2-normalised
    neighbour_ids: np.ndarray         # (k,) bundle rows, most similar first
    similarities: np.ndarray          # (k,) cosine similarities
    map_xy: tuple[float, float]
    placement: str
    coord: SkyCoord | None = None
    notes: list[str] = field(default_factory=list)


class QueryEmbedder:
    """Embeds and searches new cutouts for one bundle. Thread-safe; the encoder loads on first use."""

    def __init__(self, bundle, *, embedder: Callable[[np.ndarray], np.ndarray] | None = None,
                 cache_dir: str | Path | None = None, timeout: float = 20.0, fetch: Callable = online.fetch_cutout):
        self.bundle = bundle
        self._embedder = embedder
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self.timeout = timeout
        self.fetch = fetch
        self._lock = threading.Lock()
        self._search = None

    # -- what the bundle's images look like ---------------------------------------------------------
    @property
    def embedder(self) -> Callable[[np.ndarray], np.ndarray]:
        with self._lock:
            if self._embedder is None:
                from core.encoder import load_embedder

                enc = self.bundle.encoder_dir
                if not enc.is_dir():
                    raise QueryError(f"{enc}: this bundle has no encoder/ folder, so new cutouts cannot be embedded; "
                                     "rebuild it with `python -m precompute build` (which saves the encoder).")
                self._embedder = load_embedder(enc)
            return self._embedder

    @property
    def grid(self) -> tuple[int, float, int]:
        """(cutout size in pixels, pixel scale in arcsec, number of bands) of the bundle's stored images."""
        config = getattr(self.embedder, "config", {}) or {}
        survey = self._survey()
        manifest = self.bundle.manifest
        size = config.get("cutout_size") or manifest.get("cutout_size") or getattr(survey, "cutout_size", None)
        scale = manifest.get("pixel_scale_arcsec") or getattr(survey, "pixel_scale_arcsec", None)
        bands = config.get("bands") or manifest.get("bands") or getattr(survey, "bands", ())
        if not size or not scale:
            raise QueryError(f"{self.bundle.path / 'manifest.json'}: the bundle does not say its cutout size and "
                             "pixel scale, so a new cutout cannot be matched to its images.")
        return int(size), float(scale), len(bands)

    def _survey(self):
        from core.surveys.base import get_survey

        try:
            return get_survey(self.bundle.survey)
        except KeyError:
            return None

    @property
    def search(self):
        with self._lock:
            if self._search is None:
                from core.index import SimilaritySearch

                self._search = SimilaritySearch(self.bundle.index, self.bundle.embeddings)
            return self._search

    # -- queries ------------------------------------------------------------------------------------
    def from_position(self, coord: SkyCoord, k: int = 12) -> QueryResult:
        """Fetch the survey's cutout at ``coord`` (disk-cached), embed it and search. Raises FetchError/QueryError."""
        size, scale, _ = self.grid
        image, header = self.fetch(self.bundle.survey, coord, size, scale, timeout=self.timeout,
                                   cache_dir=self.cache_dir)
        notes = [f"fetched from {header.get('SERVICE', 'the survey service')}"]
        if header.get("NANFILL"):
            notes.append(f"{header['NANFILL']} blank pixels filled with the median")
        return self.from_image(image, header, coord=coord, k=k, notes=notes)

    def from_fits(self, content: bytes | str | Path, coord: SkyCoord | None = None, k: int = 12,
                  name: str = "uploaded FITS") -> QueryResult:
        """An uploaded FITS image with a celestial WCS (2-D, or a (C, H, W) cube for multi-band surveys),
        cut out around ``coord`` (default: the image centre) on the bundle's grid."""
        if isinstance(content, (str, Path)):
            name, content = str(content), Path(content).read_bytes()
        planes, header = _read_planes(content, name)   # the file first: a bad one is refused whatever the bundle
        size, scale, n_bands = self.grid
        if len(planes) != n_bands:
            raise QueryError(f"{name} has {len(planes)} image plane(s) but this bundle's images have {n_bands} "
                             f"band(s) ({', '.join(self.bundle.manifest.get('bands', []))}); upload one plane per "
                             "band.")
        if coord is None:
            coord = _image_centre(header, planes[0].shape, name)
        target = online.target_wcs(coord, size, scale)
        image = np.stack([online.resample_to_grid(p, header, target, name) for p in planes]).astype(np.float32)
        image, n_filled = online.fill_few_nans(image, name)
        notes = [f"cut from {name}"] + ([f"{n_filled} blank pixels filled with the median"] if n_filled else [])
        return self.from_image(image, target.to_header(), coord=coord, k=k, notes=notes)

    def from_image(self, image: np.ndarray, header: fits.Header | None = None, *, coord: SkyCoord | None = None,
                   k: int = 12, notes: list[str] | None = None) -> QueryResult:
        """A raw cutout already on the bundle's grid -> embedding, neighbours and map position."""
        vec = np.asarray(self.embedder(np.asarray(image, dtype=np.float32)[None]), dtype=np.float32)[0]
        vec /= max(float(np.linalg.norm(vec)), 1e-12)
        sims, ids = self.search.search(vec[None], k=k)
        ids, sims = ids[0][ids[0] >= 0], sims[0][ids[0] >= 0]
        xy, placement = self.place(vec, ids, sims)
        return QueryResult(image=np.asarray(image, dtype=np.float32),
                           header=header if header is not None else fits.Header(),
                           embedding=vec, neighbour_ids=ids, similarities=sims, map_xy=xy, placement=placement,
                           coord=coord, notes=list(notes or []))

    def place(self, vec: np.ndarray, neighbour_ids: np.ndarray,
              similarities: np.ndarray | None = None) -> tuple[tuple[float, float], str]:
        """Map position from the neighbours' positions (nothing fitted is unpickled: core.placement)."""
        from core.placement import place_by_neighbours

        if len(neighbour_ids) == 0:
            raise QueryError("the similarity search returned no neighbours; is the bundle's index empty?")
        cat = self.bundle.catalog
        rows = np.asarray(neighbour_ids, dtype=np.int64)
        xy_nb = np.stack([cat["umap_x"].to_numpy()[rows], cat["umap_y"].to_numpy()[rows]], axis=1)
        sims = np.ones(len(rows)) if similarities is None else np.asarray(similarities)
        xy = place_by_neighbours(xy_nb, sims)
        return (float(xy[0]), float(xy[1])), PLACED_BY_NEIGHBOURS

    def thumbnail_png(self, image: np.ndarray) -> bytes:
        """The query cutout drawn the way the bundle's thumbnails are (the survey's own stretch)."""
        from PIL import Image

        survey = self._survey()
        try:
            rgb = survey.thumbnail_rgb(image) if survey is not None else None
        except NotImplementedError:
            rgb = None
        if rgb is None:
            rgb = _grey_asinh(image)
        buf = io.BytesIO()
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
        return buf.getvalue()


# --------------------------------------------------------------------------------------------- helpers
def _read_planes(content: bytes, name: str) -> tuple[list[np.ndarray], fits.Header]:
    from astropy.wcs import WCS

    if content and content[:2] == b"\x1f\x8b":   # .fits.gz
        content = _gunzip_within_budget(content, name)
    if not content or not content.startswith(b"SIMPLE"):
        raise QueryError(f"{name} is not a FITS file; upload a FITS image with a celestial WCS.")
    try:
        check_fits_headers(content, name)   # before astropy parses a card
    except ValueError as e:
        raise QueryError(str(e)) from e
    try:
        with fits.open(io.BytesIO(content), memmap=False) as hdul:
            _check_pixel_budget(hdul, name)   # before any .data: tile compression reached 1000:1 (a bomb)
            hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim >= 2), None)
            if hdu is None:
                raise QueryError(f"{name} holds no image; upload a FITS image with a celestial WCS.")
            data = np.asarray(hdu.data, dtype=np.float32)
            header = services.without_commentary(hdu.header)
    except (OSError, ValueError, TypeError) as e:
        raise QueryError(f"{name} is truncated or corrupt ({e}).") from e
    try:
        celestial = WCS(header).has_celestial
    except Exception as e:   # wcslib rejects the keywords (an unknown projection code, inconsistent axes)
        raise QueryError(f"{name} has a WCS that cannot be read ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:160]}); upload a FITS file with a valid WCS.") from e
    if not celestial:
        raise QueryError(f"{name} has no celestial WCS (CTYPE/CRVAL/CDELT), so its position is unknown; "
                         "upload a FITS file with a WCS.")
    data = data.reshape((-1,) + data.shape[-2:])  # degenerate radio axes and band cubes alike -> (C, H, W)
    return list(data), header


def _gunzip_within_budget(content: bytes, name: str) -> bytes:
    """A gzipped upload, decompressed only up to what the pixel budget allows (a gzip bomb stops there)."""
    import zlib

    limit = MAX_UPLOAD_PIXELS * 8 + 2880 * 64   # float64 pixels and generous headers
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(content, limit)
    except zlib.error as e:
        raise QueryError(f"{name} is not a valid gzip file ({e}).") from e
    if inflater.unconsumed_tail:
        raise QueryError(f"{name} decompresses to more than {limit // 2**20} MB; upload a cutout around the object, "
                         f"not a survey tile.")
    return out


def header_pixels(header) -> int:
    """Pixels an image HDU will decompress to, from its header alone (ZNAXISn for tile-compressed HDUs)."""
    prefix = "ZNAXIS" if "ZNAXIS" in header else "NAXIS"
    naxis = int(header.get(prefix, 0) or 0)
    n = 1 if naxis else 0
    for i in range(1, naxis + 1):
        n *= max(0, int(header.get(f"{prefix}{i}", 0) or 0))
    return n


def _check_pixel_budget(hdul, name: str) -> None:
    total = 0
    for h in hdul:
        if h.is_image:
            total += header_pixels(h._header if hasattr(h, "_header") else h.header)
    if total > MAX_UPLOAD_PIXELS:
        raise QueryError(f"{name} would decompress to {total:,} pixels (more than {MAX_UPLOAD_PIXELS:,}); upload a "
                         f"cutout around the object, not a survey tile.")


def _image_centre(header: fits.Header, shape, name: str) -> SkyCoord:
    from astropy.wcs import WCS

    w = WCS(header).celestial
    ny, nx = shape
    return w.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs


def _grey_asinh(image: np.ndarray) -> np.ndarray:
    from astropy.visualization import AsinhStretch, PercentileInterval

    img = np.asarray(image, dtype=np.float32)
    img = img.mean(axis=0) if img.ndim == 3 else img
    grey = (AsinhStretch(0.1)(PercentileInterval(99.5)(img), clip=True) * 255).astype(np.uint8)[::-1]
    return np.repeat(grey[:, :, None], 3, axis=2)

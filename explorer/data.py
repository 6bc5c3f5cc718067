"""The bundle as the explorer uses it, loaded once per server process and shared by every session.

``resolve_bundle_path`` picks the bundle (``--args --bundle DIR``, else ``$EXPLORER_BUNDLE``, else
``bundles/demo``); ``load_explorer_data`` opens and validates it once per path (a module-level cache, so every
browser session of a ``panel serve`` process shares one copy) and prepares what the page needs: the map frame
(x, y and one float32 column per colour-by choice), the KD-tree for hover/click, the similarity searcher over the
memory-mapped embeddings, and the packed thumbnails.

The map engine (``explorer.settings``: ``--map-engine``, else ``$EXPLORER_MAP_ENGINE``, else ``memory``) decides
where the bundle's colour columns live. ``memory``: in the map frame, as above. ``dask``: in the bundle's
``points/`` (partitioned Parquet written by ``python -m precompute points``), read lazily by Dask at each render, so
only x/y (float32, for the hover tree, lasso and selection) stay in memory; ``auto``: ``dask`` when the bundle has
``points/`` and its in-memory colour columns (4 B x N x columns) would pass ``AUTO_DASK_ABOVE_BYTES``, else
``memory``. Memory mode renders ~4x faster (10 M objects on 2 cores: 0.1-0.3 s against 0.6-1.1 s), so Dask pays
only where the colour columns themselves are a real share of the server's memory (many columns, or N >> 10 M).
"""
from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.bundle import Bundle
from core.contract import BundleError
from core.hats import HATS_DIR, LSDB_ABOVE, check_stamp
from explorer.filerows import FileRows
from explorer.map import colour
from explorer.map.hover import build_tree
from explorer.map.kernels import warm_colour_kernels, warm_density_kernels

log = logging.getLogger("explorer")

MAKE_ONE = "make demo   (or: python -m precompute demo --out bundles/demo)"
# ``auto`` reads colours from points/ once the float32 colour columns would pass this (e.g. 10 M objects x 27
# columns): below it memory mode is both faster and small next to the catalogue (docs/SCALING.md).
AUTO_DASK_ABOVE_BYTES = 1 << 30

# Embedding norms checked when a server opens a bundle: a spread sample, not the 100 k rows of `python -m precompute
# validate` (those read most of a 4 GB embeddings file, ~3-6 s of a 1 M-object cold start). Every structural check
# (files, manifest, shapes, dtypes, row counts, catalogue columns, index size) still runs in full.
STARTUP_NORM_ROWS = 2_000

_NO_IMAGE_SVG = ("<svg xmlns='http://www.w3.org/2000/svg' width='64' height='64'><rect width='64' height='64' "
                 "fill='#eeeeee'/><text x='32' y='30' font-size='9' text-anchor='middle' fill='#666'>no image</text>"
                 "<text x='32' y='42' font-size='8' text-anchor='middle' fill='#666'>see links</text></svg>")
NO_IMAGE_URI = "data:image/svg+xml;base64," + base64.b64encode(_NO_IMAGE_SVG.encode()).decode("ascii")
_MIME = {"webp": "image/webp", "jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png"}


def choose_map_engine(engine: str, bundle: Bundle) -> str:
    """Resolve ``auto``: dask when the bundle has points/ and its colour columns would pass AUTO_DASK_ABOVE_BYTES."""
    from core.points import POINTS_DIR

    if engine != "auto":
        return engine
    n_columns = sum(1 for c in bundle.colour_by if c != colour.DENSITY)
    big = 4 * bundle.n * n_columns > AUTO_DASK_ABOVE_BYTES
    return "dask" if big and (bundle.path / POINTS_DIR).is_dir() else "memory"


class MapPoints:
    """The bundle's points/ as a lazy Dask dataframe: per colour column, a frame of x, y and that column as "v".

    Only the chosen column (plus x, y) is read from Parquet at each render; nothing is persisted (see SCALING.md:
    persisted partitions would hold the colour columns in memory again, and render slower than the memory engine).
    """

    def __init__(self, folder: Path, meta: dict, client=None):
        from core.points import load_points_dask

        self.folder, self.meta, self.client = Path(folder), meta, client   # client: a dask.distributed cluster's
        self.ddf = load_points_dask(self.folder)
        self._frames: dict[str, object] = {}

    @property
    def npartitions(self) -> int:
        return self.ddf.npartitions

    def frame_for(self, value_column: str):
        """Lazy frame with columns x, y, v (a fixed name: one compiled Datashader kernel per reduction)."""
        if value_column not in self._frames:
            x, y = self.meta["xy"]
            names = {x: "x", y: "y", value_column: "v"}
            self._frames[value_column] = self.ddf[list(names)].rename(columns=names)
        return self._frames[value_column]


class built_once:
    """``functools.cached_property`` that builds at most once when threads race: a hover waiting for the KD-tree the
    background warm-up is building gets that tree, not a second build (cached_property lost its lock in 3.12)."""

    def __init__(self, build):
        self.build, self.name, self.__doc__ = build, build.__name__, build.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        if self.name in obj.__dict__:
            return obj.__dict__[self.name]
        with obj.build_lock(self.name):
            if self.name not in obj.__dict__:
                obj.__dict__[self.name] = self.build(obj)
        return obj.__dict__[self.name]


@dataclass(eq=False)
class ExplorerData:
    """Everything sessions share, read-only."""

    bundle: Bundle
    catalog: pd.DataFrame
    frame: pd.DataFrame  # x, y and the float32 colour columns the map aggregates
    specs: dict[str, colour.ColourSpec]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # default colour limits per column
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # full value range per column
    null_fractions: dict[str, float] = field(default_factory=dict)
    map_engine: str = "memory"  # "memory" or "dask" (auto already resolved)
    points: MapPoints | None = None  # the lazy colour columns in dask mode
    _locks: dict = field(default_factory=dict, init=False, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def build_lock(self, name: str) -> threading.Lock:
        """The lock that makes the shared structure ``name`` build once (one per structure: waiting for the tree
        does not wait for the searcher)."""
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    @property
    def n(self) -> int:
        return len(self.frame)

    @property
    def survey(self) -> str:
        return self.bundle.survey

    @property
    def survey_title(self) -> str:
        """The survey as the page names it: its title when it has one (``none``: any sky), else its name."""
        from core.surveys.base import find_survey

        survey = find_survey(self.survey)
        return survey.title if survey.name == self.survey and survey.title else self.survey

    @built_once
    def tree(self):
        return build_tree(self.frame["x"].to_numpy(), self.frame["y"].to_numpy())

    @built_once
    def embedding_rows(self) -> FileRows:
        """The embeddings, row by row, without mapping the file (see FileRows)."""
        return FileRows.of_npy(self.bundle.embeddings)

    @built_once
    def searcher(self):
        from core.index import SimilaritySearch

        return SimilaritySearch(self.bundle.index, self.embedding_rows)

    @built_once
    def _thumb_blob(self) -> FileRows:
        return FileRows(self.bundle.path / "thumbnails" / "blob.bin")

    @built_once
    def mosaic_tiles(self):
        """Decoded thumbnails for the map's mosaic mode (``explorer.map.mosaic``), shared by every session."""
        from explorer.map.mosaic import ThumbnailTiles

        offsets = self.bundle.thumbnails.offsets
        return ThumbnailTiles(lambda i: self._thumb_blob.read_bytes(offsets[int(i)], offsets[int(i) + 1]))

    @built_once
    def bundle_images(self):
        """The bundle's objects' raw cutouts from the build's ingest cache beside it (``core.finetune.find_images``:
        images[i] is bundle row rows[i]), or None when the cache is gone."""
        from core.finetune import FineTuneError, find_images

        try:
            found = find_images(self.bundle)
        except (FineTuneError, KeyError, OSError, ValueError):
            return None
        return found

    @built_once
    def map_scale(self) -> float:
        """Median distance between random objects on the map: the unit of the augmented copies' map shifts."""
        from core.stability import median_map_distance

        return median_map_distance(np.column_stack([self.frame["x"].to_numpy(), self.frame["y"].to_numpy()]))

    @built_once
    def row_index(self) -> pd.Index:
        """object_id (as text, as the label store keeps it) -> bundle row."""
        return pd.Index(self.object_ids, copy=False)

    @property
    def uses_lsdb(self) -> bool:
        """Whether sky queries go through LSDB: the bundle carries hats/ and is larger than LSDB_ABOVE."""
        return self.n > LSDB_ABOVE and (self.bundle.path / HATS_DIR).is_dir()

    @built_once
    def matcher(self):
        """Finds this bundle's objects by position or name: ``explorer.sky.skyquery.CatalogueMatcher`` (a KD-tree),
        or through LSDB (``explorer.sky.hats_match``) for a bundle with hats/ above ``core.hats.LSDB_ABOVE``."""
        from core.hats import open_hats
        from explorer.sky.skyquery import CatalogueMatcher

        if self.uses_lsdb:
            from explorer.sky.hats_match import HatsMatcher

            cat = open_hats(self.bundle.path, self.n, self.bundle.manifest.get("created"), self.object_ids)
            return HatsMatcher(cat, self.ra, self.dec, self.object_ids)
        return CatalogueMatcher(self.ra, self.dec, self.object_ids)   # the shared copy of the ids

    def query_embedder(self, cutout_cache: Path):
        """Embeds fetched or uploaded cutouts like the bundle's own (``explorer.sky.query_embed``); the first caller's
        cutout cache folder holds for the process."""
        from explorer.sky.query_embed import QueryEmbedder

        with self.build_lock("query_embedder"):
            if "_query_embedder" not in self.__dict__:
                self.__dict__["_query_embedder"] = QueryEmbedder(self.bundle, cache_dir=cutout_cache)
        return self.__dict__["_query_embedder"]

    @built_once
    def ra(self) -> np.ndarray:
        return self.catalog["ra"].to_numpy(dtype=np.float64)

    @built_once
    def dec(self) -> np.ndarray:
        return self.catalog["dec"].to_numpy(dtype=np.float64)

    # Built once per process: made per session they cost 2 x 69 bytes per object for every open page (1.4 GB per
    # session at 10 M), since pandas' string columns convert to a fresh object array on every to_numpy().
    @built_once
    def object_ids(self) -> np.ndarray:
        """object_id of every row as text (how the label store keeps them)."""
        return self.catalog["object_id"].astype(str).to_numpy()

    @built_once
    def split(self) -> np.ndarray:
        """The train/val/test split of every row."""
        return self.catalog["split"].to_numpy()

    @built_once
    def finetuned(self) -> list:
        """The fine-tuned classifiers the bundle keeps (``core.finetune.read_finetuned``; checked at load)."""
        from core.finetune import read_finetuned

        return read_finetuned(self.bundle.path, self.bundle.manifest, self.n)

    @built_once
    def report(self) -> dict | None:
        """The bundle's report.json (what the embedding knows; checked by validation), or None."""
        from core.contract import read_report

        return read_report(self.bundle.path / "report.json")

    @built_once
    def similarity_reference(self) -> dict:
        """Quantiles of the cosine between random pairs of objects: from the report, or measured on a sample of the
        embeddings for bundles made before reports existed."""
        if self.report is not None:
            return self.report["similarity_reference"]
        from core.knowledge import similarity_reference

        rows = np.sort(np.random.default_rng(0).choice(self.n, min(self.n, 20_000), replace=False))
        return similarity_reference(np.asarray(self.embedding_rows[rows], dtype=np.float32))

    def similarity_percentile(self, cosine) -> np.ndarray:
        """Percentile (0-100) of ``cosine`` among random pairs: 99.9 means closer than 99.9 % of random pairs."""
        from core.knowledge import percentile

        return percentile(self.similarity_reference, cosine)

    @built_once
    def thumbnail_mime(self) -> str:
        fmt = str(self.bundle.manifest.get("thumbnails", {}).get("format", "webp")).lower()
        return _MIME.get(fmt, "image/webp")

    @built_once
    def has_thumbnails(self) -> bool:
        """False for a bundle built from someone else's embeddings without images (thumbnails format "none")."""
        return str(self.bundle.manifest.get("thumbnails", {}).get("format", "webp")).lower() != "none"

    def thumbnail_uri(self, i: int) -> str:
        """The packed thumbnail of row ``i`` as a data URI for an <img> tag (a 'no image' tile when the bundle has
        none: its objects' archive links are in the details)."""
        if not self.has_thumbnails:
            return NO_IMAGE_URI
        offsets = self.bundle.thumbnails.offsets
        data = self._thumb_blob.read_bytes(offsets[int(i)], offsets[int(i) + 1])
        return f"data:{self.thumbnail_mime};base64,{base64.b64encode(data).decode('ascii')}"

    def row(self, i: int) -> pd.Series:
        return self.catalog.iloc[int(i)]

    def warm(self) -> "ExplorerData":
        """Build the lazily made shared structures now, so the first hover/click is fast."""
        _ = self.tree, self.searcher, self.ra, self.dec, self.bundle.thumbnails
        _ = self.embedding_rows, self._thumb_blob, self.matcher
        return self

    def warm_in_background(self, after_request: bool = True) -> threading.Thread:
        """Build what the first page does not need (hover KD-tree, similarity searcher, the Datashader kernels of
        other views) in a daemon thread; a hover or click before it is done waits for that structure (``built_once``), and a failure
        here is only logged: the first use builds again and raises where the page shows errors.

        With ``after_request`` and a Tornado loop running in this thread (``panel serve`` loading the bundle inside
        the first request), the thread starts once that request is answered: the warm-up holds the GIL for seconds
        of Numba compilation, which would otherwise come out of the first page's time."""
        thread = threading.Thread(target=self._warm_quietly, name="explorer-warm", daemon=True)
        loop = _running_tornado_loop() if after_request else None
        if loop is None:
            thread.start()
        else:
            loop.add_callback(thread.start)
        return thread

    def _warm_quietly(self) -> None:
        try:
            self.warm()  # the hover tree first: the pointer is the first thing a visitor uses
            warm_density_kernels()
            warm_colour_kernels(dask_points=self.points)
        except Exception:  # noqa: BLE001 - the first hover/click rebuilds and reports it
            log.exception("background warm-up of %s failed", self.bundle.path)


def prepare(bundle: Bundle, map_engine: str = "memory", scheduler: str | None = None) -> ExplorerData:
    """The shared data for ``map_engine`` ("memory", "dask" or "auto"); dask mode raises ``PointsError`` when the
    bundle's points/ is missing or does not match it, and aggregates on the dask.distributed scheduler at
    ``scheduler`` when one is named (``ClusterError`` when it does not answer; its workers must see the bundle)."""
    catalog = bundle.catalog
    specs = colour.specs_from_manifest(bundle.colour_by, catalog)
    cols = {"x": catalog["umap_x"].to_numpy(np.float32), "y": catalog["umap_y"].to_numpy(np.float32)}
    engine = choose_map_engine(map_engine, bundle)
    if engine == "dask":
        return _prepare_dask(bundle, catalog, specs, cols, scheduler)
    ranges, bounds, nulls = {}, {}, {}
    for name, spec in specs.items():
        if spec.kind == colour.DENSITY:
            continue
        values = colour.colour_values(catalog[name], spec)
        cols[spec.value_column] = values
        ranges[name], bounds[name], nulls[name] = colour.column_stats(values, spec)
    frame = pd.DataFrame(cols, copy=False)
    return ExplorerData(bundle=bundle, catalog=catalog, frame=frame, specs=specs, ranges=ranges, bounds=bounds,
                        null_fractions=nulls)


def _prepare_dask(bundle: Bundle, catalog: pd.DataFrame, specs: dict, xy: dict,
                  scheduler: str | None = None) -> ExplorerData:
    """Dask mode: x/y in memory, colour columns and their ranges from points/ (checked against the bundle)."""
    from core.points import POINTS_DIR, check_points

    meta = check_points(bundle.path, bundle.n, bundle.manifest.get("created"), specs)
    client = None
    if scheduler:
        from core.cluster import connect

        client = connect(scheduler)
    columns = {name: meta["columns"][name] for name, spec in specs.items() if spec.kind != colour.DENSITY}
    return ExplorerData(
        bundle=bundle, catalog=catalog, frame=pd.DataFrame(xy, copy=False), specs=specs,
        ranges={k: tuple(c["range"]) for k, c in columns.items()},
        bounds={k: tuple(c["bounds"]) for k, c in columns.items()},
        null_fractions={k: float(c["null_fraction"]) for k, c in columns.items()},
        map_engine="dask", points=MapPoints(bundle.path / POINTS_DIR, meta, client))


# process-wide by design: every session of a server shares one loaded bundle (and its index, trees, tiles)
_CACHE: dict[tuple[Path, str, str | None], ExplorerData] = {}
_LOCK = threading.Lock()


def _running_tornado_loop():
    """The Tornado IOLoop running in this thread (inside a ``panel serve`` request), else None."""
    try:
        import asyncio

        asyncio.get_running_loop()
        from tornado.ioloop import IOLoop

        return IOLoop.current()
    except (RuntimeError, ImportError):
        return None


def open_bundle_for_serving(path: Path, norm_rows: int = STARTUP_NORM_ROWS) -> Bundle:
    """``Bundle.open`` with the server's validation: every structural check, embedding norms on ``norm_rows``
    spread rows (``python -m precompute validate`` checks 100 k); the index read by validation is kept."""
    return Bundle.open(path, check_norms_rows=norm_rows, hash_large_files=False)


def load_explorer_data(path: str | Path, map_engine: str = "memory", scheduler: str | None = None) -> ExplorerData:
    """Open, validate and prepare the bundle at ``path`` once per process and engine; raises ``BundleError`` (a
    ``PointsError`` when dask mode finds no usable points/).

    Only what the first page draws is built here (the map frame); the hover tree, the similarity searcher and the
    Datashader kernels follow in a background thread (``warm_in_background``). The first page's own render compiles
    the density kernels it uses: compiling them here first on a toy frame would not make that render faster, and the
    spreading kernels it compiled too (~4 s) are needed only once a zoom thins the points out."""
    key = (Path(path).resolve(), map_engine, scheduler)
    with _LOCK:
        if key not in _CACHE:
            data = prepare(open_bundle_for_serving(key[0]), map_engine, scheduler)
            data.finetuned   # a damaged classifier file is a damaged bundle: refused here, with the others
            if data.uses_lsdb:   # so is a hats/ written for another bundle (HatsError names both)
                check_stamp(data.bundle.path, data.n, data.bundle.manifest.get("created"))
            data.warm_in_background()
            _CACHE[key] = data
        return _CACHE[key]


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


__all__ = ["BundleError", "ExplorerData", "MapPoints", "load_explorer_data", "open_bundle_for_serving", "MAKE_ONE",
           "STARTUP_NORM_ROWS", "prepare"]

"""`python -m precompute from-embeddings`: a bundle from embeddings made elsewhere (Zoobot, AstroCLIP, AstroPT, your
own), so they can be explored, searched, labelled and probed like a trained one.

    python -m precompute from-embeddings --survey sdss --embeddings emb.parquet --catalog cat.fits --out B \\
        [--images cutouts.npy] [--id-column objid]

Embeddings: ``.npy`` (N, D) in the catalogue's row order; Parquet with an id column and either one list column of
vectors or ``feat_0 … feat_{D-1}``; HDF5 with ``image_embeddings`` (or ``embeddings``) and ``object_id`` (AstroCLIP's
layout). Catalogue: CSV, Parquet, FITS or VOTable with an id and RA/Dec in degrees. ``--images``: a ``.npy`` of the
survey's cutouts (N, C, H, W) in the embeddings' row order, for thumbnails; without it the bundle has none and the
explorer shows archive links. ``--survey`` names whose archive links and cutout service the explorer offers: a
survey of ``core/surveys`` (``legacy`` for Zoobot's or AstroCLIP's Legacy Surveys embeddings), or ``none`` for any
other sky (no cutout service; Simbad, NED and Aladin by position; thumbnails of any number of channels).

Rows whose vector is NaN or zero, duplicate ids, and ids found in only one of the two files are left out, each kind
with one message; the vectors are read and normalised in chunks into a float16 memory map, so memory stays bounded
by the catalogue and one chunk. The map, index and report stages are the pipeline's own; the report has the
embedding's health and its figures on the catalogue's labelled columns (no untrained twin: there is no network).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from core.inputs import InputError
from core.surveys.base import known_surveys
from precompute.cache import StageResult, WorkDir, fingerprint_file

CHUNK_ROWS = 16_384   # 32 MB of float32 at 512-d: memory stays flat whatever N is
ID_CANDIDATES = ("object_id", "objid", "ObjID", "id", "ID", "name", "rgz_name")
RA_CANDIDATES = ("ra", "RA", "ra_deg", "RAJ2000", "radeg")
DEC_CANDIDATES = ("dec", "DEC", "Dec", "dec_deg", "DEJ2000", "decdeg")


# ------------------------------------------------------------------------------------------------ catalogue
def read_table(path: Path) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        if suffix in (".csv", ".csv.gz"):
            return pd.read_csv(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".fits", ".fit", ".fits.gz", ".vot", ".xml", ".votable"):
            from astropy.table import Table

            table = Table.read(path, format="votable" if suffix in (".vot", ".xml", ".votable") else "fits")
            names = [n for n in table.colnames if len(table[n].shape) <= 1]   # vector columns cannot be cells
            frame = table[names].to_pandas()
            for col in frame.columns:
                if len(frame) and isinstance(frame[col].iloc[0], bytes):
                    frame[col] = frame[col].str.decode("utf-8", "replace").str.strip()
            return frame
    except Exception as e:   # unreadable file: one message naming it
        raise InputError(f"{path}: cannot be read as {suffix[1:]} ({type(e).__name__}: {e})") from e
    raise InputError(f"{path}: unknown catalogue format {suffix!r}; use CSV, Parquet, FITS or VOTable")


def _pick(columns, wanted: str | None, candidates, what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise InputError(f"{path}: no column {wanted!r} ({what}); it has {list(columns)[:20]}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    lower = {str(c).lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lower:
            return lower[name.lower()]
    raise InputError(f"{path}: no {what} column (looked for {', '.join(candidates)}); it has {list(columns)[:20]}")


def read_catalogue(path: Path, id_column: str | None = None) -> pd.DataFrame:
    """The catalogue with ``object_id`` (text), ``ra`` and ``dec`` (degrees) first, then every other column."""
    frame = read_table(path)
    ident = _pick(frame.columns, id_column, ID_CANDIDATES, "object id", path)
    ra = _pick(frame.columns, None, RA_CANDIDATES, "RA", path)
    dec = _pick(frame.columns, None, DEC_CANDIDATES, "Dec", path)
    out = pd.DataFrame({"object_id": frame[ident].astype(str).str.strip(),
                        "ra": pd.to_numeric(frame[ra], errors="coerce"),
                        "dec": pd.to_numeric(frame[dec], errors="coerce")})
    rest = frame.drop(columns=[c for c in (ident, ra, dec) if c in frame.columns])
    rest = rest[[c for c in rest.columns if c not in out.columns]]
    return pd.concat([out, rest.reset_index(drop=True)], axis=1)


KEEP_COLUMNS = ("object_id", "ra", "dec", "umap_x", "umap_y", "split")   # the bundle's own: never colours or joined


def join_table(cat: pd.DataFrame, path: Path, radius_arcsec: float) -> pd.DataFrame:
    """``cat`` with the numeric columns of the table at ``path`` from its nearest row within ``radius_arcsec``
    (redshifts, morphologies, photometry from another catalogue); nulls without one. Through LSDB (a HATS
    cross-match) above ``core.hats.LSDB_ABOVE`` objects, else astropy's in-memory match: the same answers."""
    from core.hats import LSDB_ABOVE

    table = read_table(path)
    ra, dec = (_pick(table.columns, None, c, w, path) for c, w in ((RA_CANDIDATES, "RA"), (DEC_CANDIDATES, "Dec")))
    table = table.rename(columns={ra: "ra", dec: "dec"})
    columns = [c for c in table.columns if c not in KEEP_COLUMNS and c not in ("ra", "dec")
               and pd.api.types.is_numeric_dtype(table[c])]
    if not columns:
        raise InputError(f"{path}: no numeric columns to join besides its RA and Dec; it has "
                         f"{list(table.columns)[:20]}")
    if len(cat) > LSDB_ABOVE:
        joined = join_by_position_lsdb_frame(cat, table, columns, radius_arcsec)
        how = "LSDB cross-match"
    else:
        from core.inputs import join_by_position

        joined = join_by_position(cat, table, columns, radius_arcsec)[columns]
        how = "astropy match_to_catalog_sky"
    matched = int(joined.notna().any(axis=1).sum())
    print(f"[join] {path.name}: {len(columns)} columns for {matched:,} of {len(cat):,} objects within "
          f"{radius_arcsec:g}\" ({how})", flush=True)
    return pd.concat([cat.drop(columns=[c for c in columns if c in cat.columns]).reset_index(drop=True), joined],
                     axis=1)


def join_by_position_lsdb_frame(cat: pd.DataFrame, table: pd.DataFrame, columns: list[str],
                                radius_arcsec: float) -> pd.DataFrame:
    """``core.hats.join_by_position_lsdb`` for a catalogue in memory (an LSDB catalogue made from it, not written)."""
    import lsdb

    from core.hats import join_by_position_lsdb

    frame = pd.DataFrame({"ra": cat["ra"].to_numpy(np.float64), "dec": cat["dec"].to_numpy(np.float64),
                          "row": np.arange(len(cat), dtype=np.int64)})
    ours = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", catalog_name="bundle")
    return join_by_position_lsdb(ours, len(cat), table, columns, radius_arcsec)


# ------------------------------------------------------------------------------------------------ embeddings
@dataclass
class EmbeddingSource:
    path: Path
    n: int
    dim: int
    ids: np.ndarray | None                       # text ids, or None: rows follow the catalogue
    blocks: Callable[[int], Iterator[np.ndarray]]   # rows per block -> float32 (rows, dim) blocks, in order

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        start = 0
        for block in self.blocks(size):
            yield start, block
            start += len(block)


def _sliced(array, n: int) -> Callable[[int], Iterator[np.ndarray]]:
    from core.arrays import release_pages

    def blocks(size: int) -> Iterator[np.ndarray]:
        for a in range(0, n, size):
            yield np.asarray(array[a:a + size], dtype=np.float32)
            release_pages(array)      # a memory-mapped source: its pages stay cached, not held by this process
    return blocks


def open_embeddings(path: Path, id_column: str | None = None) -> EmbeddingSource:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path}: no such embeddings file")
    if suffix not in (".npy", ".h5", ".hdf5", ".parquet"):
        raise InputError(f"{path}: unknown embeddings format {suffix!r}; use .npy, Parquet or HDF5")
    try:
        if suffix == ".npy":
            source = _npy_source(path)
        elif suffix == ".parquet":
            source = _parquet_source(path, id_column)
        else:
            source = _hdf5_source(path, id_column)
    except InputError:
        raise
    except Exception as e:   # not the format its name says, damaged, pickled objects: one message naming the file
        raise InputError(f"{path}: cannot be read as {suffix[1:]} embeddings ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
    if source.dim < 1:
        raise InputError(f"{path}: the vectors have no components (dimension 0)")
    return source


def _npy_source(path: Path) -> EmbeddingSource:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim != 2:
        raise InputError(f"{path}: embeddings must be (N, D), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{path}: embeddings must be real numbers, not {arr.dtype}")
    return EmbeddingSource(path, arr.shape[0], arr.shape[1], None, _sliced(arr, arr.shape[0]))


def _hdf5_source(path: Path, id_column: str | None) -> EmbeddingSource:
    import h5py

    h5 = h5py.File(path, "r")
    name = next((k for k in ("image_embeddings", "embeddings", "embedding") if k in h5), None)
    if name is None or not isinstance(h5[name], h5py.Dataset) or h5[name].ndim != 2 or h5[name].dtype.kind not in "fiu":
        raise InputError(f"{path}: no 2-D 'image_embeddings' (or 'embeddings') dataset; it has {list(h5.keys())}")
    id_name = id_column or next((k for k in ID_CANDIDATES if k in h5), None)
    if id_name is None or id_name not in h5 or not isinstance(h5[id_name], h5py.Dataset):
        raise InputError(f"{path}: no object id dataset (looked for {id_column or ', '.join(ID_CANDIDATES)})")
    ids = _as_text(h5[id_name][:])
    data = h5[name]
    if len(ids) != data.shape[0]:
        raise InputError(f"{path}: {len(ids)} ids for {data.shape[0]} embeddings")
    return EmbeddingSource(path, data.shape[0], data.shape[1], ids, _sliced(data, data.shape[0]))


def _parquet_source(path: Path, id_column: str | None) -> EmbeddingSource:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
             or pa.types.is_large_list(f.type)]
    feats = sorted((f.name for f in schema if f.name.startswith("feat_") and f.name[5:].isdigit()),
                   key=lambda c: int(c[5:]))
    if not lists and not feats:
        raise InputError(f"{path}: no vector column (a list column such as 'embedding', or feat_0 … feat_N); "
                         f"columns: {schema.names[:20]}")
    numeric = [schema.field(lists[0]).type.value_type] if lists else [schema.field(f).type for f in feats]
    if not all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in numeric):
        raise InputError(f"{path}: the vector column{'' if lists else 's'} "
                         f"{lists[0] if lists else 'feat_*'} must hold numbers, not {numeric[0]}")
    id_name = _pick(schema.names, id_column, ID_CANDIDATES, "object id", path)
    ids = _as_text(pf.read(columns=[id_name]).column(0).to_numpy(zero_copy_only=False))
    dim = len(feats)
    if lists:
        kind = schema.field(lists[0]).type
        if pa.types.is_fixed_size_list(kind):
            dim = kind.list_size
        else:   # a variable list: the first row says (one row decoded, not a row group)
            first = next(pf.iter_batches(batch_size=1, columns=lists[:1]), None)
            dim = len(first.column(0)[0].as_py()) if first is not None and first.num_rows else 0

    def blocks(size: int) -> Iterator[np.ndarray]:
        # one row group decoded at a time, handed out in blocks of ``size`` rows; Arrow's pool (mimalloc) keeps
        # freed row groups unless asked to give them back: without that, RSS grew ~100 MB per row group
        pool = pa.default_memory_pool()
        for group in range(pf.num_row_groups):
            table = pf.read_row_group(group, columns=lists[:1] or feats)
            if lists:
                values = _list_rows(table.column(0).combine_chunks(), dim)
            else:
                values = np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)]).astype(
                    np.float32)
            del table
            pool.release_unused()
            for a in range(0, len(values), size):
                yield values[a:a + size]

    return EmbeddingSource(path, pf.metadata.num_rows, dim, ids, blocks)


def _list_rows(column, dim: int) -> np.ndarray:
    """(rows, dim) float32 from a list column; a row that is null or of another length becomes NaN (left out and
    counted with the unusable vectors) instead of shifting every row after it."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(zero_copy_only=False)
    values = np.full((len(column), dim), np.nan, dtype=np.float32)
    good = lengths == dim
    if good.any():
        flat = pc.list_flatten(column.filter(good)).to_numpy(zero_copy_only=False)
        values[good] = np.asarray(flat, dtype=np.float32).reshape(int(good.sum()), dim)
    return values


def _as_text(values) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", "replace")
    return np.asarray([str(v).strip() for v in values], dtype=object)


# ------------------------------------------------------------------------------------------------ matching
def finite_rows(src: EmbeddingSource) -> np.ndarray:
    """Pass 1: which rows hold a usable vector (finite, not all zero)."""
    ok = np.zeros(src.n, dtype=bool)
    for start, block in src.chunks():
        norms = np.linalg.norm(block.astype(np.float64), axis=1)   # float64: 1e38-sized vectors still have a norm
        ok[start:start + len(block)] = np.isfinite(block).all(axis=1) & (norms > 0) & np.isfinite(norms)
    return ok


def match_rows(src: EmbeddingSource, catalogue: pd.DataFrame, usable: np.ndarray, cat_path: Path,
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(embedding rows, catalogue rows, messages): the pairs to keep, in the embeddings' order."""
    notes = []
    if (~usable).any():
        first = int(np.flatnonzero(~usable)[0])
        notes.append(f"{int((~usable).sum()):,} embeddings are NaN, zero, infinite or of the wrong length and are "
                     f"left out (first: row {first} of "
                     f"{src.path.name})")
    if src.ids is None:
        if src.n != len(catalogue):
            raise InputError(f"{src.path} has {src.n:,} rows and {cat_path} {len(catalogue):,}: a .npy without ids "
                             "must follow the catalogue row for row (or use Parquet/HDF5 with an id column)")
        rows = np.flatnonzero(usable)
        return rows, rows, notes
    dup_cat = catalogue["object_id"].duplicated(keep="first")
    if dup_cat.any():
        notes.append(f"{int(dup_cat.sum()):,} duplicate ids in {cat_path.name} (first: "
                     f"{catalogue['object_id'][dup_cat].iloc[0]!r}); the first of each is used")
    cat_index = pd.Index(catalogue["object_id"][~dup_cat.to_numpy()])
    cat_rows_of = pd.Series(np.flatnonzero(~dup_cat.to_numpy()), index=cat_index)
    emb_ids = pd.Series(src.ids)
    dup_emb = emb_ids.duplicated(keep="first").to_numpy()
    if dup_emb.any():
        notes.append(f"{int(dup_emb.sum()):,} duplicate ids in {src.path.name} (first: "
                     f"{emb_ids[dup_emb].iloc[0]!r}); the first vector of each is used")
    found = emb_ids.isin(cat_index).to_numpy()
    if (~found).any():
        notes.append(f"{int((~found).sum()):,} embeddings have no row in {cat_path.name} (first id: "
                     f"{emb_ids[~found].iloc[0]!r}) and are left out")
    keep = usable & ~dup_emb & found
    missing = int(len(cat_index) - emb_ids[keep].nunique())
    if missing:
        notes.append(f"{missing:,} catalogue rows have no embedding and are left out")
    rows = np.flatnonzero(keep)
    return rows, cat_rows_of.loc[emb_ids[rows]].to_numpy(), notes


def write_normalised(src: EmbeddingSource, rows: np.ndarray, out: Path) -> np.ndarray:
    """Pass 2: the kept rows, L2-normalised, as float16 in a memory-mapped .npy (one chunk in memory)."""
    from core.arrays import release_pages

    mm = np.lib.format.open_memmap(out, mode="w+", dtype=np.float16, shape=(len(rows), src.dim))
    pos = 0
    for i, (start, block) in enumerate(src.chunks(), 1):
        mine = rows[(rows >= start) & (rows < start + len(block))] - start
        if len(mine):
            v = block[mine].astype(np.float64)
            mm[pos:pos + len(v)] = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)
            pos += len(v)
            if i % 64 == 0:
                mm.flush()              # written to the file, then out of this process's resident set
                release_pages(mm)
    mm.flush()
    release_pages(mm)
    return np.load(out, mmap_mode="r")


# ------------------------------------------------------------------------------------------------ colours
def catalogue_colour_by(catalog: pd.DataFrame, known: dict) -> dict:
    """The survey's known columns, plus the catalogue's own: 0-1 '*fraction*' columns as fractions, other numbers
    as continuous, text with at most 50 values as categories."""
    out = dict(known)
    for col in catalog.columns:
        if col in out or col in KEEP_COLUMNS or catalog[col].isna().all():
            continue
        values = catalog[col]
        text = pd.api.types.is_string_dtype(values) or values.dtype == object
        if pd.api.types.is_bool_dtype(values) or (text and values.nunique() <= 50):
            out[col] = {"title": str(col).replace("_", " "), "kind": "categorical", "units": ""}
        elif pd.api.types.is_numeric_dtype(values):
            frac = "fraction" in str(col).lower() and values.dropna().between(0, 1).all()
            out[col] = {"title": str(col).replace("_", " "), "kind": "fraction" if frac else "continuous",
                        "units": ""}
    return out


# ------------------------------------------------------------------------------------------------ the build
def import_stage(wd: WorkDir, args) -> StageResult:
    """catalog.parquet, embeddings.npy (normalised float16), skipped.csv and, with --images, images.npy."""
    for option, value in (("--embeddings", args.embeddings), ("--catalog", args.catalog), ("--images", args.images)):
        if value is not None and not Path(value).is_file():
            raise InputError(f"{value}: no such file ({option})")
    params = {"embeddings": fingerprint_file(args.embeddings), "catalog": fingerprint_file(args.catalog),
              "images": fingerprint_file(args.images) if args.images else None, "id_column": args.id_column,
              "format": 1}

    def build(tmp: Path, key: str) -> None:
        src = open_embeddings(Path(args.embeddings), args.id_column)
        catalogue = read_catalogue(Path(args.catalog), args.id_column)
        bad_sky = ~(catalogue["ra"].between(0, 360, inclusive="left") & catalogue["dec"].between(-90, 90))
        usable = finite_rows(src)
        emb_rows, cat_rows, notes = match_rows(src, catalogue, usable, Path(args.catalog))
        sky_ok = ~bad_sky.to_numpy()[cat_rows]
        if (~sky_ok).any():
            notes.append(f"{int((~sky_ok).sum()):,} matched rows have no RA/Dec in [0, 360) x [-90, 90] degrees "
                         "and are left out")
            emb_rows, cat_rows = emb_rows[sky_ok], cat_rows[sky_ok]
        if len(emb_rows) < 10:
            raise InputError(f"only {len(emb_rows)} objects have both a usable embedding and a catalogue row; "
                             "check that the id columns hold the same ids" + (": " + "; ".join(notes) if notes else ""))
        for note in notes:
            print(f"[import] {note}", flush=True)
        catalogue.iloc[cat_rows].reset_index(drop=True).to_parquet(tmp / "catalog.parquet", index=False)
        write_normalised(src, emb_rows, tmp / "embeddings.npy")
        pd.DataFrame({"reason": notes}).to_csv(tmp / "skipped.csv", index=False)
        if args.images:
            copy_images(Path(args.images), src.n, emb_rows, tmp / "images.npy")

    return wd.run("import", params, {}, build)


def copy_images(path: Path, n: int, rows: np.ndarray, out: Path) -> None:
    images = np.load(path, mmap_mode="r")
    if images.ndim != 4 or len(images) != n:
        raise InputError(f"{path}: images must be (N, C, H, W) with one cutout per embedding row ({n:,}); "
                         f"got shape {images.shape}")
    mm = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(len(rows),) + images.shape[1:])
    for s in range(0, len(rows), 4096):
        mm[s:s + 4096] = images[rows[s:s + 4096]]
    mm.flush()


def check_image_bands(survey, images: np.ndarray, path) -> None:
    """The cutouts given with ``--images`` have the survey's bands (any number for ``--survey none``)."""
    if survey.bands and images.shape[1] != len(survey.bands):
        raise InputError(f"{path}: {images.shape[1]} channel(s) per cutout, but --survey {survey.name} images have "
                         f"{len(survey.bands)} ({', '.join(survey.bands)}); pass that survey's cutouts or "
                         "--survey none")


def no_thumbnails(n: int) -> tuple[bytes, np.ndarray]:
    return b"", np.zeros(n + 1, dtype=np.int64)


def build_bundle(args) -> Path:
    from core.knowledge import catalogue_tasks
    from core.surveys.base import get_survey
    from core.write import pack_thumbnails, write_bundle
    from precompute import report as rp
    from precompute.assemble import colour_columns
    from precompute.config import Config, TrainSettings
    from precompute.stages import index, project
    from precompute.thumbnails import render_thumbnails

    t0 = time.perf_counter()
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.name + ".work")
    wd = WorkDir(work, log=lambda m: print(m, flush=True))
    survey = get_survey(args.survey)
    # device: nothing here runs torch, and asking it whether CUDA exists costs its ~0.4 GB import
    cfg = Config(survey=args.survey, out=out, work=work, n_neighbors=args.n_neighbors, seed=args.seed,
                 umap_sample_above=args.umap_sample_above, train=TrainSettings(device="cpu"),
                 progress=not args.no_progress).resolved()
    imp = import_stage(wd, args)
    if args.stop_after == "import":
        print(f"[import] {imp.path} ({time.perf_counter() - t0:.1f} s)", flush=True)
        return imp.path
    proj, idx = project(wd, cfg, imp), index(wd, cfg, imp)
    catalog = pd.read_parquet(imp.path / "catalog.parquet")   # after them: not held while they run
    embeddings = np.load(imp.path / "embeddings.npy", mmap_mode="r")
    from core.arrays import release_pages
    from precompute.assemble import bundle_catalog

    cat = bundle_catalog(catalog, np.load(proj.path / "coords.npy"), cfg.seed)
    if args.join:
        cat = join_table(cat, Path(args.join), args.join_radius)
    colour_by = catalogue_colour_by(cat, colour_columns(survey, cat))
    t1 = time.perf_counter()
    print("[report] running: what the embedding knows about the catalogue's columns", flush=True)
    report = rp.embedding_only_report(catalogue_tasks(cat, colour_by), len(cat), embeddings, cfg.seed, catalog=cat,
                                      columns=colour_by)
    print("[report]\n" + rp.format_table(report), flush=True)
    release_pages(embeddings)   # the health figures read rows from all over the matrix: not held from here on
    print(f"[report] done in {time.perf_counter() - t1:.1f} s", flush=True)
    report_path = rp.write_report(report, work / "from-embeddings-report.json")
    bands, cutout_size = list(survey.bands), survey.cutout_size
    if (imp.path / "images.npy").exists():
        images = np.load(imp.path / "images.npy", mmap_mode="r")
        check_image_bands(survey, images, args.images)
        thumbs, fmt = pack_thumbnails(render_thumbnails(survey, images, size=cfg.thumbnail_size,
                                                        progress=cfg.progress)), "webp"
        if not bands:   # --survey none: the images say how many channels there are
            bands, cutout_size = [f"channel {i + 1}" for i in range(images.shape[1])], int(images.shape[-1])
    else:
        thumbs, fmt = no_thumbnails(len(cat)), "none"
    manifest = {
        "survey": survey.name, "bands": bands, "pixel_scale_arcsec": survey.pixel_scale_arcsec,
        "cutout_size": cutout_size,
        "model": {"method": "imported embeddings", "architecture": None, "embedding":
                  f"vectors from {Path(args.embeddings).name}, L2-normalised", "views": "identity", "centred": False},
        "umap": json.loads((proj.path / "umap.json").read_text()), "colour_by": colour_by, "report": "report.json",
        "source": {"embeddings": str(args.embeddings), "catalog": str(args.catalog), "images": args.images,
                   "n_skipped": 0, "skipped": [], "notes": pd.read_csv(imp.path / "skipped.csv")["reason"].tolist()},
    }
    t1 = time.perf_counter()
    print("[bundle] running: writing and validating the bundle", flush=True)
    written = write_bundle(out, catalog=cat, embeddings=embeddings, thumbnails=thumbs, manifest=manifest,
                           index=idx.path / "index.faiss", extra_dirs={"projection": proj.path / "projection"},
                           extra_files={"report.json": report_path}, thumbnail_format=fmt)
    print(f"[bundle] done in {time.perf_counter() - t1:.1f} s", flush=True)
    if args.hats:
        from core.hats import write_hats

        t1 = time.perf_counter()
        print("[hats] running: the catalogue as a HATS catalogue (sky queries through LSDB)", flush=True)
        folder = write_hats(written, cat, json.loads((written / "manifest.json").read_text())["created"])
        print(f"[hats] done in {time.perf_counter() - t1:.1f} s: {folder}", flush=True)
    print(f"ok: bundle {written} from {len(cat):,} embeddings in {time.perf_counter() - t0:.1f} s (explore it: "
          f"`panel serve explorer --args --bundle {written}`)", flush=True)
    return written


def add_arguments(parser, command: str) -> None:
    from precompute.pipeline import add_umap_sample_option

    parser.add_argument("--embeddings", required=True, help=".npy, Parquet (list column or feat_*) or HDF5")
    parser.add_argument("--catalog", required=True, help="CSV, Parquet, FITS or VOTable with an id, RA and Dec")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--survey", required=True, choices=known_surveys(),
                        help="whose archive links and cutout service the explorer offers for these objects "
                             "(none: any sky, links to Simbad, NED and Aladin by position, no cutout service)")
    parser.add_argument("--images", help=".npy (N, C, H, W) cutouts in the embeddings' row order, for thumbnails")
    parser.add_argument("--id-column", help="the id column in both files (default: object_id, objid, id, name ...)")
    parser.add_argument("--work", help="work folder for cached stage results (default <out>.work)")
    parser.add_argument("--n-neighbors", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    add_umap_sample_option(parser)
    parser.add_argument("--join", metavar="TABLE",
                        help="a catalogue (CSV, Parquet, FITS, VOTable with RA/Dec) whose numeric columns are joined "
                             "onto the objects by position (nearest within --join-radius); through LSDB above "
                             "50,000,000 objects")
    parser.add_argument("--join-radius", type=float, default=1.5, help="arcseconds (default 1.5)")
    parser.add_argument("--hats", action="store_true",
                        help="also write the catalogue as a HATS catalogue (hats/) for sky queries through LSDB "
                             "(the explorer uses it above 50,000,000 objects)")
    parser.add_argument("--stop-after", choices=("import",), help="read, match and normalise only (benchmarks)")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    try:
        build_bundle(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

"""Export labels and selections as CSV / VOTable / FITS tables, import labels, and send tables over SAMP.

Tables are astropy Tables: ``object_id``, ``ra``, ``dec`` (deg, ICRS) first, then ``label``, ``author``, ``time``
(UTC, ISO 8601) for labels, then any catalogue columns asked for. Missing catalogue values stay masked (null).

Import reads a CSV / VOTable / FITS table and labels bundle objects either by ``object_id`` or by sky position
(astropy ``match_to_catalog_sky`` within an adjustable radius); rows that match nothing are reported, not dropped
silently. SAMP (TOPCAT, Aladin) receives a table as a VOTable file URL with ``table.load.votable``; this uses
``pyvo.samp`` (astropy.samp moved there; astropy 8 deprecates its copy) and falls back to ``astropy.samp``.
"""
from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from astropy.table import MaskedColumn, Table

FORMATS = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".vot": "votable", ".votable": "votable", ".xml": "votable",
           ".fits": "fits", ".fit": "fits"}
LABEL_COLUMNS = ("object_id", "ra", "dec", "label", "author", "time")
RA_NAMES = ("ra", "raj2000", "ra_icrs", "ra_deg")
DEC_NAMES = ("dec", "dej2000", "decj2000", "dec_icrs", "dec_deg")


class ExportError(ValueError):
    """A table that cannot be written or read as asked; the message names the file and what to do."""


# ============================================================================================ building tables
def _column(name: str, values: pd.Series):
    """A masked astropy column: nulls stay masked, text stays text (FITS/VOTable cannot hold Python objects)."""
    mask = values.isna().to_numpy()
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        data = values.to_numpy(dtype=np.float64 if mask.any() and not pd.api.types.is_float_dtype(values) else None)
    else:
        data = values.astype(object).where(~mask, "").to_numpy().astype(str)
    col = MaskedColumn(data, name=name, mask=mask)
    if name in ("ra", "dec"):
        col.unit = u.deg
    return col


def _table(df: pd.DataFrame, meta: dict | None = None) -> Table:
    t = Table([_column(c, df[c]) for c in df.columns], meta=meta or {})
    return t


def _catalog_part(catalog: pd.DataFrame, rows: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in catalog.columns]
    if missing:
        raise ExportError(f"the catalogue has no column(s) {missing}; pick from {list(catalog.columns)}")
    cols = ["object_id", "ra", "dec"] + [c for c in columns if c not in ("object_id", "ra", "dec")]
    part = catalog.iloc[np.asarray(rows, dtype=np.int64)][cols].reset_index(drop=True)
    part["object_id"] = part["object_id"].astype(str)
    return part


def selection_table(catalog: pd.DataFrame, rows: np.ndarray, columns: Sequence[str] = (), name: str = "selection") -> Table:
    """The selected bundle rows as a table: object_id, ra, dec and the chosen catalogue columns."""
    return _table(_catalog_part(catalog, rows, columns), meta={"name": name})


def labels_table(catalog: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] = (),
                 labels: Sequence[str] | None = None) -> Table:
    """One row per (object, label) from the label store's ``current()``, joined to the bundle's catalogue.

    Labels on objects that are not in this bundle are left out (a store can be shared between bundles).
    """
    cur = current if labels is None else current[current["label"].isin(labels)]
    row_of = pd.Series(np.arange(len(catalog)), index=catalog["object_id"].astype(str))
    cur = cur[cur["object_id"].astype(str).isin(row_of.index)]
    part = _catalog_part(catalog, row_of.loc[cur["object_id"].astype(str)].to_numpy(), columns)
    for c in ("label", "author", "time"):
        part.insert(LABEL_COLUMNS.index(c), c, cur[c].astype(str).to_numpy())
    return _table(part, meta={"name": "labels"})


# ============================================================================================ files
def table_format(path: str | Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ExportError(f"{path}: unknown table type {Path(path).suffix!r}; use one of {sorted(FORMATS)}")
    return fmt


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def write_table(table: Table, path: str | Path, overwrite: bool = True) -> Path:
    """Write the table; the format follows the file name (.csv, .ecsv, .vot/.xml, .fits).

    CSV text that a spreadsheet would run as a formula (=HYPERLINK(...), +cmd, @SUM...) gets a leading apostrophe;
    FITS, which holds ASCII text only, gets non-ASCII characters as backslash escapes (nothing is lost, and the
    export never fails on a label named in another script)."""
    path = Path(path)
    fmt = table_format(path)
    if fmt == "ascii.csv":
        table = _map_text(table, lambda v: "'" + v if v.startswith(FORMULA_START) else v)
    elif fmt == "fits":
        table = _map_text(table, lambda v: v.encode("ascii", "backslashreplace").decode("ascii"))
    table.write(path, format=fmt, overwrite=overwrite)
    return path


def _map_text(table: Table, fn) -> Table:
    out = table.copy()
    for name in out.colnames:
        col = out[name]
        if col.dtype.kind in "US":
            values = [fn(str(v)) for v in np.asarray(col.filled("") if hasattr(col, "filled") else col)]
            mask = getattr(col, "mask", None)
            out[name] = MaskedColumn(np.array(values, dtype=str), name=name, mask=mask, unit=col.unit)
    return out


def read_table(path: str | Path) -> Table:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        return Table.read(path, format=table_format(path))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{path}: cannot be read as {table_format(path)} ({e}); check the file or export it again") from e


# ============================================================================================ import
# One upload is bounded work: a label catalogue has thousands of rows and tens of labels; a file with 20,000
# distinct labels wrote 20,000 events and held the server for seconds.
MAX_IMPORT_ROWS = 1_000_000
MAX_IMPORT_LABELS = 1_000


@dataclass
class ImportReport:
    """What an import did: rows read, rows matched, events written per label, and the rows that matched nothing."""

    n_rows: int
    n_matched: int
    event_ids: dict = field(default_factory=dict)  # label -> event id
    unmatched: Table | None = None
    n_objects: dict = field(default_factory=dict)  # label -> objects labelled

    def summary(self) -> str:
        labels = ", ".join(f"'{k}' on {n:,} object{'s' if n != 1 else ''}" for k, n in self.n_objects.items())
        return f"{self.n_matched:,} of {self.n_rows:,} rows matched; labelled {labels or 'nothing'}"


def _find_column(table: Table, names: Sequence[str], path, what: str) -> str:
    by_lower = {c.lower(): c for c in table.colnames}
    for n in names:
        if n in by_lower:
            return by_lower[n]
    raise ExportError(f"{path}: no {what} column (looked for {list(names)}; found {table.colnames})")


def match_rows(table: Table, catalog: pd.DataFrame, *, by: str = "object_id", radius=1 * u.arcsec,
               path="table") -> np.ndarray:
    """Bundle row for each table row, -1 where none matches (by object_id, or nearest on the sky within radius)."""
    if by == "object_id":
        col = _find_column(table, ("object_id",), path, "object_id")
        row_of = pd.Series(np.arange(len(catalog)), index=catalog["object_id"].astype(str))
        ids = pd.Series(np.asarray(table[col]).astype(str))
        return ids.map(row_of).fillna(-1).astype(np.int64).to_numpy()
    if by == "sky":
        ra = np.asarray(table[_find_column(table, RA_NAMES, path, "RA")], dtype=np.float64)
        dec = np.asarray(table[_find_column(table, DEC_NAMES, path, "Dec")], dtype=np.float64)
        radius = u.Quantity(radius, u.arcsec)
        off_sky = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
        if off_sky.any():
            first = int(np.flatnonzero(off_sky)[0])
            raise ExportError(f"{path}: {int(off_sky.sum()):,} rows have no position on the sky (first: row {first}, "
                              f"RA {ra[first]}, Dec {dec[first]}); positions are RA, Dec in degrees, Dec within ±90")
        theirs = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
        ours = SkyCoord(catalog["ra"].to_numpy() * u.deg, catalog["dec"].to_numpy() * u.deg, frame="icrs")
        idx, sep, _ = theirs.match_to_catalog_sky(ours)
        return np.where(sep <= radius, idx, -1).astype(np.int64)
    raise ExportError(f"match by must be 'object_id' or 'sky', not {by!r}")


def import_labels(store, catalog: pd.DataFrame, path: str | Path, *, author: str, by: str = "object_id",
                  radius=1 * u.arcsec, label_column: str = "label", label: str | None = None) -> ImportReport:
    """Label bundle objects from a table file; one ``import`` event per label. ``label`` overrides the column."""
    table = read_table(path)
    if len(table) > MAX_IMPORT_ROWS:
        raise ExportError(f"{path}: {len(table):,} rows, more than the {MAX_IMPORT_ROWS:,} one import takes; split "
                          "the file")
    if label is None and label_column not in table.colnames:
        raise ExportError(f"{path}: no {label_column!r} column; name the label column or give one label for all rows")
    names = np.full(len(table), label, dtype=object) if label is not None else np.asarray(table[label_column]).astype(str)
    if label is None and hasattr(table[label_column], "mask"):
        names = np.where(np.ma.getmaskarray(table[label_column]), "", names)
    n_labels = len(set(names) - {""})
    if n_labels > MAX_IMPORT_LABELS:
        raise ExportError(f"{path}: {n_labels:,} distinct labels, more than the {MAX_IMPORT_LABELS:,} one import "
                          "takes; labels name families of objects, not single objects")
    rows = match_rows(table, catalog, by=by, radius=radius, path=path)
    ok = (rows >= 0) & (names != "")
    report = ImportReport(n_rows=len(table), n_matched=int(ok.sum()), unmatched=table[~ok])
    object_ids = catalog["object_id"].astype(str).to_numpy()
    members_of = pd.Series(object_ids[rows[ok]]).groupby(names[ok], sort=False)
    for name, members in members_of:
        report.event_ids[str(name)] = store.add(str(name), members.to_numpy(), author=author, method="import")
        report.n_objects[str(name)] = members.nunique()
    return report


# ============================================================================================ SAMP
class SampError(RuntimeError):
    """No SAMP hub, or no client listening for tables; the message says what to start."""


def _samp():
    try:
        import pyvo.samp as samp
    except ImportError:  # pragma: no cover - pyvo comes with astroquery
        import astropy.samp as samp
    return samp


def samp_hub_running(hub_params: dict | None = None) -> bool:
    """True if a SAMP hub (TOPCAT and Aladin start one) can be reached."""
    samp = _samp()
    proxy = samp.SAMPHubProxy()
    try:
        proxy.connect(hub_params=hub_params)
    except Exception:
        return False
    proxy.disconnect()
    return True


def send_to_samp(table: Table, name: str = "selection", *, hub_params: dict | None = None,
                 folder: str | Path | None = None) -> int:
    """Broadcast the table to every SAMP client that loads tables; returns how many listen.

    The table is written as a VOTable file (kept: receivers fetch the URL after the call returns) in ``folder``,
    by default a temporary folder of this process.
    """
    samp = _samp()
    client = samp.SAMPIntegratedClient(name="Latent explorer", description="latent-space explorer for sky surveys")
    try:
        client.connect(hub_params=hub_params)
    except Exception as e:
        raise SampError(f"no SAMP hub is running ({e}); start TOPCAT or Aladin, then send again") from e
    try:
        listeners = client.get_subscribed_clients("table.load.votable")
        if not listeners:
            raise SampError("a SAMP hub is running but no client loads tables; start TOPCAT or Aladin")
        folder = Path(folder or _samp_folder())
        path = write_table(table, folder / f"{_safe(name)}-{uuid.uuid4().hex[:8]}.vot")
        client.notify_all({"samp.mtype": "table.load.votable",
                           "samp.params": {"url": path.resolve().as_uri(), "name": name, "table-id": path.stem}})
        return len(listeners)
    finally:
        client.disconnect()


# process-wide by design: one temporary folder per server for the tables SAMP hands to TOPCAT/Aladin
_SAMP_DIR: list[Path] = []


def _samp_folder() -> Path:
    if not _SAMP_DIR:
        _SAMP_DIR.append(Path(tempfile.mkdtemp(prefix="latent-explorer-samp-")))
    return _SAMP_DIR[0]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60] or "table"

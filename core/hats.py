"""A bundle's catalogue as a HATS catalogue (``hats/``: HEALPix-partitioned Parquet, the format of LSDB and the
Rubin/IRSA/MAST HATS releases) and the sky queries that go through LSDB at scale: cone search (the explorer's
RA/Dec box) and cross-match (``from-embeddings --join``). Small bundles keep the in-memory matchers (a KD-tree of
unit vectors; ``core.inputs.join_by_position``); ``tests/test_hats.py`` checks that both give the same answers.

``hats/`` holds the catalogue ``bundle`` (``object_id``, ``ra``, ``dec``, ``row``: the object's row in the bundle)
written by ``lsdb.from_dataframe(...).to_hats`` and ``hats_bundle.json`` (the bundle's ``created`` stamp and row
count). A HATS catalogue that does not match the bundle (other rows, other ids, another build) is refused with a
message naming both.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import BundleError

HATS_DIR = "hats"
STAMP = "hats_bundle.json"
CATALOG_NAME = "bundle"
# objects: the explorer's sky matcher goes through LSDB above this when hats/ exists. At 10 M an LSDB cone search
# took 25 ms (most of it LSDB planning the query) against 0.5 ms for the in-memory KD-tree, whose ~50 B/object
# (2.5 GB at 50 M) and build time (6 s at 10 M) are what LSDB saves (docs/SCALING.md).
LSDB_ABOVE = 50_000_000
PARTITION_ROWS = 100_000      # per HEALPix partition: a cone reads ~1 of them (45 ms at 1 M rows, 25 ms at 100 k)
COMMAND = "python -m precompute hats --bundle {bundle}"


class HatsError(BundleError):
    """A bundle's hats/ is missing, unreadable or belongs to other objects; the message names both sides."""


def write_hats(bundle_path: str | Path, catalog: pd.DataFrame, created: str | None,
               partition_rows: int = PARTITION_ROWS) -> Path:
    """Write ``bundle_path/hats/`` from the bundle's catalogue (object_id, ra, dec and the row), atomically."""
    import lsdb

    bundle_path = Path(bundle_path)
    frame = pd.DataFrame({"object_id": catalog["object_id"].astype(str).to_numpy(),
                          "ra": catalog["ra"].to_numpy(np.float64), "dec": catalog["dec"].to_numpy(np.float64),
                          "row": np.arange(len(catalog), dtype=np.int64)})
    tmp = Path(tempfile.mkdtemp(prefix=f".{HATS_DIR}.partial-", dir=bundle_path))
    try:
        lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", catalog_name=CATALOG_NAME,
                            partition_rows=partition_rows).to_hats(tmp / CATALOG_NAME, progress_bar=False)
        (tmp / STAMP).write_text(json.dumps({"n_rows": len(frame), "bundle_created": created}))
        from core.write import replace_dir

        replace_dir(tmp, bundle_path / HATS_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bundle_path / HATS_DIR


def check_stamp(bundle_path: str | Path, n_rows: int, created: str | None) -> None:
    """The cheap check a server makes at start (one small JSON file): hats/ was written for this build of this
    bundle. ``open_hats`` checks the catalogue itself when the matcher is built."""
    folder = Path(bundle_path) / HATS_DIR
    fix = f"rewrite it with `{COMMAND.format(bundle=bundle_path)}`"
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HatsError(f"{folder / STAMP}: cannot be read ({type(e).__name__}); {fix}") from e
    stamp = stamp if isinstance(stamp, dict) else {}
    if stamp.get("n_rows") != n_rows:
        raise HatsError(f"the HATS catalogue {folder} was written for {stamp.get('n_rows')!r} objects but the bundle "
                        f"{bundle_path} holds {n_rows:,}: they describe different objects; {fix}")
    if stamp.get("bundle_created") != created:
        raise HatsError(f"the HATS catalogue {folder} was written for the bundle built {stamp.get('bundle_created')}, "
                        f"but {bundle_path} was built {created}; {fix}")


def open_hats(bundle_path: str | Path, n_rows: int, created: str | None, object_ids=None):
    """The bundle's HATS catalogue as a lazy LSDB catalogue, checked against the bundle: its row count and build
    stamp, and (``object_ids`` given) the ids of the first partition's objects. HatsError naming both sides
    otherwise."""
    import lsdb

    folder = Path(bundle_path) / HATS_DIR
    fix = f"rewrite it with `{COMMAND.format(bundle=bundle_path)}`"
    try:
        cat = lsdb.open_catalog(folder / CATALOG_NAME)
    except FileNotFoundError as e:
        raise HatsError(f"{folder}: no HATS catalogue here ({e.filename} is missing); {fix}") from e
    except Exception as e:  # hats/lsdb raise many kinds for a damaged catalogue
        raise HatsError(f"{folder}: the HATS catalogue cannot be read ({type(e).__name__}: {str(e)[:200]}); "
                        f"{fix}") from e
    total = cat.hc_structure.catalog_info.total_rows
    if total != n_rows:
        raise HatsError(f"the HATS catalogue {folder} holds {total:,} objects but the bundle {bundle_path} holds "
                        f"{n_rows:,}: they describe different objects; {fix}")
    check_stamp(bundle_path, n_rows, created)
    if object_ids is not None and n_rows:   # the ids of one HEALPix partition's objects, read from it alone
        part = cat.partitions[0].compute(progress_bar=False)
        rows, names = part["row"].to_numpy(np.int64), part["object_id"].astype(str).to_numpy()
        bad = (rows < 0) | (rows >= n_rows)
        wrong = np.flatnonzero(bad | (np.asarray(object_ids)[np.where(bad, 0, rows)].astype(str) != names))
        if len(wrong):
            i = wrong[0]
            theirs = str(object_ids[rows[i]]) if 0 <= rows[i] < n_rows else "nothing (no such row)"
            raise HatsError(f"the HATS catalogue {folder} names row {rows[i]} {names[i]!r} but the bundle "
                            f"{bundle_path} names it {theirs!r} ({len(wrong):,} of {len(rows):,} checked rows "
                            f"differ); {fix}")
    return cat


def cone_rows(cat, ra_deg: float, dec_deg: float, radius_arcsec: float) -> pd.DataFrame:
    """Rows (row, object_id, ra, dec) of the HATS catalogue within ``radius_arcsec`` of a position (LSDB cone
    search: only the HEALPix partitions the cone touches are read)."""
    found = cat.cone_search(float(ra_deg), float(dec_deg), float(radius_arcsec)).compute(progress_bar=False)
    return pd.DataFrame(found[["row", "object_id", "ra", "dec"]]).reset_index(drop=True)


def crossmatch_rows(cat, table: pd.DataFrame, radius_arcsec: float) -> pd.DataFrame:
    """For each bundle row with a ``table`` row within ``radius_arcsec``: (row, table_row, sep_arcsec) of the
    nearest one (LSDB's KD-tree cross-match, partition by partition, with a margin for objects near the edges)."""
    import lsdb

    theirs = pd.DataFrame({"ra": pd.to_numeric(table["ra"]).to_numpy(np.float64),
                           "dec": pd.to_numeric(table["dec"]).to_numpy(np.float64),
                           "table_row": np.arange(len(table), dtype=np.int64)})
    other = lsdb.from_dataframe(theirs, ra_column="ra", dec_column="dec", catalog_name="table",
                                margin_threshold=max(radius_arcsec, 1.0))
    matched = cat.crossmatch(other, radius_arcsec=radius_arcsec, n_neighbors=1, suffixes=("", "_table"),
                             suffix_method="all_columns", log_changes=False).compute(progress_bar=False)
    out = pd.DataFrame({"row": matched["row"].to_numpy(np.int64),
                        "table_row": matched["table_row_table"].to_numpy(np.int64),
                        "sep_arcsec": matched["_dist_arcsec"].to_numpy(np.float64)})
    return out.sort_values(["row", "sep_arcsec"]).drop_duplicates("row").reset_index(drop=True)


def join_by_position_lsdb(cat, n_rows: int, table: pd.DataFrame, columns: list[str],
                          radius_arcsec: float) -> pd.DataFrame:
    """``table``'s numeric ``columns`` for each of the bundle's ``n_rows`` rows from its nearest ``table`` row
    within ``radius_arcsec`` (NaN without one): ``core.inputs.join_by_position``'s answer, through LSDB."""
    pairs = crossmatch_rows(cat, table, radius_arcsec)
    values = table[columns].apply(pd.to_numeric, errors="coerce").astype(float).to_numpy()
    out = np.full((n_rows, len(columns)), np.nan)
    out[pairs["row"].to_numpy()] = values[pairs["table_row"].to_numpy()]
    return pd.DataFrame(out, columns=columns)

"""Reading survey inputs safely: one clear fatal message where nothing can go on, skip-and-report per object
where the rest can.

Shared by the survey readers (``core/surveys/*.py``) and the bulk ``fetch`` command.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import BundleError


class InputError(BundleError):
    """Input that cannot be used at all (missing file, missing columns, empty catalogue). The message names the
    file and what to do; ``python -m precompute`` prints it and exits 1."""


def read_catalog_csv(path: str | Path, required: tuple[str, ...], what: str = "catalogue") -> pd.DataFrame:
    """Read a CSV catalogue, failing with one message that names the file when it is absent, unreadable, empty
    or lacks a required column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found; pass the path of an existing CSV")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read as CSV ({' '.join(str(e).split())}); check the file") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: {what} lacks required column(s) {missing} (it has {list(df.columns)[:20]}); "
                         f"add them or pass another file")
    if df.empty:
        raise InputError(f"{path}: {what} has no rows; nothing to build")
    return df


def invalid_positions(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of rows whose RA/Dec are missing, not numbers or out of range."""
    ra = pd.to_numeric(df["ra"], errors="coerce")
    dec = pd.to_numeric(df["dec"], errors="coerce")
    return (ra.isna() | dec.isna() | (ra < 0) | (ra >= 360) | (dec.abs() > 90)).to_numpy()


def check_positions(df: pd.DataFrame, ids: pd.Series) -> list[tuple[str, str]]:
    """Rows whose RA/Dec are missing or out of range, as (object_id, reason)."""
    bad = invalid_positions(df)
    return [(str(ids.iloc[i]), f"invalid position ra={df['ra'].iloc[i]!r} dec={df['dec'].iloc[i]!r}")
            for i in np.flatnonzero(bad)]


def duplicate_ids(ids: pd.Series) -> list[tuple[str, str]]:
    """Every repeat of an object_id after its first occurrence, as (object_id, reason)."""
    dup = ids.duplicated(keep="first").to_numpy()
    return [(str(ids.iloc[i]), "duplicate object_id (first occurrence kept)") for i in np.flatnonzero(dup)]


def bad_pixels_reason(image: np.ndarray, expected_shape: tuple[int, ...]) -> str | None:
    """Why one image cannot be used, or None when it is fine."""
    if image.shape != expected_shape:
        return f"wrong shape {image.shape}, expected {expected_shape}"
    n_bad = int(np.count_nonzero(~np.isfinite(image)))
    if n_bad:
        return f"{n_bad} NaN/infinite pixels"
    if not np.any(image):
        return "all pixels are zero (empty cutout)"
    return None


def skipped_frame(skipped: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(skipped, columns=["object_id", "reason"]).astype({"object_id": str, "reason": str})


def join_by_position(cat: pd.DataFrame, table: pd.DataFrame, columns: list[str], radius_arcsec: float) -> pd.DataFrame:
    """``cat`` with ``table``'s numeric ``columns`` from its nearest row within ``radius_arcsec`` (astropy's
    ``match_to_catalog_sky``); objects with no match get nulls, and a column ``cat`` already has is replaced."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ours = SkyCoord(cat["ra"].to_numpy() * u.deg, cat["dec"].to_numpy() * u.deg)
    theirs = SkyCoord(pd.to_numeric(table["ra"]).to_numpy() * u.deg, pd.to_numeric(table["dec"]).to_numpy() * u.deg)
    idx, sep, _ = ours.match_to_catalog_sky(theirs)
    joined = table[columns].iloc[idx].reset_index(drop=True).apply(pd.to_numeric, errors="coerce").astype(float)
    joined.loc[~(sep < radius_arcsec * u.arcsec)] = np.nan
    out = cat.drop(columns=[c for c in columns if c in cat.columns]).reset_index(drop=True)
    return pd.concat([out, joined], axis=1)

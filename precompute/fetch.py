"""`python -m precompute fetch`: download survey cutouts for a catalogue of RA/Dec into a resumable folder.

    python -m precompute fetch --survey first --catalog targets.csv --out data/first_fetch
    python -m precompute build --survey first --catalog data/first_fetch/catalog.csv --out bundles/mine

Each object becomes ``<out>/cutouts/<object_id>.fits`` (written atomically, so an interrupted run resumes where it
stopped: objects already on disk are not fetched again). An object that fails is listed in ``<out>/failures.csv``
with the reason and the run goes on. At the end ``<out>/catalog.csv`` lists every fetched cutout (``file`` relative
to it, plus the input columns) — the input of ``build --survey first``; for SDSS the cutouts are also packed into
``<out>/images.h5`` in the Hayat et al. layout, the input of ``build --survey sdss``.
One cutout at a time: the services are shared and rate-limited.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.inputs import InputError, duplicate_ids, invalid_positions, read_catalog_csv
from core.surveys.base import get_survey, known_surveys

SAFE_NAME = re.compile(r"[^A-Za-z0-9_.+-]+")


def add_arguments(parser, command=None) -> None:
    parser.add_argument("--survey", required=True, choices=[n for n in known_surveys() if get_survey(n).fetchable])
    parser.add_argument("--catalog", required=True, help="CSV with ra, dec (deg) and optionally object_id + labels")
    parser.add_argument("--out", required=True, help="folder for cutouts/, catalog.csv, failures.csv")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request (default 20)")
    parser.add_argument("--retries", type=int, default=1, help="retries per object on network errors (default 1)")
    parser.add_argument("--limit", type=int, help="fetch at most this many objects (first rows)")
    parser.add_argument("--no-progress", action="store_true")


def object_ids(df: pd.DataFrame, survey_name: str) -> pd.Series:
    """The catalogue's ``object_id`` (or ``name``) column, else an IAU-style name from the position."""
    for col in ("object_id", "name", "objid", "ObjID"):
        if col in df.columns:
            return df[col].astype(str)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    bad = invalid_positions(df)
    ra = pd.to_numeric(df["ra"], errors="coerce").where(~bad, 0).to_numpy(float)
    dec = pd.to_numeric(df["dec"], errors="coerce").where(~bad, 0).to_numpy(float)
    names = SkyCoord(ra * u.deg, dec * u.deg).to_string("hmsdms", sep="", precision=1, pad=True)
    return pd.Series([f"{survey_name.upper()} J" + s.replace(" ", "") for s in names], index=df.index)


def cutout_path(out: Path, object_id: str) -> Path:
    return out / "cutouts" / f"{SAFE_NAME.sub('_', object_id)}.fits"


def write_fits_atomic(path: Path, image: np.ndarray, header) -> None:
    from astropy.io import fits

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        data = image[0] if image.shape[0] == 1 else image
        fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_all(survey_name: str, catalog: str | Path, out: str | Path, timeout: float = 20.0, retries: int = 1,
              limit: int | None = None, progress: bool = True, fetch=None) -> dict:
    """Fetch every catalogue object not yet on disk; return a summary dict. ``fetch`` defaults to
    ``core.surveys.online.fetch_cutout`` (tests pass a stand-in)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    from core.surveys.services import FetchError

    if fetch is None:
        from core.surveys.online import fetch_cutout as fetch
    survey = get_survey(survey_name)
    out = Path(out)
    df = read_catalog_csv(catalog, ("ra", "dec"), what="target catalogue")
    if limit is not None:
        df = df.iloc[:limit]
    ids = object_ids(df, survey.name)
    failures = [(oid, reason) for oid, reason in duplicate_ids(ids)]
    usable = ~(invalid_positions(df) | ids.duplicated(keep="first").to_numpy())
    failures += [(str(ids.iloc[i]), f"invalid position ra={df['ra'].iloc[i]!r} dec={df['dec'].iloc[i]!r}")
                 for i in np.flatnonzero(invalid_positions(df))]
    rows = np.flatnonzero(usable)
    todo = [i for i in rows if not cutout_path(out, str(ids.iloc[i])).is_file()]
    n_cached = len(rows) - len(todo)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=f"fetch {survey.name}", unit="cutout")
    t0 = time.perf_counter()
    n_fetched = 0
    for i in todo:
        oid = str(ids.iloc[i])
        coord = SkyCoord(float(df["ra"].iloc[i]) * u.deg, float(df["dec"].iloc[i]) * u.deg, frame="icrs")
        try:
            image, header = fetch(survey.name, coord, survey.cutout_size, survey.pixel_scale_arcsec,
                                  timeout=timeout, retries=retries)
            image = np.asarray(image, dtype=np.float32)
            expected = (survey.n_channels, survey.cutout_size, survey.cutout_size)
            if image.shape != expected:
                raise FetchError(f"service returned shape {image.shape}, expected {expected}")
            write_fits_atomic(cutout_path(out, oid), image, header)
            n_fetched += 1
        except FetchError as e:
            failures.append((oid, str(e)))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=len(failures))
    if bar is not None:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    done = [i for i in rows if cutout_path(out, str(ids.iloc[i])).is_file()]
    fetched = df.iloc[done].copy()
    fetched.insert(0, "object_id", ids.iloc[done].to_numpy())
    fetched.insert(1, "file", [str(cutout_path(out, str(ids.iloc[i])).relative_to(out)) for i in done])
    fetched.to_csv(out / "catalog.csv", index=False)
    pd.DataFrame(failures, columns=["object_id", "reason"]).to_csv(out / "failures.csv", index=False)
    if len(fetched):
        survey.pack_fetched(out, fetched)   # into the layout its reader takes, when that is not catalog.csv + FITS
    return {"requested": int(len(df)), "fetched_now": n_fetched, "already_on_disk": int(n_cached), "available": int(len(fetched)), "failed": int(len(failures)),
            "seconds": round(time.perf_counter() - t0, 1)}


def run(args) -> int:
    summary = fetch_all(args.survey, args.catalog, args.out, timeout=args.timeout, retries=args.retries,
                        limit=args.limit, progress=not args.no_progress)
    print(f"fetch: {summary['available']} of {summary['requested']} cutouts in {args.out} "
          f"({summary['already_on_disk']} already there, {summary['failed']} failed: see {args.out}/failures.csv)")
    if summary["available"] == 0:
        raise InputError(f"{args.out}: no cutout could be fetched; see failures.csv for the reasons")
    return 0

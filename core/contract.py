"""The bundle contract: its format version, required columns and the error every reader and writer raises.

Layout (format version 1, see docs/ARCHITECTURE.md, "The bundle")::

    manifest.json          what is here and how it was made
    catalog.parquet        one row per object; row i <=> row i of every array
    embeddings.npy         (N, D) float16/float32, L2-normalised, memory-mappable
    index.faiss            similarity index over embeddings.npy (inner product = cosine)
    thumbnails/blob.bin    all thumbnails (JPEG/WebP bytes) back to back
    thumbnails/offsets.npy (N + 1,) int64 byte offsets into blob.bin
    encoder/               weights + config.json (architecture and exact preprocessing)
    projection/            optional: projection.json, the map's PCA + UMAP parameters (no pickles)
    report.json            optional: what the embedding knows (``precompute report``)

``core.write`` writes one atomically, ``core.validate`` checks one, ``core.bundle.Bundle`` reads one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
REQUIRED_COLUMNS = ("object_id", "ra", "dec", "umap_x", "umap_y", "split")
SPLITS = ("train", "val", "test")
COLOUR_KINDS = ("fraction", "continuous", "categorical")
NORM_TOLERANCE = 1e-2  # float16 storage keeps |v| within ~1e-3 of 1


class BundleError(Exception):
    """A bundle that cannot be used. The message names the file and what to do."""


def fail(path: Path, what: str, fix: str = "rebuild it with `python -m precompute demo` or `python -m precompute build`"):
    """Raise the one-line BundleError: which file, what is wrong with it, what to do."""
    what = " ".join(str(what).split())   # one line, whatever a library's message spans
    raise BundleError(f"{path}: {what}; {fix}.")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_catalogue(catalog, path: Path) -> None:
    """catalog.parquet with a CRC per data page, so a damaged page is refused when read (``read_catalogue``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(catalog.reset_index(drop=True), preserve_index=False), path,
                   write_page_checksum=True)


def read_catalogue(path: Path, columns=None):
    """The catalogue as a DataFrame, its page checksums verified and its text decoded once, here: damaged bytes,
    bad UTF-8 or a foreign file end in one BundleError naming the file, never later in the page."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=None if columns is None else list(columns),
                              page_checksum_verification=True)
        table.validate(full=True)   # string columns: invalid UTF-8 is found here, not in a later astype(str)
        return _bytes_as_text(table).to_pandas()
    except Exception as e:   # pyarrow raises OSError, ArrowInvalid, ArrowException... for damaged files
        fail(path, f"cannot be read ({str(e)[:300]})")


def _bytes_as_text(table):
    """Raw-bytes columns (FITS-born catalogues have them) as text, undecodable bytes replaced: the page shows and
    groups them as text."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            text = [None if v is None else v.decode("utf-8", "replace") for v in table.column(i).to_pylist()]
            table = table.set_column(i, field.name, pa.array(text, pa.string()))
    return table


def l2_normalise(x: np.ndarray, dtype=np.float16) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(dtype)


def read_report(path: Path) -> dict | None:
    """The report, or None when the file is absent; a malformed file raises ValueError naming it."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON report ({e})") from e
    if not isinstance(report, dict) or not isinstance(report.get("summary"), dict) \
            or not isinstance(report.get("health"), dict) or not isinstance(report.get("tasks"), list):
        raise ValueError(f"{path}: not a report written by `python -m precompute report`")
    if not _valid_reference(report.get("similarity_reference")):
        raise ValueError(f"{path}: similarity_reference must hold increasing finite quantiles at increasing levels")
    problem = _report_shape_problem(report)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return report


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _report_shape_problem(report: dict) -> str | None:
    """What the explorer reads of a report, typed: the first field that is not as ``precompute report`` writes it,
    or None. A report is data from whoever made the bundle; the page formats these fields as numbers and text."""
    summary, health = report["summary"], report["health"]
    if not isinstance(summary.get("message", ""), str):
        return "summary.message must be text"
    if summary.get("beats_untrained") not in (True, False, None):
        return "summary.beats_untrained must be true, false or null"
    for key in ("first_pc_share", "participation_ratio", "median_random_cosine"):
        if not _is_number(health.get(key)):
            return f"health.{key} must be a number"
    n_splits = report.get("n_splits", 10)
    if not (isinstance(n_splits, int) and not isinstance(n_splits, bool) and 0 < n_splits < 10_000):
        return "n_splits must be a positive integer"
    if not isinstance(report.get("sources", {}), dict):
        return "sources must be an object"
    for i, task in enumerate(report["tasks"]):
        if not (isinstance(task, dict) and isinstance(task.get("title"), str) and isinstance(task.get("name"), str)
                and task.get("kind") in ("categorical", "continuous") and isinstance(task.get("scores"), dict)):
            return f"tasks[{i}] must have text name and title, kind categorical or continuous, and scores"
        for source, metrics in task["scores"].items():
            if not isinstance(metrics, dict):
                return f"tasks[{i}].scores.{source} must be an object"
            for metric, score in metrics.items():
                if not (isinstance(score, dict) and all(v is None or _is_number(v) for v in
                                                        (score.get("mean"), score.get("se")))):
                    return f"tasks[{i}].scores.{source}.{metric} must hold a numeric mean and se"
    encoder_health = report.get("encoder_health")
    if encoder_health is not None and not (isinstance(encoder_health, dict) and all(
            _is_number(encoder_health.get(k)) for k in ("first_pc_share", "participation_ratio"))):
        return "encoder_health must hold numeric first_pc_share and participation_ratio"
    return (_similarity_meaning_problem(report.get("similarity_meaning", {"columns": []}))
            or _stability_problem(report.get("stability")))


STABILITY_NUMBERS = ("embedding_rank", "pixel_rank", "embedding_map_shift", "pixel_map_shift")


def _stability_problem(stability) -> str | None:
    """``stability`` (core.stability.summarise), optional: numbers or nulls where numbers go, text names."""
    if stability is None:
        return None
    if not (isinstance(stability, dict) and isinstance(stability.get("perturbations"), list)
            and all(isinstance(stability.get(k), dict) for k in ("median_rank", "median_map_shift"))):
        return "stability must be an object with perturbations, median_rank and median_map_shift"
    for i, row in enumerate(stability["perturbations"]):
        if not (isinstance(row, dict) and isinstance(row.get("name"), str)
                and all(row.get(k) is None or _is_number(row.get(k)) for k in STABILITY_NUMBERS)):
            return f"stability.perturbations[{i}] must have a text name and numbers or nulls"
    numbers = [stability.get("rank_ratio"), stability.get("map_shift_ratio"),
               *(stability[d].get(s) for d in ("median_rank", "median_map_shift") for s in ("embedding", "pixels"))]
    if not all(v is None or _is_number(v) for v in numbers):
        return "stability's medians and ratios must be numbers or nulls"
    return None


def _similarity_meaning_problem(meaning) -> str | None:
    if not (isinstance(meaning, dict) and isinstance(meaning.get("columns"), list)):
        return "similarity_meaning must be an object with a list of columns"
    for i, col in enumerate(meaning["columns"]):
        if not (isinstance(col, dict) and all(isinstance(col.get(k), str) for k in ("column", "title", "units"))
                and col.get("kind") in ("categorical", "continuous") and isinstance(col.get("log"), bool)
                and isinstance(col.get("sources"), dict)):
            return f"similarity_meaning.columns[{i}] must have text column, title and units, a kind, log and sources"
        for source, cell in col["sources"].items():
            if not (isinstance(cell, dict) and all(cell.get(k) is None or _is_number(cell.get(k))
                                                   for k in ("neighbours", "random", "agreement"))):
                return f"similarity_meaning.columns[{i}].sources.{source} must hold numbers or nulls"
    return None


def _valid_reference(ref) -> bool:
    if not isinstance(ref, dict):
        return False
    try:
        q = np.asarray(ref.get("quantiles"), dtype=np.float64)
        levels = np.asarray(ref.get("levels", np.linspace(0, 1, q.size)), dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return (q.ndim == 1 and len(q) >= 2 and levels.shape == q.shape and bool(np.isfinite(q).all())
            and bool(np.isfinite(levels).all()) and bool((np.diff(q) >= 0).all()) and bool((np.diff(levels) > 0).all()))

"""The bundle stage: the catalogue with map coordinates and splits, the manifest, and the atomic write of every
stage's files into one bundle (``core.write``), checked (``core.validate``) before it is announced."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import BundleError
from core.surveys.base import get_survey
from core.validate import validate_bundle
from core.write import assign_splits, write_bundle
from precompute.cache import StageResult
from precompute.config import Config, log
from precompute.prepare import load_ingest

SKIPPED_IN_MANIFEST = 1000  # the full list is in skipped.csv; the manifest keeps the first ones


def bundle_catalog(catalog: pd.DataFrame, coords: np.ndarray, seed: int) -> pd.DataFrame:
    """The ingest catalogue with the map coordinates and the fixed split, required columns first."""
    cat = catalog.copy()
    cat["umap_x"] = coords[:, 0].astype(np.float32)
    cat["umap_y"] = coords[:, 1].astype(np.float32)
    cat["split"] = assign_splits(len(cat), seed)
    first = ["object_id", "ra", "dec", "umap_x", "umap_y", "split"]
    return cat[first + [c for c in cat.columns if c not in first]]


def manifest_for(cfg: Config, survey, catalog: pd.DataFrame, train_res: StageResult, umap_params: dict,
                 skipped: pd.DataFrame, keys: dict) -> dict:
    enc_cfg = json.loads((train_res.path / "encoder" / "config.json").read_text()) \
        if (train_res.path / "encoder" / "config.json").is_file() else {}
    colour_by = colour_columns(survey, catalog)
    return {
        "survey": survey.name,
        "bands": list(survey.bands),
        "pixel_scale_arcsec": survey.pixel_scale_arcsec,
        "cutout_size": survey.cutout_size,
        "crop_size": cfg.train.crop,
        "model": {"method": cfg.train.method, "architecture": cfg.train.arch, "stem": cfg.train.stem, "width": cfg.train.width,
                  "embedding": embedding_description(enc_cfg), "views": enc_cfg.get("views", "identity"),
                  "centred": enc_cfg.get("centre") is not None, "whitened": bool(enc_cfg.get("whiten")),
                  "bin": cfg.train.bin, "crop": cfg.train.crop,
                  "epochs": cfg.train.epochs,
                  "batch_size": cfg.train.batch_size, "n_train_images": enc_cfg.get("n_train_images"),
                  "checkpoint": _checkpoint_name(train_res.path / "encoder"),
                  "train_seconds": enc_cfg.get("train_seconds")},
        "umap": umap_params,
        "colour_by": colour_by,
        "report": "report.json",
        "source": {**{k: _source_text(v) for k, v in cfg.sources.items() if v}, **cfg.source_note,
                   "n_skipped": int(len(skipped)),
                   "skipped": skipped.head(SKIPPED_IN_MANIFEST).to_dict(orient="records"),
                   "skipped_report": str(cfg.work / "skipped.csv"), "stage_keys": keys},
    }


def _source_text(value):
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)


def colour_columns(survey, catalog: pd.DataFrame) -> dict:
    """The survey's colour-by columns present in ``catalog``, plus categorical simulator truth and sample columns."""
    colour_by = {c: spec for c, spec in survey.colour_by.items() if c in catalog.columns and catalog[c].notna().any()}
    for col in catalog.columns:  # simulator truth classes are worth colouring by too
        if col.startswith("truth_") and col not in colour_by and _is_categorical(catalog[col]):
            colour_by[col] = {"title": col.replace("truth_", "Truth: ").replace("_", " "), "kind": "categorical",
                              "units": ""}
    if "sample" in catalog.columns and catalog["sample"].nunique() > 1:
        colour_by["sample"] = {"title": "Input catalogue", "kind": "categorical", "units": ""}
    return colour_by


def embedding_description(enc_cfg: dict) -> str:
    parts = ["encoder representation"]
    if enc_cfg.get("views") == "d4":
        parts.append("averaged over the 8 rotations and flips of the input")
    if enc_cfg.get("centre") is not None:
        parts.append("centred on the training images' mean representation")
    if enc_cfg.get("whiten"):
        parts.append("whitened with the training images' covariance")
    return ", ".join(parts) + ", L2-normalised"


def _is_categorical(values: pd.Series) -> bool:
    return (pd.api.types.is_string_dtype(values) or pd.api.types.is_bool_dtype(values)
            or values.dtype == object) and values.nunique() <= 50


def _checkpoint_name(encoder_dir: Path) -> str:
    """The weights file inside the encoder folder, as a bundle-relative path."""
    for name in ("weights.pt", "encoder.pt", "model.pt"):
        if (encoder_dir / name).is_file():
            return f"encoder/{name}"
    found = sorted(p.name for p in encoder_dir.iterdir() if p.suffix in (".pt", ".pth", ".safetensors"))
    if not found:
        raise BundleError(f"{encoder_dir}: no weights file (.pt) was saved by models.io.save_encoder")
    return f"encoder/{found[0]}"


def bundle_is_current(out: Path, keys: dict) -> bool:
    """True when ``out`` is a valid bundle built from exactly these stage results."""
    man = out / "manifest.json"
    if not man.is_file():
        return False
    try:
        if json.loads(man.read_text()).get("source", {}).get("stage_keys") != keys:
            return False
        validate_bundle(out)
        return True
    except (BundleError, json.JSONDecodeError):
        return False


def write(cfg: Config, results: dict[str, StageResult]) -> Path:
    import faiss

    keys = {name: r.key for name, r in results.items()}
    if bundle_is_current(cfg.out, keys):
        log(f"[bundle] {cfg.out} is up to date")
        return cfg.out
    survey = get_survey(cfg.survey)
    catalog, _ = load_ingest(results["ingest"])
    coords = np.load(results["project"].path / "coords.npy")
    cat = bundle_catalog(catalog, coords, cfg.seed)
    umap_params = json.loads((results["project"].path / "umap.json").read_text())
    skipped = pd.read_csv(results["ingest"].path / "skipped.csv", dtype=str, keep_default_na=False)
    manifest = manifest_for(cfg, survey, cat, results["train"], umap_params, skipped, keys)
    thumbs = results["thumbnails"].path
    out = write_bundle(
        cfg.out, catalog=cat, embeddings=np.load(results["embed"].path / "embeddings.npy", mmap_mode="r"),
        thumbnails=((thumbs / "blob.bin").read_bytes(), np.load(thumbs / "offsets.npy")), manifest=manifest,
        encoder_dir=results["train"].path / "encoder", index=faiss.read_index(str(results["index"].path / "index.faiss")),
        extra_dirs={"projection": results["project"].path / "projection"},
        extra_files={"report.json": results["stability"].path / "report.json"}, thumbnail_format="webp")
    validate_bundle(out)
    log(f"[bundle] wrote {out} ({len(cat)} objects, {len(skipped)} skipped)")
    return out

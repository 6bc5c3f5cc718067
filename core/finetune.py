"""Fine-tuning a bundle's encoder on labels, beside the two things it must beat, on the same objects and seeds.

For each number of training labels and seed (the same seeded subset of the bundle's ``split == "train"`` labelled
objects for all three):
- **fine-tuned**: the bundle's encoder with a linear head, layer-wise learning-rate decay (``models.finetune``);
- **supervised**: the same network from random weights, same settings (Slijepcevic et al.'s supervised baseline);
- **linear probe**: the standardised logistic probe on the bundle's stored embeddings (``core.knowledge``);
- **pixel probe**: the same probe on PCA-50 of the encoder's input pixels (the report's pixel baseline).
Errors are measured on every labelled held-out object (``split`` "val" or "test") that has an image.

The images come from the build's ingest cache (``<bundle>.work/ingest-<key>/``, which the manifest names) or from
the survey's own files given again (``--catalog`` / ``--images``): a bundle carries thumbnails, not cutouts.
A fine-tuned classifier is kept in the bundle under ``finetuned/<name>/`` (``models.io.save_classifier``: plain
tensors), with its prediction for every object (``predictions.npy``, (N, n_classes) float32, NaN where the object
had no image) and the comparison (``summary.json``); ``manifest.json`` lists them in ``finetuned`` and ``files``.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core.contract import fail, sha256_of
from core.surveys.base import get_survey

Progress = Callable[[float, str], None]
METHODS = ("fine-tuned", "supervised", "linear probe", "pixel probe")
PIXEL_PCA_DIM = 50   # as the report's pixel baseline
MIN_PER_CLASS = 2
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FINETUNED = "finetuned"
# Nothing is tuned on the validation split here (the recipe is the paper's), so it joins the test split: twice the
# held-out objects, half the noise on every error.
TRAIN, HELD_OUT = ("train",), ("val", "test")


class FineTuneError(ValueError):
    """Labels, images or settings that cannot be fine-tuned on; the message says what to change."""


# ============================================================================================ labels
@dataclass
class Labels:
    """Per bundle row the class index into ``classes`` (-1: no label), and what the labels are."""

    codes: np.ndarray
    classes: list[str]
    name: str

    def rows(self, split: np.ndarray, which: tuple[str, ...], usable: np.ndarray) -> np.ndarray:
        return np.flatnonzero((self.codes >= 0) & np.isin(np.asarray(split), which) & usable)


def labels_from_values(values, name: str, classes: list[str] | None = None) -> Labels:
    """Class labels from per-row values (None / NaN: no label); only ``classes`` when given."""
    series = pd.Series(values, dtype=object)
    text = series.where(series.notna(), None).map(lambda v: None if v is None else str(v))
    present = sorted(set(text.dropna()))
    if classes:
        unknown = [c for c in classes if c not in present]
        if unknown:
            raise FineTuneError(f"no object has the class {unknown[0]!r} in {name!r}; its classes are {present}")
        present = list(classes)
    lookup = {c: i for i, c in enumerate(present)}
    codes = text.map(lambda v: lookup.get(v, -1) if v is not None else -1).to_numpy(dtype=np.int64)
    return Labels(codes, present, name)


def labels_from_column(catalog: pd.DataFrame, column: str, where: list[str] = (), classes=None) -> Labels:
    """Labels from a catalogue column, only on rows where every ``where`` ("column=value") holds."""
    if column not in catalog.columns:
        raise FineTuneError(f"the catalogue has no column {column!r}; pick one of {list(catalog.columns)}")
    keep = np.ones(len(catalog), bool)
    for condition in where:
        col, sep, value = condition.partition("=")
        if not sep or col not in catalog.columns:
            raise FineTuneError(f"--where {condition!r}: write COLUMN=VALUE with one of {list(catalog.columns)}")
        keep &= catalog[col].astype(str).to_numpy() == value
    values = catalog[column].where(pd.Series(keep, index=catalog.index), None)
    return labels_from_values(values.to_numpy(dtype=object), column, classes)


def labels_from_store(current: pd.DataFrame, object_ids, classes=None) -> Labels:
    """The label store's current labels (the most recent per object) aligned with the bundle's rows."""
    from core.labels import latest_label_per_object

    return labels_from_values(latest_label_per_object(current, object_ids), "labels", classes)


def check_enough(labels: Labels, train: np.ndarray, test: np.ndarray) -> None:
    """Two classes or more with ``MIN_PER_CLASS`` training objects each, and a test object: else a FineTuneError."""
    counts = np.bincount(labels.codes[train], minlength=len(labels.classes))
    if (counts > 0).sum() < 2:
        present = [labels.classes[i] for i in np.flatnonzero(counts)]
        raise FineTuneError(f"fine-tuning needs two classes among the training objects (split 'train') of "
                            f"{labels.name!r} that have images; found {present or 'none'}")
    few = [f"{labels.classes[i]} ({counts[i]})" for i in np.flatnonzero(counts < MIN_PER_CLASS)]
    if few:
        raise FineTuneError(f"too few training labels for {', '.join(few)}: at least {MIN_PER_CLASS} per class; "
                            "label more objects, or leave that class out (--classes)")
    if len(test) == 0:
        raise FineTuneError(f"no labelled held-out object (split 'val' or 'test') of {labels.name!r} has an image: "
                            "nothing to measure the classifier on")


def label_subset(rows: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of ``n`` of ``rows`` (sorted); all of them when n is None or too large."""
    if n is None or n >= len(rows):
        return np.asarray(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=n, replace=False))


# ============================================================================================ images
@dataclass
class BundleImages:
    """Raw cutouts (survey units) for the bundle rows ``rows`` (images[i] is row rows[i]); where they came from."""

    images: np.ndarray
    rows: np.ndarray
    source: str


def ingest_cache(bundle, work: Path | None = None) -> Path | None:
    """The build's ingest stage folder for this bundle, when it is still on disk."""
    key = ((bundle.manifest.get("source") or {}).get("stage_keys") or {}).get("ingest")
    if not isinstance(key, str) or not re.fullmatch(r"[0-9a-f]{8,64}", key):
        return None
    folder = Path(work) if work else bundle.path.with_name(bundle.path.name + ".work")
    cache = folder / f"ingest-{key}"
    return cache if (cache / "images.npy").is_file() and (cache / "catalog.parquet").is_file() else None


def find_images(bundle, work: Path | None = None, sources: dict | None = None, progress: bool = False) -> BundleImages:
    """The bundle's objects' cutouts: from ``sources`` (the survey's reader inputs) when given, else from the build's
    ingest cache. Objects are matched by ``object_id``; the ones with no cutout are left out."""
    survey = get_survey(bundle.survey)
    if sources:
        cut = survey.read_local(progress=progress, **sources)
        catalog, images, where = cut.catalog, cut.images, ", ".join(f"--{k} {v}" for k, v in sources.items())
    else:
        cache = ingest_cache(bundle, work)
        if cache is None:
            recorded = {k: v for k, v in (bundle.manifest.get("source") or {}).items()
                        if k in {i.name for i in survey.inputs}}
            hint = f" (the build read {recorded})" if recorded else ""
            options = " ".join(f"--{i.name.replace('_', '-')} ..." for i in survey.inputs) or "the survey's files"
            raise FineTuneError(f"the cutouts of {bundle.path} are not here: a bundle keeps thumbnails, not cutouts, "
                                f"and the build's ingest cache ({bundle.path.name}.work/) is gone; give the survey's "
                                f"files again with {options}{hint}, or --work the build's work folder")
        catalog = pd.read_parquet(cache / "catalog.parquet", columns=["object_id"])
        images, where = np.load(cache / "images.npy", mmap_mode="r"), str(cache)
    position = pd.Index(np.asarray(bundle.catalog["object_id"]).astype(str))
    at = position.get_indexer(catalog["object_id"].astype(str))
    found = np.flatnonzero(at >= 0)
    if len(found) == 0:
        raise FineTuneError(f"none of the cutouts in {where} is an object of {bundle.path} (no object_id in common)")
    if len(found) < len(at):   # cutouts of objects the bundle does not hold: keep only the others
        images = np.asarray(images[found])
    return BundleImages(images, at[found], where)


def no_encoder(bundle) -> str | None:
    """Why the bundle has no encoder to fine-tune (its embeddings were made elsewhere), or None; loads nothing."""
    if not (bundle.encoder_dir / "config.json").is_file():
        return (f"{bundle.path} has no encoder (its embeddings were made elsewhere), so there is nothing to "
                "fine-tune; linear probes work on any bundle")
    return None


def read_encoder_config(bundle) -> dict:
    """The bundle's ``encoder/config.json`` (network, preprocessing, views) without loading its weights."""
    if no_encoder(bundle):
        raise FineTuneError(no_encoder(bundle))
    try:
        config = json.loads((bundle.encoder_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FineTuneError(f"{bundle.encoder_dir / 'config.json'} cannot be read: {e}") from e
    if not isinstance(config, dict) or not isinstance(config.get("preprocessing"), dict):
        raise FineTuneError(f"{bundle.encoder_dir / 'config.json'} has no preprocessing: rebuild the bundle")
    return config


def encoder_config(bundle) -> tuple:
    """The bundle's encoder and its config; a FineTuneError when it has none (embeddings made elsewhere)."""
    from models.io import load_encoder

    if no_encoder(bundle):
        raise FineTuneError(no_encoder(bundle))
    try:
        return load_encoder(bundle.encoder_dir)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise FineTuneError(f"the encoder of {bundle.path} cannot be loaded: {e}") from e


def normalised(survey_name: str, config: dict, raw: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Full-size normalised images (the augmentations crop) as the encoder's training saw them, float32."""
    survey = get_survey(survey_name)
    params = config["preprocessing"]
    return np.concatenate([survey.normalise(np.asarray(raw[s : s + chunk]), params)
                           for s in range(0, len(raw), chunk)]).astype(np.float32, copy=False)


# ============================================================================================ comparison
@dataclass
class Comparison:
    """One row per (method, labels, seed): test error and seconds; plus what was compared."""

    rows: list[dict] = field(default_factory=list)
    n_test: int = 0
    settings: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """Mean test error and its standard error over seeds, per method and number of labels."""
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        g = df.groupby(["method", "n_labels"], sort=False)["error"]
        out = g.agg(mean="mean", n_seeds="count").reset_index()
        out["se"] = g.std(ddof=1).to_numpy() / np.sqrt(out["n_seeds"].to_numpy())
        out["seconds"] = df.groupby(["method", "n_labels"], sort=False)["seconds"].mean().to_numpy()
        return out


def compare(bundle, labels: Labels, images: BundleImages, cfg, *, counts=(None,), seeds=(0,),
            methods=METHODS, progress: Progress | None = None, keep_final: bool = True):
    """Fine-tuned, supervised and linear-probe test errors at each number of labels and seed (None: every training
    label). Returns (Comparison, the classifier fine-tuned on the last seed of the largest count, or None)."""
    from dataclasses import replace

    from models.encoders import build_encoder
    from models.finetune import fit_classifier, predict_proba

    config = read_encoder_config(bundle)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise FineTuneError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    usable = np.zeros(bundle.n, bool)
    usable[images.rows] = True
    split = bundle.catalog["split"].to_numpy()
    train, test = labels.rows(split, TRAIN, usable), labels.rows(split, HELD_OUT, usable)
    check_enough(labels, train, test)
    position = np.full(bundle.n, -1, np.int64)
    position[images.rows] = np.arange(len(images.rows))
    norm = normalised(bundle.survey, config, images.images[position[np.concatenate([train, test])]])
    at = {int(r): i for i, r in enumerate(np.concatenate([train, test]))}
    crop, views = int(config["preprocessing"].get("crop", get_survey(bundle.survey).crop_size)), config.get("views", "identity")
    test_x = norm[[at[int(r)] for r in test]]
    sizes = sorted({len(train) if c is None else min(int(c), len(train)) for c in counts})
    runs = [(n, s, m) for n in sizes for s in seeds for m in methods]
    no_image = int(((labels.codes >= 0) & ~usable).sum())
    comparison = Comparison(n_test=len(test), settings={"crop": crop, "views": views, "n_train_available": len(train),
                                                        "classes": labels.classes, "target": labels.name,
                                                        "labelled_without_cutout": no_image})
    pixels = pixel_pca(norm, crop) if "pixel probe" in methods else None
    final = None
    for i, (n, seed, method) in enumerate(runs):
        rows = label_subset(train, n, seed)
        if len(np.unique(labels.codes[rows])) < 2:
            continue   # a tiny subset drew one class: no classifier to compare
        t0 = time.perf_counter()
        say = _scaled(progress, i / len(runs), 1 / len(runs), f"{method}, {len(rows)} labels, seed {seed}")
        if method == "linear probe":
            error = _probe_error(bundle.embeddings[rows], labels.codes[rows], bundle.embeddings[test], labels.codes[test])
        elif method == "pixel probe":
            error = _probe_error(pixels[[at[int(r)] for r in rows]], labels.codes[rows],
                                 pixels[[at[int(r)] for r in test]], labels.codes[test])
        else:
            # every run starts from a fresh copy: the bundle's weights, or random ones for the baseline
            encoder = encoder_config(bundle)[0] if method == "fine-tuned" else \
                build_encoder(**{k: config[k] for k in ("arch", "in_channels", "stem", "width")})
            fit = fit_classifier(encoder, norm[[at[int(r)] for r in rows]], labels.codes[rows], labels.classes,
                                 crop, replace(cfg, seed=seed), pretrained=method == "fine-tuned", progress=say)
            proba = predict_proba(fit.model, test_x, crop, views, device=cfg.device)
            error = float((proba.argmax(1) != labels.codes[test]).mean())
            if method == "fine-tuned" and keep_final and n == sizes[-1]:
                final = fit
        comparison.rows.append({"method": method, "n_labels": int(len(rows)), "seed": int(seed), "error": error,
                                "seconds": time.perf_counter() - t0})
    return comparison, final


def _scaled(progress: Progress | None, start: float, width: float, what: str) -> Progress | None:
    if progress is None:
        return None
    return lambda f, message: progress(start + width * f, f"{what}: {message}")


def _probe_error(x_train, y_train: np.ndarray, x_test, y_test: np.ndarray) -> float:
    """Held-out error of the standardised logistic probe (``core.knowledge``)."""
    from core.knowledge import choose_c, probe_error

    x_train = np.asarray(x_train, np.float32)
    per_class = np.bincount(y_train)
    # the regularisation is chosen by 3-fold cross-validation when every class can be in each fold
    c = choose_c(x_train, y_train) if per_class[per_class > 0].min() >= 3 else 0.3
    return probe_error(x_train, y_train, np.asarray(x_test, np.float32), y_test, c)


def pixel_pca(norm: np.ndarray, crop: int, dim: int = PIXEL_PCA_DIM, seed: int = 0) -> np.ndarray:
    """PCA-``dim`` of the centre-cropped encoder inputs, fitted on all of them (no labels are used)."""
    from sklearn.decomposition import PCA

    from core.surveys.base import centre_crop

    flat = centre_crop(norm, crop).reshape(len(norm), -1)
    return PCA(n_components=min(dim, *flat.shape), random_state=seed).fit_transform(flat).astype(np.float32)


# ============================================================================================ the bundle's copy
def predict_all(model, bundle, images: BundleImages, device=None, chunk: int = 2048) -> np.ndarray:
    """(N, n_classes) probabilities for every bundle row with a cutout; NaN rows for the others."""
    from models.finetune import predict_proba

    config = read_encoder_config(bundle)
    out = np.full((bundle.n, model.n_classes), np.nan, np.float32)
    crop = int(config["preprocessing"].get("crop", get_survey(bundle.survey).crop_size))
    for s in range(0, len(images.rows), chunk):
        x = normalised(bundle.survey, config, images.images[s : s + chunk])
        out[images.rows[s : s + chunk]] = predict_proba(model, x, crop, config.get("views", "identity"), device=device)
    return out


def save_finetuned(bundle, name: str, fit, probabilities: np.ndarray, comparison: Comparison, extra: dict) -> Path:
    """Write ``finetuned/<name>/`` into the bundle and list it in ``manifest.json`` (``finetuned`` and ``files``)."""
    from models.io import save_classifier

    if not NAME.fullmatch(name):
        raise FineTuneError(f"name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    enc_config = read_encoder_config(bundle)
    folder = bundle.path / FINETUNED / name
    keep = ("arch", "in_channels", "stem", "width", "survey", "preprocessing", "views", "bands", "cutout_size")
    config = {**{k: enc_config[k] for k in keep if k in enc_config}, "classes": list(fit.classes),
              "finetune": fit.config, "train_seconds": fit.seconds, **extra}
    save_classifier(fit.model, config, folder)
    np.save(folder / "predictions.npy", probabilities.astype(np.float32), allow_pickle=False)
    summary = {"target": comparison.settings.get("target"), "classes": list(fit.classes), "n_test": comparison.n_test,
               "settings": comparison.settings, "runs": comparison.rows,
               "table": comparison.table().to_dict(orient="records")}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    _record_in_manifest(bundle.path, name, folder)
    return folder


def _record_in_manifest(path: Path, name: str, folder: Path) -> None:
    man_path = path / "manifest.json"
    man = json.loads(man_path.read_text(encoding="utf-8"))
    files = man.get("files")
    for f in sorted(folder.iterdir()):
        if isinstance(files, dict):
            files[f.relative_to(path).as_posix()] = {"bytes": f.stat().st_size, "sha256": sha256_of(f)}
    man.setdefault(FINETUNED, {})[name] = {"folder": f"{FINETUNED}/{name}"}
    tmp = man_path.with_name(f".manifest.json.{os.getpid()}")
    tmp.write_text(json.dumps(man, indent=2))
    os.replace(tmp, man_path)


# ============================================================================================ reading it back
@dataclass
class FineTuned:
    """A classifier kept in a bundle: its classes, per-object probabilities and the comparison it was chosen by."""

    name: str
    folder: Path
    classes: list[str]
    probabilities: np.ndarray
    summary: dict

    _model: object = field(default=None, repr=False)

    def classify(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities (n_classes,) of one raw cutout (C, H, W) in the survey's stored units, prepared as
        the bundle's images were (a cutout fetched from the sky or uploaded)."""
        from models.finetune import predict_proba
        from models.io import load_classifier

        if self._model is None:
            try:
                self._model, self._config = load_classifier(self.folder)
            except ValueError as e:
                raise FineTuneError(str(e)) from e
        config = self._config
        x = get_survey(config["survey"]).preprocess(np.asarray(raw, np.float32)[None], config["preprocessing"])
        return predict_proba(self._model, x, x.shape[-1], config.get("views", "identity"))[0]

    @property
    def predicted(self) -> np.ndarray:
        """Per object the index of the most probable class, -1 where it had no cutout."""
        known = np.isfinite(self.probabilities).all(axis=1)
        return np.where(known, np.nan_to_num(self.probabilities).argmax(axis=1), -1)


def read_finetuned(path: Path, manifest: dict, n: int) -> list[FineTuned]:
    """The classifiers the manifest lists under ``finetuned``; each file checked (a BundleError names a bad one).
    Their bytes are in the manifest's inventory, so validation has already hashed them."""
    listed = manifest.get(FINETUNED) or {}
    if not isinstance(listed, dict):
        fail(path / "manifest.json", f"'{FINETUNED}' must be a JSON object of name -> folder")
    out = []
    for name in sorted(listed):
        folder = path / FINETUNED / str(name)
        if not NAME.fullmatch(str(name)) or not folder.resolve().is_relative_to(path.resolve()):
            fail(path / "manifest.json", f"names the classifier {name!r}, which is not a folder name in {FINETUNED}/")
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            proba = np.load(folder / "predictions.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            fail(folder, f"cannot be read ({' '.join(str(e).split())[:200]})", "run `python -m precompute finetune` again")
        classes = config.get("classes") if isinstance(config, dict) else None
        if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
            fail(folder / "config.json", "'classes' must list at least two class names", "run the fine-tune again")
        if proba.dtype != np.float32 or proba.shape != (n, len(classes)):
            fail(folder / "predictions.npy", f"must be ({n}, {len(classes)}) float32, not {proba.shape} {proba.dtype}",
                 "run the fine-tune again")
        if not isinstance(summary, dict) or not isinstance(summary.get("table", []), list):
            fail(folder / "summary.json", "must be a JSON object with a 'table' list", "run the fine-tune again")
        out.append(FineTuned(str(name), folder, classes, proba, summary))
    return out

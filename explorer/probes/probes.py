"""Live linear probes on the bundle's embeddings: fit, evaluate, score every object, find candidates, trust.

Targets (``ProbeTarget``) come from a catalogue column or from the user's labels:
- ``fraction`` (GZ2 vote fractions): logistic regression on soft labels with binary cross-entropy (Hayat+21);
- ``categorical`` (a class column or user labels): multinomial logistic, or one-vs-rest for one chosen class;
- ``continuous``: ridge regression, and for redshift the paper's 180-bin classifier over 0-0.4 with E(z).
Training uses ``split == "train"`` rows that have a label (optionally a random subset of ``n_train`` of them, for
label-efficiency curves); metrics use ``split == "test"``.

Fitting is full-batch L-BFGS (``explorer.probes.linear_fit``: float16 rows kept as stored, a warm start on a sample), the figures are ``explorer.probes.probe_metrics``'; the page runs
fits and scoring through ``explorer.jobs``.
"""
from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from explorer.jobs import Cancelled, Progress
from explorer.probes.linear_fit import fit_device, fit_linear, gather_rows
from explorer.probes.probe_metrics import (
    binary_scores,
    categorical_metrics,
    fraction_metrics,
    redshift_metrics,
    regression_metrics,
)

# torch is imported inside the functions that fit and score: importing it here cost ~2 s of every server start
# (the labels section imports this module for its page), long before anyone fits a probe.
if TYPE_CHECKING:
    import torch

# Read-only memory-mapped embeddings are wrapped without copying and only ever read.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

Z_BINS = 180
Z_MAX = 0.4
KINDS = ("fraction", "categorical", "continuous")
METHODS = ("soft-bce", "multinomial", "one-vs-rest", "ridge", "z-bins")
LINKS = {"soft-bce": "sigmoid", "one-vs-rest": "sigmoid", "multinomial": "softmax", "z-bins": "softmax",
         "ridge": "identity"}
HALF_MAX_OUTPUTS = 4
DEFAULT_METHOD = {"fraction": "soft-bce", "categorical": "multinomial", "continuous": "ridge"}

class ProbeError(ValueError):
    """A probe that cannot be fitted as asked; the message says what to change."""


# ============================================================================================ targets
@dataclass
class ProbeTarget:
    """What to predict for every bundle row. ``values`` is float (NaN = no label) or object (None = no label)."""

    name: str
    kind: str
    values: np.ndarray
    positive: str | None = None  # categorical one-vs-rest: the class predicted

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ProbeError(f"target kind must be one of {KINDS}, not {self.kind!r}")

    @property
    def labelled(self) -> np.ndarray:
        if self.kind == "categorical":
            return pd.notna(self.values)
        return np.isfinite(np.asarray(self.values, dtype=np.float64))


def target_from_column(catalog: pd.DataFrame, column: str, kind: str | None = None,
                       colour_by: dict | None = None) -> ProbeTarget:
    """A target from a catalogue column; the kind comes from the manifest's colour_by or the dtype."""
    if column not in catalog.columns:
        raise ProbeError(f"the catalogue has no column {column!r}; pick one of {list(catalog.columns)}")
    kind = kind or (colour_by or {}).get(column, {}).get("kind") or _infer_kind(catalog[column])
    col = catalog[column]
    if kind == "categorical":
        values = col.astype(object).where(col.notna(), None).to_numpy()
    else:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        if kind == "fraction" and np.nanmax(np.abs(values - 0.5), initial=0) > 0.5:
            raise ProbeError(f"column {column!r} is not a fraction (values outside [0, 1]); use kind='continuous'")
    return ProbeTarget(column, kind, values)


def _infer_kind(col: pd.Series) -> str:
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return "categorical"
    v = col.dropna()
    if col.name and str(col.name).endswith("_fraction") and v.between(0, 1).all():
        return "fraction"
    return "continuous"


def target_from_labels(current: pd.DataFrame, object_ids: Sequence, labels: Sequence[str] | None = None,
                       positive: str | None = None) -> ProbeTarget:
    """A categorical target from the label store's ``current()`` table, aligned to the bundle's object ids.

    An object with several of the chosen labels takes the most recently given one. With ``positive`` the probe is
    one-vs-rest: that label against the other chosen labels (unlabelled objects are not negatives).
    """
    from core.labels import latest_label_per_object

    values = latest_label_per_object(current if labels is None else current[current["label"].isin(labels)],
                                     object_ids)
    present = sorted({v for v in values if v is not None})
    if len(present) < 2:
        raise ProbeError(f"a label probe needs at least two labels with objects in this bundle; found {present}. "
                         "Label some objects as something else (e.g. 'other') first")
    if positive is not None and positive not in present:
        raise ProbeError(f"no object in this bundle has the label {positive!r}")
    return ProbeTarget("labels", "categorical", values, positive=positive)


# ============================================================================================ metrics
@dataclass
class LinearProbe:
    """A fitted probe on raw embeddings: outputs = emb @ weight + bias, then ``link``."""

    target: str
    kind: str
    method: str
    weight: np.ndarray  # (D, C) float32
    bias: np.ndarray  # (C,) float32
    classes: list = field(default_factory=list)  # categorical class names, or z-bin centres
    y_scale: tuple[float, float] = (0.0, 1.0)  # ridge: prediction = out * scale + offset
    metrics: dict = field(default_factory=dict)
    n_train: int = 0
    n_test: int = 0
    fit_seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # seconds per stage (gather, fit, evaluate) and loss evaluations

    @property
    def link(self) -> str:
        return LINKS[self.method]


def z_bin_centres(n_bins: int = Z_BINS, z_max: float = Z_MAX) -> np.ndarray:
    return (np.arange(n_bins) + 0.5) * z_max / n_bins


def training_rows(target: ProbeTarget, split: np.ndarray, n_train: int | None = None, seed: int = 0) -> np.ndarray:
    """Labelled ``split == "train"`` rows; a random subset of n_train of them when given (sorted)."""
    rows = np.flatnonzero(target.labelled & (np.asarray(split) == "train"))
    if n_train is not None and n_train < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=n_train, replace=False))
    return rows


def _design(target: ProbeTarget, rows: np.ndarray, method: str, classes=None):
    """The (n, C) target matrix for the rows and the class list."""
    v = target.values[rows]
    if method == "soft-bce":
        return np.asarray(v, np.float32)[:, None], []
    if method == "ridge":
        return np.asarray(v, np.float32)[:, None], []
    if method == "z-bins":
        centres = z_bin_centres()
        idx = np.clip((np.asarray(v, np.float64) / Z_MAX * Z_BINS).astype(int), 0, Z_BINS - 1)
        return np.eye(Z_BINS, dtype=np.float32)[idx], centres.tolist()
    classes = classes if classes is not None else sorted(set(v))
    if method == "one-vs-rest":
        return (v == target.positive).astype(np.float32)[:, None], ["rest", target.positive]
    lookup = {c: i for i, c in enumerate(classes)}
    return np.eye(len(classes), dtype=np.float32)[[lookup[c] for c in v]], classes


def fit_probe(embeddings: np.ndarray, target: ProbeTarget, split: np.ndarray, *, method: str | None = None,
              n_train: int | None = None, l2: float = 1e-3, max_iter: int = 30, seed: int = 0,
              progress: Progress | None = None, cancel: threading.Event | None = None,
              reference: bool = False) -> LinearProbe:
    """Fit a probe on labelled train rows and evaluate it on labelled test rows. ``reference``: the slow fit the
    fast one is measured against (float32 rows, every L-BFGS step on all of them; ``explorer.probes.linear_fit``)."""
    import torch
    method = method or ("one-vs-rest" if target.positive else DEFAULT_METHOD[target.kind])
    _check_method(target, method)
    t0 = time.perf_counter()
    rows = training_rows(target, split, n_train, seed)
    if len(rows) < 2:
        raise ProbeError(f"only {len(rows)} labelled training objects for {target.name!r}; label more (split 'train')")
    Y_np, classes = _design(target, rows, method)
    if method in ("multinomial",) and len(classes) < 2:
        raise ProbeError(f"the training objects of {target.name!r} have only one class {classes}; label another class")
    y_offset, y_scale = 0.0, 1.0
    if method == "ridge":  # standardise the target too so l2 means the same for every column
        y_offset, y_scale = float(Y_np.mean()), float(Y_np.std() or 1.0)
        Y_np = (Y_np - y_offset) / y_scale
    if progress:
        progress(0.0, f"reading {len(rows)} training embeddings")
    device = fit_device()
    t_gather = time.perf_counter()
    # float16 rows stay float16 for a few outputs; many (z-bins: 180) are faster widened once
    X = gather_rows(embeddings, rows, device, keep_half=not reference and Y_np.shape[1] <= HALF_MAX_OUTPUTS)
    t_fit = time.perf_counter()
    Y = torch.from_numpy(Y_np).to(device)
    warm = {"warm_rows": len(rows)} if reference else {}
    weight, bias, n_evaluations = fit_linear(X, Y, LINKS[method], l2=l2, max_iter=max_iter, progress=progress,
                                             cancel=cancel, **warm)
    del X
    probe = LinearProbe(target.name, target.kind, method, weight, bias, classes, (y_offset, y_scale), n_train=len(rows))
    probe.fit_seconds = time.perf_counter() - t0
    probe.timings = {"gather": t_fit - t_gather, "fit": time.perf_counter() - t_fit,
                     "loss_evaluations": n_evaluations}
    t_eval = time.perf_counter()
    evaluate(probe, embeddings, target, split)
    probe.timings["evaluate"] = time.perf_counter() - t_eval
    if progress:
        progress(1.0, f"fitted on {len(rows)} objects in {probe.fit_seconds:.1f} s")
    return probe


def _check_method(target: ProbeTarget, method: str) -> None:
    allowed = {"fraction": ("soft-bce",), "categorical": ("multinomial", "one-vs-rest"),
               "continuous": ("ridge", "z-bins")}[target.kind]
    if method not in allowed:
        raise ProbeError(f"method {method!r} does not fit a {target.kind} target; use one of {allowed}")
    if method == "one-vs-rest" and not target.positive:
        raise ProbeError("one-vs-rest needs the positive class: set ProbeTarget.positive")


def evaluate(probe: LinearProbe, embeddings: np.ndarray, target: ProbeTarget, split: np.ndarray) -> dict:
    """Metrics on labelled ``split == "test"`` rows, stored on the probe and returned."""
    rows = np.flatnonzero(target.labelled & (np.asarray(split) == "test"))
    probe.n_test = len(rows)
    if len(rows) == 0:
        probe.metrics = {}
        return probe.metrics
    out = raw_outputs(probe, gather_rows(embeddings, rows, "cpu").numpy())
    truth = target.values[rows]
    if probe.method == "soft-bce":
        m = fraction_metrics(np.asarray(truth, np.float64), out[:, 0])
    elif probe.method == "one-vs-rest":
        m = binary_scores(truth == target.positive, out[:, 0])
    elif probe.method == "multinomial":
        known = np.isin(truth, probe.classes)  # test classes never seen in training cannot be scored
        m = categorical_metrics(truth[known], out[known], probe.classes)
    else:
        z = out[:, 0]
        truth = np.asarray(truth, np.float64)
        m = regression_metrics(z, truth)
        if probe.method == "z-bins" or "redshift" in probe.target.lower():
            m.update(redshift_metrics(z, truth))
    probe.metrics = m
    return m


# ============================================================================================ scoring
def raw_outputs(probe: LinearProbe, x: np.ndarray) -> np.ndarray:
    """Probe outputs after the link for a float block of embeddings: (n, 1) probability/value or (n, C) probs."""
    import torch
    z = torch.from_numpy(np.asarray(x, np.float32)) @ torch.from_numpy(probe.weight) + torch.from_numpy(probe.bias)
    return _apply_link(probe, z).numpy()


def _apply_link(probe: LinearProbe, z: torch.Tensor) -> torch.Tensor:
    import torch
    if probe.link == "sigmoid":
        return torch.sigmoid(z)
    if probe.link == "softmax":
        p = torch.softmax(z, dim=1)
        if probe.method == "z-bins":  # E(z) and the spread of p(z)
            c = torch.tensor(probe.classes, dtype=p.dtype, device=p.device)
            mean = p @ c
            std = (p @ (c * c) - mean * mean).clamp_min(0).sqrt()
            return torch.stack([mean, std], dim=1)
        return p
    return z * probe.y_scale[1] + probe.y_scale[0]


@dataclass
class Predictions:
    """Per-object output of a probe, float32, aligned with the bundle rows.

    value: probability of the class (fraction / one-vs-rest), predicted class code (multinomial, index into
    classes), estimate (ridge, E(z)). uncertainty: 1 - |2p - 1| for probabilities, 1 - max p for multinomial, the
    p(z) standard deviation for z-bins, NaN for ridge (no probabilistic output).
    """

    value: np.ndarray
    uncertainty: np.ndarray
    classes: list


def score_all(probe: LinearProbe, embeddings: np.ndarray, chunk: int = 65_536, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> Predictions:
    """Score every object by chunked matmul over the (memory-mapped) embeddings.

    One output column on CPU: float16 matrix-vector product straight on the stored rows (no float32 copy; torch
    accumulates in float32). Several columns, or a GPU: each chunk is converted to float32 then multiplied.
    """
    import torch
    n = embeddings.shape[0]
    value = np.empty(n, np.float32)
    unc = np.empty(n, np.float32)
    device = fit_device()
    W = torch.from_numpy(probe.weight).to(device)
    b = torch.from_numpy(probe.bias).to(device)
    fp16_mv = device.type == "cpu" and embeddings.dtype == np.float16 and W.shape[1] == 1
    w16 = W[:, 0].half() if fp16_mv else None
    chunk = 4 * chunk if fp16_mv else chunk   # no float32 copy is made: larger blocks, fewer passes (~7 % faster)
    for s in range(0, n, chunk):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        block = torch.from_numpy(np.ascontiguousarray(embeddings[s : s + chunk]))
        if fp16_mv:
            z = (block @ w16).float()[:, None] + b
        else:
            z = block.to(device).float() @ W + b
        v, u = _value_and_uncertainty(probe, _apply_link(probe, z))
        value[s : s + len(v)], unc[s : s + len(v)] = v, u
        if progress:
            progress(min(1.0, (s + chunk) / n), f"scored {min(n, s + chunk)} of {n}")
    return Predictions(value, unc, list(probe.classes) if probe.method == "multinomial" else [])


def _value_and_uncertainty(probe: LinearProbe, out: torch.Tensor):
    out = out.float().cpu()
    if probe.link == "sigmoid":
        p = out[:, 0]
        return p.numpy(), (1 - (2 * p - 1).abs()).numpy()
    if probe.method == "z-bins":
        return out[:, 0].numpy(), out[:, 1].numpy()
    if probe.link == "softmax":
        top, idx = out.max(dim=1)
        return idx.float().numpy(), (1 - top).numpy()
    return out[:, 0].numpy(), np.full(len(out), np.nan, np.float32)


def uncertain_candidates(pred: Predictions, labelled: np.ndarray, k: int = 50) -> np.ndarray:
    """Rows of the k most uncertain objects without a label: the next ones worth labelling (active learning)."""
    unc = np.where(np.asarray(labelled, bool) | ~np.isfinite(pred.uncertainty), -np.inf, pred.uncertainty)
    k = int(min(k, np.isfinite(unc).sum()))
    if k <= 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-unc, k - 1)[:k]
    return top[np.argsort(-unc[top], kind="stable")].astype(np.int64)


# ============================================================================================ trust
def trust_distance(embeddings: np.ndarray, train_rows: np.ndarray, batch: int = 16_384, progress: Progress | None = None,
                   cancel: threading.Event | None = None) -> np.ndarray:
    """Per object the cosine distance (1 - cos) to its nearest labelled training object, float32.

    faiss exact inner-product search over the labelled set's embeddings, every object a query, in batches.
    Cost is N x n_labelled x D: seconds for thousands of labels at 1 M objects on 2 cores, minutes beyond.
    """
    import faiss

    n, d = embeddings.shape
    index = faiss.IndexFlatIP(d)
    labelled = gather_rows(embeddings, train_rows, "cpu").numpy()
    faiss.normalize_L2(labelled)  # float16 rows are unit length only to ~1e-3
    index.add(labelled)
    out = np.empty(n, np.float32)
    for s in range(0, n, batch):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        q = np.ascontiguousarray(embeddings[s : s + batch], dtype=np.float32)
        faiss.normalize_L2(q)
        sims, _ = index.search(q, 1)
        out[s : s + len(q)] = 1 - sims[:, 0]
        if progress:
            progress(min(1.0, (s + batch) / n), f"trust: {min(n, s + batch)} of {n}")
    return np.clip(out, 0, 2)


# ============================================================================================ label efficiency
def label_efficiency(embeddings: np.ndarray, target: ProbeTarget, split: np.ndarray, sizes: Sequence[int],
                     method: str | None = None, seed: int = 0, **fit_kwargs) -> pd.DataFrame:
    """Test metrics as a function of the number of training labels (one row per size that is available)."""
    available = len(training_rows(target, split))
    rows = []
    for size in sorted(set(int(s) for s in sizes)):
        if size > available:
            break
        probe = fit_probe(embeddings, target, split, method=method, n_train=size, seed=seed, **fit_kwargs)
        rows.append({"n_train": probe.n_train, "fit_seconds": probe.fit_seconds, **probe.metrics})
    return pd.DataFrame(rows)



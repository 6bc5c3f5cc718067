"""How good a probe is, in the papers' figures: AUC/accuracy for fractions and classes, bias/scatter/outliers for
redshift (Hayat et al.), R² and error for other continuous targets."""
from __future__ import annotations

from typing import Sequence

import numpy as np

HQ_HIGH, HQ_LOW = 0.8, 0.2  # "high-quality" GZ2 labels (Hayat+21)
OUTLIER_DZ = 0.05


def binary_scores(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    pred = p > 0.5
    tp = int(np.sum(pred & y))
    out = {
        "acc": float(np.mean(pred == y)) if len(y) else float("nan"),
        "prec": tp / int(pred.sum()) if pred.any() else float("nan"),
        "rec": tp / int(y.sum()) if y.any() else float("nan"),
        "auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
    }
    return out


def fraction_metrics(p_true: np.ndarray, p_pred: np.ndarray) -> dict:
    """Acc, Prec, Rec, AUC on high-quality labels (P > 0.8 or < 0.2, binarised at 0.5), plus the soft BCE."""
    p_true = np.asarray(p_true, np.float64)
    p_pred = np.clip(np.asarray(p_pred, np.float64), 1e-7, 1 - 1e-7)
    hq = (p_true > HQ_HIGH) | (p_true < HQ_LOW)
    out = binary_scores(p_true[hq] > 0.5, p_pred[hq])
    out["n_high_quality"] = int(hq.sum())
    out["bce"] = float(-np.mean(p_true * np.log(p_pred) + (1 - p_true) * np.log(1 - p_pred))) if len(p_true) else float("nan")
    return out


def redshift_metrics(z_pred: np.ndarray, z_true: np.ndarray) -> dict:
    """Hayat+21: dz = (z_p - z_s)/(1 + z_s); bias <dz>, sigma_MAD = 1.4826 MAD(dz), eta = % |dz| > 0.05."""
    z_pred, z_true = np.asarray(z_pred, np.float64), np.asarray(z_true, np.float64)
    dz = (z_pred - z_true) / (1 + z_true)
    return {
        "bias": float(np.mean(dz)),
        "sigma_mad": float(1.4826 * np.median(np.abs(dz - np.median(dz)))),
        "eta_percent": float(100 * np.mean(np.abs(dz) > OUTLIER_DZ)),
    }


def regression_metrics(y_pred: np.ndarray, y_true: np.ndarray) -> dict:
    err = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    var = np.var(y_true)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "r2": float(1 - np.mean(err**2) / var) if var > 0 else float("nan")}


def categorical_metrics(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy and balanced accuracy; with two classes also Prec, Rec, AUC for the second class."""
    from sklearn.metrics import balanced_accuracy_score

    classes = list(classes)
    true_idx = np.array([classes.index(v) for v in y_true])
    pred_idx = np.argmax(proba, axis=1)
    out = {"acc": float(np.mean(pred_idx == true_idx)), "balanced_acc": float(balanced_accuracy_score(true_idx, pred_idx))}
    if len(classes) == 2:
        out.update({k: v for k, v in binary_scores(true_idx == 1, proba[:, 1]).items() if k != "acc"})
    return out


# ============================================================================================ fitting

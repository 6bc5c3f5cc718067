"""Save / load a trained encoder as ``weights.pt`` (state_dict) + ``config.json`` (build kwargs and anything else,
e.g. the survey's preprocessing, so a cutout fetched later is embedded exactly like the bundle's images)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .encoders import build_encoder
from .safe_load import load_tensors

BUILD_KEYS = ("arch", "in_channels", "stem", "width")
WHITEN_MEAN, WHITEN_MATRIX = "post.whiten_mean", "post.whiten_matrix"   # models.embed.fit_whitening


def save_encoder(encoder: nn.Module, config: dict, folder) -> Path:
    """Write ``folder/weights.pt`` and ``folder/config.json``; returns the folder.

    ``config`` must hold build_encoder's kwargs under arch / in_channels / stem / width (width may be None);
    other JSON-serialisable keys are stored as given, except the arrays of ``whiten``, which go into weights.pt
    (``load_encoder`` puts them back).
    """
    missing = [k for k in BUILD_KEYS if k not in config]
    if missing:
        raise ValueError(f"encoder config lacks {missing}: it must include {BUILD_KEYS} to rebuild the network")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    whiten = config.get("whiten")
    if whiten:   # a D x D matrix: tensors beside the weights, not JSON numbers (2048-d would be ~50 MB of text)
        state[WHITEN_MEAN] = torch.as_tensor(whiten["mean"], dtype=torch.float32)
        state[WHITEN_MATRIX] = torch.as_tensor(whiten["matrix"], dtype=torch.float32)
        config = {**config, "whiten": {"floor": whiten.get("floor"), "stored_in": "weights.pt"}}
    torch.save(state, folder / "weights.pt")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder


def load_encoder(folder) -> tuple[nn.Module, dict]:
    """The encoder saved by ``save_encoder`` (eval mode, CPU) and its config dict."""
    folder = Path(folder)
    weights, config_path = folder / "weights.pt", folder / "config.json"
    for path in (weights, config_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {folder} is not an encoder folder written by save_encoder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    state = load_tensors(weights)
    if WHITEN_MATRIX in state:
        config = {**config, "whiten": {**(config.get("whiten") or {}),
                                       "mean": state.pop(WHITEN_MEAN).numpy(), "matrix": state.pop(WHITEN_MATRIX).numpy()}}
    if config.get("stem") == "hayat" and state.get("conv1.weight", torch.zeros(1, 1, 7, 7)).shape[-1] == 3:
        config = {**config, "stem": "compact"}   # saved before "hayat" became the paper's 7x7/1 stem
    encoder = build_encoder(**{k: config[k] for k in BUILD_KEYS})
    try:
        encoder.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not match the network described by {config_path}: {err}") from err
    whiten = config.get("whiten")
    if whiten:
        d = encoder.out_dim
        matrix, mean = (np.asarray(whiten.get(k, []), dtype=np.float32) for k in ("matrix", "mean"))
        config = {**config, "whiten": {**whiten, "matrix": matrix, "mean": mean}}
        if not (matrix.shape == (d, d) and mean.shape == (d,)):
            raise ValueError(f"{config_path} says the embeddings are whitened, but {weights} holds no {d} x {d} "
                             f"whitening ({WHITEN_MEAN}, {WHITEN_MATRIX}); rebuild the bundle")
    return encoder.eval(), config


CLASSIFIER_KEYS = BUILD_KEYS + ("classes",)


def save_classifier(model: nn.Module, config: dict, folder) -> Path:
    """A fine-tuned ``models.finetune.Classifier``: ``weights.pt`` (its state dict: plain tensors) and
    ``config.json`` (build_encoder's kwargs, ``classes`` and anything else JSON can hold)."""
    missing = [k for k in CLASSIFIER_KEYS if k not in config]
    if missing:
        raise ValueError(f"classifier config lacks {missing}: it must include {CLASSIFIER_KEYS} to rebuild it")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "weights.pt")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder


def load_classifier(folder) -> tuple[nn.Module, dict]:
    """The classifier saved by ``save_classifier`` (eval mode, CPU) and its config; ValueError naming the file when
    either is not what ``save_classifier`` writes."""
    from .finetune import Classifier

    folder = Path(folder)
    weights, config_path = folder / "weights.pt", folder / "config.json"
    for path in (weights, config_path):
        if not path.is_file():
            raise ValueError(f"{path} is missing: {folder} is not a classifier folder written by save_classifier")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_path}: not JSON ({e})") from e
    classes = config.get("classes") if isinstance(config, dict) else None
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{config_path}: 'classes' must list at least two class names")
    missing = [k for k in BUILD_KEYS if k not in config]
    if missing:
        raise ValueError(f"{config_path}: lacks {missing}, needed to rebuild the network")
    try:
        model = Classifier(build_encoder(**{k: config[k] for k in BUILD_KEYS}), len(classes))
        model.load_state_dict(load_tensors(weights))
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"{weights} does not match the classifier described by {config_path}: "
                         f"{' '.join(str(err).split())[:300]}") from err
    return model.eval(), config

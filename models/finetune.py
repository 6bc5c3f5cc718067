"""Fine-tuning a pretrained encoder on labels, the way Slijepcevic et al. 2023 do (§2.6.2, Tables 2 and 4): a linear
head on the encoder's representation, AdamW, base learning rate 1e-3 x batch/256, batch 64, weight decay 0.005,
cosine decay, and a learning rate that shrinks by ``layer_decay`` (rho = 0.75) for every layer further from the
head. The same network trained from random weights with the same settings (no layer decay, which only means
something for a pretrained network) is the supervised baseline it is compared with. Where the paper is silent,
the authors' code (inigoval/finetune) decides: the head batch-normalises the features before its linear layer, the
last layer learns at the head's rate, and the loss has label smoothing 0.1.

A "layer" is the stem (first convolution and its batch norm) or one residual block, counted from the input:
``depth`` fine-tunes the last ``depth`` of them (the rest stay frozen, batch-norm statistics included); 0 trains
the head alone. Training sees only affine augmentations (Table 2: rotation, random resized crop 90-100 %,
horizontal and vertical flips); predictions average the class probabilities over the 8 rotations and flips when
the encoder's embeddings did (``views == "d4"``).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import Flip, GeometricCrop, RandomResizedCrop, Rotation
from .embed import dihedral, resolve_device

Progress = Callable[[float, str], None]


@dataclass
class FineTuneConfig:
    """Table 4 of Slijepcevic et al. 2023, except ``epochs``: 300 there (100 at their smallest label count)."""

    epochs: int = 300
    batch_size: int = 64
    base_lr: float = 1e-3          # scaled by batch_size / 256
    weight_decay: float = 0.005
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.75      # fine-tuning only; the supervised baseline trains every layer at the base rate
    depth: int | None = None       # layers fine-tuned, counted from the head; None: all
    crop_scale: tuple[float, float] = (0.9, 1.0)
    label_smoothing: float = 0.1   # the authors' fine-tuning code; used for the baseline too
    head_epochs: int = 0           # epochs of the head alone first (LP-FT, Kumar et al. 2022); not in the paper
    seed: int = 0
    device: str | None = None

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


class Classifier(nn.Module):
    """An encoder and a linear head: (N, C, crop, crop) preprocessed images -> (N, n_classes) logits. The head
    standardises the features (batch norm) before its linear layer, as the authors' code does: a pretrained
    encoder's features have no particular scale, and without it the first steps' large gradients undo the
    pretraining."""

    def __init__(self, encoder: nn.Module, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.BatchNorm1d(encoder.out_dim), nn.Linear(encoder.out_dim, n_classes))

    @property
    def n_classes(self) -> int:
        return self.head[-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def encoder_layers(encoder: nn.Module) -> list[list[nn.Module]]:
    """The encoder's layers from the input: [stem (conv1, bn1)], then each residual block of layer1..layer4."""
    layers = [[encoder.conv1, encoder.bn1]]
    for stage in (encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4):
        layers.extend([block] for block in stage)
    return layers


def parameter_groups(model: Classifier, cfg: FineTuneConfig, layer_decay: float | None) -> list[dict]:
    """AdamW groups: the head and the last layer at ``cfg.lr``, the i-th layer below that at ``cfg.lr *
    layer_decay ** i`` (the authors' code; no decay: all at ``cfg.lr``). Layers deeper than ``cfg.depth`` are
    frozen (``requires_grad`` off) and left out."""
    layers = encoder_layers(model.encoder)
    depth = len(layers) if cfg.depth is None else int(cfg.depth)
    if not 0 <= depth <= len(layers):
        raise ValueError(f"depth must be between 0 (the head only) and {len(layers)} (every layer of this encoder), "
                         f"not {cfg.depth}")
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr, "layer": "head"}]
    for i, modules in enumerate(reversed(layers), start=1):
        params = [p for m in modules for p in m.parameters()]
        trainable = i <= depth
        for p in params:
            p.requires_grad_(trainable)
        if trainable:
            rate = cfg.lr * (layer_decay ** (i - 1) if layer_decay is not None else 1.0)
            groups.append({"params": params, "lr": rate, "layer": f"{len(layers) - i}"})
    return groups


def frozen_modules(model: Classifier, cfg: FineTuneConfig) -> list[nn.Module]:
    """The frozen layers' modules: kept in eval mode so their batch-norm statistics stay the pretrained ones."""
    layers = encoder_layers(model.encoder)
    depth = len(layers) if cfg.depth is None else int(cfg.depth)
    return [m for modules in layers[: len(layers) - depth] for m in modules]


def affine_augmentations(crop: int, scale=(0.9, 1.0)) -> GeometricCrop:
    """Table 2 of Slijepcevic et al. 2023: rotation (360 degrees), centre crop, random resized crop, flips."""
    return GeometricCrop(crop, [Rotation(), RandomResizedCrop(scale), Flip("horizontal"), Flip("vertical")])


@dataclass
class FitResult:
    model: Classifier
    classes: list
    config: dict
    seconds: float
    losses: list = field(default_factory=list)   # mean training loss per epoch


def fit_classifier(encoder: nn.Module, images: np.ndarray, labels: np.ndarray, classes: list, crop: int,
                   cfg: FineTuneConfig, *, pretrained: bool = True, progress: Progress | None = None) -> FitResult:
    """Train ``Classifier(encoder)`` on ``images`` (N, C, S, S) normalised full-size, S >= crop, and ``labels``
    (N,) class indices into ``classes``. ``pretrained``: layer-wise decay and ``cfg.depth`` apply; otherwise every
    layer trains at the base rate (the supervised baseline). ``progress(fraction, message)`` may raise to stop."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"fine-tuning needs at least two classes among the training labels; found only "
                         f"{[classes[i] for i in present]}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    model = Classifier(encoder, len(classes)).to(device)
    layout = memory_layout(device)
    model = model.to(memory_format=layout)
    augment = affine_augmentations(crop, cfg.crop_scale).to(device)
    run_cfg = cfg if pretrained else FineTuneConfig(**{**asdict(cfg), "depth": None, "head_epochs": 0})
    t0, losses = time.perf_counter(), []
    stages = [(FineTuneConfig(**{**asdict(run_cfg), "depth": 0}), run_cfg.head_epochs)] if run_cfg.head_epochs else []
    stages.append((run_cfg, run_cfg.epochs))
    done, total_epochs = 0, sum(e for _, e in stages)
    for stage_cfg, epochs in stages:
        groups = parameter_groups(model, stage_cfg, cfg.layer_decay if pretrained else None)
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        say = None if progress is None else \
            (lambda k, loss, done=done: progress((done + k) / total_epochs,
                                                 f"epoch {done + k}/{total_epochs}, loss {loss:.3f}"))
        losses += _train(model, opt, frozen_modules(model, stage_cfg), augment, images, labels, epochs, cfg, rng,
                         layout, device, say)
        done += epochs
    model.eval()
    config = {**asdict(run_cfg), "lr": cfg.lr, "pretrained": pretrained,
              "layer_decay": cfg.layer_decay if pretrained else None, "n_layers": len(encoder_layers(encoder)),
              "n_train": len(labels), "crop": crop}
    return FitResult(model.cpu(), list(classes), config, time.perf_counter() - t0, losses)


def memory_layout(device: torch.device):
    """channels_last on a GPU; on this CPU the fine-tuning loop ran 1.7x slower with it than without (measured on
    the FIRST bundle, 100 epochs: 186 s against 110 s), unlike the self-supervised loop."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _train(model, opt, frozen, augment, images, labels, epochs: int, cfg: FineTuneConfig, rng, layout, device,
           progress) -> list[float]:
    """``epochs`` epochs of AdamW with cosine decay of every group's rate; the mean loss of each epoch."""
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    n = len(labels)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total, step, losses = epochs * steps_per_epoch, 0, []
    cuda = device.type == "cuda"
    for epoch in range(epochs):
        model.train()
        for m in frozen:
            m.eval()
        order = rng.permutation(n)
        epoch_loss = 0.0
        for b in range(steps_per_epoch):
            rows = np.sort(order[b * batch : (b + 1) * batch])
            x = torch.as_tensor(np.ascontiguousarray(images[rows]), dtype=torch.float32, device=device)
            y = torch.as_tensor(labels[rows], device=device)
            with torch.no_grad():
                x = augment(x).contiguous(memory_format=layout)
            factor = 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * factor
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            epoch_loss += float(loss.detach())
        losses.append(epoch_loss / steps_per_epoch)
        if progress is not None:
            progress(epoch + 1, losses[-1])
    return losses


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size pixels (the same corner as ``core.surveys.base.centre_crop``)."""
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


@torch.no_grad()
def predict_proba(model: Classifier, images, crop: int, views: str = "identity", batch_size: int = 256,
                  device=None) -> np.ndarray:
    """Class probabilities (N, n_classes) float32 of normalised images (any side >= ``crop``), centre-cropped to
    ``crop``; averaged over the 8 rotations and flips with ``views="d4"``."""
    device = resolve_device(device)
    layout = memory_layout(device)
    model = model.to(device, memory_format=layout).eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = centre_crop(torch.as_tensor(np.ascontiguousarray(images[s : s + batch_size]), dtype=torch.float32,
                                        device=device), crop).contiguous(memory_format=layout)
        views_of_x = dihedral(x) if views == "d4" else [x]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            p = torch.stack([F.softmax(model(v).float(), dim=1) for v in views_of_x]).mean(0)
        out.append(p.cpu().numpy().astype(np.float32))
    n_classes = model.n_classes
    return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)

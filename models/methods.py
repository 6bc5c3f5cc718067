"""Self-supervised methods as plugins: each declares what the training loop needs to know about it.

A method is a module whose ``forward(view_1, view_2)`` returns the loss and whose ``backbone`` is the encoder. Its
``MethodSpec`` says how to build it around an encoder, its learning rate (per 256 images) and weight decay, how many
warm-up epochs it wants, whether its BatchNorm must be synchronised across GPUs, and what to do after each
optimiser step (BYOL's target update). ``models/train.py`` reads only this table: adding a method is one file with
its module and one ``register_method`` call (tests/plugins/toy_method.py is a toy one;
tests/test_plugins.py trains it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .byol import BYOL
from .moco import MoCo
from .simclr import SimCLR


@dataclass(frozen=True)
class MethodSpec:
    name: str
    build: Callable[..., nn.Module]           # (encoder, n_images, global_batch, queue_size, cfg, world) -> module
    base_lr: float                            # at 256 images per step, scaled linearly with the batch
    weight_decay: float
    warmup_epochs: Callable[[int], int] = lambda epochs: min(10, epochs // 10)
    sync_batchnorm: bool = False              # SyncBatchNorm under multi-GPU DDP (MoCo shuffles BN instead)
    after_step: Callable[[nn.Module, int, int], None] | None = None   # (module, step, total_steps)


METHOD_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    METHOD_REGISTRY[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    if name not in METHOD_REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {tuple(METHOD_REGISTRY)}")
    return METHOD_REGISTRY[name]


def default_queue_size(n_images: int, global_batch: int, dim: int = 128, max_bytes: int = 256 * 2**20) -> int:
    """~5 % of the data (Hayat et al.), at least one global batch, at most ``max_bytes`` of float32 keys."""
    return int(min(max(round(0.05 * n_images), global_batch), max_bytes // (4 * dim)))


def _build_moco(encoder, n_images, global_batch, queue_size, cfg, world):
    cfg.setdefault("queue_size", queue_size or default_queue_size(n_images, global_batch))
    # one process: emulate shuffle BN with split BatchNorm, groups of >= 32 images (DDP shuffles for real)
    cfg.setdefault("bn_splits", max(1, min(8, global_batch // 32)) if world == 1 else 1)
    return MoCo(encoder, **cfg)


def _build_byol(encoder, n_images, global_batch, queue_size, cfg, world):
    # the paper's 4096-wide heads are for 512-d ResNets; scale them down with narrow encoders
    cfg.setdefault("hidden_dim", min(4096, 8 * encoder.out_dim))
    return BYOL(encoder, **cfg)


def _build_simclr(encoder, n_images, global_batch, queue_size, cfg, world):
    return SimCLR(encoder, **cfg)


register_method(MethodSpec("moco", _build_moco, base_lr=0.03, weight_decay=1e-4, warmup_epochs=lambda epochs: 0))
register_method(MethodSpec("byol", _build_byol, base_lr=0.2, weight_decay=1.5e-6, sync_batchnorm=True,
                           after_step=lambda module, step, total: module.update_target(step, total)))
register_method(MethodSpec("simclr", _build_simclr, base_lr=0.3, weight_decay=1e-6))

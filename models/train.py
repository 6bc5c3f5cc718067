"""Self-supervised training loop for every registered method (``models.methods``): one process, or many under
``torchrun`` (DDP). ``train(images, augment, TrainConfig(...))``; the command line is precompute's::

    python -m precompute train-array --survey sdss --images normalised.npy --out encoder/
    torchrun --nproc_per_node 2 --standalone -m precompute train-array --survey first --images first.npy ...

``batch_size`` is the global batch (split evenly across processes) and learning rates scale with it
(lr = base x batch / 256). A checkpoint is written after every epoch and resuming from it is exact: model,
optimiser, scheduler, MoCo queue, every process's RNG state and the epoch are restored, and the data order of
each epoch depends only on (seed, epoch).
"""
from __future__ import annotations

import copy
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .embed import resolve_device
from .encoders import build_encoder, use_channels_last
from .methods import method_spec
from .safe_load import load_tensors
from .moco import plain_batchnorm
from .optim import make_optimizer, warmup_cosine

# per 256 images (Hayat et al.; Slijepcevic et al. Table 3; SimCLR with SGD as in Chen et al.'s small-batch runs)
CHECKPOINT = "checkpoint.pt"


# ----------------------------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------------------------
class Processes:
    """Rank / world size from torchrun's environment; a single process when there is none."""

    def __init__(self, device=None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.started_group = False
        if device is None and self.world > 1 and torch.cuda.is_available():
            device = f"cuda:{self.local_rank}"
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.started_group = True

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world

    def gather_objects(self, obj) -> list:
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.started_group:
            dist.barrier()
            dist.destroy_process_group()


@torch.no_grad()
def average_buffers(model: nn.Module, procs: Processes) -> None:
    """BatchNorm running statistics drift apart between processes (each sees its own batches); average them so
    every process holds identical weights after each epoch."""
    if not procs.distributed:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= procs.world


# ----------------------------------------------------------------------------------------------------------------
# data: in-memory arrays, whole batches per fetch
# ----------------------------------------------------------------------------------------------------------------
class ArrayBatches(torch.utils.data.Dataset):
    """dataset[indices] -> float32 tensor of those images (the loader fetches whole batches at once)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, indices):
        rows = np.asarray(indices)
        if isinstance(self.images, torch.Tensor):
            return self.images[torch.as_tensor(rows)].float()
        return torch.from_numpy(np.ascontiguousarray(self.images[rows], dtype=np.float32))


def epoch_batches(n_images: int, batch_size: int, procs: Processes, seed: int, epoch: int) -> list[np.ndarray]:
    """This process's index batches for ``epoch``: a permutation seeded by (seed, epoch), cut into global
    batches (last partial one dropped), each split evenly across processes."""
    per_rank = batch_size // procs.world
    steps = n_images // batch_size
    order = np.random.default_rng([seed, epoch]).permutation(n_images)[: steps * batch_size]
    mine = order.reshape(steps, procs.world, per_rank)[:, procs.rank]
    return [np.sort(b) for b in mine]     # sorted rows read memory-mapped arrays faster; order inside is irrelevant


def make_loader(dataset, batches, procs: Processes, num_workers: int):
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=batches, num_workers=num_workers,
                                       pin_memory=procs.device.type == "cuda")


# ----------------------------------------------------------------------------------------------------------------
# model, optimiser, schedule
# ----------------------------------------------------------------------------------------------------------------
def build_method(method: str, encoder: nn.Module, n_images: int, global_batch: int, queue_size=None,
                 method_cfg: dict | None = None, world: int = 1) -> nn.Module:
    return method_spec(method).build(encoder, n_images, global_batch, queue_size, dict(method_cfg or {}), world)


# ----------------------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)     # a run killed while writing keeps the previous checkpoint


def load_checkpoint(path: Path, run_key: dict) -> dict:
    try:   # tensors and plain containers only: a checkpoint file never runs code
        state = load_tensors(path)
    except Exception as e:
        raise ValueError(f"checkpoint {path} cannot be read as plain tensors ({' '.join(str(e).split())[:160]}); "
                         f"delete it to train from the start") from e
    if state.get("run_key") != run_key:
        raise ValueError(f"checkpoint {path} is from a different run ({state.get('run_key')}, now {run_key}); "
                         f"use another checkpoint_dir or resume=False")
    return state


# ----------------------------------------------------------------------------------------------------------------
# kNN monitor
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def knn_accuracy(encoder: nn.Module, images, labels, crop: int | None, device, k: int = 20) -> float:
    """Leave-one-out k-nearest-neighbour (cosine, majority vote) accuracy of ``labels`` on the representations of
    ``images`` (centre-cropped to ``crop``)."""
    from .embed import embed

    images = np.asarray(images, dtype=np.float32)
    if crop is not None and images.shape[-1] > crop:
        top, left = (images.shape[-2] - crop) // 2, (images.shape[-1] - crop) // 2
        images = images[..., top: top + crop, left: left + crop]
    was_training = encoder.training
    features = torch.from_numpy(embed(encoder, images, device=device, dtype=np.float32))
    encoder.train(was_training)
    labels = torch.as_tensor(np.asarray(labels))
    _, codes = torch.unique(labels, return_inverse=True)
    similarity = features @ features.T
    similarity.fill_diagonal_(-float("inf"))
    k = min(k, len(features) - 1)
    neighbours = similarity.topk(k, dim=1).indices
    votes = F.one_hot(codes[neighbours], int(codes.max()) + 1).sum(dim=1)
    return float((votes.argmax(dim=1) == codes).float().mean())


# ----------------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """What the training loop takes besides the images and their augmentations: the one place its defaults live.
    ``precompute`` fills it from a survey's recipe (``precompute.config.Config.train_config``)."""

    method: str = "moco"
    encoder: dict = field(default_factory=lambda: {"arch": "small", "in_channels": 1, "stem": "standard",
                                                   "width": None})   # models.encoders.build_encoder arguments
    epochs: int = 20
    batch_size: int = 128              # global: split evenly across processes
    lr: float | None = None            # None: the method's base rate x batch / 256
    optimizer: str = "sgd"
    weight_decay: float | None = None  # None: the method's
    warmup_epochs: float | None = None  # None: the method's
    max_steps: int | None = None       # stop after this many optimiser steps in total (a finished epoch is saved)
    queue_size: int | None = None      # MoCo: None is ~5 % of the data
    method_cfg: dict = field(default_factory=dict)
    seed: int = 0
    device: str | None = None
    num_workers: int = 0
    progress: bool = True
    compile: bool = False              # wrap the model with torch.compile


def train(images, augment: nn.Module, cfg: TrainConfig, checkpoint_dir=None, resume: bool = True,
          knn_monitor=None) -> tuple[nn.Module, list[dict]]:
    """Train ``cfg.method`` on ``images`` (N, C, H, W) float32 (normalised, full stored size: the augmentations
    crop) and return (the trained backbone in eval mode on CPU, per-epoch history).

    History rows: epoch, loss (mean over the epoch and processes), images_per_s, lr (at the epoch's end), knn_acc
    (when ``knn_monitor=(val_images, val_labels)``), steps, complete."""
    method_spec(cfg.method)   # an unknown method fails here, before any process group starts
    if images.ndim != 4:
        raise ValueError(f"train expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    procs = Processes(cfg.device)
    try:
        return _train(images, procs, augment, cfg, checkpoint_dir, resume, knn_monitor)
    finally:
        procs.close()


class Run:
    """One training run's moving parts: the method module, its DDP runner, optimiser, schedule and step counts."""

    def __init__(self, images, procs: Processes, cfg: TrainConfig):
        self.spec, self.procs, self.cfg = method_spec(cfg.method), procs, cfg
        if cfg.batch_size % procs.world:
            raise ValueError(f"batch_size {cfg.batch_size} (global) must divide evenly across {procs.world} processes")
        self.steps_per_epoch = len(images) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(images)} images are fewer than one batch of {cfg.batch_size}")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        seed_everything(cfg.seed)     # identical initial weights in every process
        model = build_method(cfg.method, build_encoder(**cfg.encoder), len(images), cfg.batch_size, cfg.queue_size,
                             cfg.method_cfg, procs.world)
        seed_everything(cfg.seed * 1000 + procs.rank)     # but each process augments differently
        self.layout = torch.channels_last if use_channels_last(model, procs.device) else torch.contiguous_format
        self.model = model.to(procs.device).to(memory_format=self.layout)
        lr = cfg.lr if cfg.lr is not None else self.spec.base_lr * cfg.batch_size / 256
        weight_decay = cfg.weight_decay if cfg.weight_decay is not None else self.spec.weight_decay
        warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else self.spec.warmup_epochs(cfg.epochs)
        self.opt = make_optimizer(cfg.optimizer, self.model, lr, weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, warmup_cosine(self.total_steps, int(warmup * self.steps_per_epoch)))
        self.key = {"method": cfg.method, "encoder_cfg": cfg.encoder, "batch_size": cfg.batch_size,
                    "epochs": cfg.epochs, "n_images": len(images), "seed": cfg.seed, "world": procs.world,
                    "optimizer": cfg.optimizer}

    def resume_from(self, path: Path) -> tuple[int, list[dict]]:
        state = load_checkpoint(path, self.key)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][self.procs.rank])
        return state["epoch"], state["history"]

    def runner(self) -> nn.Module:
        """The module the steps call: DDP around the method when there are several processes, compiled if asked."""
        runner, cuda = self.model, self.procs.device.type == "cuda"
        if self.procs.distributed:
            if cuda and self.spec.sync_batchnorm:
                runner = self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            # buffers (BN statistics, the MoCo queue) are not broadcast every step; see average_buffers
            runner = nn.parallel.DistributedDataParallel(runner, device_ids=[self.procs.device.index] if cuda else None,
                                                         broadcast_buffers=False)
        return torch.compile(runner) if self.cfg.compile else runner


def _train(images, procs: Processes, augment, cfg: TrainConfig, checkpoint_dir, resume, knn_monitor):
    run = Run(images, procs, cfg)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    start_epoch, history = run.resume_from(ckpt_path) if ckpt_path and resume and ckpt_path.is_file() else (0, [])
    runner, augment = run.runner(), augment.to(procs.device)
    dataset = ArrayBatches(images)
    step = start_epoch * run.steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        row, step = _epoch(run, runner, augment, dataset, epoch, step)
        if knn_monitor is not None and procs.main:
            row["knn_acc"] = knn_accuracy(run.model.backbone, *knn_monitor, getattr(augment, "output_size", None),
                                          procs.device)
            run.model.backbone.to(memory_format=run.layout)
        history.append(row)
        if procs.main and cfg.progress:
            knn = f", kNN accuracy {row['knn_acc']:.3f}" if "knn_acc" in row else ""
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}, {row['images_per_s']:.0f} images/s, "
                  f"lr {row['lr']:.4g}{knn}", flush=True)
        if ckpt_path and row["complete"]:
            _checkpoint(ckpt_path, run.model, run.opt, run.sched, epoch + 1, history, run.key, procs)
    encoder = plain_batchnorm(copy.deepcopy(run.model.backbone)).to("cpu").to(memory_format=torch.contiguous_format)
    return encoder.eval(), history


def _epoch(run: Run, runner, augment, dataset, epoch: int, step: int) -> tuple[dict, int]:
    """One epoch of optimiser steps (fewer when ``max_steps`` is reached); its history row and the step count."""
    cfg, procs = run.cfg, run.procs
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if procs.device.type == "cuda" else nullcontext()
    runner.train()
    batches = epoch_batches(len(dataset), cfg.batch_size, procs, cfg.seed, epoch)
    bar = _progress(len(batches), epoch, cfg.epochs, cfg.progress and procs.main)
    losses, done, started = [], 0, time.perf_counter()
    for batch in make_loader(dataset, batches, procs, cfg.num_workers):
        x = batch.to(procs.device, non_blocking=True)
        view_1 = augment(x).contiguous(memory_format=run.layout)
        view_2 = augment(x).contiguous(memory_format=run.layout)
        with autocast:
            loss = runner(view_1, view_2)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        step += 1
        if run.spec.after_step is not None:
            run.spec.after_step(run.model, step, run.total_steps)
        losses.append(loss.detach())
        done += 1
        if bar is not None:
            if done % 10 == 1 or done == len(batches):     # reading the loss syncs the GPU: not every step
                rate = done * cfg.batch_size / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{float(losses[-1]):.4f}", img_s=f"{rate:.0f}", refresh=False)
            bar.update()
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    if bar is not None:
        bar.close()
    average_buffers(run.model, procs)
    row = {"epoch": epoch, "loss": procs.all_mean(float(torch.stack(losses).mean())) if losses else float("nan"),
           "images_per_s": done * cfg.batch_size / (time.perf_counter() - started),
           "lr": run.sched.get_last_lr()[0], "steps": done, "complete": done == len(batches)}
    return row, step


def _checkpoint(path: Path, model, opt, sched, next_epoch, history, run_key, procs: Processes) -> None:
    rngs = procs.gather_objects(rng_state())
    if procs.main:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": next_epoch, "history": history,
                               "rng": rngs, "run_key": run_key})
    if procs.distributed:
        dist.barrier()


def _progress(total: int, epoch: int, epochs: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)

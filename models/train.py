"""Self-supervised training loop for MoCo v2 and BYOL: one process, or many under ``torchrun`` (DDP).

    python -m models.train --method moco --data images.npy --survey sdss --epochs 5 --out encoder/
    torchrun --nproc_per_node 2 --standalone -m models.train --method byol --data first.npy --survey first ...

``batch_size`` is the global batch (split evenly across processes) and learning rates scale with it
(lr = base x batch / 256). A checkpoint is written after every epoch and resuming from it is exact: model,
optimiser, scheduler, MoCo queue, every process's RNG state and the epoch are restored, and the data order of
each epoch depends only on (seed, epoch).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .embed import resolve_device
from .encoders import build_encoder, use_channels_last
from .methods import METHOD_REGISTRY, method_spec
from .moco import plain_batchnorm

METHODS = tuple(METHOD_REGISTRY)   # the built-in methods (models/methods.py); registered ones join later
OPTIMIZERS = ("sgd", "lars", "adamw")
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


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al. 2017), as in BYOL. Parameters with one
    dimension (biases, BatchNorm) get neither weight decay nor adaptation."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, eta=0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(grad)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    grad = grad * trust
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])


def make_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float):
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def warmup_cosine(total_steps: int, warmup_steps: int):
    """Learning-rate factor per step: linear warm-up, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


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
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} cannot be read as plain tensors ({str(e).splitlines()[0][:160]}); "
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
def train(images, *, method: str, encoder_cfg: dict, augment: nn.Module, epochs: int, batch_size: int,
          lr: float | None = None, optimizer: str = "sgd", checkpoint_dir=None, resume: bool = True, device=None,
          num_workers: int = 0, seed: int = 0, progress: bool = True, knn_monitor=None, max_steps=None,
          queue_size=None, method_cfg: dict | None = None, weight_decay: float | None = None,
          warmup_epochs: float | None = None, compile: bool = False) -> tuple[nn.Module, list[dict]]:
    """Train ``method`` ("moco" / "byol" / "simclr") on ``images`` (N, C, H, W) float32 (normalised, full stored size: the
    augmentations crop) and return (the trained backbone in eval mode on CPU, per-epoch history).

    History rows: epoch, loss (mean over the epoch and processes), images_per_s, lr (at the epoch's end), knn_acc
    (when ``knn_monitor=(val_images, val_labels)``), steps. ``max_steps`` stops after that many optimiser steps in
    total (a finished epoch is still checkpointed). ``compile`` wraps the model with torch.compile.
    """
    method_spec(method)   # an unknown method fails here, before any process group starts
    if images.ndim != 4:
        raise ValueError(f"train expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    procs = Processes(device)
    try:
        return _train(images, procs, method=method, encoder_cfg=encoder_cfg, augment=augment, epochs=epochs,
                      batch_size=batch_size, lr=lr, optimizer=optimizer, checkpoint_dir=checkpoint_dir,
                      resume=resume, num_workers=num_workers, seed=seed, progress=progress,
                      knn_monitor=knn_monitor, max_steps=max_steps, queue_size=queue_size, method_cfg=method_cfg,
                      weight_decay=weight_decay, warmup_epochs=warmup_epochs, use_compile=compile)
    finally:
        procs.close()


def _train(images, procs: Processes, *, method, encoder_cfg, augment, epochs, batch_size, lr, optimizer,
           checkpoint_dir, resume, num_workers, seed, progress, knn_monitor, max_steps, queue_size, method_cfg,
           weight_decay, warmup_epochs, use_compile):
    device, cuda = procs.device, procs.device.type == "cuda"
    spec = method_spec(method)
    if batch_size % procs.world:
        raise ValueError(f"batch_size {batch_size} (global) must divide evenly across {procs.world} processes")
    steps_per_epoch = len(images) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(images)} images are fewer than one batch of {batch_size}")
    total_steps = steps_per_epoch * epochs
    seed_everything(seed)     # identical initial weights in every process
    model = build_method(method, build_encoder(**encoder_cfg), len(images), batch_size, queue_size, method_cfg,
                         procs.world)
    seed_everything(seed * 1000 + procs.rank)     # but each process augments differently
    layout = torch.channels_last if use_channels_last(model, device) else torch.contiguous_format
    model = model.to(device).to(memory_format=layout)
    augment = augment.to(device)
    lr = lr if lr is not None else spec.base_lr * batch_size / 256
    weight_decay = weight_decay if weight_decay is not None else spec.weight_decay
    if warmup_epochs is None:
        warmup_epochs = spec.warmup_epochs(epochs)
    opt = make_optimizer(optimizer, model, lr, weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total_steps, int(warmup_epochs * steps_per_epoch)))

    run_key = {"method": method, "encoder_cfg": encoder_cfg, "batch_size": batch_size, "epochs": epochs,
               "n_images": len(images), "seed": seed, "world": procs.world, "optimizer": optimizer}
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    start_epoch, history = 0, []
    if ckpt_path and resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, run_key)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], state["history"]
        set_rng_state(state["rng"][procs.rank])

    if procs.distributed:
        if cuda and spec.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # buffers (BN statistics, the MoCo queue) are not broadcast every step; see average_buffers
        runner = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None,
                                                     broadcast_buffers=False)
    else:
        runner = model
    if use_compile:
        runner = torch.compile(runner)
    core = model     # the unwrapped method (for EMA updates, state_dict)

    dataset = ArrayBatches(images)
    step = start_epoch * steps_per_epoch
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    for epoch in range(start_epoch, epochs):
        if max_steps is not None and step >= max_steps:
            break
        runner.train()
        batches = epoch_batches(len(images), batch_size, procs, seed, epoch)
        bar = _progress(len(batches), epoch, epochs, progress and procs.main)
        losses, done, started = [], 0, time.perf_counter()
        for batch in make_loader(dataset, batches, procs, num_workers):
            x = batch.to(device, non_blocking=True)
            view_1 = augment(x).contiguous(memory_format=layout)
            view_2 = augment(x).contiguous(memory_format=layout)
            with autocast:
                loss = runner(view_1, view_2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if spec.after_step is not None:
                spec.after_step(core, step, total_steps)
            losses.append(loss.detach())
            done += 1
            if bar is not None:
                if done % 10 == 1 or done == len(batches):     # reading the loss syncs the GPU: not every step
                    rate = done * batch_size / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{float(losses[-1]):.4f}", img_s=f"{rate:.0f}", refresh=False)
                bar.update()
            if max_steps is not None and step >= max_steps:
                break
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - started
        average_buffers(core, procs)
        row = {"epoch": epoch, "loss": procs.all_mean(float(torch.stack(losses).mean())) if losses else float("nan"),
               "images_per_s": done * batch_size / elapsed, "lr": sched.get_last_lr()[0], "steps": done,
               "complete": done == len(batches)}
        if knn_monitor is not None and procs.main:
            row["knn_acc"] = knn_accuracy(core.backbone, *knn_monitor, getattr(augment, "output_size", None), device)
            core.backbone.to(memory_format=layout)
        history.append(row)
        if procs.main and progress:
            knn = f", kNN accuracy {row['knn_acc']:.3f}" if "knn_acc" in row else ""
            print(f"epoch {epoch + 1}/{epochs}: loss {row['loss']:.4f}, {row['images_per_s']:.0f} images/s, "
                  f"lr {row['lr']:.4g}{knn}", flush=True)
        if ckpt_path and row["complete"]:
            _checkpoint(ckpt_path, core, opt, sched, epoch + 1, history, run_key, procs)

    encoder = plain_batchnorm(copy.deepcopy(core.backbone)).to("cpu").to(memory_format=torch.contiguous_format)
    encoder = encoder.eval()
    return encoder, history


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


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def weights_digest(module: nn.Module) -> str:
    """sha256 over a module's state_dict tensors (to compare processes' weights)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--data", required=True, help=".npy of (N, C, H, W) float32 normalised images")
    p.add_argument("--survey", choices=("sdss", "first"), default=None,
                   help="augmentation set (default: sdss for moco, first for byol)")
    p.add_argument("--crop", type=int, default=None, help="augmentation output size (survey default)")
    p.add_argument("--disable", nargs="*", default=(), help="augmentation names to switch off")
    p.add_argument("--arch", default="small")
    p.add_argument("--stem", default="standard")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256, help="global batch")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--queue-size", type=int, default=None)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", default=None, help="folder for the trained encoder (save_encoder) and history.json")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from .augment import build_augmentations, compute_mad
    from .io import save_encoder

    args = parse_args(argv)
    images = np.load(args.data, mmap_mode="r")
    if images.ndim != 4:
        raise SystemExit(f"{args.data}: expected an (N, C, H, W) array, got shape {images.shape}")
    survey = args.survey or ("sdss" if args.method == "moco" else "first")
    params = {"crop": args.crop} if args.crop else {}
    if survey == "sdss" and "noise" not in args.disable:
        params["mad"] = compute_mad(images)
    augment = build_augmentations(survey, disabled=args.disable, **params)
    encoder_cfg = {"arch": args.arch, "in_channels": int(images.shape[1]), "stem": args.stem, "width": args.width}
    encoder, history = train(images, method=args.method, encoder_cfg=encoder_cfg, augment=augment,
                             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                             checkpoint_dir=args.checkpoint_dir, resume=not args.no_resume, device=args.device,
                             num_workers=args.workers, seed=args.seed, progress=not args.quiet,
                             max_steps=args.max_steps, queue_size=args.queue_size, compile=args.compile)
    if args.out:
        out = Path(args.out)
        rank = int(os.environ.get("RANK", "0"))
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.sha256").write_text(weights_digest(encoder))
        if rank == 0:
            save_encoder(encoder, {**encoder_cfg, "method": args.method, "survey": survey,
                                   "crop_size": augment.output_size}, out)
            (out / "history.json").write_text(json.dumps(history, indent=1))


if __name__ == "__main__":
    main()

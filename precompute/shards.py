"""Sharded embedding under torchrun: each process (rank) embeds its own contiguous rows into shard files (the
format, and the merge into one ``embeddings.npy``, are ``core.arrays``'). Under ``torchrun`` (``WORLD_SIZE`` > 1)
:func:`embed_distributed` runs the embed stage with every rank on its own device and rank 0 merging::

    torchrun --standalone --nproc_per_node 2 -m precompute embed --survey first --catalog ... --out bundles/x
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

from core.arrays import rank_rows, write_embedding_shards
from core.encoder import load_embedder
from precompute.cache import WorkDir
from precompute.config import log
from precompute.prepare import load_ingest
from precompute.stages import embed, embed_shard_dir, run_pipeline


# ----------------------------------------------------------------------------------------------- torchrun
def world_from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) outside it."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def _single_process_env():
    """Hide torchrun's variables: the stages before embed run on rank 0 alone (their cache folders are not safe to
    build from several processes at once), and training must not wait for the other ranks to join a DDP step."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_group(device: str | None, wait: timedelta):
    """Join torchrun's process group (nccl on CUDA, gloo on CPU) with a timeout long enough for rank 0 to train
    while the others wait to join, then pick this rank's device with ``models.train.Processes``."""
    import torch
    import torch.distributed as dist

    from models.train import Processes

    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    started = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=wait)
        started = True
    return Processes(device), started


def embed_distributed(cfg, wait: timedelta = timedelta(hours=48)) -> dict:
    """The pipeline up to the embed stage under torchrun: rank 0 runs (or finds cached) ingest and train, every
    rank embeds its own shards on its own device (``cuda:LOCAL_RANK``, else CPU), and rank 0 merges them into the
    embed stage's ``embeddings.npy`` once all ranks are done. Returns the stage results on every rank. The work
    folder must be on a filesystem every node sees."""
    import torch.distributed as dist


    cfg = cfg.resolved()
    if world_from_env()[0] == 0:
        # before the group exists: MoCo all-gathers across ranks whenever a process group is initialised
        with _single_process_env():
            run_pipeline(cfg, until="train")
    procs, started = _start_group(cfg.train.device, wait)  # the other ranks wait here for rank 0
    try:
        dist.barrier()
        results = run_pipeline(cfg, until="train")  # cached now: every rank gets the same stage results
        wd = WorkDir(cfg.work, log=log)
        shard_dir = embed_shard_dir(wd, cfg, results["ingest"], results["train"])
        if shard_dir is not None:
            _, images = load_ingest(results["ingest"])
            start, stop = rank_rows(len(images), procs.rank, procs.world, cfg.embed_rows_per_shard)
            log(f"[embed] rank {procs.rank}/{procs.world}: rows {start}:{stop} on {procs.device}")
            embedder = load_embedder(results["train"].path / "encoder", device=procs.device,
                                     batch_size=cfg.embed_batch_size)
            write_embedding_shards(embedder, images, shard_dir, procs.rank, procs.world, cfg.embed_rows_per_shard,
                                   progress=cfg.progress)
        dist.barrier()
        if procs.main:
            results["embed"] = embed(wd, cfg, results["ingest"], results["train"])
        dist.barrier()
        if not procs.main:
            results["embed"] = embed(wd, cfg, results["ingest"], results["train"])  # cached: rank 0 built it
        return results
    finally:
        if started:
            dist.destroy_process_group()

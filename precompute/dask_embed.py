"""The embed stage on ``dask.distributed`` (``--engine dask``): one task per cutout shard, each worker loading the
encoder once and writing its shards (``core.arrays.write_shard``) into the stage's shard folder; the stage then
merges them as under torchrun. A shard already complete on disk is not recomputed, so a run whose workers (or
whole cluster) died resumes where it stopped; the scheduler also reruns a lost worker's tasks on the others.

    python -m precompute build --survey sdss ... --engine dask                       # LocalCluster, one worker per core
    python -m precompute build --survey sdss ... --dask-scheduler tcp://head:8786   # a running cluster

The work folder must be on storage every worker sees. Each worker embeds on its own GPU when it has one.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from core.arrays import shard_is_done, shard_ranges, write_shard


@lru_cache(maxsize=2)
def _worker_embedder(encoder_dir: str, device: str | None, batch_size: int, threads: int):
    """The encoder, loaded once per worker process (and per encoder)."""
    import torch

    from core.encoder import load_embedder

    torch.set_num_threads(max(1, threads))   # a worker's share of the cores, not all of them
    return load_embedder(encoder_dir, device=device, batch_size=batch_size)


def embed_shard_task(start: int, stop: int, encoder_dir: str, images_path: str, shard_dir: str, batch_size: int,
                     device: str | None) -> str:
    """One shard on a worker: rows ``start:stop`` of the memory-mapped images through the encoder."""
    from distributed import get_worker

    threads = get_worker().state.nthreads
    embedder = _worker_embedder(encoder_dir, device, batch_size, threads)
    images = np.load(images_path, mmap_mode="r")
    return str(write_shard(embedder, images, shard_dir, start, stop))


def embed_on_cluster(client, encoder_dir: Path, images_path: Path, shard_dir: Path, rows_per_shard: int,
                     batch_size: int, device: str | None = None, log=print, task=embed_shard_task) -> int:
    """Write every missing shard of ``images_path`` into ``shard_dir`` on the cluster; return how many were
    computed. A task that fails raises here with the worker's error (after the scheduler's retries)."""
    from core.cluster import describe

    shard_dir.mkdir(parents=True, exist_ok=True)
    n = len(np.load(images_path, mmap_mode="r"))
    todo = [(a, b) for a, b in shard_ranges(n, rows_per_shard) if not shard_is_done(shard_dir, a, b)]
    done = len(shard_ranges(n, rows_per_shard)) - len(todo)
    log(f"[embed] {len(todo)} of {len(todo) + done} shards to embed on {describe(client)}"
        + (f" ({done} already on disk from an earlier run)" if done else ""))
    futures = [client.submit(task, a, b, str(encoder_dir), str(images_path), str(shard_dir),
                             batch_size, device, pure=False, key=f"embed-shard-{a}-{b}-{shard_dir.parent.name}")
               for a, b in todo]
    for i, future in enumerate(futures, 1):      # in submission order; the tasks themselves run in any order
        future.result()
        if i == len(futures) or i % max(1, len(futures) // 10) == 0:
            log(f"[embed] {i}/{len(futures)} shards written")
    return len(todo)

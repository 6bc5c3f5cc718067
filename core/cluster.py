"""The distributed engine: a ``dask.distributed`` client on a real cluster (``--dask-scheduler ADDRESS`` or
``$DASK_SCHEDULER_ADDRESS``), else on a ``LocalCluster`` of worker processes on this machine. The same code runs
on a laptop and on a cluster; the folders the tasks read and write (the work folder, the bundle) must be on
storage every worker sees.

Used by the embed stage (``precompute.dask_embed``: one task per cutout shard, the encoder loaded once per
worker), by ``python -m precompute points`` (one task per part file) and by the explorer's Dask map engine (the
colour layer's aggregation over ``points/``). torchrun stays the training engine.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from core.contract import BundleError

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_S = 10


class ClusterError(BundleError):
    """The Dask scheduler cannot be reached or the cluster cannot start; the message names the address."""


def scheduler_address(given: str | None = None, environ: dict | None = None) -> str | None:
    """The scheduler to use: ``given`` (a command-line option), else ``$DASK_SCHEDULER_ADDRESS``, else None (local)."""
    env = os.environ if environ is None else environ
    address = (given or env.get(SCHEDULER_ENV) or "").strip()
    return address or None


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """A client of the scheduler at ``address``, or a ClusterError naming it when it does not answer."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no answer'}); check that `dask scheduler` runs there and the "
            f"port is open, or leave out --dask-scheduler and ${SCHEDULER_ENV} to use this machine's cores") from e


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, memory_limit: str = "auto"):
    """A LocalCluster of worker processes (one per core by default) with no dashboard (nothing listens beyond
    this machine's loopback). The scheduler's health routes take any free loopback port: a second cluster on the
    machine would otherwise find 8787 taken and warn."""
    from distributed import LocalCluster

    n_workers = n_workers or max(1, min(os.cpu_count() or 1, 8))
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                        dashboard_address=None, host="127.0.0.1", memory_limit=memory_limit,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


@contextmanager
def dask_client(address: str | None = None, n_workers: int | None = None):
    """A client for the duration of a stage: the scheduler at ``address`` (or ``$DASK_SCHEDULER_ADDRESS``), else a
    LocalCluster started here and shut down afterwards."""
    address = scheduler_address(address)
    if address:
        client = connect(address)
        try:
            yield client
        finally:
            client.close()
        return
    from distributed import Client

    with local_cluster(n_workers) as cluster, Client(cluster, set_as_default=False) as client:
        yield client


def describe(client) -> str:
    """'4 workers at tcp://host:8786' for the logs."""
    info = client.scheduler_info()
    return f"{len(info.get('workers', {}))} workers at {client.scheduler.address}"

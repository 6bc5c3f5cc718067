"""The dask.distributed engine on a LocalCluster of two worker processes: the embed stage's shards, the points
format and the explorer's Dask map render, each against the single-process result; a worker killed mid-stage; a
scheduler that does not answer."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
KILL_MARKER = "kill-a-worker"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each (they import this module's tasks, so the repository is on their path)."""
    distributed = pytest.importorskip("distributed")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved]))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      host="127.0.0.1") as lc, distributed.Client(lc, set_as_default=False) as client:
            yield lc.scheduler_address, client
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def pipeline_args(tmp: Path) -> list[str]:
    from tests.core.test_surveys import write_sdss_h5

    write_sdss_h5(tmp / "images.h5", n=96, nan_row=None)
    return ["--survey", "sdss", "--images", str(tmp / "images.h5"), "--out", str(tmp / "b"), "--work",
            str(tmp / "work"), "--arch", "small", "--width", "4", "--stem", "standard", "--epochs", "1",
            "--batch-size", "32", "--max-steps", "1", "--no-progress", "--rows-per-shard", "16", "--device", "cpu"]


def embed_stage_output(work: Path) -> np.ndarray:
    (stage,) = [p for p in work.glob("embed-*") if (p / "done.json").is_file()]
    out = np.load(stage / "embeddings.npy")
    shutil.rmtree(stage)        # ingest and train stay cached: the next run only embeds
    return out


def test_embed_on_the_cluster_equals_one_process_bit_for_bit(tmp_path, cluster, capsys):
    from precompute.__main__ import main

    address, _ = cluster
    args = pipeline_args(tmp_path)
    assert main(["embed", *args]) == 0
    one = embed_stage_output(tmp_path / "work")
    capsys.readouterr()
    assert main(["embed", *args, "--dask-scheduler", address]) == 0
    log = capsys.readouterr().out
    assert "[embed] 6 of 6 shards to embed on 2 workers at " + address in log
    on_cluster = embed_stage_output(tmp_path / "work")
    assert on_cluster.shape == (96, 32) and np.array_equal(one.view(np.uint16), on_cluster.view(np.uint16))
    assert not list((tmp_path / "work").glob("embed-*.shards"))


def kill_worker_once(start, stop, *args):
    """The embed task, except that the first task to find the marker file deletes it and kills its own worker
    process mid-task (as an out-of-memory kill or a lost node would)."""
    from precompute.dask_embed import embed_shard_task

    marker = Path(args[2]).parent / KILL_MARKER   # args[2]: the shard folder
    try:
        marker.unlink()
    except FileNotFoundError:
        return embed_shard_task(start, stop, *args)
    os._exit(1)


def test_a_worker_killed_mid_stage_and_a_killed_run_resume_from_the_shards(tmp_path, cluster):
    """Rows already embedded by an earlier (killed) run are not recomputed; a worker dying mid-task has its shard
    rerun by the scheduler on another worker; the merged result equals the one-process embedding."""
    from core.arrays import shard_name, shard_ranges, write_shard
    from core.encoder import load_embedder
    from precompute.__main__ import main
    from precompute.dask_embed import embed_on_cluster

    _, client = cluster
    args = pipeline_args(tmp_path)
    assert main(["embed", *args]) == 0
    reference = embed_stage_output(tmp_path / "work")
    (train,) = [p for p in (tmp_path / "work").glob("train-*") if (p / "done.json").is_file()]
    (ingest,) = [p for p in (tmp_path / "work").glob("ingest-*") if (p / "done.json").is_file()]
    shards = tmp_path / "shards" / "rows16"
    images = np.load(ingest / "images.npy", mmap_mode="r")
    embedder = load_embedder(train / "encoder", device="cpu", batch_size=256)
    for a, b in shard_ranges(96, 16)[:2]:                 # what a killed earlier run left behind
        write_shard(embedder, images, shards, a, b)
    before = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    (shards.parent / KILL_MARKER).write_text("")
    lines = []
    computed = embed_on_cluster(client, train / "encoder", ingest / "images.npy", shards, 16, 256, "cpu",
                                log=lines.append, task=kill_worker_once)
    assert computed == 4 and "(2 already on disk from an earlier run)" in lines[0]
    assert not (shards.parent / KILL_MARKER).exists(), "the task that killed its worker ran"
    assert {p.name: p.stat().st_mtime_ns for p in shards.iterdir() if p.name in before} == before
    assert sorted(p.name for p in shards.glob("rows-*.npy")) == [shard_name(a, b) for a, b in shard_ranges(96, 16)]
    from core.arrays import merge_embedding_shards

    merged = np.load(merge_embedding_shards(shards, tmp_path / "merged.npy", 96))
    assert np.array_equal(merged.view(np.uint16), reference.view(np.uint16))


def test_an_unreachable_scheduler_is_named_before_anything_is_written(tmp_path, capsys):
    from precompute.__main__ import main

    args = pipeline_args(tmp_path)
    assert main(["build", *args, "--dask-scheduler", "tcp://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err and "$DASK_SCHEDULER_ADDRESS" in err
    assert not (tmp_path / "work").exists() and not (tmp_path / "b").exists()


def test_points_and_the_explorer_map_render_on_the_cluster(make_bundle, tmp_path, cluster):
    """points/ written by tasks on the cluster is byte for byte the local one; the explorer's Dask map engine with
    --dask-scheduler aggregates on the cluster and draws what memory mode draws."""
    import holoviews as hv

    from core.points import write_points
    from explorer.app import map_engine_note
    from explorer.data import load_explorer_data
    from explorer.map.plot import MapView
    from explorer.settings import Settings
    from explorer.state import ExplorerState

    address, client = cluster
    local, remote = tmp_path / "local", tmp_path / "remote"
    shutil.copytree(make_bundle("dask-cluster", n=2500, dim=16), local)
    shutil.copytree(local, remote)
    write_points(local, rows_per_partition=1000)
    write_points(remote, rows_per_partition=1000, client=client)
    for part in sorted((local / "points").glob("part-*.parquet")):
        assert part.read_bytes() == (remote / "points" / part.name).read_bytes()
    assert (local / "points" / "points.json").read_text() == (remote / "points" / "points.json").read_text()

    settings = Settings.parse(["--bundle", str(remote), "--map-engine", "dask"], {"DASK_SCHEDULER_ADDRESS": address})
    assert settings.dask_scheduler == address
    hv.extension("bokeh")
    data = load_explorer_data(remote, "dask", settings.dask_scheduler)
    assert f"dask.distributed at {address}" in map_engine_note(data)
    on_cluster = MapView(data, ExplorerState())
    in_memory = MapView(load_explorer_data(remote, "memory"), ExplorerState())
    for view in (on_cluster, in_memory):
        view.state.colour_by = "redshift"
    worked = client.run(lambda dask_worker: dask_worker.state.transition_counter)
    n_c, v_c = on_cluster.aggregate((-15, 15), (-15, 15), 200, 150)
    n_m, v_m = in_memory.aggregate((-15, 15), (-15, 15), 200, 150)
    np.testing.assert_array_equal(n_c.values, n_m.values)
    np.testing.assert_allclose(v_c.values, v_m.values, rtol=1e-6, equal_nan=True)
    after = client.run(lambda dask_worker: dask_worker.state.transition_counter)
    assert sum(after.values()) > sum(worked.values()), "the render ran no task on the cluster's workers"


def test_points_command_starts_its_own_local_cluster_when_no_scheduler_is_named(make_bundle, tmp_path, capsys,
                                                                               monkeypatch):
    from precompute.__main__ import main

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    bundle = tmp_path / "b"
    shutil.copytree(make_bundle("dask-cluster", n=2500, dim=16), bundle)
    assert main(["points", "--bundle", str(bundle), "--rows-per-partition", "1000", "--engine", "dask"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"writing points/ on \d+ workers at tcp://127\.0\.0\.1:\d+", out), out
    assert "2,500 rows in 3 partitions" in out


def test_the_explorer_names_an_unreachable_scheduler_on_its_error_page(make_bundle, tmp_path):
    from core.points import write_points
    from explorer.app import create_page
    from explorer.data import clear_cache

    bundle = tmp_path / "b"
    shutil.copytree(make_bundle("dask-cluster", n=2500, dim=16), bundle)
    write_points(bundle, rows_per_partition=1000)
    clear_cache()
    page = create_page(["--bundle", str(bundle), "--map-engine", "dask", "--dask-scheduler", "tcp://127.0.0.1:9"])
    assert "bundle-error" in page.main[0].css_classes
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in page.main[0].object
    clear_cache()

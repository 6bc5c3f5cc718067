"""Sharded embeddings: ranks' row ranges tile the matrix, shards resume, the merge streams them into one .npy that
equals the single-process embedding bit for bit, rejects broken shard folders with a message naming the file,
and stays small in memory; write_bundle takes a shard folder or a memory map; two torchrun processes (gloo, CPU)
embed the same vectors as one."""
from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.contract import BundleError, l2_normalise
from core.validate import validate_bundle
from core.write import assign_splits, write_bundle
from core.arrays import check_tiling, copy_to_npy, merge_embedding_shards, rank_rows, shard_name, shard_ranges, write_embedding_shards

REPO = Path(__file__).resolve().parents[2]


def random_embedder(dim: int = 16, calls: list | None = None):
    """A deterministic stand-in for an encoder: each image row maps to a fixed pseudo-random vector."""
    def embedder(images: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(len(images))
        ids = np.asarray(images).reshape(len(images), -1)[:, 0].astype(np.int64)
        return np.stack([np.random.default_rng(int(i)).normal(size=dim) for i in ids]).astype(np.float32)
    return embedder


def id_images(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)[:, None]


# ----------------------------------------------------------------------------------------------- row ranges
@pytest.mark.parametrize("n,world,per", [(1000, 3, 64), (10, 4, 1), (5, 8, 2), (4096, 2, 4096), (0, 2, 16)])
def test_rank_rows_tile_the_matrix_in_whole_shards(n, world, per):
    ranges = [rank_rows(n, r, world, per) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (a, b), (c, _) in zip(ranges, ranges[1:]):
        assert b == c and a <= b
    for a, _ in ranges:
        assert a % per == 0 or a == n
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= per  # balanced to within one shard
    assert sum(b - a for a, b in shard_ranges(n, per)) == n


def test_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="rank 2"):
        rank_rows(10, 2, 2)


# ----------------------------------------------------------------------------------------------- writing and resuming
def test_resume_skips_finished_shards(tmp_path):
    images, calls = id_images(100), []
    embedder = random_embedder(calls=calls)

    def killed_after_three(x):
        if len(calls) == 3:
            raise KeyboardInterrupt
        return embedder(x)

    with pytest.raises(KeyboardInterrupt):
        write_embedding_shards(killed_after_three, images, tmp_path, rows_per_shard=16)
    assert len(list(tmp_path.glob("rows-*.npy"))) == 3 and not list(tmp_path.glob(".*tmp*"))
    (tmp_path / shard_name(48, 64)).write_bytes(b"\x93NUMPY half a shard")  # a torn write from elsewhere
    calls.clear()
    paths = write_embedding_shards(embedder, images, tmp_path, rows_per_shard=16)
    assert calls == [16, 16, 16, 4]  # shards 48:64 (rewritten), 64:80, 80:96, 96:100
    assert [p.name for p in paths] == [shard_name(a, b) for a, b in shard_ranges(100, 16)]
    calls.clear()
    write_embedding_shards(embedder, images, tmp_path, rows_per_shard=16)
    assert calls == []


def test_ranks_write_only_their_own_shards(tmp_path):
    images, calls = id_images(100), []
    paths = write_embedding_shards(random_embedder(calls=calls), images, tmp_path, rank=1, world_size=3,
                                   rows_per_shard=16)
    a, b = rank_rows(100, 1, 3, 16)
    assert [p.name for p in paths] == [shard_name(s, e) for s, e in shard_ranges(100, 16) if a <= s < b]
    assert sum(calls) == b - a


def test_merged_ranks_equal_the_single_process_embedding_bit_for_bit(tmp_path):
    """A real (tiny) encoder: the old path concatenated chunk embeddings in memory and normalised them once."""
    import torch

    from models.embed import embed
    from models.encoders import build_encoder

    torch.manual_seed(0)
    torch.set_num_threads(1)
    encoder = build_encoder("small", 3, width=4)
    images = np.random.default_rng(0).normal(size=(300, 3, 32, 32)).astype(np.float32)
    embedder = lambda x: embed(encoder, x, batch_size=32, device="cpu")
    old = l2_normalise(np.concatenate([embedder(images[s : s + 4096]) for s in range(0, 300, 4096)]), np.float16)

    for rank in range(3):
        write_embedding_shards(embedder, images, tmp_path / "shards", rank, 3, rows_per_shard=64)
    merged = np.load(merge_embedding_shards(tmp_path / "shards", tmp_path / "emb.npy", 300), mmap_mode="r")
    assert merged.dtype == np.float16 and merged.shape == old.shape
    assert np.array_equal(np.asarray(merged).view(np.uint16), old.view(np.uint16))


def test_merge_renormalises_rows_that_are_not_unit_length(tmp_path):
    write_embedding_shards(random_embedder(), id_images(40), tmp_path, rows_per_shard=20)
    good = np.load(tmp_path / shard_name(0, 20))
    np.save(tmp_path / shard_name(0, 20), (good * 3).astype(np.float16))
    merged = np.load(merge_embedding_shards(tmp_path, tmp_path.parent / "m.npy", 40))
    norms = np.linalg.norm(merged.astype(np.float32), axis=1)
    assert np.allclose(norms, 1, atol=2e-3)
    assert np.array_equal(merged[20:], np.load(tmp_path / shard_name(20, 40)))  # good rows kept bit for bit


# ----------------------------------------------------------------------------------------------- broken shard folders
@pytest.fixture
def shard_dir(tmp_path):
    d = tmp_path / "shards"
    write_embedding_shards(random_embedder(), id_images(64), d, rows_per_shard=16)
    return d


def merge_error(shard_dir: Path, n: int = 64) -> str:
    with pytest.raises(BundleError) as err:
        merge_embedding_shards(shard_dir, shard_dir.parent / "out.npy", n)
    assert not (shard_dir.parent / "out.npy").exists() and not list(shard_dir.parent.glob(".out.npy*"))
    return str(err.value)


def test_gap_names_the_shard_after_it(shard_dir):
    (shard_dir / shard_name(16, 32)).unlink()
    msg = merge_error(shard_dir)
    assert shard_name(32, 48) in msg and "rows 16:32 have no shard" in msg and "python -m precompute embed" in msg


def test_missing_last_shard_is_a_gap(shard_dir):
    (shard_dir / shard_name(48, 64)).unlink()
    msg = merge_error(shard_dir)
    assert shard_name(32, 48) in msg and "rows 48:64 have no shard" in msg


def test_overlap_names_both_shards(shard_dir):
    np.save(shard_dir / shard_name(8, 24), np.load(shard_dir / shard_name(0, 16)))
    msg = merge_error(shard_dir)
    assert shard_name(8, 24) in msg and shard_name(0, 16) in msg and "overlap" in msg


def test_truncated_shard_names_the_file(shard_dir):
    path = shard_dir / shard_name(32, 48)
    path.write_bytes(path.read_bytes()[:300])
    msg = merge_error(shard_dir)
    assert str(path) in msg and "cannot be read" in msg and "python -m precompute embed" in msg


def test_wrong_dimension_names_the_file(shard_dir):
    np.save(shard_dir / shard_name(16, 32), l2_normalise(np.ones((16, 8)), np.float16))
    msg = merge_error(shard_dir)
    assert shard_name(16, 32) in msg and "dimension 8" in msg and "16" in msg


def test_nan_rows_and_extra_rows_are_refused(shard_dir):
    bad = np.load(shard_dir / shard_name(16, 32))
    bad[3, 0] = np.nan
    np.save(shard_dir / shard_name(16, 32), bad)
    assert "row 19 has NaN" in merge_error(shard_dir)
    assert "only 60 rows" in merge_error(shard_dir, n=60)


def test_empty_folder_says_what_to_run(tmp_path):
    (tmp_path / "shards").mkdir()
    assert "python -m precompute embed" in merge_error(tmp_path / "shards")
    with pytest.raises(BundleError, match="no shard folder"):
        check_tiling(tmp_path / "nowhere", 4)


# ----------------------------------------------------------------------------------------------- memory
def test_merge_memory_stays_far_below_the_matrix(tmp_path):
    """A 200 MB float16 matrix (50 000 x 2048): the merge allocates one block, not the matrix."""
    n, dim = 50_000, 2048
    rng = np.random.default_rng(0)
    write_embedding_shards(lambda x: rng.normal(size=(len(x), dim)).astype(np.float32), np.zeros((n, 1)),
                           tmp_path / "shards", rows_per_shard=4096)
    tracemalloc.start()
    try:
        merge_embedding_shards(tmp_path / "shards", tmp_path / "emb.npy", n)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    matrix = n * dim * 2
    assert peak < matrix / 8, f"merge peaked at {peak / 2**20:.0f} MB for a {matrix / 2**20:.0f} MB matrix"
    emb = np.load(tmp_path / "emb.npy", mmap_mode="r")
    assert emb.shape == (n, dim)
    assert np.array_equal(emb[12_345], np.load(tmp_path / "shards" / shard_name(12_288, 16_384))[57])

    tracemalloc.start()  # write_bundle's copy of a memory-mapped matrix streams too
    try:
        copy_to_npy(emb, tmp_path / "copy.npy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < matrix / 8, f"copy peaked at {peak / 2**20:.0f} MB for a {matrix / 2**20:.0f} MB matrix"
    copy = np.load(tmp_path / "copy.npy", mmap_mode="r")
    assert np.array_equal(copy[-100:], emb[-100:]) and np.array_equal(copy[:100], emb[:100])


# ----------------------------------------------------------------------------------------------- write_bundle
def bundle_inputs(n: int) -> dict:
    rng = np.random.default_rng(1)
    catalog = pd.DataFrame({"object_id": [f"S{i}" for i in range(n)], "ra": rng.uniform(0, 360, n),
                            "dec": rng.uniform(-30, 30, n), "umap_x": rng.normal(size=n).astype(np.float32),
                            "umap_y": rng.normal(size=n).astype(np.float32), "split": assign_splits(n, 0)})
    thumbs = [b"\xff\xd8thumb%d" % i for i in range(n)]
    manifest = {"survey": "test", "bands": ["r"], "pixel_scale_arcsec": 1.0, "model": {"method": "none"},
                "colour_by": {}}
    return {"catalog": catalog, "thumbnails": thumbs, "manifest": manifest}


def test_write_bundle_from_a_shard_folder(shard_dir, tmp_path):
    out = write_bundle(tmp_path / "b", embeddings=shard_dir, **bundle_inputs(64))
    man = validate_bundle(out)
    assert man["embedding_dim"] == 16 and man["embedding_dtype"] == "float16"
    expected = np.concatenate([np.load(shard_dir / shard_name(a, b)) for a, b in shard_ranges(64, 16)])
    assert np.array_equal(np.load(out / "embeddings.npy"), expected)


def test_write_bundle_from_a_shard_folder_with_a_gap_names_the_shard(shard_dir, tmp_path):
    (shard_dir / shard_name(0, 16)).unlink()
    with pytest.raises(BundleError, match=shard_name(16, 32)):
        write_bundle(tmp_path / "b", embeddings=shard_dir, **bundle_inputs(64))
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.partial-*"))


def test_write_bundle_from_a_memory_map_and_a_path(tmp_path):
    emb = l2_normalise(np.random.default_rng(0).normal(size=(200, 32)), np.float16)
    np.save(tmp_path / "emb.npy", emb)
    mm = np.load(tmp_path / "emb.npy", mmap_mode="r")
    for name, given in (("from_memmap", mm), ("from_path", tmp_path / "emb.npy")):
        out = write_bundle(tmp_path / name, embeddings=given, **bundle_inputs(200))
        assert validate_bundle(out)["n_objects"] == 200
        assert np.array_equal(np.load(out / "embeddings.npy"), emb)
    with pytest.raises(BundleError, match=r"shape \(200, 32\) but the catalogue has 199 rows"):
        inputs = bundle_inputs(199)
        write_bundle(tmp_path / "bad", embeddings=mm, **inputs)
    with pytest.raises(BundleError, match="no embeddings .npy or shard folder here"):
        write_bundle(tmp_path / "bad", embeddings=tmp_path / "nowhere", **bundle_inputs(200))


def test_write_bundle_converts_other_dtypes_to_float32(tmp_path):
    emb = l2_normalise(np.random.default_rng(0).normal(size=(50, 8)), np.float64)
    out = write_bundle(tmp_path / "b", embeddings=emb, **bundle_inputs(50))
    assert validate_bundle(out)["embedding_dtype"] == "float32"


# ----------------------------------------------------------------------------------------------- torchrun
def finished_embed_stages(work: Path) -> list[Path]:
    return [p for p in work.glob("embed-*") if (p / "done.json").is_file()]


def test_two_process_torchrun_embed_equals_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 -m precompute embed` (gloo, CPU) from scratch: rank 0 ingests and trains alone
    (MoCo must not see the process group), each rank embeds its own shards, rank 0 merges. A single-process embed
    with the same (cached) encoder gives the same vectors bit for bit."""
    import shutil

    from tests.core.test_surveys import write_sdss_h5

    write_sdss_h5(tmp_path / "images.h5", n=96, nan_row=None)
    work = tmp_path / "work"
    args = ["embed", "--survey", "sdss", "--images", str(tmp_path / "images.h5"), "--out", str(tmp_path / "b"),
            "--work", str(work), "--arch", "small", "--width", "4", "--stem", "standard", "--epochs", "1",
            "--batch-size", "32", "--max-steps", "1", "--no-progress", "--rows-per-shard", "16", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "precompute", *args]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("[train] running") == 1
    assert "[embed] rank 0/2: rows 0:48 on cpu" in run.stdout and "[embed] rank 1/2: rows 48:96 on cpu" in run.stdout
    assert not list(work.glob("embed-*.shards"))  # merged, then removed
    (stage,) = finished_embed_stages(work)
    two = np.load(stage / "embeddings.npy")
    shutil.rmtree(stage)  # ingest and train stay cached: the single-process run only embeds

    single = subprocess.run([sys.executable, "-m", "precompute", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=240)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    assert "[train] cached" in single.stdout
    (stage1,) = finished_embed_stages(work)
    one = np.load(stage1 / "embeddings.npy")
    assert stage1.name == stage.name and one.shape == (96, 32)
    assert np.array_equal(one.view(np.uint16), two.view(np.uint16))


def test_killed_embed_stage_resumes_at_shard_granularity(tmp_path, monkeypatch):
    """The embed stage keeps its shards outside the stage's temporary folder: a rerun embeds only what is missing."""
    from core import arrays
    from precompute.__main__ import main
    from tests.core.test_surveys import write_sdss_h5

    write_sdss_h5(tmp_path / "images.h5", n=96, nan_row=None)
    work = tmp_path / "work"
    args = ["--survey", "sdss", "--images", str(tmp_path / "images.h5"), "--out", str(tmp_path / "b"), "--work",
            str(work), "--arch", "small", "--width", "4", "--stem", "standard", "--epochs", "1", "--batch-size",
            "32", "--max-steps", "1", "--no-progress", "--rows-per-shard", "16", "--device", "cpu"]
    assert main(["train", *args]) == 0
    saved, save = [], arrays._save_atomically

    def counting_save(path, array):
        if len(saved) == 2 and kill:
            raise KeyboardInterrupt
        saved.append(path.name)
        save(path, array)

    kill = True
    monkeypatch.setattr(arrays, "_save_atomically", counting_save)
    with pytest.raises(KeyboardInterrupt):
        main(["embed", *args])
    assert not finished_embed_stages(work) and len(list(work.glob("embed-*.shards/rows16/rows-*.npy"))) == 2
    kill, saved[:] = False, []
    assert main(["embed", *args]) == 0
    assert saved == [shard_name(a, b) for a, b in shard_ranges(96, 16)][2:]
    (stage,) = finished_embed_stages(work)
    emb = np.load(stage / "embeddings.npy", mmap_mode="r")
    assert emb.shape == (96, 32) and np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
    assert not list(work.glob("embed-*.shards"))

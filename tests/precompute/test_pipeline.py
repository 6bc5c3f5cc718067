"""End to end: tiny `build --survey first` on real MiraBest cutouts, tiny `build --survey sdss` and `demo`, each
producing a bundle that passes `validate`; reruns hit the cache; an interrupted run resumes (between stages, just
before the bundle rename, and mid-training from the per-epoch checkpoint).

Everything is tiny (60-300 objects, one epoch); UMAP's numba compilation (~30-50 s on a busy 2-core box) is paid
once for the module."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from precompute.__main__ import main
from core.bundle import Bundle
from core.validate import validate_bundle

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
MIRABEST = DATA / "first_mirabest"
needs_mirabest = pytest.mark.skipif(not (MIRABEST / "catalog.csv").is_file(),
                                    reason="real FIRST data (../shared/data/first_mirabest) is not present")
TINY = ["--epochs", "1", "--batch-size", "32", "--no-progress", "--n-neighbors", "10"]


def first_args(catalog: Path, out: Path, work: Path, command: str = "build") -> list[str]:
    return [command, "--survey", "first", "--catalog", str(catalog), "--out", str(out), "--work", str(work), *TINY]


@pytest.fixture(scope="module")
def mirabest60(tmp_path_factory):
    """60 real cutouts (paths made absolute) plus two broken rows: a missing file and a NaN cutout."""
    from astropy.io import fits

    root = tmp_path_factory.mktemp("mirabest60")
    cat = pd.read_csv(MIRABEST / "catalog.csv").sample(60, random_state=0)
    cat["file"] = [str((MIRABEST / f).resolve()) for f in cat["file"]]
    data = fits.getdata(cat["file"].iloc[0], 1).copy()
    data[70:75, 70:75] = np.nan
    fits.PrimaryHDU(data).writeto(root / "nan.fits")
    broken = cat.iloc[:2].copy()
    broken["file"] = ["missing.fits", "nan.fits"]
    broken["ra"] = [1.0, 2.0]
    pd.concat([cat, broken]).to_csv(root / "catalog.csv", index=False)
    return root / "catalog.csv"


@pytest.fixture(scope="module")
def first_build(mirabest60, tmp_path_factory):
    if not (MIRABEST / "catalog.csv").is_file():
        pytest.skip("real FIRST data (../shared/data/first_mirabest) is not present")
    root = tmp_path_factory.mktemp("first_build")
    out, work = root / "bundle", root / "work"
    t0 = time.perf_counter()
    assert main(first_args(mirabest60, out, work)) == 0
    return out, work, time.perf_counter() - t0


@needs_mirabest
def test_first_build_on_real_cutouts_is_a_valid_bundle(first_build, mirabest60):
    out, work, _ = first_build
    man = validate_bundle(out)
    # the CPU recipe (no GPU in the tests): SimCLR on the small ResNet, 2x2-binned 64 px, rotation-averaged
    assert man["survey"] == "first" and man["n_objects"] == 60 and man["model"]["method"] == "simclr"
    assert man["model"]["architecture"] == "small" and man["embedding_dtype"] == "float16"
    assert man["model"]["views"] == "d4" and man["model"]["centred"] and man["crop_size"] == 64
    assert (out / "report.json").is_file() and man["report"] == "report.json"
    bundle = Bundle.open(out)
    cat = bundle.catalog
    assert list(cat.columns[:6]) == ["object_id", "ra", "dec", "umap_x", "umap_y", "split"]
    assert {"fr_class", "angular_extent_arcsec", "redshift"} <= set(cat.columns)
    assert set(cat["split"]) <= {"train", "val", "test"}
    # the two broken rows are reported in the work folder and in the manifest, not fatal
    skipped = pd.read_csv(work / "skipped.csv")
    assert len(skipped) == 2 and man["source"]["n_skipped"] == 2
    reasons = " ".join(r["reason"] for r in man["source"]["skipped"])
    assert "file not found" in reasons and "NaN" in reasons
    cfg = json.loads((out / "encoder" / "config.json").read_text())
    for key in ("arch", "in_channels", "stem", "width", "survey", "method", "preprocessing", "crop_size",
                "cutout_size", "pixel_scale_arcsec", "bands"):
        assert key in cfg
    assert (out / "projection" / "projection.json").is_file()
    assert not [p for p in out.rglob("*") if p.suffix in (".joblib", ".pkl", ".pickle")]   # nothing to unpickle


@needs_mirabest
def test_bundle_encoder_embeds_a_new_cutout_like_the_bundle(first_build):
    from core.encoder import load_embedder
    from core.surveys.base import get_survey

    out, _, _ = first_build
    bundle = Bundle.open(out)
    rows = bundle.catalog.iloc[:4]
    sub = pd.DataFrame({"file": rows["source_file"], "ra": rows["ra"], "dec": rows["dec"]})
    sub.to_csv(out.parent / "four.csv", index=False)
    raw = get_survey("first").read_local(out.parent / "four.csv").images
    emb = load_embedder(out / "encoder")(raw)
    stored = np.asarray(bundle.embeddings[:4], dtype=np.float32)
    cos = (emb.astype(np.float32) * stored).sum(axis=1)
    assert emb.shape == stored.shape and (cos > 0.999).all()



@needs_mirabest
def test_rerun_hits_the_cache(first_build, mirabest60, capsys):
    out, work, cold = first_build
    created = json.loads((out / "manifest.json").read_text())["created"]
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main(first_args(mirabest60, out, work)) == 0
    warm = time.perf_counter() - t0
    log = capsys.readouterr().out
    assert "running" not in log and log.count("cached") == 8 and "up to date" in log   # 8 stages
    assert json.loads((out / "manifest.json").read_text())["created"] == created
    assert warm < 15 and warm < cold / 3


@needs_mirabest
def test_killed_between_stages_resumes(first_build, mirabest60, tmp_path, monkeypatch, capsys):
    _, work, _ = first_build
    work2, out2 = tmp_path / "work", tmp_path / "bundle"
    shutil.copytree(work, work2)
    for d in list(work2.glob("index-*")) + list(work2.glob("thumbnails-*")):
        shutil.rmtree(d)

    import core.index

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(core.index, "build_index", killed)
    with pytest.raises(KeyboardInterrupt):
        main(first_args(mirabest60, out2, work2))
    assert not out2.exists() and not list(work2.glob("index-*")) and not list(work2.glob(".*partial*"))
    monkeypatch.undo()

    capsys.readouterr()
    assert main(first_args(mirabest60, out2, work2)) == 0
    log = capsys.readouterr().out
    for stage in ("ingest", "train", "embed", "report", "project", "stability", "thumbnails"):   # done before the kill
        assert f"[{stage}] cached" in log
    assert "[index] running" in log
    validate_bundle(out2)


@needs_mirabest
def test_killed_while_writing_the_bundle_leaves_no_half_bundle(first_build, mirabest60, tmp_path, monkeypatch):
    import core.write

    _, work, _ = first_build
    out = tmp_path / "bundle"

    def killed(tmp, dest):
        raise KeyboardInterrupt
    monkeypatch.setattr(core.write, "replace_dir", killed)
    with pytest.raises(KeyboardInterrupt):
        main(first_args(mirabest60, out, work))
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))
    monkeypatch.undo()
    assert main(first_args(mirabest60, out, work)) == 0
    validate_bundle(out)


@needs_mirabest
@pytest.mark.slow
def test_training_resumes_from_its_epoch_checkpoint(first_build, mirabest60, tmp_path, monkeypatch):
    """Kill training after epoch 1 of 2; the rerun continues from the checkpoint instead of starting again."""
    import models.train

    _, work, _ = first_build
    work2 = tmp_path / "work"
    shutil.copytree(work, work2, ignore=shutil.ignore_patterns("train-*", "embed-*", "project-*", "index-*"))
    real_train = models.train.train
    seen = []

    def first_epoch_then_killed(images, augment, cfg, **kw):
        seen.append(sorted(p.name for p in Path(kw["checkpoint_dir"]).iterdir()))
        real_train(images, augment, dataclasses.replace(cfg, max_steps=1), **kw)  # epoch 1 of 2, checkpointed
        raise KeyboardInterrupt
    monkeypatch.setattr(models.train, "train", first_epoch_then_killed)
    args = [*first_args(mirabest60, tmp_path / "b", work2, command="train"), "--epochs", "2", "--batch-size", "60",
            "--arch", "small"]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    ckpt_dirs = list(work2.glob("train-*.ckpt"))
    assert len(ckpt_dirs) == 1 and any(ckpt_dirs[0].iterdir()) and not list(work2.glob("train-*[!t]"))

    def resumed(images, augment, cfg, **kw):
        seen.append(sorted(p.name for p in Path(kw["checkpoint_dir"]).iterdir()))
        return real_train(images, augment, cfg, **kw)
    monkeypatch.setattr(models.train, "train", resumed)
    assert main(args) == 0
    assert len(seen[1]) > len(seen[0])  # the second run found the epoch-1 checkpoint
    (done,) = [d for d in work2.glob("train-*") if d.is_dir() and not d.name.endswith(".ckpt")]
    history = json.loads((done / "history.json").read_text())
    assert [row["epoch"] for row in history][-1] in (2, 1) and len(history) == 2
    assert not ckpt_dirs[0].exists()  # removed once training finished


# ------------------------------------------------------------------------------------------------- SDSS
def test_sdss_build_from_hdf5_and_gz2(tmp_path):
    from tests.core.test_surveys import write_sdss_h5

    ra, dec = write_sdss_h5(tmp_path / "images.h5", n=64, nan_row=5)
    pd.DataFrame({"ra": ra, "dec": dec, "t01_smooth_or_features_a01_smooth_fraction": np.linspace(0, 1, 64),
                  "t01_smooth_or_features_a02_features_or_disk_fraction": np.linspace(1, 0, 64)}
                 ).iloc[::2].to_csv(tmp_path / "gz2.csv", index=False)
    out = tmp_path / "sdss"
    assert main(["build", "--survey", "sdss", "--images", str(tmp_path / "images.h5"), "--gz2",
                 str(tmp_path / "gz2.csv"), "--out", str(out), "--arch", "small", *TINY]) == 0
    man = validate_bundle(out)
    cat = pd.read_parquet(out / "catalog.parquet")
    assert man["n_objects"] == 63 and man["survey"] == "sdss" and man["source"]["n_skipped"] == 1
    frac = cat["gz2_smooth_or_features_smooth_fraction"]
    assert frac.notna().sum() == 32 and frac.isna().sum() == 31  # the even rows have GZ2 votes (odd row 5 is NaN)
    assert "gz2_smooth_or_features_smooth_fraction" in man["colour_by"]
    assert man["colour_by"]["gz2_smooth_or_features_smooth_fraction"]["kind"] == "fraction"
    assert cat["redshift"].isna().any() and not (cat["redshift"] == 0).any()


@pytest.mark.slow
def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--n", "300", "--epochs", "1", "--no-progress"]
    assert main(args) == 0
    man = validate_bundle(out)
    cat = pd.read_parquet(out / "catalog.parquet")
    assert man["n_objects"] == len(cat) >= 290 and man["model"]["method"] == "simclr"
    assert cat["gz2_smooth_or_features_smooth_fraction"].notna().any()
    assert "truth_type" in cat and "truth_type" in man["colour_by"]
    capsys.readouterr()
    assert main(args) == 0
    assert "running" not in capsys.readouterr().out


def test_bad_inputs_fail_with_one_clear_message(tmp_path, capsys):
    pd.DataFrame({"file": ["a.fits"], "ra": [1.0]}).to_csv(tmp_path / "cat.csv", index=False)
    out = tmp_path / "b"
    assert main(["build", "--survey", "first", "--catalog", str(tmp_path / "cat.csv"), "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert "cat.csv" in err and "'dec'" in err and "Traceback" not in err and not out.exists()
    pd.DataFrame({"file": ["a.fits", "b.fits"], "ra": [1.0, 2.0], "dec": [0.0, 0.0]}).to_csv(tmp_path / "c2.csv",
                                                                                            index=False)
    assert main(["build", "--survey", "first", "--catalog", str(tmp_path / "c2.csv"), "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert "no usable objects" in err and "file not found" in err
    assert main(["build", "--survey", "sdss", "--out", str(out)]) == 1
    assert "--images" in capsys.readouterr().err

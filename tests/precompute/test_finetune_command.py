"""`precompute finetune` end to end on a tiny simulated FIRST bundle: the comparison with the supervised baseline
and the linear probe at several label counts, the classifier kept in the bundle (which still validates), and one
clear message for each bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from core.bundle import Bundle
from core.finetune import read_finetuned
from core.labels import LabelStore, default_labels_path
from core.validate import validate_bundle
from precompute.__main__ import main

FT = ["--epochs", "2", "--batch-size", "16", "--no-progress"]


def fresh_copy(sim_first_build, tmp_path):
    """A copy of the bundle and its work folder, so each test may write into it."""
    shutil.copytree(sim_first_build, tmp_path / "bundle")
    shutil.copytree(sim_first_build.with_name("bundle.work"), tmp_path / "bundle.work")
    return tmp_path / "bundle"


def test_finetune_compares_three_methods_and_keeps_the_classifier(sim_first_build, tmp_path, capsys):
    bundle = fresh_copy(sim_first_build, tmp_path)
    report = tmp_path / "curve.json"
    assert main(["finetune", "--bundle", str(bundle), "--column", "fr_class", "--classes", "FRI", "FRII",
                 "--label-counts", "12", "all", "--seeds", "2", "--json", str(report), *FT]) == 0
    out = capsys.readouterr().out
    assert "fine-tuned error (%)" in out and "supervised error (%)" in out and "linear probe error (%)" in out
    assert "pixel probe error (%)" in out
    assert "the paper's 300 epochs scaled to 2 on a CPU" in out and "layer-wise decay 0.75" in out
    curve = json.loads(report.read_text())
    runs = pd.DataFrame(curve["runs"])
    assert set(runs["method"]) == {"fine-tuned", "supervised", "linear probe", "pixel probe"}
    assert sorted(set(runs["n_labels"]))[0] == 12 and len(set(runs["n_labels"])) == 2
    assert set(runs["seed"]) == {0, 1} and runs["error"].between(0, 1).all()
    # the classifier lives in the bundle, listed and hashed by the manifest, and the bundle still validates
    validate_bundle(bundle)
    b = Bundle.open(bundle)
    [kept] = read_finetuned(bundle, b.manifest, b.n)
    assert kept.name == "fr_class" and kept.classes == ["FRI", "FRII"]
    assert kept.probabilities.shape == (b.n, 2) and np.isfinite(kept.probabilities).all()
    assert "finetuned/fr_class/weights.pt" in b.manifest["files"]
    # a tampered classifier file is caught by validation like any other file of the bundle
    (bundle / "finetuned" / "fr_class" / "summary.json").write_text("{}")
    with pytest.raises(Exception, match="summary.json"):
        validate_bundle(bundle)


def test_finetune_from_the_label_store(sim_first_build, tmp_path, capsys):
    bundle = fresh_copy(sim_first_build, tmp_path)
    b = Bundle.open(bundle)
    cat = b.catalog
    store = LabelStore(default_labels_path(bundle))
    for cls in ("FRI", "FRII"):
        store.add(f"my {cls}", cat.loc[cat["fr_class"] == cls, "object_id"], author="test", method="lasso")
    assert main(["finetune", "--bundle", str(bundle), "--labels-from-store", "--methods", "fine-tuned",
                 "--name", "mine", *FT]) == 0
    [kept] = read_finetuned(bundle, Bundle.open(bundle).manifest, b.n)
    assert kept.name == "mine" and kept.classes == ["my FRI", "my FRII"]


@pytest.mark.parametrize("extra, message", [
    (["--column", "nope"], "no column 'nope'"),
    (["--column", "fr_class", "--classes", "FRI", "Quasar"], "no object has the class 'Quasar'"),
    (["--column", "fr_class", "--where", "confidence=nobody"], "two classes"),
    (["--column", "fr_class", "--where", "nocolumn"], "COLUMN=VALUE"),
    (["--column", "fr_class", "--label-counts", "1"], "at least 2"),
    (["--labels-from-store"], "no label store"),
])
def test_bad_requests_get_one_clear_message(sim_first_build, tmp_path, capsys, extra, message):
    bundle = fresh_copy(sim_first_build, tmp_path)
    assert main(["finetune", "--bundle", str(bundle), *extra, *FT]) == 1
    assert message in capsys.readouterr().err


def test_without_cutouts_or_encoder_it_says_what_to_give(sim_first_build, tmp_path, capsys):
    bundle = fresh_copy(sim_first_build, tmp_path)
    shutil.rmtree(tmp_path / "bundle.work")
    assert main(["finetune", "--bundle", str(bundle), "--column", "fr_class", *FT]) == 1
    err = capsys.readouterr().err
    assert "cutouts" in err and "--catalog" in err
    # the survey's files given again work as well; objects whose cutouts are not among them are left out, and said
    cat = pd.read_csv(sim_first_build.parent / "sim" / "catalog.csv")
    cat["file"] = [str(sim_first_build.parent / "sim" / f) for f in cat["file"]]
    cat.iloc[:120].to_csv(tmp_path / "part.csv", index=False)
    capsys.readouterr()
    assert main(["finetune", "--bundle", str(bundle), "--column", "fr_class", "--catalog", str(tmp_path / "part.csv"),
                 "--methods", "linear probe", "--no-save", *FT]) == 0
    out = capsys.readouterr().out
    assert "images: 120 of 160 objects" in out and "labelled objects have no cutout" in out
    shutil.rmtree(bundle / "encoder")
    man = json.loads((bundle / "manifest.json").read_text())
    man["files"] = {k: v for k, v in man["files"].items() if not k.startswith("encoder/")}
    for key in ("checkpoint", "sha256"):   # as from-embeddings writes it: no encoder
        man["model"].pop(key, None)
    (bundle / "manifest.json").write_text(json.dumps(man))
    assert main(["finetune", "--bundle", str(bundle), "--column", "fr_class", *FT]) == 1
    assert "no encoder" in capsys.readouterr().err

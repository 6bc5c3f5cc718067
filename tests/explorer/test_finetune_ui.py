"""The fine-tune section driven from its widgets (no browser: jobs hand back on the worker thread): the encoder
fine-tuned on a class column beside its baselines, the prediction as a colour layer, the label-efficiency chart
(the bundle's own curves, or the linear probe's measured now), a cancel, the bundle's classifiers as layers from
the start, and what the section says when it cannot fine-tune."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import panel as pn
import pytest

from explorer.data import clear_cache, load_explorer_data
from explorer.settings import Settings
from explorer.state import ExplorerState
from precompute.__main__ import main


@pytest.fixture
def bundle(sim_first_build, tmp_path):
    shutil.copytree(sim_first_build, tmp_path / "bundle")
    shutil.copytree(sim_first_build.with_name("bundle.work"), tmp_path / "bundle.work")
    clear_cache()
    yield tmp_path / "bundle"
    clear_cache()


def section_for(path, tmp_path):
    from explorer.probes.probe_ui import build_probe_section

    data = load_explorer_data(path)
    state = ExplorerState()
    return data, state, build_probe_section(data, state, Settings(labels=tmp_path / "labels.sqlite"))


def widget(section, kind, name):
    return next(w for w in section.select(kind) if w.name == name)


def wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert predicate()


def choose_target(section, words):
    target = widget(section, pn.widgets.Select, "Probe target")
    target.value = next(label for label in target.options if words in label.lower())


def test_fine_tune_from_the_probe_section_paints_the_map_and_reports_three_methods(bundle, tmp_path):
    from explorer.probes.finetune_ui import FINETUNE_KEY

    data, state, section = section_for(bundle, tmp_path)
    choose_target(section, "fanaroff")
    widget(section, pn.widgets.IntInput, "Epochs").value = 2
    widget(section, pn.widgets.Button, "Fine-tune the encoder on these labels").clicks += 1
    wait_for(lambda: FINETUNE_KEY in state.session_colours)
    layer = state.session_colours[FINETUNE_KEY]
    assert layer.spec.kind == "categorical" and layer.values.shape == (data.n,)
    assert state.colour_by == FINETUNE_KEY
    status = next(p for p in section.select(pn.pane.HTML) if "finetune-status" in p.css_classes).object
    for method in ("fine-tuned", "supervised", "linear probe", "pixel probe"):
        assert method in status
    assert "python -m precompute finetune --bundle" in status and "--column fr_class" in status


def test_label_efficiency_curve_is_measured_now_or_read_from_the_bundle(bundle, tmp_path):
    data, state, section = section_for(bundle, tmp_path)
    choose_target(section, "fanaroff")
    widget(section, pn.widgets.Button, "Label-efficiency curve").clicks += 1
    chart = next(c for c in section.select(pn.Column) if "finetune-chart" in c.css_classes)
    wait_for(lambda: len(chart) > 0)
    fig = chart[0].object
    assert [r.glyph.line_color for r in fig.renderers if hasattr(r.glyph, "line_color")][0] is not None
    assert "measured now" in chart[1].object
    # with a curve kept in the bundle, the chart shows its three methods without measuring anything
    assert main(["finetune", "--bundle", str(bundle), "--column", "fr_class", "--label-counts", "20", "all",
                 "--epochs", "1", "--batch-size", "16", "--no-progress"]) == 0
    clear_cache()
    data, state, section = section_for(bundle, tmp_path)
    assert "finetuned:fr_class" in state.session_colours   # the bundle's classifier is a layer from the start
    choose_target(section, "fanaroff")
    widget(section, pn.widgets.Button, "Label-efficiency curve").clicks += 1
    chart = next(c for c in section.select(pn.Column) if "finetune-chart" in c.css_classes)
    assert len(chart) == 2 and "kept in the bundle" in chart[1].object
    legend = {item.label["value"] for item in chart[0].object.legend[0].items}
    assert legend == {"fine-tuned", "supervised", "linear probe", "pixel probe"}


def test_cancel_stops_a_fine_tune_and_nothing_is_painted(bundle, tmp_path):
    from explorer.probes.finetune_ui import FINETUNE_KEY

    data, state, section = section_for(bundle, tmp_path)
    choose_target(section, "fanaroff")
    widget(section, pn.widgets.IntInput, "Epochs").value = 500
    widget(section, pn.widgets.Button, "Fine-tune the encoder on these labels").clicks += 1
    status = next(p for p in section.select(pn.pane.HTML) if "finetune-status" in p.css_classes)
    wait_for(lambda: "epoch" in status.object, timeout=60)
    next(b for b in section.select(pn.widgets.Button) if "finetune-cancel" in b.css_classes).clicks += 1
    assert "cancelled" in status.object
    time.sleep(2)
    assert FINETUNE_KEY not in state.session_colours


def test_the_section_says_why_it_cannot_fine_tune(bundle, tmp_path):
    data, state, section = section_for(bundle, tmp_path)
    choose_target(section, "largest angular")   # a continuous column
    widget(section, pn.widgets.Button, "Fine-tune the encoder on these labels").clicks += 1
    status = next(p for p in section.select(pn.pane.HTML) if "finetune-status" in p.css_classes)
    assert "learns classes" in status.object
    shutil.rmtree(bundle.with_name("bundle.work"))   # the build's cutouts gone
    clear_cache()
    data, state, section = section_for(bundle, tmp_path)
    go = widget(section, pn.widgets.Button, "Fine-tune the encoder on these labels")
    status = next(p for p in section.select(pn.pane.HTML) if "finetune-status" in p.css_classes)
    assert go.disabled and "cutouts this bundle was built from are not on this machine" in status.object
    shutil.rmtree(bundle / "encoder")   # and now as from-embeddings writes a bundle: no encoder at all
    man = json.loads((bundle / "manifest.json").read_text())
    man["files"] = {k: v for k, v in man["files"].items() if not k.startswith("encoder/")}
    for key in ("checkpoint", "sha256"):
        man["model"].pop(key, None)
    (bundle / "manifest.json").write_text(json.dumps(man))
    clear_cache()
    data, state, section = section_for(bundle, tmp_path)
    go = widget(section, pn.widgets.Button, "Fine-tune the encoder on these labels")
    status = next(p for p in section.select(pn.pane.HTML) if "finetune-status" in p.css_classes)
    assert go.disabled and "has no encoder" in status.object


def test_a_damaged_classifier_in_a_bundle_is_refused_at_load(bundle, tmp_path):
    from core.contract import BundleError

    assert main(["finetune", "--bundle", str(bundle), "--column", "fr_class", "--methods", "fine-tuned",
                 "--epochs", "1", "--no-progress"]) == 0
    man = json.loads((bundle / "manifest.json").read_text())
    np.save(bundle / "finetuned" / "fr_class" / "predictions.npy", np.zeros((3, 2), np.float32))
    entry = man["files"]["finetuned/fr_class/predictions.npy"]
    from core.contract import sha256_of
    p = bundle / "finetuned" / "fr_class" / "predictions.npy"
    entry.update(bytes=p.stat().st_size, sha256=sha256_of(p))   # a consistent inventory: the shape is what is wrong
    (bundle / "manifest.json").write_text(json.dumps(man))
    clear_cache()
    with pytest.raises(BundleError, match="predictions.npy"):
        load_explorer_data(bundle)


def test_a_cutout_from_the_sky_is_classified_by_the_bundles_classifier_as_its_objects_were(bundle, tmp_path):
    from core.finetune import ingest_cache
    from explorer.sky.skyquery_ui import classified_by_bundle

    assert main(["finetune", "--bundle", str(bundle), "--column", "fr_class", "--methods", "fine-tuned",
                 "--epochs", "1", "--no-progress"]) == 0
    clear_cache()
    data = load_explorer_data(bundle)
    [fine] = data.finetuned
    cutouts = np.load(ingest_cache(data.bundle) / "images.npy", mmap_mode="r")   # the same objects, in order
    for i in (0, 7):
        assert fine.classify(cutouts[i]) == pytest.approx(fine.probabilities[i], abs=1e-4)
    [note] = classified_by_bundle(data, cutouts[7])
    best = fine.classes[int(np.argmax(fine.probabilities[7]))]
    assert note.startswith(f"fine-tuned fr_class: {best} (p = ")


def test_notebook_fine_tune_returns_the_comparison_and_every_objects_prediction(bundle):
    from explorer.notebook import open_bundle

    b = open_bundle(bundle)
    fit = b.fine_tune("fr_class", classes=["FRI", "FRII"], epochs=1, label_counts=(20, None), seeds=2)
    assert set(fit.table["method"]) == {"fine-tuned", "supervised", "linear probe", "pixel probe"}
    assert set(fit.table["n_seeds"]) == {2} and fit.table["mean"].between(0, 1).all()
    assert list(fit.predictions.columns) == ["predicted", "p_FRI", "p_FRII"] and len(fit.predictions) == b.data.n
    assert set(fit.predictions["predicted"]) <= {"FRI", "FRII"}
    assert not (bundle / "finetuned").exists()   # the notebook reads bundles; the command line keeps classifiers
    with pytest.raises(ValueError, match="class column"):
        b.fine_tune()

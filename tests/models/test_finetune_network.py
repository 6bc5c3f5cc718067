"""Fine-tuning (Slijepcevic et al. 2023 §2.6.2): layer-wise learning rates, frozen depth, a classifier that learns,
and the classifier kept as plain tensors."""
import json

import numpy as np
import pytest
import torch

from models.encoders import build_encoder
from models.finetune import (Classifier, FineTuneConfig, encoder_layers, fit_classifier, frozen_modules,
                             parameter_groups, predict_proba)
from models.io import load_classifier, save_classifier
from models.synthetic import two_class_blobs

ENC = {"arch": "small", "in_channels": 1, "stem": "standard", "width": 8}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_learning_rate_decays_by_rho_per_layer_below_the_last():
    model = Classifier(build_encoder(**ENC), 2)
    cfg = FineTuneConfig(batch_size=64, base_lr=1e-3, layer_decay=0.75)
    groups = parameter_groups(model, cfg, cfg.layer_decay)
    assert cfg.lr == pytest.approx(1e-3 * 64 / 256)
    assert [g["layer"] for g in groups] == ["head", "4", "3", "2", "1", "0"]   # stem + 4 blocks, top first
    assert [g["lr"] for g in groups] == pytest.approx([cfg.lr] + [cfg.lr * 0.75 ** i for i in range(5)])
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters())   # every parameter in exactly one group
    flat = parameter_groups(model, cfg, None)
    assert {g["lr"] for g in flat} == {cfg.lr}


def test_depth_freezes_the_deeper_layers_and_keeps_their_batch_norm_statistics():
    model = Classifier(build_encoder(**ENC), 2)
    cfg = FineTuneConfig(depth=2)
    groups = parameter_groups(model, cfg, cfg.layer_decay)
    assert [g["layer"] for g in groups] == ["head", "4", "3"]
    layers = encoder_layers(model.encoder)
    assert all(not p.requires_grad for m in layers[0] + layers[1] + layers[2] for p in m.parameters())
    assert all(p.requires_grad for m in layers[3] + layers[4] for p in m.parameters())
    assert set(frozen_modules(model, cfg)) == set(layers[0] + layers[1] + layers[2])
    with pytest.raises(ValueError, match="between 0"):
        parameter_groups(model, FineTuneConfig(depth=9), 0.75)


def test_head_only_fine_tune_leaves_the_encoder_unchanged():
    images, labels = two_class_blobs(64, size=40, channels=1, seed=0)
    encoder = build_encoder(**ENC)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    fit = fit_classifier(encoder, images, labels, ["round", "long"], 32, FineTuneConfig(epochs=2, batch_size=32, depth=0))
    after = fit.model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # weights and running statistics alike


def test_fine_tuning_learns_a_shape_classifier_and_predicts_probabilities():
    images, labels = two_class_blobs(320, size=40, channels=1, seed=0)
    test, test_labels = two_class_blobs(200, size=40, channels=1, seed=1)
    cfg = FineTuneConfig(epochs=12, batch_size=32, base_lr=4e-3)
    fit = fit_classifier(build_encoder(**ENC), images, labels, ["round", "long"], 32, cfg, pretrained=False)
    assert fit.losses[-1] < fit.losses[0]
    proba = predict_proba(fit.model, test, 32, views="d4")
    assert proba.shape == (200, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == test_labels).mean() > 0.85
    assert fit.config["pretrained"] is False and fit.config["layer_decay"] is None


def test_one_class_is_refused():
    images, _ = two_class_blobs(20, size=40, channels=1)
    with pytest.raises(ValueError, match="two classes"):
        fit_classifier(build_encoder(**ENC), images, np.zeros(20, int), ["a", "b"], 32, FineTuneConfig(epochs=1))


def test_classifier_round_trips_as_tensors_and_bad_folders_are_refused(tmp_path):
    model = Classifier(build_encoder(**ENC), 3).eval()
    folder = save_classifier(model, {**ENC, "classes": ["a", "b", "c"]}, tmp_path / "clf")
    loaded, config = load_classifier(folder)
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert config["classes"] == ["a", "b", "c"]
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "classes": ["only one"]}))
    with pytest.raises(ValueError, match="at least two"):
        load_classifier(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "classes": ["a", "b"]}))   # head has 3 outputs
    with pytest.raises(ValueError, match="does not match"):
        load_classifier(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_classifier(folder)

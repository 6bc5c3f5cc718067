"""Published checkpoints load into our encoders: each format is tested with a checkpoint synthesised in that layout
(random weights, the real key names and shapes), and the loaded encoder must give the reference network's output
for the same input."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from models.checkpoints import FORMATS, CheckpointError, load_published_encoder


def _randomise_batchnorm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics, so a BatchNorm left at its defaults would show."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def _features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)


def hayat_reference() -> nn.Module:
    """The paper's ResNet-50: 5 bands, 7x7 stride-1 stem, no max-pool, MoCo v2's MLP head in fc."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    net.conv1 = nn.Conv2d(5, 64, kernel_size=7, stride=1, padding=3, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 128))
    return _randomise_batchnorm(net)


def _without_head(net: nn.Module) -> nn.Module:
    net.fc = nn.Identity()
    return net


def test_hayat2021_moco_checkpoint_embeds_like_the_paper_network(tmp_path):
    ref = hayat_reference()
    q = {f"module.encoder_q.{k}": v for k, v in ref.state_dict().items()}
    k = {f"module.encoder_k.{k}": v.clone() for k, v in ref.state_dict().items()}
    torch.save({"epoch": 101, "arch": "resnet50", "state_dict": {**q, **k, "module.queue": torch.randn(128, 64),
                                                                 "module.queue_ptr": torch.zeros(1, dtype=torch.long)},
                "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "pretrained_paper_model.pth.tar")
    encoder, config = load_published_encoder(tmp_path / "pretrained_paper_model.pth.tar", "hayat2021")
    assert (config["arch"], config["stem"], config["in_channels"], encoder.out_dim) == ("resnet50", "hayat", 5, 2048)
    x = torch.randn(2, 5, 64, 64)
    torch.testing.assert_close(_features(encoder, x), _features(_without_head(ref), x), rtol=1e-4, atol=1e-5)


def test_hayat2021_fine_tuned_model_state_loads_too(tmp_path):
    ref = hayat_reference()
    ref.fc = nn.Linear(2048, 180)   # the photo-z classifier over 180 redshift bins
    torch.save({"iters": 10, "epoch": 3, "model_state": {f"module.{k}": v for k, v in ref.state_dict().items()}},
               tmp_path / "ckpt.tar")
    encoder, _ = load_published_encoder(tmp_path / "ckpt.tar", "hayat2021")
    x = torch.randn(1, 5, 64, 64)
    torch.testing.assert_close(_features(encoder, x), _features(_without_head(ref), x), rtol=1e-4, atol=1e-5)


class RGZReference(nn.Module):
    """The RGZ BYOL encoder's layout: one ``layers`` list of stem, eight basic blocks and the pooling."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        r = torchvision.models.resnet18()
        stem = nn.Sequential(nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False), nn.BatchNorm2d(64),
                             nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.layers = nn.ModuleList([stem, *r.layer1, *r.layer2, *r.layer3, *r.layer4, nn.AdaptiveAvgPool2d(1)])
        _randomise_batchnorm(self, seed=1)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return torch.flatten(x, 1)


@pytest.mark.parametrize("layout", ["encoder.pt", "lightning"])
def test_slijepcevic2023_encoder_embeds_like_the_rgz_network(tmp_path, layout):
    ref = RGZReference()
    if layout == "encoder.pt":   # what rgz-latentexplorer's extract_weights.py writes
        obj = ref.state_dict()
    else:                        # a checkpoint with the BYOL module's encoder and heads
        obj = {"epoch": 400, "state_dict": {**{f"encoder.{k}": v for k, v in ref.state_dict().items()},
                                            "projector.0.weight": torch.randn(256, 512)}}
    torch.save(obj, tmp_path / "byol.pt")
    encoder, config = load_published_encoder(tmp_path / "byol.pt", "slijepcevic2023")
    assert (config["arch"], config["stem"], config["in_channels"]) == ("resnet18", "rgz", 1)
    assert config["preprocessing"]["crop"] == 70 and config["preprocessing"]["std"] == pytest.approx(0.05303395)
    x = torch.randn(2, 1, 70, 70)
    torch.testing.assert_close(_features(encoder, x), _features(ref, x), rtol=1e-4, atol=1e-5)


def test_torchvision_state_dict_with_any_channel_count(tmp_path):
    torch.manual_seed(2)
    ref = torchvision.models.resnet18()
    ref.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    _randomise_batchnorm(ref, seed=2)
    torch.save(ref.state_dict(), tmp_path / "resnet18.pt")
    encoder, config = load_published_encoder(tmp_path / "resnet18.pt", "torchvision")
    assert config["in_channels"] == 3 and config["preprocessing"] is None
    x = torch.randn(2, 3, 96, 96)
    torch.testing.assert_close(_features(encoder, x), _features(_without_head(ref), x), rtol=1e-4, atol=1e-5)


class NotWeights:
    pass


def test_bad_checkpoints_get_one_clear_message_and_no_code_runs(tmp_path):
    torch.save({"model": NotWeights()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="cannot be read as plain tensors.*state_dict alone"):
        load_published_encoder(tmp_path / "pickled.pt", "torchvision")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_published_encoder(tmp_path / "junk.pt", "hayat2021")
    torch.save(RGZReference().state_dict(), tmp_path / "rgz.pt")
    with pytest.raises(CheckpointError, match="no MoCo 'state_dict'"):
        load_published_encoder(tmp_path / "rgz.pt", "hayat2021")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_published_encoder(tmp_path / "rgz.pt", "zoobot")
    small = torchvision.models.resnet18()
    torch.save({f"module.encoder_q.{k}": v for k, v in small.state_dict().items()}, tmp_path / "r18.pt")
    with pytest.raises(CheckpointError):
        load_published_encoder(tmp_path / "r18.pt", "hayat2021")
    assert set(FORMATS) == {"hayat2021", "slijepcevic2023", "torchvision"}


def test_build_with_a_published_encoder_skips_training_and_embeds_with_it(tmp_path, capsys):
    """A tiny SDSS build with the hayat2021 layout: no training stage runs, the bundle's encoder is the checkpoint's
    network with the authors' preprocessing, and its embeddings are the reference network's on the same crops."""
    import numpy as np

    from models.embed import embed
    from precompute.__main__ import main
    from core.bundle import Bundle
    from core.validate import validate_bundle
    from core.encoder import load_embedder
    from core.surveys.base import centre_crop
    from tests.core.test_surveys import write_sdss_h5

    ref = hayat_reference()
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in ref.state_dict().items()}},
               tmp_path / "pretrained_paper_model.pth.tar")
    write_sdss_h5(tmp_path / "images.h5", n=24)
    out = tmp_path / "bundle"
    args = ["build", "--survey", "sdss", "--images", str(tmp_path / "images.h5"), "--out", str(out),
            "--encoder-checkpoint", str(tmp_path / "pretrained_paper_model.pth.tar"),
            "--checkpoint-format", "hayat2021", "--views", "identity", "--centre", "no", "--no-progress",
            "--n-neighbors", "5"]
    assert main(args) == 0
    man = validate_bundle(out)
    assert man["model"]["method"] == "published (hayat2021)" and man["model"]["architecture"] == "resnet50"
    assert "epoch 1" not in capsys.readouterr().out
    bundle = Bundle.open(out)
    embedder = load_embedder(out / "encoder")
    assert embedder.config["preprocessing"]["transpose_xy"] and embedder.config["stem"] == "hayat"
    import h5py

    with h5py.File(tmp_path / "images.h5") as h5:
        raw = h5["images"][:3].astype(np.float32)
    crops = np.ascontiguousarray(centre_crop(np.swapaxes(raw, -1, -2), 64))
    trunk = _without_head(ref)
    trunk.out_dim = 2048   # what models.embed reads to size its output
    expected = embed(trunk, crops, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(bundle.embeddings[:3], np.float32), expected, atol=2e-3)
    assert main(["build", "--survey", "first", "--catalog", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x"),
                 "--encoder-checkpoint", str(tmp_path / "pretrained_paper_model.pth.tar")]) == 1
    assert "go together" in capsys.readouterr().err


def test_a_checkpoint_that_expands_far_beyond_its_size_is_refused_before_loading(tmp_path):
    """torch.save writes stored zip entries; the same file re-zipped with deflate (zeros: 1000:1) would make torch
    allocate the expanded size. The zip directory's sizes are checked first, by read_checkpoint, load_encoder and
    a bundle's validation alike."""
    import zipfile

    import torch

    from models.safe_load import expansion_problem, load_tensors

    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2_000_000)}, plain)          # 8 MB of zeros, stored
    assert expansion_problem(plain) is None and load_tensors(plain)["w"].shape == (2_000_000,)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < 100_000
    assert "would expand from" in expansion_problem(bomb)
    with pytest.raises(ValueError, match="bomb.pt would expand"):
        load_tensors(bomb)
    from models.checkpoints import CheckpointError, read_checkpoint

    with pytest.raises(CheckpointError, match="bomb.pt"):
        read_checkpoint(bomb)


def test_an_empty_checkpoint_file_is_one_message(tmp_path):
    """Found by benchmarks/probe_bad_input.py: torch's EOFError has no text, and taking its first line raised."""
    from models.checkpoints import CheckpointError, read_checkpoint

    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt cannot be read as plain tensors"):
        read_checkpoint(tmp_path / "empty.pt")

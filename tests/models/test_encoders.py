"""Encoders, embedding and encoder save/load."""
import numpy as np
import pytest
import torch

from models.embed import embed
from models.encoders import build_encoder
from models.io import load_encoder, save_encoder


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("arch, stem, width, channels, size, dim", [
    ("small", "standard", 8, 5, 64, 64),
    ("small", "hayat", None, 1, 32, 128),
    ("resnet18", "standard", None, 1, 70, 512),
    ("resnet50", "hayat", None, 5, 16, 2048),
])
def test_build_encoder_shapes(arch, stem, width, channels, size, dim):
    enc = build_encoder(arch, channels, stem=stem, width=width).eval()
    assert enc.out_dim == dim
    with torch.no_grad():
        assert enc(torch.randn(2, channels, size, size)).shape == (2, dim)


def test_hayat_stem_is_7x7_stride_1_without_maxpool_as_in_the_paper_code():
    enc = build_encoder("resnet50", 5, stem="hayat")
    assert enc.conv1.kernel_size == (7, 7) and enc.conv1.stride == (1, 1) and enc.conv1.padding == (3, 3)
    assert enc.conv1.in_channels == 5 and isinstance(enc.maxpool, torch.nn.Identity)
    rgz = build_encoder("resnet18", 1, stem="rgz")
    assert rgz.conv1.kernel_size == (3, 3) and rgz.conv1.stride == (1, 1) and isinstance(rgz.maxpool, torch.nn.MaxPool2d)
    std = build_encoder("resnet18", 1)
    assert std.conv1.kernel_size == (7, 7) and isinstance(std.maxpool, torch.nn.MaxPool2d)


def test_bad_encoder_arguments_are_refused():
    with pytest.raises(ValueError, match="arch"):
        build_encoder("vit", 3)
    with pytest.raises(ValueError, match="stem"):
        build_encoder("small", 3, stem="fancy")
    with pytest.raises(ValueError, match="width"):
        build_encoder("resnet18", 3, width=16)


def test_embed_is_l2_normalised_batch_independent_and_handles_one_cutout():
    enc = build_encoder("small", 3, width=8)
    images = np.random.default_rng(0).normal(size=(10, 3, 32, 32)).astype(np.float32)
    out = embed(enc, images, batch_size=4, dtype=np.float32)
    assert out.shape == (10, 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    single = embed(enc, images[3:4])
    assert single.dtype == np.float16 and single.shape == (1, 64)
    np.testing.assert_allclose(single[0], out[3], atol=2e-3)
    with pytest.raises(ValueError, match="leading axis"):
        embed(enc, images[0])


def test_save_and_load_encoder_round_trip(tmp_path):
    enc = build_encoder("small", 5, stem="hayat", width=8)
    with torch.no_grad():
        enc.bn1.running_mean.add_(1.5)                      # buffers travel too
    config = {"arch": "small", "in_channels": 5, "stem": "hayat", "width": 8, "survey": "sdss",
              "preprocessing": {"scale": [1, 2, 3, 4, 5]}, "crop_size": 64}
    folder = save_encoder(enc, config, tmp_path / "encoder")
    assert (folder / "weights.pt").is_file() and (folder / "config.json").is_file()
    loaded, cfg = load_encoder(folder)
    assert cfg == config and not loaded.training
    x = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), enc.eval()(x))
    with pytest.raises(ValueError, match="arch"):
        save_encoder(enc, {"arch": "small"}, tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="save_encoder"):
        load_encoder(tmp_path / "nowhere")


def test_encoder_saved_with_the_old_3x3_hayat_stem_still_loads(tmp_path):
    old = build_encoder("small", 5, stem="compact", width=8)
    config = {"arch": "small", "in_channels": 5, "stem": "hayat", "width": 8}
    save_encoder(old, config, tmp_path / "encoder")
    loaded, cfg = load_encoder(tmp_path / "encoder")
    assert cfg["stem"] == "compact" and loaded.conv1.kernel_size == (3, 3)

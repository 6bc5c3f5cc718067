"""Survey augmentations: physically right, per-sample random, switchable by name, on the input's device."""

import numpy as np
import pytest
import torch

from models.augment import (GaussianNoise, Reddening, build_augmentations, compute_mad,
                            gaussian_blur)
from core.surveys.base import centre_crop
from core.surveys.sdss import EXTINCTION_R
from tests.ugriz import UGRIZ


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def gaussian_source(n, size, sigma=3.0, centre=None, channels=5):
    axis = torch.arange(size, dtype=torch.float32)
    cy, cx = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    img = torch.exp(-0.5 * (((axis[:, None] - cy) ** 2 + (axis[None, :] - cx) ** 2) / sigma**2))
    return img.expand(n, channels, size, size).clone()


def only(recipe, keep, **params):
    names = {"reddening_psf_noise": ("reddening", "psf_blur", "rotation", "jitter", "noise"),
             "rotate_crop_flip_jitter": ("rotation", "random_resized_crop", "hflip", "vflip", "colour_jitter", "blur")}[recipe]
    constants = {**UGRIZ, **params} if recipe == "reddening_psf_noise" else params
    return build_augmentations(recipe, disabled=[n for n in names if n not in keep], **constants)


def test_sdss_defaults_follow_hayat_and_psf_blur_is_off():
    aug = build_augmentations("reddening_psf_noise", **UGRIZ, mad=np.ones(5))
    assert aug.names == ["rotation", "jitter", "reddening", "noise"]
    assert aug.output_size == 64
    assert "psf_blur" in build_augmentations("reddening_psf_noise", **UGRIZ, mad=np.ones(5), enable=("psf_blur",)).names
    out = aug(torch.rand(4, 5, 107, 107))
    assert out.shape == (4, 5, 64, 64)


def test_reddening_dims_each_band_by_its_extinction():
    x = torch.ones(2000, 5, 8, 8)
    out = Reddening(EXTINCTION_R)(x)
    # every pixel of a sample shares one E(B-V): recover it from band u and check the others
    ebv = -2.5 * torch.log10(out[:, 0, 0, 0]) / EXTINCTION_R[0]
    assert float(ebv.min()) >= 0 and float(ebv.max()) <= 0.5
    assert 0.2 < float(ebv.mean()) < 0.3                           # U(0, 0.5)
    for band, r in enumerate(EXTINCTION_R):
        expected = 10 ** (-0.4 * r * ebv)
        torch.testing.assert_close(out[:, band].amax(dim=(1, 2)), expected, rtol=1e-5, atol=1e-6)
        assert torch.all(out[:, band].amax(dim=(1, 2)) == out[:, band].amin(dim=(1, 2)))


def test_geometry_with_nothing_random_is_exactly_the_centre_crop():
    x = torch.rand(3, 5, 107, 107)
    out = only("reddening_psf_noise", keep=(), crop=64)(x)
    np.testing.assert_array_equal(out.numpy(), centre_crop(x.numpy(), 64))


def test_rotation_preserves_total_flux_of_a_centred_source():
    x = gaussian_source(64, 107, sigma=4.0)
    out = only("reddening_psf_noise", keep=("rotation",), crop=64)(x)
    ratio = out.sum(dim=(2, 3)) / x.sum(dim=(2, 3))
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3)
    # an off-centre source really moves: rotation angles differ per sample
    y = only("reddening_psf_noise", keep=("rotation",), crop=64)(gaussian_source(64, 107, centre=(53, 73)))
    peaks = y[:, 0].flatten(1).argmax(dim=1)
    assert len(torch.unique(peaks)) > 20


def test_jitter_moves_a_point_source_by_at_most_7_pixels():
    x = torch.zeros(400, 5, 107, 107)
    x[:, :, 53, 53] = 1.0
    out = only("reddening_psf_noise", keep=("jitter",), crop=64)(x)
    assert torch.allclose(out.sum(dim=(2, 3)), torch.ones(400, 5), atol=1e-4)    # integer shifts: no smearing
    flat = out[:, 0].flatten(1).argmax(dim=1)
    row, col = flat // 64, flat % 64
    # centre_crop of 107 -> 64 starts at 21, so the source sits at (32, 32) without jitter
    dy, dx = row - 32, col - 32
    assert int(dy.abs().max()) <= 7 and int(dx.abs().max()) <= 7
    assert int(dy.abs().max()) == 7 and int(dx.abs().max()) == 7     # the whole range is used
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 100


def test_noise_std_is_k_times_mad_per_band():
    mad = np.array([0.01, 0.02, 0.05, 0.1, 0.2], dtype=np.float32)
    noise = GaussianNoise(mad, low=1.0, high=3.0)
    out = noise(torch.zeros(500, 5, 64, 64))
    std = out.std(dim=(2, 3))                                       # (N, 5)
    k = std / torch.from_numpy(mad)
    # one k ~ U(1, 3) per sample, shared by the bands
    assert torch.allclose(k, k.median(dim=1, keepdim=True).values.expand_as(k), rtol=0.06)
    assert float(k.min()) > 0.93 and float(k.max()) < 3.1
    assert 1.8 < float(k.mean()) < 2.2


def test_compute_mad_per_band():
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (50, 3, 20, 20)).astype(np.float32) * np.array([1, 2, 4], dtype=np.float32)[:, None, None]
    mad = compute_mad(images)
    np.testing.assert_allclose(mad, 0.6745 * np.array([1, 2, 4]), rtol=0.05)   # MAD of N(0, s) = 0.6745 s
    assert compute_mad(images, max_images=10).shape == (3,)


def test_psf_blur_conserves_flux_and_spreads_light():
    aug = only("reddening_psf_noise", keep=("psf_blur",), enable=("psf_blur",), crop=64, pixel_scale=0.1)
    x = torch.zeros(64, 5, 107, 107)
    x[:, :, 53, 53] = 1.0
    out = aug(x)
    assert torch.allclose(out.sum(dim=(2, 3)), torch.ones(64, 5), atol=1e-3)
    assert float(out[:, 2, 32, 32].median()) < 0.9             # most samples were blurred
    # blue bands get the wider PSF (lambda^-0.3): less light stays in the central pixel in u than in z
    assert torch.all(out[:, 0, 32, 32] <= out[:, 4, 32, 32] + 1e-6)


def test_gaussian_blur_zero_sigma_is_identity():
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(gaussian_blur(x, torch.zeros(2, 3)), x)


def test_first_pipeline_shapes_and_flips():
    aug = build_augmentations("rotate_crop_flip_jitter")
    assert aug.names == ["rotation", "random_resized_crop", "hflip", "vflip", "colour_jitter", "blur"]
    assert aug(torch.rand(8, 1, 150, 150)).shape == (8, 1, 70, 70)
    x = torch.rand(300, 1, 150, 150)
    flipped = only("rotate_crop_flip_jitter", keep=("hflip",))(x)
    plain = torch.from_numpy(centre_crop(x.numpy(), 70).copy())
    is_plain = torch.isclose(flipped, plain, atol=1e-4).flatten(1).all(dim=1)
    is_mirror = torch.isclose(flipped, plain.flip(-1), atol=1e-4).flatten(1).all(dim=1)
    assert torch.all(is_plain | is_mirror)
    assert 100 < int(is_mirror.sum()) < 200                         # p = 0.5


def test_first_random_resized_crop_zooms_in():
    x = gaussian_source(200, 150, sigma=6.0, channels=1)
    out = only("rotate_crop_flip_jitter", keep=("random_resized_crop",))(x)
    # cropping 80-100 % of the area and resizing back enlarges the source: more total flux in the frame
    ratio = out.sum(dim=(1, 2, 3)) / torch.from_numpy(centre_crop(x.numpy(), 70).copy()).sum(dim=(1, 2, 3))
    assert float(ratio.min()) >= 0.999 and float(ratio.max()) <= 1.0 / 0.8 + 0.01


def test_unknown_names_and_missing_mad_give_clear_errors():
    with pytest.raises(ValueError, match="cannot disable"):
        build_augmentations("reddening_psf_noise", **UGRIZ, disabled=("flip",), mad=np.ones(5))
    with pytest.raises(ValueError, match="compute_mad"):
        build_augmentations("reddening_psf_noise", **UGRIZ)
    with pytest.raises(ValueError, match="no augmentation recipe"):
        build_augmentations("hst")
    with pytest.raises(ValueError, match="cannot crop"):
        build_augmentations("rotate_crop_flip_jitter")(torch.rand(2, 1, 50, 50))


def test_each_sample_gets_its_own_parameters():
    aug = build_augmentations("reddening_psf_noise", **UGRIZ, mad=np.full(5, 0.01))
    out = aug(gaussian_source(16, 107))
    assert len({round(float(v), 4) for v in out.sum(dim=(1, 2, 3))}) == 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_tensors_device():
    for recipe, shape in (("reddening_psf_noise", (4, 5, 107, 107)), ("rotate_crop_flip_jitter", (4, 1, 150, 150))):
        aug = build_augmentations(recipe, **UGRIZ, mad=np.ones(5)) if recipe == "reddening_psf_noise" else build_augmentations(recipe)
        out = aug.to("cuda")(torch.rand(shape, device="cuda"))
        assert out.device.type == "cuda"


def test_runs_on_the_tensors_device_meta_free_cpu():
    # the modules hold no device-bound state beyond buffers: a pipeline built anywhere works on CPU tensors
    aug = build_augmentations("reddening_psf_noise", **UGRIZ, mad=np.ones(5), enable=("psf_blur",))
    assert aug(torch.rand(2, 5, 107, 107, dtype=torch.float32)).device.type == "cpu"


def test_brightness_scales_every_band_of_a_sample_by_one_factor_within_its_magnitude_range():
    aug = build_augmentations("reddening_psf_noise", **UGRIZ, disabled=("rotation", "jitter", "reddening", "noise"),
                              enable=("brightness",), brightness_mag=1.0)
    assert aug.names == ["brightness"]
    x = torch.ones(2000, 5, 107, 107)
    out = aug(x)
    factor = out[:, :, 0, 0]                                              # (N, 5)
    assert torch.all(factor == factor[:, :1])                             # colours kept
    dm = -2.5 * torch.log10(factor[:, 0])
    assert float(dm.min()) >= -1.0 - 1e-5 and float(dm.max()) <= 1.0 + 1e-5
    assert float(dm.min()) < -0.9 and float(dm.max()) > 0.9 and abs(float(dm.mean())) < 0.05


def test_size_zooms_a_centred_source_by_at_most_its_factor_both_ways():
    aug = build_augmentations("reddening_psf_noise", **UGRIZ, disabled=("rotation", "jitter", "reddening", "noise"),
                              enable=("size",), size_factor=1.3)
    assert aug.names == ["size"]
    x = gaussian_source(600, 107, sigma=4.0)
    out = aug(x)[:, 2]
    axis = torch.arange(64, dtype=torch.float32) - 31.5
    r2 = axis[:, None] ** 2 + axis[None, :] ** 2
    sigma = torch.sqrt((out * r2).sum(dim=(1, 2)) / out.sum(dim=(1, 2)) / 2)   # second moment of the output
    ratio = sigma / 4.0                          # the source looks 1/s times its size when s zooms out
    assert float(ratio.min()) > 1 / 1.3 - 0.03 and float(ratio.max()) < 1.3 + 0.03
    assert float(ratio.min()) < 0.82 and float(ratio.max()) > 1.22


def test_brightness_and_size_are_off_unless_enabled():
    names = build_augmentations("reddening_psf_noise", **UGRIZ, mad=np.ones(5)).names
    assert "brightness" not in names and "size" not in names
    both = build_augmentations("reddening_psf_noise", **UGRIZ, mad=np.ones(5), enable=("brightness", "size")).names
    assert both == ["rotation", "size", "jitter", "reddening", "brightness", "noise"]

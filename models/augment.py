"""Batched survey augmentations on (N, C, H, W) tensors, on whatever device the batch lives on.

Every random parameter is drawn per sample with torch's RNG on the batch's device, so there is no per-image
Python or PIL code. Every augmentation has a ``name`` and can be switched off via
``build_augmentations(recipe, disabled=(...))`` (the papers' ablations).

The geometric steps (rotation, jitter, centre crop, random resized crop, flips) compose into one affine map per
sample, so they cost a single ``grid_sample`` that produces only the output crop, not a rotated full-size image.

Recipes (``RECIPES``; a survey names its own in ``Survey.augmentation_recipe`` and fits its parameters):
"reddening_psf_noise" (Hayat et al. 2021's for SDSS ugriz, Stein et al. 2021's for Legacy Surveys grz) for multi-band
optical galaxies whose inputs are linearly scaled fluxes (one constant per band), so reddening and noise stay
physical; "rotate_crop_flip_jitter" (Slijepcevic et al. 2023's BYOL recipe) for one-channel radio images.
The survey's own numbers (extinction coefficients, band wavelengths, pixel scale) come from the survey's file.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------------------------------------------
# photometric augmentations (act on pixel values)
# ----------------------------------------------------------------------------------------------------------------
class Reddening(nn.Module):
    """Galactic dust: flux in band b times 10^(-0.4 R_b E(B-V)), E(B-V) ~ U(0, max_ebv) per sample."""

    name = "reddening"

    def __init__(self, coefficients, max_ebv: float = 0.5):
        super().__init__()
        self.register_buffer("coefficients", torch.tensor(coefficients, dtype=torch.float32), persistent=False)
        self.max_ebv = max_ebv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, len(self.coefficients), self.name)
        ebv = torch.rand(x.shape[0], 1, device=x.device) * self.max_ebv
        factor = 10.0 ** (-0.4 * self.coefficients.to(x.device) * ebv)
        return x * factor[:, :, None, None].to(x.dtype)


class Brightness(nn.Module):
    """Apparent brightness: every band times 10^(-0.4 dm), dm ~ U(-max_mag, max_mag) per sample. Without it the
    representation sorts galaxies by magnitude first (Hayat et al. 2021, Sec. 5); with noise added afterwards, a
    fainter copy is also a noisier one, as in the sky."""

    name = "brightness"

    def __init__(self, max_mag: float = 1.0):
        super().__init__()
        self.max_mag = max_mag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dm = (2 * torch.rand(x.shape[0], 1, 1, 1, device=x.device) - 1) * self.max_mag
        return x * (10.0 ** (-0.4 * dm)).to(x.dtype)


class PSFBlur(nn.Module):
    """Seeing: Gaussian blur with sigma_r ~ |N(0, sigma_arcsec)| in r, scaled (lambda_b / lambda_r)^-0.3 per band."""

    name = "psf_blur"

    def __init__(self, pixel_scale: float, wavelengths, sigma_arcsec: float = 0.13, reference_band: int = 2):
        super().__init__()
        scale = (np.asarray(wavelengths, dtype=np.float64) / wavelengths[reference_band]) ** -0.3
        self.register_buffer("band_scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.sigma_pixels = sigma_arcsec / pixel_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, len(self.band_scale), self.name)
        sigma_r = torch.randn(x.shape[0], 1, device=x.device).abs() * self.sigma_pixels
        return gaussian_blur(x, sigma_r * self.band_scale.to(x.device))


class GaussianNoise(nn.Module):
    """Instrumental noise: add N(0, k * MAD_c) per band c, with one k ~ U(low, high) per sample."""

    name = "noise"

    def __init__(self, mad, low: float = 1.0, high: float = 3.0):
        super().__init__()
        self.register_buffer("mad", torch.as_tensor(np.asarray(mad, dtype=np.float32)), persistent=False)
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, len(self.mad), self.name)
        k = self.low + (self.high - self.low) * torch.rand(x.shape[0], 1, 1, 1, device=x.device)
        std = k * self.mad.to(x.device)[None, :, None, None]
        return x + torch.randn_like(x) * std.to(x.dtype)


class ColourJitter(nn.Module):
    """Brightness and contrast jitter with probability p; strength s gives factors U(1 - 0.8 s, 1 + 0.8 s) as in
    SimCLR's colour distortion (saturation and hue have no meaning for one radio band)."""

    name = "colour_jitter"

    def __init__(self, strength: float = 0.5, p: float = 0.8):
        super().__init__()
        self.amount, self.p = 0.8 * strength, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        apply = (torch.rand(n, 1, 1, 1, device=x.device) < self.p).to(x.dtype)
        brightness = 1 + self.amount * (2 * torch.rand(n, 1, 1, 1, device=x.device) - 1)
        contrast = 1 + self.amount * (2 * torch.rand(n, 1, 1, 1, device=x.device) - 1)
        jittered = x * brightness.to(x.dtype)
        mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
        jittered = (jittered - mean) * contrast.to(x.dtype) + mean
        return apply * jittered + (1 - apply) * x


class RandomBlur(nn.Module):
    """Gaussian blur with probability p and sigma ~ U(sigma_min, sigma_max) pixels (SimCLR's blur)."""

    name = "blur"

    def __init__(self, p: float = 0.1, sigma_min: float = 0.1, sigma_max: float = 2.0):
        super().__init__()
        self.p, self.sigma_min, self.sigma_max = p, sigma_min, sigma_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        sigma = self.sigma_min + (self.sigma_max - self.sigma_min) * torch.rand(n, 1, device=x.device)
        sigma = torch.where(torch.rand(n, 1, device=x.device) < self.p, sigma, torch.zeros_like(sigma))
        return gaussian_blur(x, sigma.expand(n, x.shape[1]))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each (sample, channel) image with its own Gaussian sigma (pixels), as one separable grouped conv.

    sigma: (N, C) or broadcastable to it; sigma 0 leaves that image unchanged.
    """
    n, c, h, w = x.shape
    sigma = sigma.expand(n, c).reshape(-1, 1).float()
    if not bool((sigma > 0).any()):
        return x
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)[None, :]
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-6)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(x.dtype)
    flat = x.reshape(1, n * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def _check_channels(x: torch.Tensor, expected: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != expected:
        raise ValueError(f"augmentation {name!r} expects (N, {expected}, H, W) batches, got {tuple(x.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# geometric augmentations: each contributes to one per-sample affine map, applied by GeometricCrop
# ----------------------------------------------------------------------------------------------------------------
class Rotation(nn.Module):
    """Rotation by an angle ~ U(0, 2 pi) about the crop centre."""

    name = "rotation"

    def sample(self, n: int, out_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        angle = torch.rand(n, device=device) * (2 * math.pi)
        cos, sin = torch.cos(angle), torch.sin(angle)
        matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        return matrix, torch.zeros(n, 2, device=device)


class Jitter(nn.Module):
    """Move the crop centre by integers ~ U{-max_shift, ..., max_shift} pixels along each axis."""

    name = "jitter"

    def __init__(self, max_shift: int = 7):
        super().__init__()
        self.max_shift = max_shift

    def sample(self, n: int, out_size: int, device):
        shift = torch.randint(-self.max_shift, self.max_shift + 1, (n, 2), device=device).float()
        return torch.eye(2, device=device).expand(n, 2, 2), shift


class Size(nn.Module):
    """Apparent size: zoom about the crop centre by s ~ logU(1 / max_factor, max_factor) (the same galaxy nearer or
    farther), so that neighbours share shape rather than angular extent."""

    name = "size"

    def __init__(self, max_factor: float = 1.3):
        super().__init__()
        self.log_max = math.log(max_factor)

    def sample(self, n: int, out_size: int, device):
        scale = torch.exp((2 * torch.rand(n, device=device) - 1) * self.log_max)
        return scale[:, None, None] * torch.eye(2, device=device).expand(n, 2, 2), torch.zeros(n, 2, device=device)


class RandomResizedCrop(nn.Module):
    """Crop a box of area fraction ~ U(scale) and aspect ratio ~ logU(ratio) at a random place inside the crop,
    resized back to the crop size."""

    name = "random_resized_crop"

    def __init__(self, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3)):
        super().__init__()
        self.scale, self.ratio = scale, ratio

    def sample(self, n: int, out_size: int, device):
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, device=device)
        # keep the box inside the crop: aspect ratio within [area, 1 / area] as well as within self.ratio
        lo = torch.clamp(torch.log(area), min=math.log(self.ratio[0]))
        hi = torch.clamp(-torch.log(area), max=math.log(self.ratio[1]))
        aspect = torch.exp(lo + (hi - lo) * torch.rand(n, device=device))
        box_w = torch.sqrt(area * aspect).clamp(max=1.0)
        box_h = torch.sqrt(area / aspect).clamp(max=1.0)
        # box centre offset, in output pixels, keeping the box inside the crop
        free = torch.stack([1 - box_w, 1 - box_h], -1) * (out_size / 2)
        offset = (2 * torch.rand(n, 2, device=device) - 1) * free
        return torch.diag_embed(torch.stack([box_w, box_h], -1)), offset


class Flip(nn.Module):
    """Mirror along one axis ("horizontal": x -> -x, "vertical": y -> -y) with probability p."""

    def __init__(self, axis: str, p: float = 0.5):
        super().__init__()
        self.axis, self.p = axis, p
        self.name = "hflip" if axis == "horizontal" else "vflip"

    def sample(self, n: int, out_size: int, device):
        sign = torch.where(torch.rand(n, device=device) < self.p, -1.0, 1.0)
        ones = torch.ones(n, device=device)
        diag = torch.stack([sign, ones] if self.axis == "horizontal" else [ones, sign], -1)
        return torch.diag_embed(diag), torch.zeros(n, 2, device=device)


class GeometricCrop(nn.Module):
    """Centre crop to ``size`` composed with the enabled geometric steps, in one ``grid_sample``.

    Steps are listed in image order (e.g. rotate the full image, jitter the crop centre, take the crop,
    random-resize-crop inside it, flip). An output pixel at offset u from the crop centre reads the input at
    centre + M_1 (t_1 + M_2 (t_2 + ... u)): each step maps output-side coordinates to its input side, where
    (M_i, t_i) is the step's sampled (linear part, translation in output pixels).
    With no random step this is exactly the centre crop of ``core.surveys.base.centre_crop``.
    """

    name = "crop"

    def __init__(self, size: int, steps: Iterable[nn.Module] = (), interpolation: str = "bilinear",
                 padding_mode: str = "reflection"):
        super().__init__()
        self.size = size
        self.steps = nn.ModuleList(steps)
        self.interpolation, self.padding_mode = interpolation, padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h < self.size or w < self.size:
            raise ValueError(f"cannot crop {self.size} px from {h}x{w} images; give full-size images to the "
                             f"augmentations (they crop)")
        if not len(self.steps):
            top, left = (h - self.size) // 2, (w - self.size) // 2
            return x[..., top: top + self.size, left: left + self.size]
        # compose the steps' maps p -> M p + t (image order: outermost first) into one p -> A u + b
        linear = torch.eye(2, device=x.device).expand(n, 2, 2)
        shift = torch.zeros(n, 2, device=x.device)
        for step in reversed(self.steps):
            matrix, offset = step.sample(n, self.size, x.device)
            linear, shift = matrix @ linear, (matrix @ shift[:, :, None])[:, :, 0] + offset
        # affine_grid (align_corners=False) gives output offsets u as normalised 2u/size and reads input pixel index
        # i at normalised (2 i + 1)/W - 1; the crop centre sits where centre_crop's integer top-left corner puts it
        half = (self.size - 1) / 2
        centre = torch.tensor([(w - self.size) // 2 + half, (h - self.size) // 2 + half], device=x.device)
        extent = torch.tensor([w, h], device=x.device, dtype=torch.float32)
        theta = torch.cat([linear * (self.size / extent[:, None]),
                           ((2 * (centre + shift) + 1) / extent - 1)[:, :, None]], dim=2)
        grid = F.affine_grid(theta.to(x.dtype), [n, x.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode=self.interpolation, padding_mode=self.padding_mode, align_corners=False)


# ----------------------------------------------------------------------------------------------------------------
# pipelines
# ----------------------------------------------------------------------------------------------------------------
class Augmentations(nn.Module):
    """photometric steps -> one geometric crop -> photometric steps. ``names`` lists what is enabled."""

    def __init__(self, before: Iterable[nn.Module], geometry: GeometricCrop, after: Iterable[nn.Module]):
        super().__init__()
        self.before, self.geometry, self.after = nn.ModuleList(before), geometry, nn.ModuleList(after)

    @property
    def output_size(self) -> int:
        return self.geometry.size

    @property
    def names(self) -> list[str]:
        return [m.name for m in [*self.before, *self.geometry.steps, *self.after]]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.before:
            x = step(x)
        x = self.geometry(x)
        for step in self.after:
            x = step(x)
        return x


def compute_mad(images, max_images: int = 2000, seed: int = 0) -> np.ndarray:
    """Per-band aggregate median absolute deviation, median(|x - median(x)|), over (a seeded random subset of at
    most ``max_images`` of) the training images (N, C, H, W). Used as the noise scale of the SDSS augmentation."""
    images = np.asarray(images) if not isinstance(images, torch.Tensor) else images.cpu().numpy()
    if images.ndim != 4:
        raise ValueError(f"compute_mad expects (N, C, H, W) images, got shape {images.shape}")
    if len(images) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(len(images), max_images, replace=False))
        images = images[rows]
    per_band = np.moveaxis(np.asarray(images, dtype=np.float32), 1, 0).reshape(images.shape[1], -1)
    median = np.median(per_band, axis=1, keepdims=True)
    return np.median(np.abs(per_band - median), axis=1).astype(np.float32)


AUGMENT_VERSION = 2   # raise when a recipe's steps change what they do: trained encoders are cached by it
REDDENING_PSF_NOISE_STEPS = ("reddening", "psf_blur", "brightness", "rotation", "size", "jitter", "noise")
ROTATE_CROP_FLIP_JITTER_STEPS = ("rotation", "random_resized_crop", "hflip", "vflip", "colour_jitter", "blur")


def build_augmentations(recipe: str, disabled=(), **params) -> Augmentations:
    """A recipe's self-supervised augmentation pipeline (``RECIPES``: its step names and builder).

    "reddening_psf_noise" params: extinction (A_b / E(B-V) per band), wavelengths (per band, for the PSF scaling), pixel_scale
    (arcsec), mad (per-band array from ``compute_mad``; required unless "noise" is disabled), crop=64, jitter=7,
    max_ebv=0.5, psf_sigma_arcsec=0.13, noise_range=(1, 3), brightness_mag=1.0, size_factor=1.3. "psf_blur",
    "brightness" and "size" are off unless listed in ``enable`` (e.g. ``enable=("psf_blur",)``): Hayat et al. found
    the blur weakest and did not use the other two (BENCHMARKS.md, issue 21, for what they do to the demo).
    "rotate_crop_flip_jitter" params: crop=70, scale=(0.8, 1), jitter_strength=0.5, jitter_p=0.8, blur_p=0.1,
    interpolation="bilinear".
    ``disabled``: names to switch off (a recipe's names: REDDENING_PSF_NOISE_STEPS / ROTATE_CROP_FLIP_JITTER_STEPS).
    """
    disabled = set(disabled)
    if recipe not in RECIPES:
        raise ValueError(f"no augmentation recipe {recipe!r}; known: {sorted(RECIPES)}")
    names, builder = RECIPES[recipe]
    unknown = disabled - set(names)
    if unknown:
        raise ValueError(f"cannot disable {sorted(unknown)} for {recipe!r}: its augmentations are {names}")
    return builder(disabled, **params)


def _keep(steps, disabled):
    return [s for s in steps if s.name not in disabled]


def _reddening_psf_noise(disabled, extinction, wavelengths, pixel_scale, mad=None, crop=64, jitter=7, max_ebv=0.5,
           psf_sigma_arcsec=0.13, noise_range=(1.0, 3.0), enable=(), interpolation="bilinear", brightness_mag=1.0,
           size_factor=1.3):
    disabled = disabled | ({"psf_blur", "brightness", "size"} - set(enable))
    if mad is None and "noise" not in disabled:
        raise ValueError("the reddening_psf_noise recipe's noise augmentation needs mad=compute_mad(training_images) (or "
                         "disabled=('noise',))")
    # Reddening is a per-band constant factor, so it commutes with the geometry: apply it to the small crop.
    before = [PSFBlur(pixel_scale, wavelengths, psf_sigma_arcsec)] if "psf_blur" not in disabled else []
    after = [Reddening(extinction, max_ebv), Brightness(brightness_mag)]
    if "noise" not in disabled:
        after.append(GaussianNoise(mad, *noise_range))
    geometry = GeometricCrop(crop, _keep([Rotation(), Size(size_factor), Jitter(jitter)], disabled), interpolation)
    return Augmentations(before, geometry, _keep(after, disabled))


def _rotate_crop_flip_jitter(disabled, crop=70, scale=(0.8, 1.0), jitter_strength=0.5, jitter_p=0.8, blur_p=0.1,
           interpolation="bilinear"):
    steps = [Rotation(), RandomResizedCrop(scale), Flip("horizontal"), Flip("vertical")]
    # image order: rotate full image, centre crop, random resized crop inside it, flips
    geometry = GeometricCrop(crop, _keep(steps, disabled), interpolation)
    after = [ColourJitter(jitter_strength, jitter_p), RandomBlur(blur_p)]
    return Augmentations([], geometry, _keep(after, disabled))


# recipe name -> (its step names, its builder(disabled, **params)); a new recipe registers here
RECIPES = {"reddening_psf_noise": (REDDENING_PSF_NOISE_STEPS, _reddening_psf_noise),
           "rotate_crop_flip_jitter": (ROTATE_CROP_FLIP_JITTER_STEPS, _rotate_crop_flip_jitter)}

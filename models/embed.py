"""Encoder representations for preprocessed images (the bundle's embeddings, or one fetched cutout)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def resolve_device(device=None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


VIEWS = ("identity", "d4")


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 exact rotations by multiples of 90 degrees and their mirror images (no interpolation)."""
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


def represent(encoder: nn.Module, x: torch.Tensor, views: str = "identity") -> torch.Tensor:
    """The encoder's features of ``x``; with ``views="d4"`` the mean of the L2-normalised features of the 8 dihedral
    views. Sky images have no preferred orientation, and averaging over it removes the part of the representation
    that only tracks orientation (BENCHMARKS.md: it helps the untrained twin as much as the trained encoder, so both are embedded this way)."""
    if views == "identity":
        return encoder(x).float()
    if views != "d4":
        raise ValueError(f"unknown views {views!r}; choose one of {VIEWS}")
    return torch.stack([F.normalize(encoder(v).float(), dim=1) for v in dihedral(x)]).mean(dim=0)


# Eigenvalue floor of the whitening, as a fraction of the mean eigenvalue: directions with less variance than this
# are not stretched further, so noise in unused directions does not become neighbours (BENCHMARKS.md, issue 21).
WHITEN_FLOOR = 0.1


def fit_whitening(features: np.ndarray, floor: float = WHITEN_FLOOR) -> dict:
    """ZCA whitening of ``features`` (rows: the training images' representations) with an eigenvalue floor: the
    mean and the symmetric matrix that give every direction the same variance, so a cosine search weighs all the
    encoder's directions instead of the one or two that dominate its variance (e.g. brightness)."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov((x - mean).T))
    eigval = np.clip(eigval, 0, None)
    matrix = (eigvec / np.sqrt(eigval + floor * eigval.mean())) @ eigvec.T
    return {"mean": mean.astype(np.float32), "matrix": matrix.astype(np.float32), "floor": floor}


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def post_process(features: np.ndarray, centre=None, whiten: dict | None = None) -> np.ndarray:
    """What ``embed`` does after the encoder, on L2-normalised features (N, D) float32: subtract ``centre`` and
    normalise again, then apply ``whiten`` (``fit_whitening``) and normalise."""
    out = np.asarray(features, dtype=np.float32)
    if centre is not None:
        out = unit_rows(out - np.asarray(centre, np.float32))
    if whiten is not None:
        out = unit_rows((out - np.asarray(whiten["mean"], np.float32)) @ np.asarray(whiten["matrix"], np.float32))
    return out


@torch.no_grad()
def embed(encoder: nn.Module, images, batch_size: int = 256, device=None, dtype=np.float16,
          views: str = "identity", centre=None, whiten: dict | None = None) -> np.ndarray:
    """L2-normalised representations (N, out_dim) of ``images``, (N, C, crop, crop) float32 already preprocessed
    (numpy, memory-mapped numpy or tensor). Moves ``encoder`` to ``device`` and puts it in eval mode.
    Uses bf16 autocast and channels_last on CUDA. N = 1 embeds a single cutout. ``views``: see ``represent``.
    ``centre``: a vector subtracted from the L2-normalised representation before normalising again (the mean
    representation of the training images, so that cosine measures differences from the typical object).
    ``whiten``: a ``fit_whitening`` result applied after centring, before the final normalisation."""
    if images.ndim != 4:
        raise ValueError(f"embed expects (N, C, H, W) images, got shape {tuple(images.shape)}; "
                         f"add a leading axis for a single cutout")
    device = resolve_device(device)
    cuda = device.type == "cuda"
    encoder = encoder.to(device).eval()
    from .encoders import use_channels_last

    layout = torch.channels_last if use_channels_last(encoder, device) else torch.contiguous_format
    encoder = encoder.to(memory_format=layout)
    out = np.empty((len(images), encoder.out_dim), dtype=dtype)
    centre = None if centre is None else np.asarray(centre, np.float32)   # once, not per batch
    if whiten is not None:
        whiten = {k: np.asarray(whiten[k], np.float32) for k in ("mean", "matrix")}
    for start in range(0, len(images), batch_size):
        chunk = images[start: start + batch_size]
        x = torch.as_tensor(np.ascontiguousarray(chunk) if isinstance(chunk, np.ndarray) else chunk,
                            dtype=torch.float32)
        x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            features = F.normalize(represent(encoder, x, views).float(), dim=1)
        out[start: start + len(x)] = post_process(features.cpu().numpy(), centre, whiten).astype(dtype)
    return out

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


@torch.no_grad()
def embed(encoder: nn.Module, images, batch_size: int = 256, device=None, dtype=np.float16) -> np.ndarray:
    """L2-normalised representations (N, out_dim) of ``images``, (N, C, crop, crop) float32 already preprocessed
    (numpy, memory-mapped numpy or tensor). Moves ``encoder`` to ``device`` and puts it in eval mode.
    Uses bf16 autocast and channels_last on CUDA. N = 1 embeds a single cutout."""
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
    for start in range(0, len(images), batch_size):
        chunk = images[start: start + batch_size]
        x = torch.as_tensor(np.ascontiguousarray(chunk) if isinstance(chunk, np.ndarray) else chunk,
                            dtype=torch.float32)
        x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            features = encoder(x)
        out[start: start + len(x)] = F.normalize(features.float(), dim=1).cpu().numpy().astype(dtype)
    return out

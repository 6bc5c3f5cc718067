"""SimCLR (Chen et al. 2020): one encoder + MLP projector, NT-Xent over the other 2N - 2 views of the batch.

Added beside MoCo v2 and BYOL because it learns at CPU scale where they do not: on real FIRST (1.9 k images, a
narrow ResNet, ~15 min on 2 cores) it is the method that beats an untrained network (BENCHMARKS.md, "What the
embedding knows"). Every other image in the batch is a negative, so it needs neither a queue nor a momentum
encoder, and every step's gradient reaches the backbone directly.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class SimCLR(nn.Module):
    def __init__(self, encoder: nn.Module, projection_dim: int = 128, hidden_dim: int | None = None,
                 temperature: float = 0.2):
        super().__init__()
        self.temperature = temperature
        hidden = hidden_dim or max(encoder.out_dim, 256)
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(encoder.out_dim, hidden), nn.BatchNorm1d(hidden),
                                       nn.ReLU(inplace=True), nn.Linear(hidden, projection_dim))

    @property
    def backbone(self) -> nn.Module:
        return self.encoder

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        # both views in one batch: one BatchNorm statistic, as in the reference implementation
        z = self.projector(self.encoder(torch.cat([view_1, view_2]))).float()
        z = F.normalize(z, dim=1)
        z1, z2 = z.chunk(2)
        return nt_xent(gather_with_grad(z1), gather_with_grad(z2), self.temperature)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy: each of the 2N views must pick its partner among the other 2N - 1.

    z1, z2: (N, d) L2-normalised projections of the two views of the same N images.
    """
    n = z1.shape[0]
    z = torch.cat([z1, z2])
    logits = (z @ z.T) / temperature
    logits.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All processes' rows (this process's own keep their gradient), so negatives span the global batch."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)

"""BYOL (Grill et al. 2020), as used by Slijepcevic et al. 2023 on FIRST radio galaxies.

The online network (encoder -> projector -> predictor) predicts the target network's projection of the other
view; the target (encoder -> projector) is an exponential moving average of the online one with a decay tau that
rises from tau_base to 1 on a cosine schedule. Loss: 2 - 2 cos(prediction, target projection), symmetrised over
the two views. No negatives, so no queue.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector / predictor: Linear -> BatchNorm -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


class BYOL(nn.Module):
    def __init__(self, encoder: nn.Module, projection_dim: int = 256, hidden_dim: int = 4096, tau_base: float = 0.99):
        super().__init__()
        self.tau_base = tau_base
        self.tau = tau_base
        self.online_encoder = encoder
        self.online_projector = mlp(encoder.out_dim, hidden_dim, projection_dim)
        self.predictor = mlp(projection_dim, hidden_dim, projection_dim)
        self.target_encoder = copy.deepcopy(self.online_encoder)
        self.target_projector = copy.deepcopy(self.online_projector)
        for p in [*self.target_encoder.parameters(), *self.target_projector.parameters()]:
            p.requires_grad = False

    @property
    def backbone(self) -> nn.Module:
        return self.online_encoder

    def tau_at(self, step: int, total_steps: int) -> float:
        """tau = 1 - (1 - tau_base) (cos(pi step / total) + 1) / 2: tau_base at the start, 1 at the end."""
        return 1 - (1 - self.tau_base) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2

    @torch.no_grad()
    def update_target(self, step: int, total_steps: int) -> None:
        """xi <- tau xi + (1 - tau) theta, with tau from the cosine schedule at ``step`` (call after each step)."""
        self.tau = self.tau_at(step, total_steps)
        online = [*self.online_encoder.parameters(), *self.online_projector.parameters()]
        target = [*self.target_encoder.parameters(), *self.target_projector.parameters()]
        torch._foreach_lerp_(target, online, 1 - self.tau)

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> torch.Tensor:
        # each view is its own batch, so BatchNorm statistics are per view as in the reference implementation
        p1, p2 = (self.predictor(self.online_projector(self.online_encoder(v))).float() for v in (view_1, view_2))
        with torch.no_grad():
            z1, z2 = (self.target_projector(self.target_encoder(v)).float() for v in (view_1, view_2))
        return (regression_loss(p1, z2) + regression_loss(p2, z1)).mean()


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample normalised MSE, ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)."""
    return 2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=1)

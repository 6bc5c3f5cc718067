"""BYOL: target network is an EMA on the cosine tau schedule; loss is 2 - 2 cos, symmetrised."""
import math

import pytest
import torch
import torch.nn.functional as F

from models.byol import BYOL, regression_loss
from models.encoders import build_encoder


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_byol(tau_base=0.99):
    return BYOL(build_encoder("small", 1, width=4), projection_dim=8, hidden_dim=16, tau_base=tau_base)


def test_loss_is_two_minus_two_cosine():
    p, z = torch.randn(5, 8), torch.randn(5, 8)
    cos = (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)
    torch.testing.assert_close(regression_loss(p, z), 2 - 2 * cos)
    torch.testing.assert_close(regression_loss(p, 3 * p), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(regression_loss(p, -p), torch.full((5,), 4.0))


def test_forward_is_the_symmetrised_loss_of_prediction_vs_target():
    byol = tiny_byol()
    v1, v2 = torch.randn(6, 1, 24, 24), torch.randn(6, 1, 24, 24)
    loss = byol(v1, v2)
    # recompute by hand, view by view (train-mode BatchNorm statistics are per view)
    p1 = byol.predictor(byol.online_projector(byol.online_encoder(v1)))
    p2 = byol.predictor(byol.online_projector(byol.online_encoder(v2)))
    with torch.no_grad():
        z1 = byol.target_projector(byol.target_encoder(v1))
        z2 = byol.target_projector(byol.target_encoder(v2))
    by_hand = (2 - 2 * F.cosine_similarity(p1, z2)).mean() + (2 - 2 * F.cosine_similarity(p2, z1)).mean()
    assert float(loss.detach()) == pytest.approx(float(by_hand.detach()), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in byol.target_encoder.parameters())
    assert byol.predictor[0].weight.grad is not None


def test_tau_follows_the_cosine_schedule():
    byol = tiny_byol(tau_base=0.99)
    assert byol.tau_at(0, 100) == pytest.approx(0.99)
    assert byol.tau_at(50, 100) == pytest.approx(1 - 0.01 * 0.5)
    assert byol.tau_at(100, 100) == pytest.approx(1.0)
    assert byol.tau_at(25, 100) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)


def test_target_is_an_ema_of_the_online_network():
    byol = tiny_byol(tau_base=0.9)
    with torch.no_grad():
        for p in [*byol.online_encoder.parameters(), *byol.online_projector.parameters()]:
            p.add_(torch.randn_like(p))
    old_target = [p.clone() for p in [*byol.target_encoder.parameters(), *byol.target_projector.parameters()]]
    online = [p.clone() for p in [*byol.online_encoder.parameters(), *byol.online_projector.parameters()]]
    byol.update_target(step=0, total_steps=10)
    assert byol.tau == pytest.approx(0.9)
    for t_old, o, t_new in zip(old_target, online, [*byol.target_encoder.parameters(), *byol.target_projector.parameters()]):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * o)
    # at the end of the schedule tau = 1: the target stops moving
    frozen = [p.clone() for p in byol.target_encoder.parameters()]
    byol.update_target(step=10, total_steps=10)
    for a, b in zip(frozen, byol.target_encoder.parameters()):
        torch.testing.assert_close(a, b)

"""MoCo v2: queue bookkeeping, momentum (EMA) key encoder, InfoNCE against a hand computation."""
import math

import pytest
import torch
import torch.nn.functional as F

from models.encoders import build_encoder
from models.moco import MoCo, info_nce


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_moco(queue_size=10, momentum=0.999):
    return MoCo(build_encoder("small", 2, width=4), dim=8, queue_size=queue_size, momentum=momentum)


def test_queue_enqueues_oldest_first_and_wraps_the_pointer():
    moco = tiny_moco(queue_size=10)
    keys = [F.normalize(torch.randn(4, 8), dim=1) for _ in range(3)]
    moco.dequeue_and_enqueue(keys[0])
    assert int(moco.queue_ptr) == 4
    torch.testing.assert_close(moco.queue[:, :4], keys[0].T)
    moco.dequeue_and_enqueue(keys[1])
    assert int(moco.queue_ptr) == 8
    moco.dequeue_and_enqueue(keys[2])                       # slots 8, 9, then wraps to 0, 1
    assert int(moco.queue_ptr) == 2
    torch.testing.assert_close(moco.queue[:, 8:10], keys[2][:2].T)
    torch.testing.assert_close(moco.queue[:, 0:2], keys[2][2:].T)
    torch.testing.assert_close(moco.queue[:, 2:4], keys[0][2:].T)     # untouched older entries survive
    torch.testing.assert_close(moco.queue[:, 4:8], keys[1].T)


def test_queue_smaller_than_a_batch_is_refused():
    with pytest.raises(ValueError, match="queue_size"):
        tiny_moco(queue_size=3).dequeue_and_enqueue(torch.randn(4, 8))


def test_key_encoder_is_the_momentum_average_of_the_query_encoder():
    moco = tiny_moco(momentum=0.9)
    for p in moco.encoder_k.parameters():
        assert not p.requires_grad
    with torch.no_grad():
        for p in [*moco.encoder_q.parameters(), *moco.head_q.parameters()]:
            p.add_(torch.randn_like(p))
    before_k = [p.clone() for p in [*moco.encoder_k.parameters(), *moco.head_k.parameters()]]
    q = [p.clone() for p in [*moco.encoder_q.parameters(), *moco.head_q.parameters()]]
    moco.momentum_update()
    for k_old, q_now, k_new in zip(before_k, q, [*moco.encoder_k.parameters(), *moco.head_k.parameters()]):
        torch.testing.assert_close(k_new, 0.9 * k_old + 0.1 * q_now)


def test_info_nce_matches_a_hand_computation():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=1)
    k = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=1)
    queue = F.normalize(torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]), dim=0)     # (dim 2, K 3)
    tau = 0.1
    loss, logits, labels = info_nce(q, k, queue, tau)
    expected = []
    for i in range(2):
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[:, j]) / tau) for j in range(3))
        expected.append(-math.log(pos / (pos + neg)))
    assert logits.shape == (2, 4) and labels.tolist() == [0, 0]
    assert float(loss) == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_forward_returns_finite_loss_trains_query_only_and_fills_queue():
    moco = tiny_moco(queue_size=16)
    x1, x2 = torch.randn(4, 2, 32, 32), torch.randn(4, 2, 32, 32)
    loss, logits, labels = moco(x1, x2, return_logits=True)
    assert torch.isfinite(loss) and logits.shape == (4, 17)
    loss.backward()
    assert all(p.grad is None for p in moco.encoder_k.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in moco.encoder_q.parameters())
    assert int(moco.queue_ptr) == 4
    torch.testing.assert_close(moco.queue.norm(dim=0), torch.ones(16))
    assert moco.backbone is moco.encoder_q


def test_split_batchnorm_normalises_each_group_and_converts_back_to_plain_batchnorm():
    from models.moco import SplitBatchNorm2d, plain_batchnorm, use_split_batchnorm

    bn = SplitBatchNorm2d(3, num_splits=2, affine=True)
    x = torch.randn(8, 3, 5, 5)
    x[0::2] += 10.0                                     # group 0 (even samples) has a different mean
    y = bn(x)
    for group in (y[0::2], y[1::2]):                    # each group normalised by its own statistics
        torch.testing.assert_close(group.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    enc = use_split_batchnorm(build_encoder("small", 2, width=8), 4)
    assert any(isinstance(m, SplitBatchNorm2d) for m in enc.modules())
    plain = plain_batchnorm(enc)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in plain.modules())
    assert set(plain.state_dict()) == set(build_encoder("small", 2, width=8).state_dict())


def test_single_process_moco_splits_batchnorm_for_both_encoders():
    moco = MoCo(build_encoder("small", 2, width=8), dim=8, queue_size=16, bn_splits=2)
    from models.moco import SplitBatchNorm2d

    assert isinstance(moco.encoder_q.bn1, SplitBatchNorm2d) and isinstance(moco.encoder_k.bn1, SplitBatchNorm2d)
    loss = moco(torch.randn(4, 2, 32, 32), torch.randn(4, 2, 32, 32))
    assert torch.isfinite(loss)

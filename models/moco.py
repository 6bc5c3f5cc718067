"""MoCo v2 (He et al. 2020; Chen et al. 2020), as used by Hayat et al. 2021, after facebookresearch/moco.

Query encoder + MLP head trained by InfoNCE against one positive key (the other view, encoded by the momentum
key encoder) and a queue of negative keys from earlier batches. Under DistributedDataParallel, keys are gathered
from every process before enqueueing and the key batch is shuffled across processes so BatchNorm statistics
cannot leak which key is the positive ("shuffle BN"). In a single process the same is emulated by splitting
each batch into ``bn_splits`` groups with their own BatchNorm statistics and shuffling the key batch before
grouping (as in the official MoCo CIFAR demo's SplitBatchNorm).
"""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class MoCo(nn.Module):
    def __init__(self, encoder: nn.Module, dim: int = 128, queue_size: int = 65536, momentum: float = 0.999,
                 temperature: float = 0.1, hidden_dim: int | None = None, bn_splits: int = 1):
        super().__init__()
        self.momentum, self.temperature, self.bn_splits = momentum, temperature, bn_splits
        hidden = hidden_dim or encoder.out_dim
        self.encoder_q = use_split_batchnorm(encoder, bn_splits) if bn_splits > 1 else encoder
        self.head_q = nn.Sequential(nn.Linear(encoder.out_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.encoder_k, self.head_k = copy.deepcopy(self.encoder_q), copy.deepcopy(self.head_q)
        for p in [*self.encoder_k.parameters(), *self.head_k.parameters()]:
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def backbone(self) -> nn.Module:
        return self.encoder_q

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q"""
        q_params = [*self.encoder_q.parameters(), *self.head_q.parameters()]
        k_params = [*self.encoder_k.parameters(), *self.head_k.parameters()]
        torch._foreach_lerp_(k_params, q_params, 1 - self.momentum)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest queue entries with ``keys`` (gathered from all processes), wrapping around."""
        keys = concat_all_gather(keys)
        n, size = keys.shape[0], self.queue.shape[1]
        if n > size:
            raise ValueError(f"MoCo queue ({size}) is smaller than one global batch of keys ({n}); raise queue_size")
        slots = (self.queue_ptr + torch.arange(n, device=keys.device)) % size
        self.queue[:, slots] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (self.queue_ptr[0] + n) % size

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, return_logits: bool = False):
        q = F.normalize(self.head_q(self.encoder_q(im_q)).float(), dim=1)
        with torch.no_grad():
            self.momentum_update()
            if self.bn_splits > 1 and not _distributed():
                order = torch.randperm(im_k.shape[0], device=im_k.device)
                shuffled = self.head_k(self.encoder_k(im_k[order])).float()
                k = torch.empty_like(shuffled)
                k[order] = shuffled
            else:
                im_k, unshuffle = _batch_shuffle(im_k)
                k = _batch_unshuffle(self.head_k(self.encoder_k(im_k)).float(), unshuffle)
            k = F.normalize(k, dim=1)
        loss, logits, labels = info_nce(q, k, self.queue.clone().detach(), self.temperature)
        self.dequeue_and_enqueue(k)
        return (loss, logits, labels) if return_logits else loss


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float):
    """Cross-entropy of picking the positive key (column 0) among [k, queue] by cosine similarity / temperature.

    q, k: (N, dim) L2-normalised; queue: (dim, K). Returns (loss, logits (N, 1 + K), labels (N,) of zeros).
    """
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ queue
    logits = torch.cat([positive, negative], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels), logits, labels


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """All processes' ``tensor`` concatenated along dim 0 (itself when not distributed). No gradient."""
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def _batch_shuffle(x: torch.Tensor):
    """Shuffle BN: give each process a random slice of the global key batch. Identity when not distributed."""
    if not _distributed():
        return x, None
    gathered = concat_all_gather(x)
    per_rank, total = x.shape[0], gathered.shape[0]
    order = torch.randperm(total, device=x.device)
    dist.broadcast(order, src=0)
    mine = order.view(dist.get_world_size(), per_rank)[dist.get_rank()]
    return gathered[mine], torch.argsort(order)


@torch.no_grad()
def _batch_unshuffle(x: torch.Tensor, unshuffle):
    if unshuffle is None:
        return x
    gathered = concat_all_gather(x)
    mine = unshuffle.view(dist.get_world_size(), -1)[dist.get_rank()]
    return gathered[mine]


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are computed separately over ``num_splits`` interleaved groups of the
    batch (sample n in group n % num_splits), as if the batch were spread over that many devices. Evaluation
    uses the shared running statistics, exactly like BatchNorm2d (same state_dict)."""

    def __init__(self, num_features: int, num_splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not self.training or n % self.num_splits:
            return super().forward(x)
        g = self.num_splits
        mean, var = self.running_mean.repeat(g), self.running_var.repeat(g)
        out = F.batch_norm(x.reshape(n // g, g * c, h, w), mean, var, self.weight.repeat(g), self.bias.repeat(g),
                           True, self.momentum, self.eps).reshape(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(g, c).mean(dim=0))
            self.running_var.copy_(var.view(g, c).mean(dim=0))
            self.num_batches_tracked += 1
        return out


def use_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Swap every BatchNorm2d of ``module`` (in place) for a SplitBatchNorm2d with the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            split = SplitBatchNorm2d(child.num_features, num_splits, eps=child.eps, momentum=child.momentum)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split.to(child.weight.device))
        else:
            use_split_batchnorm(child, num_splits)
    return module


def plain_batchnorm(module: nn.Module) -> nn.Module:
    """Swap SplitBatchNorm2d back to BatchNorm2d (in place; same state), e.g. before saving the encoder."""
    for name, child in module.named_children():
        if isinstance(child, SplitBatchNorm2d):
            plain = nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain.to(child.weight.device))
        else:
            plain_batchnorm(child)
    return module

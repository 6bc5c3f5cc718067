"""Backbones: torchvision ResNets with an n-channel stem, plus a narrow ResNet for CPU demos.

``build_encoder`` returns a module whose forward maps (N, C, H, W) to the pooled (N, out_dim) representation;
the projection / prediction heads of MoCo and BYOL live in those methods and are discarded after training.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet

ARCHS = ("resnet18", "resnet50", "small")
# stem -> (kernel, stride, padding, max-pool after it)
STEM_LAYOUTS = {
    "standard": (7, 2, 3, True),   # torchvision's ImageNet stem
    "hayat": (7, 1, 3, False),     # Hayat et al. 2021 (mahayat/ssl-sky-surveys models/resnet.py), 64 px galaxies
    "compact": (3, 1, 1, False),   # what "hayat" meant before 2026-11: encoders saved with it still load
    "rgz": (3, 1, 1, True),        # the RGZ BYOL encoder of Slijepcevic et al. 2023 (inigoval/byol, downscale=True)
}
STEMS = tuple(STEM_LAYOUTS)
SMALL_DEFAULT_WIDTH = 16          # 128-d; width 32 measured ~3x slower per CPU-second on the demo
SMALL_BLOCKS = (1, 1, 1, 1)


class Encoder(nn.Module):
    """A ResNet trunk up to global average pooling; ``out_dim`` is the width of the pooled features."""

    def __init__(self, resnet: ResNet, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _small_resnet(width: int) -> ResNet:
    """A ResNet of ``SMALL_BLOCKS`` basic blocks per stage at widths (w, 2w, 4w, 8w) instead of (64, ..., 512):
    small enough to train the CPU demo in minutes."""
    net = ResNet(BasicBlock, list(SMALL_BLOCKS))
    # torchvision hard-codes 64 as the base width, so rebuild the stages at the narrower width.
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(BasicBlock, width, SMALL_BLOCKS[0])
    net.layer2 = net._make_layer(BasicBlock, 2 * width, SMALL_BLOCKS[1], stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * width, SMALL_BLOCKS[2], stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * width, SMALL_BLOCKS[3], stride=2)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def _replace_stem(net: ResNet, in_channels: int, stem: str) -> None:
    width = net.conv1.out_channels
    kernel, stride, padding, pool = STEM_LAYOUTS[stem]
    net.conv1 = nn.Conv2d(in_channels, width, kernel_size=kernel, stride=stride, padding=padding, bias=False)
    if not pool:
        net.maxpool = nn.Identity()
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")


def build_encoder(arch: str, in_channels: int, stem: str = "standard", width: int | None = None) -> nn.Module:
    """A randomly initialised backbone.

    arch: "resnet18" (512-d), "resnet50" (2048-d) or "small" (one basic block per stage at base ``width``, default 16,
    giving 8 * width dims). stem: one of ``STEM_LAYOUTS`` ("standard": torchvision's 7x7/2 conv + max-pool;
    "hayat": 7x7/1, no pool).
    ``width`` only applies to "small".
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown encoder arch {arch!r}; choose one of {ARCHS}")
    if stem not in STEMS:
        raise ValueError(f"unknown encoder stem {stem!r}; choose one of {STEMS}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if arch == "small":
        net = _small_resnet(width or SMALL_DEFAULT_WIDTH)
    elif width is not None:
        raise ValueError(f"width applies only to arch 'small', not {arch!r}")
    else:
        net = resnet18() if arch == "resnet18" else resnet50()
    _replace_stem(net, in_channels, stem)
    return Encoder(net, out_dim=net.fc.in_features if arch != "small" else 8 * (width or SMALL_DEFAULT_WIDTH))


def use_channels_last(module: nn.Module, device) -> bool:
    """channels_last is the fast layout for cuDNN and for oneDNN on CPU (~10x on the small encoder here), but
    oneDNN's CPU backward corrupts memory for convolutions with fewer than 8 output channels (torch 2.14), so
    very narrow test networks stay contiguous on CPU."""
    if torch.device(device).type == "cuda":
        return True
    widths = [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]
    return min(widths, default=8) >= 8

"""A toy self-supervised method in one file: pull the two views' normalised features together (it would collapse
given time; it only has to train). Importing this file registers it as "toy"."""
from __future__ import annotations

import torch

from models.methods import MethodSpec, register_method


class ToyMethod(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.backbone = encoder

    def forward(self, view_1, view_2):
        a = torch.nn.functional.normalize(self.backbone(view_1), dim=1)
        b = torch.nn.functional.normalize(self.backbone(view_2), dim=1)
        return (2 - 2 * (a * b).sum(dim=1)).mean()


STEPS_SEEN: list[tuple[int, int]] = []   # (step, total) from the after-step hook


def _after_step(module, step, total):
    STEPS_SEEN.append((step, total))


SPEC = register_method(MethodSpec("toy", lambda encoder, *_: ToyMethod(encoder), base_lr=0.05, weight_decay=0.0,
                                  after_step=_after_step))

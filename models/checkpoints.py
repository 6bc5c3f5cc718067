"""Published encoders loaded into our ``Encoder``: the papers' own checkpoints and plain torchvision state dicts.

A format says where the encoder's tensors sit in the file and under which names, which network they fit, and how
the authors prepared the images (the survey, and that survey's normalisation parameters), so that a bundle built
from it, and every cutout fetched later, is embedded the way the authors embedded theirs.

- ``hayat2021``: the MoCo v2 ResNet-50 of Hayat et al. 2021 (``pretrained_paper_model.pth.tar``; MoCo's
  ``state_dict`` with ``module.encoder_q.*`` keys; fine-tuned files hold ``model_state`` with ``module.*``). 5-band
  7x7 stride-1 stem without max-pool. Their data loader feeds the stored 107 px ugriz images unscaled, centre 64 px,
  with x and y swapped (an HWC swap before ``ToTensor``).
- ``slijepcevic2023``: the BYOL ResNet-18 of the RGZ foundation model (``inigoval/byol``; the ``encoder.pt`` that
  ``inigoval/rgz-latentexplorer`` loads, or a checkpoint whose ``state_dict`` holds ``encoder.*``). Its layers sit
  in one ``layers`` list: the stem (3x3/1 conv, BatchNorm, ReLU, max-pool), eight basic blocks, the pooling. Images:
  150 px, sigma-clipped and scaled to 0-1, centre 70 px, ``Normalize(0.008008896, 0.05303395)``.
- ``torchvision``: a torchvision ResNet-18/50 state dict (``fc`` dropped), any number of input channels, the
  standard stem; the survey's own fitted preprocessing.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from .encoders import build_encoder
from .safe_load import load_tensors


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as the named format; the message says what was found and what to do."""


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    survey: str | None                  # None: any survey (the caller says which)
    description: str
    encoder_state: Callable[[dict], dict]   # the file's object -> our Encoder's state dict
    build: Callable[[dict], dict]           # our state dict -> build_encoder kwargs
    preprocessing: dict | None = None       # the survey's normalise/crop params; None: fit them on the data
    extra: dict = field(default_factory=dict)


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _drop_heads(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _resnet_arch(state: dict) -> str:
    if "layer1.0.conv3.weight" in state:
        return "resnet50"
    if "layer1.1.conv1.weight" in state:
        return "resnet18"
    raise CheckpointError("the tensors are not a torchvision ResNet-18 or ResNet-50 (no layer1.*.conv weights)")


def _hayat_state(obj: dict) -> dict:
    if "state_dict" in obj and any(k.startswith("module.encoder_q.") for k in obj["state_dict"]):
        return _drop_heads(_strip(obj["state_dict"], "module.encoder_q."))
    if "model_state" in obj:
        state = obj["model_state"]
        return _drop_heads({k.replace("module.", "", 1): v for k, v in state.items()})
    raise CheckpointError(f"no MoCo 'state_dict' with module.encoder_q.* keys and no fine-tuned 'model_state' "
                          f"(top-level keys: {sorted(obj)[:8]})")


_RGZ_BLOCKS = 8   # ResNet-18: two basic blocks in each of four stages, layers.1 .. layers.8


def _rgz_key(key: str) -> str | None:
    m = re.match(r"layers\.(\d+)\.(.*)", key)
    if m is None:
        return None
    i, rest = int(m.group(1)), m.group(2)
    if i == 0:   # the stem: 0 conv, 1 BatchNorm (2 ReLU and 3 max-pool hold no tensors)
        stem = {"0": "conv1", "1": "bn1"}
        head, _, tail = rest.partition(".")
        return f"{stem[head]}.{tail}" if head in stem else None
    if 1 <= i <= _RGZ_BLOCKS:
        return f"layer{(i - 1) // 2 + 1}.{(i - 1) % 2}.{rest}"
    return None


def _slijepcevic_state(obj: dict) -> dict:
    state = obj.get("state_dict", obj)
    if any(k.startswith("encoder.layers.") for k in state):
        state = _strip(state, "encoder.")
    if not any(k.startswith("layers.") for k in state):
        raise CheckpointError(f"no 'layers.*' (or 'encoder.layers.*') tensors of the RGZ BYOL encoder "
                              f"(first keys: {sorted(state)[:6]})")
    if any(k.startswith(f"layers.{_RGZ_BLOCKS + 1}.") and "conv" in k for k in state):
        raise CheckpointError("this encoder has more than eight residual blocks: not the ResNet-18 of "
                              "Slijepcevic et al. 2023")
    renamed = {_rgz_key(k): v for k, v in state.items()}
    return {k: v for k, v in renamed.items() if k is not None}


def _torchvision_state(obj: dict) -> dict:
    state = obj.get("state_dict", obj)
    if any(k.startswith("module.") for k in state):
        state = {k.replace("module.", "", 1): v for k, v in state.items()}
    return _drop_heads(state)


def _build_from(state: dict, arch: str | None = None, stem: str = "standard") -> dict:
    conv = state.get("conv1.weight")
    if conv is None or conv.ndim != 4:
        raise CheckpointError("no 4-d conv1.weight: not the weights of a ResNet encoder")
    return {"arch": arch or _resnet_arch(state), "in_channels": int(conv.shape[1]), "stem": stem, "width": None}


FORMATS = {
    "hayat2021": CheckpointFormat(
        "hayat2021", "sdss", "MoCo v2 ResNet-50 of Hayat et al. 2021 (SDSS ugriz)", _hayat_state,
        lambda state: _build_from(state, "resnet50", "hayat"),
        preprocessing={"band_scale": [1.0] * 5, "bands": list("ugriz"), "crop": 64, "transpose_xy": True}),
    "slijepcevic2023": CheckpointFormat(
        "slijepcevic2023", "first", "BYOL ResNet-18 of Slijepcevic et al. 2023 (RGZ / FIRST)", _slijepcevic_state,
        lambda state: _build_from(state, "resnet18", "rgz"),
        preprocessing={"clip_sigma": 3.0, "mean": 0.008008896, "std": 0.05303395, "bin": 1, "crop": 70,
                       "stretch": "linear"}),
    "torchvision": CheckpointFormat(
        "torchvision", None, "a torchvision ResNet-18 / ResNet-50 state dict (standard stem)", _torchvision_state,
        _build_from),
}


def read_checkpoint(path: str | Path) -> dict:
    """The file's object, tensors and plain containers only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = load_tensors(path)
    except Exception as e:   # pickled code, a truncated file, not a torch file at all
        raise CheckpointError(
            f"{path} cannot be read as plain tensors ({type(e).__name__}: {' '.join(str(e).split())[:200]}). "
            "Only weights are loaded, never pickled code: save the encoder's state_dict alone, e.g. "
            "torch.save(model.encoder.state_dict(), 'encoder.pt').") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def load_published_encoder(path: str | Path, fmt: str) -> tuple[nn.Module, dict]:
    """(our Encoder with the checkpoint's weights, in eval mode; its build kwargs plus the format's name,
    survey and preprocessing)."""
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {fmt!r}; choose one of {sorted(FORMATS)}")
    spec = FORMATS[fmt]
    state = spec.encoder_state(read_checkpoint(path))
    build = spec.build(state)
    encoder = build_encoder(**build)
    ours = encoder.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        raise CheckpointError(f"{path} is not a {spec.description}: {len(missing)} tensors missing "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    wrong = [k for k in ours if tuple(ours[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{path} is not a {spec.description}: {k} has shape {tuple(state[k].shape)}, "
                              f"the network expects {tuple(ours[k].shape)}")
    encoder.load_state_dict(state)
    return encoder.eval(), {**build, "checkpoint_format": fmt, "format_survey": spec.survey,
                            "preprocessing": spec.preprocessing}

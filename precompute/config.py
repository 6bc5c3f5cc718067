"""One pipeline run's settings (``Config``): every field the stages read, its training settings (``TrainSettings``,
the one place they are declared) filled from the survey's recipe where the command line left them unset."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from core.surveys.base import get_survey
from models.train import TrainConfig


def _yes_no(value: str) -> bool:
    if value not in ("yes", "no"):
        raise ValueError(value)
    return value == "yes"


_yes_no.__name__ = "yes or no"   # argparse names the type in its error message


def _methods():
    from models.methods import METHOD_REGISTRY

    return tuple(METHOD_REGISTRY)


def _stems():
    from models.encoders import STEMS

    return tuple(STEMS)


def setting(help: str, default=None, *, option: bool = True, in_key: bool = True, type=None, choices=None,
            metavar=None):
    """A training setting: its help, its command-line option (``option``; ``type``, ``choices`` — a tuple or a
    function giving one —, ``metavar``), and whether it changes what is learnt (``in_key``: part of the train stage's
    cache key) or only where and how fast it runs."""
    meta = {"help": help, "option": option, "in_key": in_key, "type": type, "choices": choices, "metavar": metavar}
    return field(default=default, metadata=meta)


@dataclass
class TrainSettings:
    """Every setting of the train stage: the one source of both command lines' training options
    (``add_train_options``), of the train stage's cache key (``cache_key``) and of the training loop's
    ``models.train.TrainConfig`` (``Config.train_config``). Fields left None take the survey's recipe
    (``Config.resolved``). A new setting is one field here: it reaches the options and the key by itself."""

    method: str | None = setting("self-supervised method (default: the survey's recipe; CPU: what learns on 2 "
                                 "cores, GPU: the paper's)", choices=_methods)
    arch: str | None = setting("encoder network (default: the survey's)", choices=("small", "resnet18", "resnet50"))
    stem: str | None = setting("the network's first layers (default: the survey's)", choices=_stems)
    width: int | None = setting("encoder width (small arch)", type=int)
    epochs: int | None = setting("training epochs (default: the survey's recipe)", type=int)
    batch_size: int | None = setting("global batch size (default: the survey's recipe)", type=int)
    lr: float | None = setting("learning rate (default: the method's base rate x batch / 256)", type=float)
    optimizer: str = setting("optimiser", default=TrainConfig.optimizer)
    max_steps: int | None = setting("stop training after this many optimiser steps (smoke tests)", type=int)
    train_limit: int | None = setting("train on a random subset of at most this many images (all are embedded)",
                                      type=int)
    queue_size: int | None = setting("MoCo queue length (default ~5%% of the data)", type=int)
    bin: int | None = setting("average bin x bin pixels before the encoder (default: the recipe's)", type=int)
    crop: int | None = setting("encoder input side in (binned) pixels (default: the recipe's)", type=int)
    views: str | None = setting("d4: average each embedding over the 8 rotations/flips (default: the recipe's)",
                                choices=("identity", "d4"))
    centre: bool | None = setting("centre embeddings on the training mean before normalising (default: the "
                                  "recipe's)", type=_yes_no, metavar="{yes,no}")
    whiten: bool | None = setting("whiten embeddings with the training images' covariance, so that no one "
                                  "direction (e.g. brightness) decides the neighbours (default: the recipe's)",
                                  type=_yes_no, metavar="{yes,no}")
    method_cfg: dict | None = setting("the method's own settings (the recipe's)", option=False)
    augment: dict | None = setting("overrides of the survey's augmentation parameters (the recipe's)", option=False)
    device: str | None = setting("torch device (default: cuda when available, else cpu)", in_key=False)
    num_workers: int = setting("DataLoader worker processes", default=TrainConfig.num_workers, type=int,
                               in_key=False)

    def cache_key(self) -> dict:
        """The train stage's parameters: every field that changes what is learnt."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["in_key"]}


def add_train_options(parser, only: tuple[str, ...] | None = None) -> None:
    """One ``--option`` per ``TrainSettings`` field that has one (``only``: just these), help and type from it."""
    for f in fields(TrainSettings):
        meta = f.metadata
        if not meta["option"] or (only is not None and f.name not in only):
            continue
        choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        kwargs = {k: v for k, v in {"type": meta["type"], "choices": choices, "metavar": meta["metavar"]}.items()
                  if v is not None}
        parser.add_argument(f"--{f.name.replace('_', '-')}", default=f.default, help=meta["help"], **kwargs)


def settings_from_args(args, defaults: dict | None = None) -> TrainSettings:
    """The training settings a command line gave; ``defaults`` fill the ones it left unset (the demo's)."""
    values = {}
    for f in fields(TrainSettings):
        value = getattr(args, f.name, None)
        values[f.name] = value if value is not None else (defaults or {}).get(f.name, f.default)
    return TrainSettings(**values)


@dataclass
class Config:
    """Everything a pipeline run depends on: its survey and files, its training settings (``train``) and the later
    stages' settings."""

    survey: str
    out: Path
    work: Path
    sources: dict = field(default_factory=dict)  # the survey's input files by name (Survey.inputs)
    train: TrainSettings = field(default_factory=TrainSettings)
    seed: int = TrainConfig.seed
    embed_batch_size: int = 256
    embed_rows_per_shard: int = 4096  # rows per embedding shard file (keep a multiple of embed_batch_size)
    engine: str = "local"             # "dask": embed shards on a dask.distributed cluster (core.cluster)
    dask_scheduler: str | None = None  # its address; None: $DASK_SCHEDULER_ADDRESS, else a LocalCluster
    pca_dim: int = 50
    n_neighbors: int = 15
    min_dist: float = 0.1
    umap_sample_above: int = 250_000   # more objects: UMAP of a 200 k sample, the rest placed (precompute.project)
    thumbnail_size: int = 64
    progress: bool = True
    source_note: dict = field(default_factory=dict)  # extra provenance for the manifest (e.g. demo simulation)
    encoder_checkpoint: str | None = None   # a published encoder instead of training (precompute.published)
    checkpoint_format: str | None = None

    def resolved(self) -> "Config":
        """Unset training settings from the survey's recipe: the GPU one (the paper's) when training runs on CUDA or
        the paper's architecture is asked for, else the CPU one."""
        s = get_survey(self.survey)
        t = self.train
        paper = t.arch is not None and t.arch == s.gpu_recipe.get("arch") != s.cpu_recipe.get("arch")
        recipe = dict(s.gpu_recipe if paper or _on_gpu(t.device) else s.cpu_recipe)
        loop = TrainConfig()   # the training loop's own defaults, under the survey's recipe
        fallback = {"method": s.method, "arch": s.arch, "stem": s.stem, "epochs": loop.epochs,
                    "batch_size": loop.batch_size, "bin": 1, "crop": s.crop_size, "views": "identity",
                    "centre": False, "whiten": False, "method_cfg": {}, "augment": {}}
        values = asdict(t)
        if self.encoder_checkpoint:
            from precompute.published import published_fields

            values.update(published_fields(self))
        for name, default in fallback.items():
            if values[name] is None:
                values[name] = recipe.get(name, default)
        if values["width"] is None and values["arch"] == "small":
            values["width"] = recipe.get("width")
        return replace(self, train=TrainSettings(**values))

    def encoder_config(self) -> dict:
        """``models.encoders.build_encoder``'s arguments for this (resolved) run."""
        return {"arch": self.train.arch, "in_channels": get_survey(self.survey).n_channels, "stem": self.train.stem,
                "width": self.train.width}

    def train_key(self) -> dict:
        """The train stage's cache key parameters: every training setting that changes what is learnt, the network's
        full arguments and the run's seed (a setting added to ``TrainSettings`` reaches it by itself)."""
        from models.augment import AUGMENT_VERSION

        return {**self.train.cache_key(), "encoder": self.encoder_config(), "seed": self.seed,
                "augment_steps": AUGMENT_VERSION}

    def train_config(self, n_images: int) -> TrainConfig:
        """The training loop's settings for this (resolved) run on ``n_images`` images."""
        t = self.train
        return TrainConfig(method=t.method, encoder=self.encoder_config(), epochs=t.epochs,
                           batch_size=min(t.batch_size, n_images), lr=t.lr, optimizer=t.optimizer,
                           max_steps=t.max_steps, queue_size=t.queue_size, method_cfg=dict(t.method_cfg or {}),
                           seed=self.seed, device=t.device, num_workers=t.num_workers, progress=self.progress)


def default_of(name: str):
    """A ``Config`` field's default: what the command lines show and use when an option is not given."""
    return Config.__dataclass_fields__[name].default


def _on_gpu(device: str | None) -> bool:
    if device is not None:
        return str(device).startswith("cuda")
    import torch

    return torch.cuda.is_available()


def log(msg: str) -> None:
    print(msg, flush=True)

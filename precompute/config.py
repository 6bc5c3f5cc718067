"""One pipeline run's settings (``Config``): every field the stages read, with the survey's recipe filling what the
command line left unset."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.surveys.base import get_survey
from models.train import TrainConfig


@dataclass
class Config:
    """Everything a pipeline run depends on. Fields set to None take the survey's defaults."""

    survey: str
    out: Path
    work: Path
    sources: dict = field(default_factory=dict)  # first: catalog; sdss: images, gz2, truth
    method: str | None = None
    arch: str | None = None
    stem: str | None = None
    width: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    bin: int | None = None      # pixel binning before the encoder (FIRST CPU recipe: 2)
    crop: int | None = None     # encoder input side, in (binned) pixels
    views: str | None = None    # "d4": embeddings averaged over the 8 rotations/flips (models.embed.represent)
    centre: bool | None = None  # subtract the mean training representation before the final L2 normalisation
    whiten: bool | None = None  # then whiten with the training representations' covariance (models.embed)
    method_cfg: dict | None = None
    augment: dict | None = None  # overrides of the survey's augmentation parameters (models.augment)
    lr: float | None = None
    optimizer: str = TrainConfig.optimizer
    max_steps: int | None = None
    train_limit: int | None = None  # train on a seeded random subset of at most this many images (embed all)
    queue_size: int | None = None
    seed: int = TrainConfig.seed
    device: str | None = None
    num_workers: int = TrainConfig.num_workers
    embed_batch_size: int = 256
    embed_rows_per_shard: int = 4096  # rows per embedding shard file (keep a multiple of embed_batch_size)
    pca_dim: int = 50
    n_neighbors: int = 15
    min_dist: float = 0.1
    thumbnail_size: int = 64
    progress: bool = True
    source_note: dict = field(default_factory=dict)  # extra provenance for the manifest (e.g. demo simulation)
    encoder_checkpoint: str | None = None   # a published encoder instead of training (precompute.published)
    checkpoint_format: str | None = None

    def resolved(self) -> "Config":
        """Unset fields from the survey's recipe: the GPU one (the paper's) when training runs on CUDA or the paper's
        architecture is asked for, else the CPU one."""
        s = get_survey(self.survey)
        paper = self.arch is not None and self.arch == s.gpu_recipe.get("arch") != s.cpu_recipe.get("arch")
        recipe = dict(s.gpu_recipe if paper or _on_gpu(self.device) else s.cpu_recipe)
        loop = TrainConfig()   # the training loop's own defaults, under the survey's recipe
        fallback = {"method": s.method, "arch": s.arch, "stem": s.stem, "epochs": loop.epochs,
                    "batch_size": loop.batch_size, "bin": 1,
                    "crop": s.crop_size, "views": "identity", "centre": False, "whiten": False, "method_cfg": {}, "augment": {}}
        fields = asdict(self)
        if self.encoder_checkpoint:
            from precompute.published import published_fields

            fields.update(published_fields(self))
        for name, default in fallback.items():
            if fields[name] is None:
                fields[name] = recipe.get(name, default)
        if fields["width"] is None and fields["arch"] == "small":
            fields["width"] = recipe.get("width")
        return Config(**fields)

    def encoder_config(self) -> dict:
        """``models.encoders.build_encoder``'s arguments for this (resolved) run."""
        return {"arch": self.arch, "in_channels": get_survey(self.survey).n_channels, "stem": self.stem,
                "width": self.width}

    def train_config(self, n_images: int) -> TrainConfig:
        """The training loop's settings for this (resolved) run on ``n_images`` images."""
        return TrainConfig(method=self.method, encoder=self.encoder_config(), epochs=self.epochs,
                           batch_size=min(self.batch_size, n_images), lr=self.lr, optimizer=self.optimizer,
                           max_steps=self.max_steps, queue_size=self.queue_size, method_cfg=dict(self.method_cfg or {}),
                           seed=self.seed, device=self.device, num_workers=self.num_workers, progress=self.progress)


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

"""The pipeline's stages, each a function from inputs to files in a cached work folder (``precompute.cache``):

    ingest -> train -> embed -> project -> thumbnails -> index -> bundle

Every stage returns a :class:`~precompute.cache.StageResult`; its key chains the keys of the stages it reads, so
changing an argument reruns exactly the stages downstream of it. ``run_pipeline`` runs them in order up to a
named stage.
"""
from __future__ import annotations

import inspect
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from precompute.bundle import BundleError, assign_splits, validate_bundle
from precompute.cache import StageResult, WorkDir, fingerprint_file, fingerprint_files, stage_key
from precompute.inputs import InputError, skipped_frame
from precompute.surveys.base import get_survey

# stage -> the stages whose results it takes, in its arguments' order (the bundle takes them all)
STAGE_INPUTS = {
    "ingest": (),
    "train": ("ingest",),
    "embed": ("ingest", "train"),
    "report": ("ingest", "train", "embed"),
    "project": ("embed",),
    "thumbnails": ("ingest",),
    "index": ("embed",),
}
STAGES = (*STAGE_INPUTS, "bundle")
SKIPPED_IN_MANIFEST = 1000  # the full list is in skipped.csv; the manifest keeps the first ones


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
    method_cfg: dict | None = None
    augment: dict | None = None  # overrides of the survey's augmentation parameters (models.augment)
    lr: float | None = None
    optimizer: str = "sgd"
    max_steps: int | None = None
    train_limit: int | None = None  # train on a seeded random subset of at most this many images (embed all)
    queue_size: int | None = None
    seed: int = 0
    device: str | None = None
    num_workers: int = 0
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
        fallback = {"method": s.method, "arch": s.arch, "stem": s.stem, "epochs": 20, "batch_size": 128, "bin": 1,
                    "crop": s.crop_size, "views": "identity", "centre": False, "method_cfg": {}, "augment": {}}
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


def _on_gpu(device: str | None) -> bool:
    if device is not None:
        return str(device).startswith("cuda")
    import torch

    return torch.cuda.is_available()


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------- ingest
def source_fingerprints(cfg: Config) -> dict[str, str]:
    """Fingerprints of the raw inputs: the catalogue/HDF5 content and, for FIRST, every listed FITS file."""
    out = {}
    for name, value in sorted(cfg.sources.items()):
        if value is None:
            continue
        paths = value if isinstance(value, (list, tuple)) else [value]
        for i, path in enumerate(Path(p) for p in paths):
            if not path.is_file():
                raise InputError(f"{path}: {name} file not found; check the --{name} argument")
            out[name if i == 0 else f"{name}_{i}"] = fingerprint_file(path)
            if cfg.survey == "first" and name == "catalog":
                out["fits" if i == 0 else f"fits_{i}"] = _fits_fingerprint(path)
    return {k: v for k, v in out.items() if v is not None}


def _fits_fingerprint(catalog: Path) -> str | None:
    try:
        files = pd.read_csv(catalog, usecols=["file"])["file"].astype(str)
    except ValueError:
        return None  # no 'file' column: read_local reports it with the file named
    folder = catalog.resolve().parent  # same key however the path was spelt
    return fingerprint_files(folder / f for f in files)


def _resolved(value):
    return [str(Path(v).resolve()) for v in value] if isinstance(value, (list, tuple)) else str(Path(value).resolve())


def ingest(wd: WorkDir, cfg: Config) -> StageResult:
    survey = get_survey(cfg.survey)
    params = {"survey": cfg.survey, "sources": {k: _resolved(v) for k, v in cfg.sources.items() if v}}

    def build(tmp: Path, key: str) -> None:
        paths = {k: v for k, v in cfg.sources.items() if v}
        cut = survey.read_local(**paths, out=tmp / "images.npy", progress=cfg.progress)
        if len(cut.catalog) == 0:
            raise InputError(f"{next(iter(paths.values()))}: no usable objects ({len(cut.skipped)} skipped, e.g. "
                             f"{cut.skipped[:3]}); fix the inputs listed in the reasons")
        if len(cut.catalog) < 10:
            raise InputError(f"{next(iter(paths.values()))}: only {len(cut.catalog)} usable objects; a map needs "
                             f"at least 10")
        if not (tmp / "images.npy").exists():
            np.save(tmp / "images.npy", np.asarray(cut.images, dtype=np.float32))
        cut.catalog.to_parquet(tmp / "catalog.parquet", index=False)
        skipped_frame(cut.skipped).to_csv(tmp / "skipped.csv", index=False)
        log(f"[ingest] {len(cut.catalog)} objects, {len(cut.skipped)} skipped")

    # the survey module's code is an input too: its reader, measurements and preprocessing shape every later stage
    code = {"survey_code": fingerprint_file(inspect.getfile(type(survey)))}
    res = wd.run("ingest", params, {**source_fingerprints(cfg), **code}, build)
    shutil.copyfile(res.path / "skipped.csv", wd.root / "skipped.csv")
    return res


def load_ingest(res: StageResult) -> tuple[pd.DataFrame, np.ndarray]:
    return pd.read_parquet(res.path / "catalog.parquet"), np.load(res.path / "images.npy", mmap_mode="r")


# ------------------------------------------------------------------------------------------------- train
def encoder_config(cfg: Config) -> dict:
    s = get_survey(cfg.survey)
    return {"arch": cfg.arch, "in_channels": s.n_channels, "stem": cfg.stem, "width": cfg.width}


def augmentation_params(survey, normalised: np.ndarray, cfg: Config) -> dict:
    from models.augment import compute_mad

    if survey.name == "sdss":
        sample = normalised[: min(len(normalised), 2048)]
        params = {"crop": cfg.crop, "jitter": 7, "pixel_scale": survey.pixel_scale_arcsec,
                  "mad": np.asarray(compute_mad(np.asarray(sample)), dtype=np.float32).tolist()}
    else:
        params = {"crop": cfg.crop}
    return {**params, **(cfg.augment or {})}


def representation_centre(encoder, normalised: np.ndarray, crop: int, views: str, max_rows: int = 4096,
                          seed: int = 0) -> list[float]:
    """The mean L2-normalised representation of (at most ``max_rows`` of) the training images, centre-cropped to
    the encoder's input: what ``Config.centre`` subtracts so that cosine measures differences from the typical
    object (on FIRST the raw median random-pair cosine is ~0.9 and every neighbour reads 0.99)."""
    from models.embed import embed
    from precompute.surveys.base import centre_crop

    rows = training_rows(len(normalised), max_rows, seed)
    crops = np.ascontiguousarray(centre_crop(np.asarray(normalised[rows]), crop), dtype=np.float32)
    return embed(encoder, crops, dtype=np.float32, views=views).mean(axis=0).tolist()


def training_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Rows to train on: all, or a seeded random subset of ``limit`` (sorted, for sequential reads)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def normalise_to(survey, images: np.ndarray, rows: np.ndarray, params: dict, path: Path,
                 chunk: int = 2048) -> np.ndarray:
    """Normalised full-size training images (``images[rows]``), written chunk by chunk to a memory-mapped .npy."""
    shape = survey.normalise(np.asarray(images[:1]), params).shape[1:]   # binning changes the side
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(rows),) + shape)
    for s in range(0, len(rows), chunk):
        out[s : s + chunk] = survey.normalise(np.asarray(images[rows[s : s + chunk]]), params)
    out.flush()
    return np.load(path, mmap_mode="r")


def train(wd: WorkDir, cfg: Config, ing: StageResult) -> StageResult:
    if cfg.encoder_checkpoint:
        from precompute.published import import_published

        return import_published(wd, cfg, ing)
    survey = get_survey(cfg.survey)
    params = {"method": cfg.method, "encoder": encoder_config(cfg), "epochs": cfg.epochs, "batch_size": cfg.batch_size,
              "lr": cfg.lr, "optimizer": cfg.optimizer, "max_steps": cfg.max_steps, "queue_size": cfg.queue_size,
              "seed": cfg.seed, "train_limit": cfg.train_limit, "bin": cfg.bin, "crop": cfg.crop,
              "views": cfg.views, "centre": cfg.centre, "method_cfg": cfg.method_cfg, "augment": cfg.augment}

    def build(tmp: Path, key: str) -> None:
        from models.augment import build_augmentations
        from models.io import save_encoder
        from models.train import train as train_model

        _, images = load_ingest(ing)
        ckpt = wd.checkpoint_dir("train", key)
        rows = training_rows(len(images), cfg.train_limit, cfg.seed)
        prep = survey.fit_preprocessing(images, bin=cfg.bin, crop=cfg.crop)
        normalised = normalise_to(survey, images, rows, prep, ckpt / "normalised.npy")
        aug_params = augmentation_params(survey, normalised, cfg)
        augment = build_augmentations(survey.name, **aug_params)
        t0 = time.perf_counter()
        encoder, history = train_model(
            normalised, method=cfg.method, encoder_cfg=encoder_config(cfg), augment=augment, epochs=cfg.epochs,
            batch_size=min(cfg.batch_size, len(normalised)), lr=cfg.lr, optimizer=cfg.optimizer,
            checkpoint_dir=ckpt, resume=True, device=cfg.device, num_workers=cfg.num_workers, seed=cfg.seed,
            progress=cfg.progress, max_steps=cfg.max_steps, queue_size=cfg.queue_size, method_cfg=cfg.method_cfg)
        train_seconds = round(time.perf_counter() - t0, 1)
        centre = representation_centre(encoder, normalised, cfg.crop, cfg.views, seed=cfg.seed) if cfg.centre else None
        config = {**encoder_config(cfg), "survey": survey.name, "method": cfg.method, "preprocessing": prep,
                  "views": cfg.views, "centre": centre,
                  "augmentations": aug_params, "crop_size": cfg.crop, "cutout_size": survey.cutout_size,
                  "pixel_scale_arcsec": survey.pixel_scale_arcsec, "bands": list(survey.bands),
                  "epochs": cfg.epochs, "n_train_images": int(len(rows)), "train_seconds": train_seconds}
        save_encoder(encoder, config, tmp / "encoder")
        (tmp / "history.json").write_text(json.dumps(_jsonable(history), indent=2))
        del normalised
        shutil.rmtree(ckpt, ignore_errors=True)  # finished: the checkpoints are no longer needed

    return wd.run("train", params, {"ingest": ing.key}, build)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return str(obj)


# ------------------------------------------------------------------------------------------------- embed
def _embed_spec(cfg: Config, ing: StageResult, trained: StageResult) -> tuple[dict, dict]:
    """The embed stage's (params, inputs). The shard size is not a parameter: the vectors do not depend on it."""
    return {"batch_size": cfg.embed_batch_size, "dtype": "float16"}, {"ingest": ing.key, "train": trained.key}


def embed_shard_dir(wd: WorkDir, cfg: Config, ing: StageResult, trained: StageResult) -> Path | None:
    """Where the embed stage's shards go (``<work>/embed-<key>.shards/rows<R>/``, kept until the merge is in
    place so a killed run resumes), or None when the stage is already done."""
    key = stage_key("embed", *_embed_spec(cfg, ing, trained))
    if (wd.path("embed", key) / "done.json").is_file():
        return None
    return wd.root / f"embed-{key}.shards" / f"rows{cfg.embed_rows_per_shard}"


def embed(wd: WorkDir, cfg: Config, ing: StageResult, trained: StageResult) -> StageResult:
    """Embed every image shard by shard (``precompute.shards``), then merge the shards into one memory-mappable
    ``embeddings.npy``. Under torchrun the ranks have written the shards already and this only merges."""
    from precompute.shards import merge_embedding_shards, write_embedding_shards

    params, inputs = _embed_spec(cfg, ing, trained)
    shard_dir = embed_shard_dir(wd, cfg, ing, trained)

    def build(tmp: Path, key: str) -> None:
        from precompute.encoder import load_embedder

        _, images = load_ingest(ing)
        loaded = []

        def embedder(batch: np.ndarray) -> np.ndarray:  # the encoder is loaded only if a shard is missing
            if not loaded:
                loaded.append(load_embedder(trained.path / "encoder", device=cfg.device,
                                            batch_size=cfg.embed_batch_size))
            return loaded[0](batch)

        write_embedding_shards(embedder, images, shard_dir, rows_per_shard=cfg.embed_rows_per_shard,
                               progress=cfg.progress)
        merge_embedding_shards(shard_dir, tmp / "embeddings.npy", len(images))

    res = wd.run("embed", params, inputs, build)
    if shard_dir is not None:
        shutil.rmtree(shard_dir.parent, ignore_errors=True)  # merged and renamed into place: no longer needed
    return res


# ------------------------------------------------------------------------------------------------- report
def report(wd: WorkDir, cfg: Config, ing: StageResult, trained: StageResult, emb: StageResult) -> StageResult:
    """report.json: the embedding beside its untrained twin and pixel PCA on every labelled column
    (``precompute.report``)."""
    from precompute.report import MAX_EVAL_ROWS, MAX_TASKS

    survey = get_survey(cfg.survey)

    def build(tmp: Path, key: str) -> None:
        from precompute.report import build_report, evaluation_rows, format_table, write_report

        catalog, images = load_ingest(ing)
        embeddings = np.load(emb.path / "embeddings.npy", mmap_mode="r")
        tasks = survey.report_tasks(catalog, colour_columns(survey, catalog))[:MAX_TASKS]
        rows = evaluation_rows(tasks, len(catalog), cfg.seed)
        features = {"embedding": np.asarray(embeddings[rows], dtype=np.float32)}
        if len(rows):
            features.update(baseline_features(survey, trained.path / "encoder", images, rows, cfg))
        notes = {"untrained": "same architecture, random weights (seed + 1), same preprocessing, views and centring",
                 "pixel_pca": "PCA-50 of the preprocessed encoder inputs of the evaluated objects"}
        rep = build_report(tasks, features, rows, embeddings, notes, cfg.seed)
        write_report(rep, tmp / "report.json")
        log("[report]\n" + format_table(rep))

    return wd.run("report", {"max_rows": MAX_EVAL_ROWS, "max_tasks": MAX_TASKS, "seed": cfg.seed, "format": 2},
                  {"ingest": ing.key, "train": trained.key, "embed": emb.key}, build)


def baseline_features(survey, encoder_dir: Path, images: np.ndarray, rows: np.ndarray, cfg: Config) -> dict:
    """The untrained twin's embedding and PCA of the pixels for ``rows``, preprocessed exactly as the bundle's."""
    import torch
    from sklearn.decomposition import PCA

    from models.embed import embed
    from models.encoders import build_encoder
    from models.io import BUILD_KEYS

    config = json.loads((encoder_dir / "config.json").read_text())
    prep = config["preprocessing"]
    crops = survey.preprocess(np.asarray(images[rows]), prep)
    torch.manual_seed(cfg.seed + 1)
    twin = build_encoder(**{k: config[k] for k in BUILD_KEYS}).eval()
    views = config.get("views", "identity")
    centre = None
    if config.get("centre") is not None:   # the twin's own mean over the same kind of images
        sample = training_rows(len(images), 4096, cfg.seed)
        centre = representation_centre(twin, survey.normalise(np.asarray(images[sample]), prep),
                                       int(prep.get("crop", survey.crop_size)), views, seed=cfg.seed)
    untrained = embed(twin, crops, dtype=np.float32, views=views, centre=centre)
    pixels = crops.reshape(len(crops), -1)
    dim = min(50, len(crops) - 1, pixels.shape[1])
    pca = PCA(dim, random_state=cfg.seed, svd_solver="randomized").fit_transform(pixels).astype(np.float32)
    return {"untrained": untrained, "pixel_pca": pca}


# ------------------------------------------------------------------------------------------------- project
def project(wd: WorkDir, cfg: Config, emb: StageResult) -> StageResult:
    params = {"pca_dim": cfg.pca_dim, "n_neighbors": cfg.n_neighbors, "min_dist": cfg.min_dist, "seed": cfg.seed}

    def build(tmp: Path, key: str) -> None:
        from precompute.project import project as fit_projection

        embeddings = np.load(emb.path / "embeddings.npy", mmap_mode="r")
        # UMAP prints nothing for minutes (numba compiles on its first call): say what is happening and for how long
        log(f"[project] PCA to {cfg.pca_dim} dimensions, then UMAP of {len(embeddings):,} objects (about 1 min to "
            f"compile, then ~1 min per 50 k objects on 2 cores)")
        coords, used = fit_projection(embeddings, tmp / "projection", **params)
        np.save(tmp / "coords.npy", coords)
        (tmp / "umap.json").write_text(json.dumps(used, indent=2))

    # format 2: no pickled reducer in projection/ any more (an older cached result still holds one)
    return wd.run("project", {**params, "format": 2}, {"embed": emb.key}, build)


# ------------------------------------------------------------------------------------------------- thumbnails
def thumbnails(wd: WorkDir, cfg: Config, ing: StageResult) -> StageResult:
    survey = get_survey(cfg.survey)

    def build(tmp: Path, key: str) -> None:
        from precompute.bundle import pack_thumbnails
        from precompute.thumbnails import render_thumbnails

        _, images = load_ingest(ing)
        blob, offsets = pack_thumbnails(render_thumbnails(survey, images, size=cfg.thumbnail_size,
                                                          progress=cfg.progress))
        (tmp / "blob.bin").write_bytes(blob)
        np.save(tmp / "offsets.npy", offsets)

    return wd.run("thumbnails", {"size": cfg.thumbnail_size, "format": "webp", "quality": 80},
                  {"ingest": ing.key}, build)


# ------------------------------------------------------------------------------------------------- index
def index(wd: WorkDir, cfg: Config, emb: StageResult) -> StageResult:
    def build(tmp: Path, key: str) -> None:
        import faiss

        from precompute.index import build_index

        faiss.write_index(build_index(np.load(emb.path / "embeddings.npy", mmap_mode="r"), seed=cfg.seed),
                          str(tmp / "index.faiss"))

    return wd.run("index", {}, {"embed": emb.key}, build)


# ------------------------------------------------------------------------------------------------- bundle
def bundle_catalog(catalog: pd.DataFrame, coords: np.ndarray, seed: int) -> pd.DataFrame:
    """The ingest catalogue with the map coordinates and the fixed split, required columns first."""
    cat = catalog.copy()
    cat["umap_x"] = coords[:, 0].astype(np.float32)
    cat["umap_y"] = coords[:, 1].astype(np.float32)
    cat["split"] = assign_splits(len(cat), seed)
    first = ["object_id", "ra", "dec", "umap_x", "umap_y", "split"]
    return cat[first + [c for c in cat.columns if c not in first]]


def manifest_for(cfg: Config, survey, catalog: pd.DataFrame, train_res: StageResult, umap_params: dict,
                 skipped: pd.DataFrame, keys: dict) -> dict:
    enc_cfg = json.loads((train_res.path / "encoder" / "config.json").read_text()) \
        if (train_res.path / "encoder" / "config.json").is_file() else {}
    colour_by = colour_columns(survey, catalog)
    return {
        "survey": survey.name,
        "bands": list(survey.bands),
        "pixel_scale_arcsec": survey.pixel_scale_arcsec,
        "cutout_size": survey.cutout_size,
        "crop_size": cfg.crop,
        "model": {"method": cfg.method, "architecture": cfg.arch, "stem": cfg.stem, "width": cfg.width,
                  "embedding": embedding_description(enc_cfg), "views": enc_cfg.get("views", "identity"),
                  "centred": enc_cfg.get("centre") is not None, "bin": cfg.bin, "crop": cfg.crop,
                  "epochs": cfg.epochs,
                  "batch_size": cfg.batch_size, "n_train_images": enc_cfg.get("n_train_images"),
                  "checkpoint": _checkpoint_name(train_res.path / "encoder"),
                  "train_seconds": enc_cfg.get("train_seconds")},
        "umap": umap_params,
        "colour_by": colour_by,
        "report": "report.json",
        "source": {**{k: _source_text(v) for k, v in cfg.sources.items() if v}, **cfg.source_note,
                   "n_skipped": int(len(skipped)),
                   "skipped": skipped.head(SKIPPED_IN_MANIFEST).to_dict(orient="records"),
                   "skipped_report": str(cfg.work / "skipped.csv"), "stage_keys": keys},
    }


def _source_text(value):
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)


def colour_columns(survey, catalog: pd.DataFrame) -> dict:
    """The survey's colour-by columns present in ``catalog``, plus categorical simulator truth and sample columns."""
    colour_by = {c: spec for c, spec in survey.colour_by.items() if c in catalog.columns and catalog[c].notna().any()}
    for col in catalog.columns:  # simulator truth classes are worth colouring by too
        if col.startswith("truth_") and col not in colour_by and _is_categorical(catalog[col]):
            colour_by[col] = {"title": col.replace("truth_", "Truth: ").replace("_", " "), "kind": "categorical",
                              "units": ""}
    if "sample" in catalog.columns and catalog["sample"].nunique() > 1:
        colour_by["sample"] = {"title": "Input catalogue", "kind": "categorical", "units": ""}
    return colour_by


def embedding_description(enc_cfg: dict) -> str:
    parts = ["encoder representation"]
    if enc_cfg.get("views") == "d4":
        parts.append("averaged over the 8 rotations and flips of the input")
    if enc_cfg.get("centre") is not None:
        parts.append("centred on the training images' mean representation")
    return ", ".join(parts) + ", L2-normalised"


def _is_categorical(values: pd.Series) -> bool:
    return (pd.api.types.is_string_dtype(values) or pd.api.types.is_bool_dtype(values)
            or values.dtype == object) and values.nunique() <= 50


def _checkpoint_name(encoder_dir: Path) -> str:
    """The weights file inside the encoder folder, as a bundle-relative path."""
    for name in ("weights.pt", "encoder.pt", "model.pt"):
        if (encoder_dir / name).is_file():
            return f"encoder/{name}"
    found = sorted(p.name for p in encoder_dir.iterdir() if p.suffix in (".pt", ".pth", ".safetensors"))
    if not found:
        raise BundleError(f"{encoder_dir}: no weights file (.pt) was saved by models.io.save_encoder")
    return f"encoder/{found[0]}"


def bundle_is_current(out: Path, keys: dict) -> bool:
    """True when ``out`` is a valid bundle built from exactly these stage results."""
    man = out / "manifest.json"
    if not man.is_file():
        return False
    try:
        if json.loads(man.read_text()).get("source", {}).get("stage_keys") != keys:
            return False
        validate_bundle(out)
        return True
    except (BundleError, json.JSONDecodeError):
        return False


def write(cfg: Config, results: dict[str, StageResult]) -> Path:
    import faiss

    from precompute.bundle import write_bundle

    keys = {name: r.key for name, r in results.items()}
    if bundle_is_current(cfg.out, keys):
        log(f"[bundle] {cfg.out} is up to date")
        return cfg.out
    survey = get_survey(cfg.survey)
    catalog, _ = load_ingest(results["ingest"])
    coords = np.load(results["project"].path / "coords.npy")
    cat = bundle_catalog(catalog, coords, cfg.seed)
    umap_params = json.loads((results["project"].path / "umap.json").read_text())
    skipped = pd.read_csv(results["ingest"].path / "skipped.csv", dtype=str, keep_default_na=False)
    manifest = manifest_for(cfg, survey, cat, results["train"], umap_params, skipped, keys)
    thumbs = results["thumbnails"].path
    out = write_bundle(
        cfg.out, catalog=cat, embeddings=np.load(results["embed"].path / "embeddings.npy", mmap_mode="r"),
        thumbnails=((thumbs / "blob.bin").read_bytes(), np.load(thumbs / "offsets.npy")), manifest=manifest,
        encoder_dir=results["train"].path / "encoder", index=faiss.read_index(str(results["index"].path / "index.faiss")),
        extra_dirs={"projection": results["project"].path / "projection"},
        extra_files={"report.json": results["report"].path / "report.json"}, thumbnail_format="webp")
    validate_bundle(out)
    log(f"[bundle] wrote {out} ({len(cat)} objects, {len(skipped)} skipped)")
    return out


# ------------------------------------------------------------------------------------------------- all
def stages_for(until: str) -> list[str]:
    """``until`` and every stage it needs, in pipeline order."""
    if until == "bundle":
        return list(STAGE_INPUTS)
    needed, todo = set(), [until]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(STAGE_INPUTS[name])
    return [name for name in STAGE_INPUTS if name in needed]


def run_pipeline(cfg: Config, until: str = "bundle") -> dict[str, StageResult] | Path:
    """Run ``until`` and the stages it needs (``STAGE_INPUTS``), each cached; the bundle path, or the results."""
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; one of {STAGES}")
    cfg = cfg.resolved()
    wd = WorkDir(cfg.work, log=log)
    functions = {"ingest": ingest, "train": train, "embed": embed, "report": report, "project": project,
                 "thumbnails": thumbnails, "index": index}
    results: dict[str, StageResult] = {}
    for name in stages_for(until):
        results[name] = functions[name](wd, cfg, *(results[i] for i in STAGE_INPUTS[name]))
    return results if until != "bundle" else write(cfg, results)

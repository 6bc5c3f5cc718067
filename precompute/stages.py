"""The pipeline's stages, each a function from inputs to files in a cached work folder (``precompute.cache``):

    ingest -> train -> embed -> report -> project -> stability -> thumbnails -> index -> bundle

(``report`` and ``stability`` write report.json: what the embedding knows, then how it bears augmentations.)

Every stage returns a :class:`~precompute.cache.StageResult`; its key chains the keys of the stages it reads, so
changing an argument reruns exactly the stages downstream of it. ``run_pipeline`` runs them in order up to a
named stage.
"""
from __future__ import annotations

import inspect
import json
import shutil
import time
from pathlib import Path

import numpy as np

from core.inputs import InputError, skipped_frame
from core.surveys.base import get_survey
from precompute.assemble import colour_columns, write
from precompute.cache import (
    StageResult,
    WorkDir,
    fingerprint_file,
    fingerprint_files,
    stage_key,
)
from precompute.config import Config, log
from precompute.graph import STAGE_GRAPH, STAGE_INPUTS, STAGES, stages_for
from precompute.prepare import (
    fit_post,
    load_ingest,
    normalise_to,
    representation_post,
    training_rows,
)


# ------------------------------------------------------------------------------------------------- ingest
def source_fingerprints(cfg: Config) -> dict[str, str]:
    """Fingerprints of the raw inputs: each input file's content and the files it names (``Survey.listed_files``:
    FIRST's FITS cutouts)."""
    survey = get_survey(cfg.survey)
    out = {}
    for name, value in sorted(cfg.sources.items()):
        if value is None:
            continue
        paths = value if isinstance(value, (list, tuple)) else [value]
        for i, path in enumerate(Path(p) for p in paths):
            if not path.is_file():
                raise InputError(f"{path}: {name} file not found; check the --{name} argument")
            suffix = "" if i == 0 else f"_{i}"
            out[name + suffix] = fingerprint_file(path)
            listed = survey.listed_files(name, path)
            if listed is not None:
                out[f"{name}_files{suffix}"] = fingerprint_files(listed)
    return out


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


# ------------------------------------------------------------------------------------------------- train
def train(wd: WorkDir, cfg: Config, ing: StageResult) -> StageResult:
    if cfg.encoder_checkpoint:
        from precompute.published import import_published

        return import_published(wd, cfg, ing)
    survey = get_survey(cfg.survey)
    params = cfg.train_key()
    def build(tmp: Path, key: str) -> None:
        from models.augment import build_augmentations
        from models.io import save_encoder
        from models.train import train as train_model

        _, images = load_ingest(ing)
        ckpt = wd.checkpoint_dir("train", key)
        rows = training_rows(len(images), cfg.train.train_limit, cfg.seed)
        prep = survey.fit_preprocessing(images, bin=cfg.train.bin, crop=cfg.train.crop)
        normalised = normalise_to(survey, images, rows, prep, ckpt / "normalised.npy")
        aug_params = {**survey.augmentation_params(normalised, cfg.train.crop), **(cfg.train.augment or {})}
        augment = build_augmentations(survey.augmentation_recipe, **aug_params)
        t0 = time.perf_counter()
        encoder, history = train_model(normalised, augment, cfg.train_config(len(normalised)), checkpoint_dir=ckpt)
        train_seconds = round(time.perf_counter() - t0, 1)
        post = representation_post(encoder, normalised, cfg.train.crop, cfg.train.views, bool(cfg.train.centre), bool(cfg.train.whiten),
                                   seed=cfg.seed)
        config = {**cfg.encoder_config(), "survey": survey.name, "method": cfg.train.method, "preprocessing": prep,
                  "views": cfg.train.views, "centre": post["centre"], "whiten": post["whiten"],
                  "representation_health": post["health"],
                  "augmentations": aug_params, "crop_size": cfg.train.crop, "cutout_size": survey.cutout_size,
                  "pixel_scale_arcsec": survey.pixel_scale_arcsec, "bands": list(survey.bands),
                  "epochs": cfg.train.epochs, "n_train_images": int(len(rows)), "train_seconds": train_seconds}
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
    from core.arrays import merge_embedding_shards, write_embedding_shards

    params, inputs = _embed_spec(cfg, ing, trained)
    shard_dir = embed_shard_dir(wd, cfg, ing, trained)

    def build(tmp: Path, key: str) -> None:
        from core.encoder import load_embedder

        _, images = load_ingest(ing)
        loaded = []

        def embedder(batch: np.ndarray) -> np.ndarray:  # the encoder is loaded only if a shard is missing
            if not loaded:
                loaded.append(load_embedder(trained.path / "encoder", device=cfg.train.device,
                                            batch_size=cfg.embed_batch_size))
            return loaded[0](batch)

        if cfg.engine == "dask":
            from core.cluster import dask_client
            from precompute.dask_embed import embed_on_cluster

            with dask_client(cfg.dask_scheduler) as client:
                embed_on_cluster(client, trained.path / "encoder", ing.path / "images.npy", shard_dir,
                                 cfg.embed_rows_per_shard, cfg.embed_batch_size, log=log)
        else:
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
        from core.knowledge import N_SPLITS
        from precompute.report import (
            build_report,
            evaluation_rows,
            format_table,
            write_report,
        )

        catalog, images = load_ingest(ing)
        embeddings = np.load(emb.path / "embeddings.npy", mmap_mode="r")
        tasks = survey.report_tasks(catalog, colour_columns(survey, catalog))[:MAX_TASKS]
        rows = evaluation_rows(tasks, len(catalog), cfg.seed)
        features = {"embedding": np.asarray(embeddings[rows], dtype=np.float32)}
        encoder_cfg = json.loads((trained.path / "encoder" / "config.json").read_text())
        if len(rows):
            log(f"[report] embedding {len(rows):,} objects with the untrained network, and PCA of their pixels")
            features.update(baseline_features(survey, encoder_cfg, images, rows, cfg))
        log(f"[report] scoring {len(tasks)} labelled tests for {len(features)} sources (neighbours and a linear "
            f"classifier, {N_SPLITS} splits each) and what neighbours share in every column")
        notes = {"untrained": "same architecture, random weights (seed + 1), same preprocessing and views; its own "
                              "centring and whitening (as the bundle's recipe), fitted on the evaluated objects",
                 "pixel_pca": "PCA-50 of the preprocessed encoder inputs of the evaluated objects"}
        rep = build_report(tasks, features, rows, embeddings, notes, cfg.seed,
                           encoder_health=encoder_cfg.get("representation_health") if encoder_cfg.get("whiten") else None,
                           catalog=catalog, columns=colour_columns(survey, catalog))
        write_report(rep, tmp / "report.json")
        log("[report]\n" + format_table(rep))

    return wd.run("report", {"max_rows": MAX_EVAL_ROWS, "max_tasks": MAX_TASKS, "seed": cfg.seed, "format": 4},
                  {"ingest": ing.key, "train": trained.key, "embed": emb.key}, build)


def baseline_features(survey, config: dict, images: np.ndarray, rows: np.ndarray, cfg: Config) -> dict:
    """The untrained twin's embedding and PCA of the pixels for ``rows``, preprocessed exactly as the bundle's."""
    import torch
    from sklearn.decomposition import PCA

    from models.embed import embed, post_process
    from models.encoders import build_encoder
    from models.io import BUILD_KEYS

    prep = config["preprocessing"]
    crops = survey.preprocess(np.asarray(images[rows]), prep)
    torch.manual_seed(cfg.seed + 1)
    twin = build_encoder(**{k: config[k] for k in BUILD_KEYS}).eval()
    views = config.get("views", "identity")
    # embedded once: its centring and whitening are its own, fitted on these same objects
    untrained = embed(twin, crops, dtype=np.float32, views=views)
    post = fit_post(untrained, config.get("centre") is not None, bool(config.get("whiten")), cfg.seed)
    untrained = post_process(untrained, post["centre"], post["whiten"])
    pixels = crops.reshape(len(crops), -1)
    dim = min(50, len(crops) - 1, pixels.shape[1])
    pca = PCA(dim, random_state=cfg.seed, svd_solver="randomized").fit_transform(pixels).astype(np.float32)
    return {"untrained": untrained, "pixel_pca": pca}


# ------------------------------------------------------------------------------------------------- stability
STABILITY_OBJECTS, STABILITY_REFERENCE = 100, 1_000   # ~30 s of the demo build (two UMAPs, 1,900 embeddings)


def stability_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint seeded samples: the objects perturbed, and the reference objects for random pairs and placement."""
    rows = np.random.default_rng(seed).permutation(n)
    n_objects = min(STABILITY_OBJECTS, n // 3)
    return np.sort(rows[:n_objects]), np.sort(rows[n_objects:n_objects + STABILITY_REFERENCE])


def stability_plane(vectors: np.ndarray, cfg: Config) -> np.ndarray:
    """A 2-D map of one space's vectors for the stability measure (Hayat et al.'s Fig. 9): UMAP of their PCA-50
    with the bundle map's own settings."""
    from sklearn.decomposition import PCA

    from precompute.project import fit_umap

    reduced = PCA(min(50, len(vectors) - 1, vectors.shape[1]), random_state=cfg.seed).fit_transform(vectors)
    _, coords = fit_umap(reduced, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, seed=cfg.seed)
    return np.asarray(coords, dtype=np.float64)


def stability(wd: WorkDir, cfg: Config, ing: StageResult, trained: StageResult, proj: StageResult,
              rep: StageResult) -> StageResult:
    """report.json with its ``stability`` section (``core.stability``, Hayat et al. Fig. 9): how far rotated,
    shifted and noised copies move in the embedding and on the map, beside the same in pixel space."""
    from core.stability import PERTURBATIONS

    def build(tmp: Path, key: str) -> None:
        from core.encoder import load_embedder
        from core.stability import measure
        from precompute.report import format_stability, write_report

        catalog, images = load_ingest(ing)
        report_json = json.loads((rep.path / "report.json").read_text())
        sample, reference = stability_rows(len(catalog), cfg.seed)
        if len(sample) >= 3:
            survey, embedder = get_survey(cfg.survey), load_embedder(trained.path / "encoder")
            prep = embedder.config["preprocessing"]
            log(f"[stability] {len(sample)} objects x {len(PERTURBATIONS)} perturbed copies, against "
                f"{len(reference):,} reference objects, in the embedding and in pixel space")
            xy = np.load(proj.path / "coords.npy")
            result = measure(np.asarray(images[sample]), np.asarray(images[reference]), xy[reference], embedder,
                             lambda raw: survey.preprocess(np.asarray(raw), prep), cfg.seed,
                             plane=lambda vectors: stability_plane(vectors, cfg))
            report_json["stability"] = result["summary"]
            log("[stability]\n" + format_stability(result["summary"]))
        write_report(report_json, tmp / "report.json")

    return wd.run("stability", {"objects": STABILITY_OBJECTS, "reference": STABILITY_REFERENCE, "seed": cfg.seed,
                                "perturbations": list(PERTURBATIONS), "format": 3},
                  {"ingest": ing.key, "train": trained.key, "project": proj.key, "report": rep.key}, build)


# ------------------------------------------------------------------------------------------------- project
def project(wd: WorkDir, cfg: Config, emb: StageResult) -> StageResult:
    from precompute.project import SAMPLE_SIZE, fitted_objects

    params = {"pca_dim": cfg.pca_dim, "n_neighbors": cfg.n_neighbors, "min_dist": cfg.min_dist, "seed": cfg.seed,
              "sample_above": cfg.umap_sample_above, "sample_size": SAMPLE_SIZE}

    def build(tmp: Path, key: str) -> None:
        from precompute.project import project as fit_projection

        embeddings = np.load(emb.path / "embeddings.npy", mmap_mode="r")
        fitted = fitted_objects(len(embeddings), cfg.umap_sample_above, SAMPLE_SIZE)
        # UMAP prints nothing for minutes (numba compiles on its first call): say what is happening and for how long
        log(f"[project] PCA to {cfg.pca_dim} dimensions, then UMAP of {fitted:,} of {len(embeddings):,} objects "
            f"(about 1 min to compile, then ~1 min per 50 k objects on 2 cores)")
        coords, used = fit_projection(embeddings, tmp / "projection", **params, log=log)
        np.save(tmp / "coords.npy", coords)
        (tmp / "umap.json").write_text(json.dumps(used, indent=2))

    # format 2: no pickled reducer in projection/ any more (an older cached result still holds one)
    return wd.run("project", {**params, "format": 2}, {"embed": emb.key}, build)


# ------------------------------------------------------------------------------------------------- thumbnails
def thumbnails(wd: WorkDir, cfg: Config, ing: StageResult) -> StageResult:
    survey = get_survey(cfg.survey)

    def build(tmp: Path, key: str) -> None:
        from core.write import pack_thumbnails
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

        from core.index import build_index

        faiss.write_index(build_index(np.load(emb.path / "embeddings.npy", mmap_mode="r"), seed=cfg.seed),
                          str(tmp / "index.faiss"))

    return wd.run("index", {}, {"embed": emb.key}, build)


# ------------------------------------------------------------------------------------------------- all
def run_pipeline(cfg: Config, until: str = "bundle") -> dict[str, StageResult] | Path:
    """Run ``until`` and the stages it needs (``STAGE_INPUTS``), each cached; the bundle path, or the results."""
    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; one of {STAGES}")
    cfg = cfg.resolved()
    wd = WorkDir(cfg.work, log=log)
    results: dict[str, StageResult] = {}
    for name in stages_for(until):
        results[name] = STAGE_FUNCTIONS[name](wd, cfg, *(results[i] for i in STAGE_INPUTS[name]))
    return results if until != "bundle" else write(cfg, results)


# each stage of the graph (precompute.graph) and its function
STAGE_FUNCTIONS = {"ingest": ingest, "train": train, "embed": embed, "report": report, "project": project,
                   "stability": stability, "thumbnails": thumbnails, "index": index}
assert set(STAGE_FUNCTIONS) == set(STAGE_GRAPH), "every stage of precompute.graph needs its function here"

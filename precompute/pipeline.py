"""CLI for the pipeline: ``demo``, ``build`` and the single stages (``ingest``, ``train``, ``embed``, ``project``,
``thumbnails``, ``index``, ``bundle``).

A stage command runs the pipeline up to that stage; every stage is cached in the work folder (default
``<out>.work``) by a key of its arguments and inputs, so a rerun skips what is done and a killed run resumes
(training from its last per-epoch checkpoint)::

    python -m precompute demo --out bundles/demo
    python -m precompute build --survey first --catalog ../shared/data/first_mirabest/catalog.csv --out bundles/mirabest
    python -m precompute build --survey sdss --images sim/images.h5 --gz2 sim/gz2.csv --out bundles/sdss
    python -m precompute train --survey first --catalog ... --out bundles/mirabest   # stops after training
    torchrun --standalone --nproc_per_node 4 -m precompute embed --survey first --catalog ... --out bundles/mirabest
"""
from __future__ import annotations

import time
from pathlib import Path

from core.inputs import InputError
from core.surveys.base import buildable_surveys, get_survey
from models.checkpoints import FORMATS as CHECKPOINT_FORMATS
from precompute.cache import WorkDir
from precompute.config import (
    Config,
    add_train_options,
    default_of,
    log,
    settings_from_args,
)
from precompute.graph import STAGE_GRAPH
from precompute.shards import world_from_env
from precompute.stages import run_pipeline

# The demo must serve its first page within ~6 min on 2 CPU cores, simulation included: 12,000 galaxies and a narrow
# ResNet with the standard (strided) stem trained for 6 epochs on all of them with the SDSS CPU recipe (SimCLR, its
# brightness and size augmentations, whitened vectors). BENCHMARKS.md (issue 21) has the ablation that chose it.
DEMO = {"n": 12_000, "epochs": 6, "batch_size": 256, "arch": "small", "stem": "standard", "train_limit": None}


def add_arguments(parser, command: str) -> None:
    if command == "demo":
        parser.add_argument("--out", default="bundles/demo", help="bundle folder to write (default bundles/demo)")
        parser.add_argument("--n", type=int, default=DEMO["n"], help=f"simulated galaxies (default {DEMO['n']})")
    else:
        parser.add_argument("--survey", required=True, choices=buildable_surveys())
        parser.add_argument("--out", required=True, help="bundle folder to write")
        add_source_arguments(parser)
    parser.add_argument("--work", help="work folder for cached stage results (default <out>.work)")
    if command in ("demo", "build"):
        parser.add_argument("--stop-after", choices=tuple(STAGE_GRAPH),
                            help="run the stages up to this one and stop (e.g. report: compare training settings)")
    add_train_options(parser)
    parser.add_argument("--encoder-checkpoint", help="embed with this published encoder instead of training "
                                                     "(see --checkpoint-format)")
    parser.add_argument("--checkpoint-format", choices=tuple(CHECKPOINT_FORMATS),
                        help="hayat2021 (SDSS MoCo ResNet-50), slijepcevic2023 (RGZ/FIRST BYOL ResNet-18) or "
                             "torchvision (a ResNet-18/50 state dict); README 'Published encoders'")
    parser.add_argument("--rows-per-shard", type=int, default=default_of("embed_rows_per_shard"),
                        help="rows per embedding shard file; under torchrun each rank embeds whole shards")
    add_engine_options(parser)
    parser.add_argument("--pca-dim", type=int, default=default_of("pca_dim"))
    parser.add_argument("--n-neighbors", type=int, default=default_of("n_neighbors"))
    parser.add_argument("--min-dist", type=float, default=default_of("min_dist"))
    add_umap_sample_option(parser)
    parser.add_argument("--seed", type=int, default=default_of("seed"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def add_engine_options(parser) -> None:
    parser.add_argument("--engine", choices=("local", "dask"), default=default_of("engine"),
                        help="dask: embed the cutouts shard by shard on a dask.distributed cluster (the scheduler of "
                             "--dask-scheduler or $DASK_SCHEDULER_ADDRESS, else a LocalCluster with one worker per "
                             "core); the work folder must be on storage every worker sees")
    parser.add_argument("--dask-scheduler", metavar="ADDRESS",
                        help="a running Dask scheduler, e.g. tcp://head:8786 (implies --engine dask)")


def add_umap_sample_option(parser) -> None:
    parser.add_argument("--umap-sample-above", type=int, default=default_of("umap_sample_above"),
                        help="with more objects than this, fit UMAP on a 200,000-object sample that keeps every "
                             "family and place the rest from their nearest sampled objects (minutes instead of "
                             "hours at 10 M; docs/SCALING.md); a larger number forces UMAP on everything")


def config_from_args(args, survey: str, sources: dict, defaults: dict, source_note: dict | None = None) -> Config:
    out = Path(args.out)
    if bool(getattr(args, "encoder_checkpoint", None)) != bool(getattr(args, "checkpoint_format", None)):
        raise InputError("--encoder-checkpoint and --checkpoint-format go together: the file, and which published "
                         f"layout it has ({', '.join(CHECKPOINT_FORMATS)})")
    return Config(
        survey=survey, out=out, work=Path(args.work) if args.work else out.with_name(out.name + ".work"),
        sources=sources, train=settings_from_args(args, defaults), seed=args.seed,
        embed_rows_per_shard=args.rows_per_shard, engine="dask" if args.dask_scheduler else args.engine,
        dask_scheduler=args.dask_scheduler, pca_dim=args.pca_dim, n_neighbors=args.n_neighbors,
        min_dist=args.min_dist, umap_sample_above=args.umap_sample_above, progress=not args.no_progress,
        source_note=source_note or {},
        encoder_checkpoint=getattr(args, "encoder_checkpoint", None),
        checkpoint_format=getattr(args, "checkpoint_format", None))


def add_source_arguments(parser) -> None:
    """One option per input file any survey reads (``Survey.inputs``; ``gz_decals`` is ``--gz-decals``), its help
    naming each survey that reads it."""
    sources: dict[str, list] = {}
    for name in buildable_surveys():
        for source in get_survey(name).inputs:
            sources.setdefault(source.name, []).append(source)
    for name, given in sources.items():
        extra = {"nargs": "+", "action": "extend"} if any(s.many for s in given) else {}
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help="; ".join(s.help for s in given), **extra)


def survey_sources(args) -> dict:
    """The chosen survey's input files from the command line; InputError naming the missing required ones."""
    survey = get_survey(args.survey)
    sources = {}
    for source in survey.inputs:
        value = getattr(args, source.name, None)
        option = f"--{source.name.replace('_', '-')}"
        if source.required and not value:
            raise InputError(f"--survey {survey.name} needs {option}: {source.help}")
        if isinstance(value, list):   # another survey reads several files through the same option
            if len(value) > 1 and not source.many:
                raise InputError(f"--survey {survey.name} reads one {option} file; {len(value)} were given")
            value = value[0] if len(value) == 1 else list(value)
        sources[source.name] = value
    return sources


def simulate_demo_survey(work: Path, n: int, seed: int, progress: bool) -> Path:
    """Cached simulation of an SDSS-like survey for the demo; returns its folder."""
    from precompute.simulators import sim_sdss
    from precompute.simulators.simulate import simulate_sdss

    wd = WorkDir(work, log=log)
    res = wd.run("simulate", {"survey": "sdss", "n": n, "seed": seed, "version": sim_sdss.VERSION}, {},
                 lambda tmp, key: simulate_sdss(n, tmp, seed=seed, progress=progress))
    return res.path


def check_scheduler(address: str | None) -> None:
    """Fail before any stage runs when the named Dask scheduler does not answer (ClusterError names it)."""
    from core.cluster import connect, scheduler_address

    address = scheduler_address(address)
    if address:
        connect(address).close()


def run(args) -> int:
    t0 = time.perf_counter()
    if args.command == "demo":
        out = Path(args.out)
        work = Path(args.work) if args.work else out.with_name(out.name + ".work")
        sim = simulate_demo_survey(work, args.n, args.seed, not args.no_progress)
        sources = {"images": sim / "images.h5", "gz2": sim / "gz2.csv", "truth": sim / "truth.parquet"}
        sources = {k: v for k, v in sources.items() if v.is_file()}
        note = {"simulated": f"precompute.simulators.simulate.simulate_sdss(n={args.n}, seed={args.seed})"}
        cfg = config_from_args(args, "sdss", sources, DEMO, note)
        until = args.stop_after or "bundle"
    else:
        cfg = config_from_args(args, args.survey, survey_sources(args), {})
        until = (args.stop_after or "bundle") if args.command == "build" else args.command
    if cfg.engine == "dask":
        check_scheduler(cfg.dask_scheduler)
    if until == "embed" and world_from_env()[1] > 1:  # under torchrun: every rank embeds its own shards
        from precompute.shards import embed_distributed

        result = embed_distributed(cfg)
    else:
        result = run_pipeline(cfg, until=until)
    seconds = time.perf_counter() - t0
    if isinstance(result, Path):
        log(f"ok: bundle {result} in {seconds:.1f} s (explore it: `panel serve explorer --args --bundle {result}`"
            f"{'; make demo starts it for you' if args.command == 'demo' else ''})")
    else:
        last = result[until] if until in result else list(result.values())[-1]
        log(f"ok: stage {until} -> {last.path} in {seconds:.1f} s")
    return 0

"""What a self-supervised FIRST encoder learns, beside its untrained twin and pixel PCA, in one run (issue 12).

Trains one configuration on the union of the real FIRST samples (MiraBest + FRDEEP images, unlabelled), then
embeds every object with the trained encoder, the same architecture with random weights (3 seeds) and PCA-50 of
the preprocessed pixels -- each network both plainly and averaged over the 8 dihedral views -- and scores them on
MiraBest confident FRI/FRII (10 stratified 75/25 splits: 10-NN purity, standardised logistic-probe error),
FRDEEP FRI/FRII without its MiraBest objects, and MiraBest largest angular size (10-NN Spearman, ridge R^2).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_representation.py --method simclr --epochs 40
    .venv/bin/python benchmarks/bench_representation.py --method byol --arch resnet18 --bin 1 --crop 70 --epochs 20

Every run appends one JSON row to --results (default benchmarks/results/representation.jsonl); BENCHMARKS.md's
ablation table is read from those rows. Skips (exit 0, says why) when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import models  # noqa: F401  (first: OMP_WAIT_POLICY=PASSIVE before torch loads)
import numpy as np
import pandas as pd
import torch

from benchmarks.quick import add_quick, parse_quick, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CATALOGS = {"mirabest": DATA / "first_mirabest" / "catalog.csv", "frdeep": DATA / "first_frdeep" / "catalog.csv"}


def load_union(cache: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Both samples through the project's FIRST reader (cached as .npz: reading 1.9 k FITS files takes a minute)."""
    from core.surveys.first import FIRST

    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return pd.read_json(io.StringIO(z["catalog"].item())), z["images"]
    parts, images = [], []
    for name, path in CATALOGS.items():
        cut = FIRST().read_local(path)
        cat = cut.catalog.assign(sample=name)
        parts.append(cat)
        images.append(cut.images)
    catalog = pd.concat(parts, ignore_index=True)
    stack = np.concatenate(images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, catalog=np.array(catalog.to_json()), images=stack)
    return catalog, stack


def tasks(catalog: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """name -> (rows, labels, kind)."""
    mb = catalog["sample"].eq("mirabest")
    confident = mb & catalog["confidence"].eq("confident") & catalog["fr_class"].isin(["FRI", "FRII"])
    frdeep = catalog["sample"].eq("frdeep") & ~catalog["in_mirabest"].astype(str).eq("True")
    las = mb & catalog["angular_extent_arcsec"].notna()
    out = {}
    for name, mask, col, kind in (("mirabest_fr", confident, "fr_class", "categorical"),
                                  ("frdeep_fr", frdeep, "fr_class", "categorical"),
                                  ("mirabest_las", las, "angular_extent_arcsec", "continuous")):
        rows = np.flatnonzero(mask.to_numpy())
        out[name] = (rows, catalog[col].to_numpy()[rows], kind)
    return out


def score(features: np.ndarray, task_defs: dict) -> dict:
    from core import knowledge as kn

    out = {}
    for name, (rows, labels, kind) in task_defs.items():
        x = features[rows]
        if kind == "categorical":
            out[name] = kn.categorical_scores(x, labels, kn.stratified_splits(labels))
        else:
            values = np.log10(labels.astype(float))
            out[name] = kn.continuous_scores(x, values, kn.plain_splits(len(values)))
    out["health"] = {k: v for k, v in kn.health(features).items() if k != "flags"}
    return out


def whitened(features: np.ndarray) -> np.ndarray:
    """Centred and whitened as the pipeline's ``--whiten yes`` stores them (fitted on every image: all are trained on)."""
    from models.embed import post_process
    from precompute.prepare import fit_post

    post = fit_post(features, centre=True, whiten=True)
    return post_process(features, post["centre"], post["whiten"])


def build_augment(args):
    from models.augment import build_augmentations

    return build_augmentations("rotate_crop_flip_jitter", crop=args.crop, scale=(args.min_scale, 1.0), jitter_strength=args.jitter,
                               blur_p=args.blur_p)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="simclr")
    p.add_argument("--arch", default="small")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--bin", type=int, default=2)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--stretch", default="linear", choices=("linear", "asinh"))
    p.add_argument("--min-scale", type=float, default=0.8)
    p.add_argument("--jitter", type=float, default=0.5)
    p.add_argument("--blur-p", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--tau", type=float, default=None, help="BYOL tau_base")
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--untrained-seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="")
    p.add_argument("--cache", default=str(ROOT / ".bench-cache" / "first_union.npz"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "representation.jsonl"))
    p.add_argument("--limit", type=int, default=0, help="use only this many images (0: all)")
    add_quick(p, epochs=1, width=8, untrained_seeds=1, limit=200, batch_size=64, label="quick",
              results=lambda: str(scratch_dir() / "representation.jsonl"))
    args = parse_quick(p, argv)
    if not all(path.is_file() for path in CATALOGS.values()):
        print(f"skip: the real FIRST samples are not at {DATA} (see README: shared data)")
        return 0

    from models.embed import embed
    from models.encoders import build_encoder
    from models.train import TrainConfig, train
    from core.surveys.first import FIRST
    from sklearn.decomposition import PCA

    torch.set_num_threads(max(1, torch.get_num_threads()))
    catalog, raw = load_union(Path(args.cache))
    if args.limit:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(raw), min(args.limit, len(raw)), replace=False))
        catalog, raw = catalog.iloc[keep].reset_index(drop=True), raw[keep]
    survey = FIRST()
    prep = survey.fit_preprocessing(raw, bin=args.bin, crop=args.crop, stretch=args.stretch)
    normalised = survey.normalise(raw, prep)
    crops = survey.preprocess(raw, prep)
    encoder_cfg = {"arch": args.arch, "in_channels": 1, "stem": "standard",
                   "width": args.width if args.arch == "small" else None}
    method_cfg = {}
    if args.temperature is not None:
        method_cfg["temperature"] = args.temperature
    if args.tau is not None:
        method_cfg["tau_base"] = args.tau
    if args.hidden is not None:
        method_cfg["hidden_dim"] = args.hidden
    t0 = time.perf_counter()
    settings = TrainConfig(method=args.method, encoder=encoder_cfg, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
                           method_cfg=method_cfg, seed=args.seed, progress=False)
    encoder, history = train(normalised, build_augment(args), settings)
    train_s = time.perf_counter() - t0
    task_defs = tasks(catalog)
    results = {}
    for views in ("identity", "d4"):
        trained = embed(encoder, crops, dtype=np.float32, views=views)
        results[f"trained/{views}"] = score(trained, task_defs)
        results[f"trained/{views}/centred"] = score(trained - trained.mean(axis=0), task_defs)
        results[f"trained/{views}/whitened"] = score(whitened(trained), task_defs)
        for s in range(args.untrained_seeds):
            torch.manual_seed(1000 + s)
            twin = build_encoder(**encoder_cfg).eval()
            untrained = embed(twin, crops, dtype=np.float32, views=views)
            results[f"untrained{s}/{views}"] = score(untrained, task_defs)
            results[f"untrained{s}/{views}/whitened"] = score(whitened(untrained), task_defs)
    pixels = crops.reshape(len(crops), -1)
    results["pca50"] = score(PCA(50, random_state=0).fit_transform(pixels).astype(np.float32), task_defs)
    row = {"label": args.label, "args": vars(args), "train_seconds": round(train_s, 1),
           "steps": int(sum(h["steps"] for h in history)), "loss_first": history[0]["loss"],
           "loss_last": history[-1]["loss"], "n_images": int(len(raw)), "results": results,
           "when": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print_summary(row)
    return 0


def print_summary(row: dict) -> None:
    r = row["results"]
    print(f"{row['label']} {row['args']['method']} {row['args']['arch']} w{row['args']['width']} "
          f"ep{row['args']['epochs']} train {row['train_seconds']} s, {row['steps']} steps, "
          f"loss {row['loss_first']:.3f} -> {row['loss_last']:.3f}")
    for name in sorted(r):
        t = r[name]
        mb, fd, las, h = t["mirabest_fr"], t["frdeep_fr"], t["mirabest_las"], t["health"]
        print(f"  {name:20s} MB purity {mb['knn_purity']['mean']:.3f}±{mb['knn_purity']['se']:.3f} "
              f"err {mb['probe_error']['mean']:.3f}±{mb['probe_error']['se']:.3f} | "
              f"FRDEEP purity {fd['knn_purity']['mean']:.3f} err {fd['probe_error']['mean']:.3f} | "
              f"LAS rho {las['knn_spearman']['mean']:.2f} | pc1 {h['first_pc_share']:.2f} "
              f"PR {h['participation_ratio']:.1f} cos {h['median_random_cosine']:.2f}")


def markdown_table(rows: list[dict]) -> str:
    """BENCHMARKS.md's ablation table: one line per run, the trained encoder beside the mean of its untrained
    twins (both embedded with the same views) and pixel PCA, all from that run."""
    head = ("| run | method, net, epochs (steps) | train s | MiraBest 10-NN purity: trained / untrained / pixels "
            "| MiraBest probe error: trained / untrained / pixels | FRDEEP purity / error | LAS ρ | PC1, PR |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for row in rows:
        r, a = row["results"], row["args"]
        trained = r.get("trained/d4/centred", r["trained/d4"])
        twins = [v for k, v in r.items() if k.startswith("untrained") and k.endswith("/d4")]

        def m(res, task, metric):
            return res[task][metric]["mean"]

        def twin(task, metric):
            return float(np.mean([m(t, task, metric) for t in twins]))

        se = trained["mirabest_fr"]["knn_purity"]["se"]
        lines.append(
            f"| {row['label']} | {a['method']} {a['arch']} w{a['width']}, {a['epochs']} ({row['steps']}) "
            f"| {row['train_seconds']:.0f} | {m(trained, 'mirabest_fr', 'knn_purity'):.3f}±{se:.3f} / "
            f"{twin('mirabest_fr', 'knn_purity'):.3f} / {m(r['pca50'], 'mirabest_fr', 'knn_purity'):.3f} "
            f"| {100 * m(trained, 'mirabest_fr', 'probe_error'):.1f} / {100 * twin('mirabest_fr', 'probe_error'):.1f}"
            f" / {100 * m(r['pca50'], 'mirabest_fr', 'probe_error'):.1f} % "
            f"| {m(trained, 'frdeep_fr', 'knn_purity'):.3f} / {100 * m(trained, 'frdeep_fr', 'probe_error'):.1f} % "
            f"| {m(trained, 'mirabest_las', 'knn_spearman'):.2f} "
            f"| {trained['health']['first_pc_share']:.2f}, {trained['health']['participation_ratio']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        path = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "benchmarks" / "results" / "representation.jsonl"
        print(markdown_table([json.loads(line) for line in path.read_text().splitlines() if line.strip()]))
        sys.exit(0)
    sys.exit(main())

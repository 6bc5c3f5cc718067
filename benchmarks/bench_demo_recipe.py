"""Which demo recipe learns? Each variant trains on the demo's simulated survey and writes its report, where the
trained encoder stands beside its untrained twin and pixel PCA on the same objects (issue 21).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_demo_recipe --work /tmp/abl/work \\
        --variants demo_before size_brightness size_brightness_whiten

Variants share the work folder, so the simulation and ingest are made once and every trained encoder stays cached.
One JSON row per variant is appended to --results; ``--table`` prints BENCHMARKS.md's table from those rows.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import models  # noqa: F401  (first: OMP_WAIT_POLICY=PASSIVE before torch loads)
from benchmarks.quick import add_quick, parse_quick, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
SIZE_BRIGHTNESS = {"enable": ["brightness", "size"]}
# name -> Config overrides on top of precompute.pipeline.DEMO (6 epochs, batch 256, the small ResNet); the method is
# named in each, so that a variant means the same run whatever the survey's recipe says today
VARIANTS = {
    "demo_before": {"method": "moco", "train_limit": 6000, "augment": {}, "whiten": False},
    "size_brightness": {"method": "moco", "train_limit": 6000, "augment": SIZE_BRIGHTNESS, "whiten": False},
    "whiten": {"method": "moco", "train_limit": 6000, "augment": {}, "whiten": True},
    "size_brightness_whiten": {"method": "moco", "train_limit": 6000, "augment": SIZE_BRIGHTNESS, "whiten": True},
    "size_brightness_whiten_e10": {"method": "moco", "train_limit": 6000, "augment": SIZE_BRIGHTNESS, "whiten": True,
                                   "epochs": 10},
    "size_brightness_whiten_w32": {"method": "moco", "train_limit": 6000, "augment": SIZE_BRIGHTNESS, "whiten": True,
                                   "width": 32},
    "size_brightness_whiten_all": {"method": "moco", "train_limit": None, "augment": SIZE_BRIGHTNESS, "whiten": True},
    "byol_size_brightness_whiten_all": {"method": "byol", "train_limit": None, "augment": SIZE_BRIGHTNESS,
                                        "whiten": True},
    "simclr_size_brightness_whiten_all": {"method": "simclr", "train_limit": None, "augment": SIZE_BRIGHTNESS,
                                          "whiten": True},   # the demo now
}
HEADLINE = ("truth_type", "knn_purity"), ("truth_type", "probe_error")


def run_variant(name: str, work: Path, n: int, seed: int) -> dict:
    from precompute.config import Config, TrainSettings
    from precompute.pipeline import DEMO, simulate_demo_survey
    from precompute.stages import run_pipeline

    sim = simulate_demo_survey(work, n, seed, progress=False)
    sources = {"images": sim / "images.h5", "gz2": sim / "gz2.csv", "truth": sim / "truth.parquet"}
    settings = {**{k: v for k, v in DEMO.items() if k != "n"}, **VARIANTS[name]}
    cfg = Config(survey="sdss", out=work / f"bundle-{name}", work=work, sources=sources, seed=seed,
                 progress=False, train=TrainSettings(**settings))
    t0 = time.perf_counter()
    results = run_pipeline(cfg, until="report")
    seconds = time.perf_counter() - t0
    report = json.loads((results["report"].path / "report.json").read_text())
    encoder = json.loads((results["train"].path / "encoder" / "config.json").read_text())
    catalog = pd.read_parquet(results["ingest"].path / "catalog.parquet", columns=["truth_type"])
    embeddings = np.load(results["embed"].path / "embeddings.npy")
    return {"variant": name, "settings": settings, "n": n, "seed": seed, "wall_seconds": round(seconds, 1),
            "train_seconds": encoder.get("train_seconds"), "report": report,
            "type_neighbours": same_type_share(embeddings, catalog["truth_type"].astype(str).to_numpy()),
            "when": time.strftime("%Y-%m-%d %H:%M")}


def same_type_share(embeddings: np.ndarray, types: np.ndarray, k: int = 8, chunk: int = 2048) -> dict:
    """Per galaxy type: the mean share of an object's k nearest neighbours (cosine, in the whole bundle, what a click
    shows) that have its type -- the question "do the neighbours look like the same kind of galaxy?"."""
    unit = embeddings.astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    same = np.empty(len(unit))
    for s in range(0, len(unit), chunk):
        sims = unit[s:s + chunk] @ unit.T
        sims[np.arange(len(sims)), s + np.arange(len(sims))] = -np.inf
        nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        same[s:s + chunk] = (types[nn] == types[s:s + chunk, None]).mean(axis=1)
    return {t: round(float(same[types == t].mean()), 3) for t in sorted(set(types))}


def headline(row: dict) -> str:
    rep = row["report"]
    tasks = {t["name"]: t for t in rep["tasks"]}
    cells = []
    for task, metric in HEADLINE:
        t = tasks.get(task)
        if t is None:
            cells.append("—")
            continue
        s = t["scores"]
        fmt = (lambda v: f"{100 * v:.1f} %") if metric == "probe_error" else (lambda v: f"{v:.3f}")
        se = s["embedding"][metric]["se"]
        cells.append(f"{fmt(s['embedding'][metric]['mean'])} ±{(100 if metric == 'probe_error' else 1) * se:.{1 if metric == 'probe_error' else 3}f}"
                     f" / {fmt(s['untrained'][metric]['mean'])} / {fmt(s['pixel_pca'][metric]['mean'])}")
    meaning = {c["column"]: c for c in rep.get("similarity_meaning", {}).get("columns", [])}
    mag = meaning.get("r_mag", {}).get("sources", {})
    cells.append(" / ".join(f"{mag[s]['neighbours']:.2f}" for s in ("embedding", "untrained", "pixel_pca") if s in mag)
                 + (f" (random {mag['embedding']['random']:.2f})" if mag else "—"))
    h, raw = rep["health"], rep.get("encoder_health") or {}
    worse = [t["title"] for t in rep["tasks"] if any(v < 0 for v in t["beats"].get("untrained", {}).values())]
    raw_text = f"{raw['first_pc_share']:.0%}, {raw['participation_ratio']:.1f}" if raw else "—"
    return (f"| {row['variant']} | {row['train_seconds']} | {' | '.join(cells)} | {h['first_pc_share']:.0%}, "
            f"{h['participation_ratio']:.1f} | {raw_text} | {', '.join(worse) or 'none'} |")


def type_table(rows: list[dict]) -> str:
    """Per galaxy type, the share of a click's 8 neighbours (whole bundle) with the clicked galaxy's type."""
    types = sorted({t for r in rows for t in r.get("type_neighbours", {})})
    head = "| variant | " + " | ".join(t.replace("_", " ") for t in types) + " |\n|---|" + "---|" * len(types)
    lines = [f"| {r['variant']} | " + " | ".join(f"{8 * r['type_neighbours'].get(t, 0):.1f}/8" for t in types) + " |"
             for r in rows if r.get("type_neighbours")]
    return "\n".join([head, *lines])


def markdown_table(rows: list[dict]) -> str:
    head = ("| variant | train s | type 10-NN purity: trained / untrained / pixels | type probe error: trained / "
            "untrained / pixels | neighbours' r-mag difference: trained / untrained / pixels | stored PC1, PR "
            "| encoder PC1, PR | worse than untrained on |\n|---|---|---|---|---|---|---|---|")
    return "\n".join([head, *(headline(r) for r in rows)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(ROOT / ".bench-cache" / "demo-recipe"))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--n", type=int, default=12_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "demo_recipe.jsonl"))
    add_quick(p, n=300, variants=["size_brightness_whiten"], work=lambda: str(scratch_dir() / "work"),
              results=lambda: str(scratch_dir() / "demo_recipe.jsonl"))
    args = parse_quick(p, argv)
    if args.quick:   # a tiny training run: two optimiser steps
        VARIANTS["size_brightness_whiten"] = {**VARIANTS["size_brightness_whiten"], "max_steps": 2,
                                              "train_limit": 300, "batch_size": 64}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        row = run_variant(name, Path(args.work), args.n, args.seed)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(headline(row), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        path = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "benchmarks" / "results" / "demo_recipe.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        print(markdown_table(rows) + "\n\n" + type_table(rows))
        sys.exit(0)
    sys.exit(main())

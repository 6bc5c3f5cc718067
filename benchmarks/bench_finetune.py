"""BENCHMARK: label efficiency on FIRST (issue 23): fine-tuned vs supervised-from-scratch vs linear probe, held-out
error against the number of labels, beside Slijepcevic et al. 2023's Table 6; plus the time of the all-label
fine-tune.

Same labels (seeded subsets of the bundle's train split, MiraBest confident FRI/FRII), same held-out objects (val +
test splits), same seeds for the three methods (``core.finetune.compare``). Targets: fine-tuned below supervised at
every label count, by > 2 SE at <= 145 labels; <= 6 % with all confident labels; the all-label fine-tune <= 10 min.

    .venv/bin/python -m benchmarks.bench_finetune --bundle bundles/first          # the default FIRST bundle
    .venv/bin/python -m benchmarks.bench_finetune --quick                          # a tiny simulated bundle
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from benchmarks.quick import add_quick, parse_quick, scratch_dir

# Slijepcevic et al. 2023, Table 6: MiraBest Confident test error (%), mean +- SE over 10 seeds
PAPER = {36: (19.03, 1.39, 16.15, 1.00), 72: (18.75, 0.73, 11.83, 0.11), 145: (11.92, 0.50, 7.79, 0.76),
         291: (7.02, 0.63, 4.90, 0.53), 437: (5.77, 0.54, 4.52, 0.52), 583: (5.10, 0.29, 4.33, 0.36),
         656: (4.81, 0.16, 3.08, 0.35), 729: (4.81, 0.16, 1.92, 0.25)}


def tiny_bundle() -> Path:
    """A pipeline-built simulated FIRST bundle of 160 objects (its work folder beside it)."""
    from precompute.__main__ import main

    root = scratch_dir()
    assert main(["simulate", "--survey", "first", "--n", "160", "--out", str(root / "sim"), "--no-progress",
                 "--workers", "1"]) == 0
    assert main(["build", "--survey", "first", "--catalog", str(root / "sim" / "catalog.csv"), "--out",
                 str(root / "bundle"), "--epochs", "1", "--batch-size", "32", "--no-progress", "--n-neighbors",
                 "10"]) == 0
    return root / "bundle"


def table_markdown(table) -> str:
    """One row per number of labels: the three methods here (% +- SE), and the paper's two."""
    lines = ["| labels | fine-tuned (%) | supervised (%) | linear probe (%) | pixel probe (%) | paper: fine-tuned "
             "| paper: supervised |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted(set(table["n_labels"])):
        cells = []
        for method in ("fine-tuned", "supervised", "linear probe", "pixel probe"):
            row = table[(table["method"] == method) & (table["n_labels"] == n)]
            cells.append("–" if row.empty else f"{100 * row['mean'].iloc[0]:.1f} ± {100 * row['se'].iloc[0]:.1f}")
        paper = PAPER.get(int(n))
        cells += [f"{paper[2]:.2f} ± {paper[3]:.2f}", f"{paper[0]:.2f} ± {paper[1]:.2f}"] if paper else ["", ""]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="bundles/first")
    p.add_argument("--counts", nargs="+", default=["36", "72", "145", "291", "437", "583", "all"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, help="default: the command's (100 on a CPU, 300 on a GPU)")
    p.add_argument("--where", nargs="*", default=["confidence=confident"])
    p.add_argument("--classes", nargs="*", default=["FRI", "FRII"])
    p.add_argument("--keep", action="store_true", help="keep the all-label classifier in the bundle")
    p.add_argument("--out", help="JSON of every run and the table (default: a temporary file)")
    add_quick(p, bundle=tiny_bundle, counts=["12", "all"], seeds=2, epochs=1, where=[])
    a = parse_quick(p, argv)
    import pandas as pd

    from precompute.__main__ import main as precompute

    out = Path(a.out) if a.out else scratch_dir() / "finetune.json"
    command = ["finetune", "--bundle", str(a.bundle), "--column", "fr_class", "--label-counts", *a.counts,
               "--seeds", str(a.seeds), "--json", str(out), "--no-progress"]
    command += [f"--where={w}" for w in a.where] + (["--classes", *a.classes] if a.classes else [])
    command += (["--epochs", str(a.epochs)] if a.epochs else []) + ([] if a.keep else ["--no-save"])
    t0 = time.perf_counter()
    assert precompute(command) == 0, "the fine-tune command failed"
    seconds = time.perf_counter() - t0
    result = json.loads(out.read_text())
    table, runs = pd.DataFrame(result["table"]), pd.DataFrame(result["runs"])
    all_labels = runs["n_labels"].max()
    full = runs[(runs["method"] == "fine-tuned") & (runs["n_labels"] == all_labels)]["seconds"]
    print(table_markdown(table))
    print(json.dumps({"command": "python -m precompute " + " ".join(command), "seconds_total": seconds,
                      "all_label_finetune_seconds": float(full.mean()), "held_out_objects": result["n_test"], "settings": result["settings"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, indent=1, default=str))


if __name__ == "__main__":
    main()

"""The report stage: what the bundle's embedding knows, beside two baselines computed on the same objects.

For every labelled column (``Survey.report_tasks``), the figures of ``core.knowledge`` for
- ``embedding``: the bundle's own vectors;
- ``untrained``: the same architecture with random weights, with the same preprocessing, views and centring;
- ``pixel_pca``: PCA-50 of the preprocessed encoder inputs;
plus each one's health and the quantiles of the bundle's random-pair cosine (the explorer turns a neighbour's
score into a percentile with them). Written as ``report.json`` into the bundle.

    python -m precompute report --survey first --catalog ... --out DIR   # the pipeline up to this stage
    python -m precompute report --bundle DIR                              # health and embedding-only figures
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from core import knowledge as kn

REPORT_FORMAT = 1
MAX_EVAL_ROWS = 2000     # objects scored per report (a seeded sample of the labelled ones): minutes, not hours
MAX_TASKS = 8            # the survey's own tests first, then its colour-by columns in order
PCA_DIM = 50
SOURCE_TITLES = {"embedding": "this embedding", "untrained": "same network, untrained",
                 "pixel_pca": f"PCA-{PCA_DIM} of the pixels"}


def evaluation_rows(tasks: list[dict], n: int, seed: int = 0, limit: int = MAX_EVAL_ROWS) -> np.ndarray:
    """Sorted rows scored by the report: all labelled rows, or a seeded sample of ``limit`` of them."""
    labelled = np.zeros(n, bool)
    for t in tasks:
        labelled[t["rows"]] = True
    rows = np.flatnonzero(labelled)
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    return rows


def score_task(task: dict, features: dict[str, np.ndarray], position: np.ndarray, seed: int = 0) -> dict | None:
    """One task's figures for every feature source; None when too few rows are left to split."""
    rows = task["rows"][np.isin(task["rows"], position)]
    local = np.searchsorted(position, rows)
    labels = task["labels"][np.isin(task["rows"], position)]
    if task["kind"] == "categorical":
        mask = kn.usable_categorical(labels)
        local, labels = local[mask], np.asarray(labels[mask]).astype(str)
        if len(local) < 4 * kn.MIN_PER_CLASS:
            return None
        splits, scorer = kn.stratified_splits(labels, seed=seed), kn.categorical_scores
    else:
        if len(local) < 40:
            return None
        splits, scorer = kn.plain_splits(len(local), seed=seed), kn.continuous_scores
    scores = {name: scorer(f[local], labels, splits) for name, f in features.items()}
    out = {k: v for k, v in task.items() if k not in ("rows", "labels")}
    return {**out, "n": int(len(local)), "scores": scores, "beats": verdicts(task["kind"], scores)}


def verdicts(kind: str, scores: dict) -> dict:
    """Per baseline and metric: +1 when the embedding is better by more than 3 standard errors, -1 when worse by
    as much, 0 otherwise."""
    metrics = {"categorical": (("knn_purity", True), ("probe_error", False)),
               "continuous": (("knn_spearman", True), ("ridge_r2", True))}[kind]
    out = {}
    for base in ("untrained", "pixel_pca"):
        if base in scores:
            out[base] = {m: int(kn.beats(scores["embedding"][m], scores[base][m], hi))
                         - int(kn.beats(scores[base][m], scores["embedding"][m], hi)) for m, hi in metrics}
    return out


def task_outcome(task: dict, base: str = "untrained") -> str:
    """'better' (better on a metric, worse on none), 'worse' (the reverse) or 'same', against ``base``."""
    marks = task["beats"].get(base, {}).values()
    if any(m > 0 for m in marks) and not any(m < 0 for m in marks):
        return "better"
    if any(m < 0 for m in marks) and not any(m > 0 for m in marks):
        return "worse"
    return "same"


def _names(tasks: list[dict]) -> str:
    names = [t["title"] for t in tasks]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def summary(tasks: list[dict], health: dict) -> dict:
    """One verdict for the explorer's card: does the embedding know more than its untrained twin?"""
    scored = [t for t in tasks if "untrained" in t["beats"]]
    if not tasks:
        message, ok = "No labelled column to test this embedding on; only its health is known.", None
    elif not scored:
        message = "Baselines were not computed (they need the build's images); figures are for the embedding alone."
        ok = None
    else:
        better = [t for t in scored if task_outcome(t) == "better"]
        worse = [t for t in scored if task_outcome(t) == "worse"]
        ok = bool(better) and len(better) > len(worse)
        if not better:
            message = f"Does not beat its untrained twin on any of {len(scored)} labelled tests."
        else:
            message = f"Beats its untrained twin on {len(better)} of {len(scored)} labelled tests ({_names(better)})"
            message += f"; worse on {_names(worse)}" if worse else ""
            message += "; the same within 3 standard errors on the rest." if len(better) + len(worse) < len(scored) \
                else "."
    if health["flags"]:
        message += " Warning: " + "; ".join(health["flags"]) + "."
    return {"beats_untrained": ok, "message": message}


def build_report(tasks: list[dict], features: dict[str, np.ndarray], position: np.ndarray,
                 embeddings: np.ndarray, notes: dict | None = None, seed: int = 0) -> dict:
    """The report dict. ``features[name]`` holds one row per entry of ``position`` (sorted bundle rows);
    ``embeddings`` is the bundle's whole matrix (health and similarity reference)."""
    t0 = time.perf_counter()
    health = kn.health(embeddings, seed=seed)
    scored = [r for t in tasks if (r := score_task(t, features, position, seed)) is not None]
    return {
        "format": REPORT_FORMAT, "k": kn.K, "n_splits": kn.N_SPLITS, "test_size": kn.TEST_SIZE,
        "n_evaluated": int(len(position)),
        "sources": {name: {"title": SOURCE_TITLES[name],
                           "health": health if name == "embedding" else
                           {k: v for k, v in kn.health(f, seed=seed).items()}}
                    for name, f in features.items()},
        "health": health,
        "tasks": scored,
        "summary": summary(scored, health),
        "similarity_reference": kn.similarity_reference(embeddings, seed=seed),
        "notes": notes or {},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def format_table(report: dict) -> str:
    """The report as a plain-text table (what the CLI prints)."""
    lines = []
    h = report["health"]
    lines.append(f"health: first PC {h['first_pc_share']:.0%} of the variance, participation ratio "
                 f"{h['participation_ratio']:.1f}, median random-pair cosine {h['median_random_cosine']:.3f}")
    sources = list(report["sources"])
    lines.append(f"{'task':52s} {'metric':14s} " + " ".join(f"{s:>16s}" for s in sources))
    for t in report["tasks"]:
        for metric, cell in t["scores"]["embedding"].items():
            row = " ".join(_cell_text(t["scores"][s][metric]) for s in sources)
            lines.append(f"{(t['title'] + f' (n={t[chr(110)]})')[:52]:52s} {metric:14s} {row}")
    lines.append(report["summary"]["message"])
    return "\n".join(lines)


def _cell_text(score: dict) -> str:
    if score["mean"] is None:
        return f"{'—':>16s}"
    se = "" if score["se"] is None else f"±{score['se']:.3f}"
    return f"{score['mean']:>10.3f}{se:<6s}"


def write_report(report: dict, path: Path) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, allow_nan=False, default=_plain))
    tmp.replace(path)
    return path


def _plain(obj):
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


# ------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser, command: str) -> None:
    parser.add_argument("bundle", help="bundle folder")
    parser.add_argument("--write", action="store_true",
                        help="write report.json into the bundle (default: print only)")


def embedding_only_report(tasks: list[dict], n: int, embeddings: np.ndarray, seed: int = 0) -> dict:
    """The report of an embedding with no network or images to compare it with (an old bundle, or embeddings
    made elsewhere): its health and its figures on the labelled tasks."""
    tasks = tasks[:MAX_TASKS]
    rows = evaluation_rows(tasks, n, seed)
    features = {"embedding": np.asarray(embeddings[rows], dtype=np.float32)}
    return build_report(tasks, features, rows, embeddings,
                        notes={"baselines": "not computed: they need the build's images"}, seed=seed)


def run(args) -> int:
    """Health and embedding-only figures of an existing bundle (the baselines need the build's images: run
    `python -m precompute build ... --stop-after report` for those)."""
    from core.bundle import Bundle
    from precompute.assemble import colour_columns
    from core.surveys.base import get_survey

    bundle = Bundle.open(args.bundle)
    catalog = bundle.catalog
    try:
        survey = get_survey(bundle.survey)
        tasks = survey.report_tasks(catalog, colour_columns(survey, catalog))
    except KeyError:   # a survey this installation does not know: its manifest still names the labelled columns
        tasks = kn.catalogue_tasks(catalog, bundle.manifest.get("colour_by", {}))
    rep = embedding_only_report(tasks, len(catalog), bundle.embeddings)
    print(format_table(rep))
    if args.write:
        write_report(rep, Path(args.bundle) / "report.json")
        print(f"wrote {Path(args.bundle) / 'report.json'}")
    return 0

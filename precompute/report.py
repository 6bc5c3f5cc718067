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


def task_inputs(task: dict, position: np.ndarray, seed: int = 0):
    """(rows of ``position`` to score, their labels, the splits, the scorer) for one task; None when too few rows
    are left to split."""
    inside = np.isin(task["rows"], position)
    local = np.searchsorted(position, task["rows"][inside])
    labels = task["labels"][inside]
    if task["kind"] == "categorical":
        mask = kn.usable_categorical(labels)
        local, labels = local[mask], np.asarray(labels[mask]).astype(str)
        if len(local) < 4 * kn.MIN_PER_CLASS:
            return None
        return local, labels, kn.stratified_splits(labels, seed=seed), kn.categorical_scores
    if len(local) < 40:
        return None
    return local, labels, kn.plain_splits(len(local), seed=seed), kn.continuous_scores


def score_tasks(tasks: list[dict], features: dict[str, np.ndarray], position: np.ndarray, seed: int = 0,
                n_jobs: int | None = None) -> list[dict]:
    """Every task's figures for every feature source, the (task, source) fits spread over ``n_jobs`` processes
    (default: the usable cores, at most 4; the probes' fits are most of the report's time)."""
    from joblib import Parallel, delayed, effective_n_jobs

    prepared = [(t, inputs) for t in tasks if (inputs := task_inputs(t, position, seed)) is not None]
    calls = [delayed(scorer)(f[local], labels, splits)
             for _, (local, labels, splits, scorer) in prepared for f in features.values()]
    n_jobs = n_jobs or min(4, effective_n_jobs(-1), max(1, len(calls)))
    scores = iter(Parallel(n_jobs=n_jobs)(calls))   # in the order of the calls: task by task, source by source
    out = []
    for task, (local, *_) in prepared:
        by_source = {name: next(scores) for name in features}
        meta = {k: v for k, v in task.items() if k not in ("rows", "labels")}
        out.append({**meta, "n": int(len(local)), "scores": by_source, "beats": verdicts(task["kind"], by_source)})
    return out


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


def _titles(tasks: list[dict], columns: dict | None) -> dict:
    """Colour-by titles and units, with a test's title for the column it labels as it is (e.g. "Galaxy type")."""
    out = {c: dict(spec) for c, spec in (columns or {}).items()}
    for t in tasks:
        if t["name"] == t.get("column") and t["kind"] == "categorical":
            out.setdefault(t["column"], {})["title"] = t["title"]
    return out


def similarity_meaning(catalog, features: dict, position: np.ndarray, columns: dict, seed: int = 0) -> dict:
    """How strongly 10-NN pairs agree on every catalogue column compared with random pairs, for each source, among
    the evaluated objects (``core.knowledge.neighbour_agreement``), strongest agreement of the embedding first."""
    evaluated = catalog.iloc[position].reset_index(drop=True)   # only these rows' values are read
    rows = kn.neighbour_agreement(features, np.arange(len(position)), kn.agreement_columns(evaluated), seed=seed)
    for row in rows:
        spec = columns.get(row["column"], {})
        row["title"] = spec.get("title", row["column"])
        row["units"] = spec.get("units", "")
    rows.sort(key=lambda r: -(r["sources"].get("embedding", {}).get("agreement") or -1))
    return {"what": f"for each column: pairs of an object and one of its {kn.K} nearest neighbours, beside random "
                    "pairs of the same objects. categorical: the share of pairs with the same value; continuous: "
                    "the median absolute difference (of log10 values where 'log'); agreement: 0 no better than "
                    "random, 1 always the same (continuous: from the mean difference of the values' ranks)",
            "n_objects": int(len(position)), "columns": rows}


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
                 embeddings: np.ndarray, notes: dict | None = None, seed: int = 0,
                 encoder_health: dict | None = None, catalog=None, columns: dict | None = None) -> dict:
    """The report dict. ``features[name]`` holds one row per entry of ``position`` (sorted bundle rows);
    ``embeddings`` is the bundle's whole matrix (health and similarity reference); ``encoder_health``: the health
    of the encoder's representation before whitening, when the stored embedding is whitened; ``catalog`` (with
    ``columns``, its colour-by titles and units): what neighbours share, column by column (``similarity_meaning``)."""
    t0 = time.perf_counter()
    health = kn.health(embeddings, seed=seed)
    scored = score_tasks(tasks, features, position, seed)
    return {
        "format": REPORT_FORMAT, "k": kn.K, "n_splits": kn.N_SPLITS, "test_size": kn.TEST_SIZE,
        "n_evaluated": int(len(position)),
        "sources": {name: {"title": SOURCE_TITLES[name],
                           "health": health if name == "embedding" else
                           {k: v for k, v in kn.health(f, seed=seed).items()}}
                    for name, f in features.items()},
        "health": health,
        **({"encoder_health": encoder_health} if encoder_health else {}),
        "tasks": scored,
        "summary": summary(scored, health),
        **({"similarity_meaning": similarity_meaning(catalog, features, position, _titles(tasks, columns), seed)}
           if catalog is not None and len(position) > kn.K + 1 else {}),
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
    meaning = report.get("similarity_meaning")
    if meaning and meaning["columns"]:
        lines.append(f"what neighbours share ({meaning['n_objects']} objects, each with its {report['k']} nearest; "
                     f"same value / median difference, and agreement 0-1), strongest first:")
        for col in meaning["columns"][:MAX_MEANING_LINES]:
            cells = " ".join(_meaning_cell(col["sources"][s]) for s in sources if s in col["sources"])
            random = col["sources"]["embedding"]["random"]
            lines.append(f"  {col['title'][:50]:50s} {cells}  random pairs {_number(random)}")
        if len(meaning["columns"]) > MAX_MEANING_LINES:
            lines.append(f"  ... {len(meaning['columns']) - MAX_MEANING_LINES} more columns in report.json")
    if report.get("stability"):
        lines.append(format_stability(report["stability"]))
    return "\n".join(lines)


MAX_MEANING_LINES = 12


def format_stability(stability: dict) -> str:
    """The ``stability`` section as text: per perturbation, how far copies move in each space."""
    lines = [f"stability under augmentations ({stability['n_objects']} objects, each copy's distance to its original "
             "as the share of random pairs that are closer (0 = closer than any), and its shift on the map in units "
             "of the median distance between random objects):",
             f"  {'copy':16s} {'embedding rank':>15s} {'pixel rank':>11s} {'embedding map':>14s} {'pixel map':>10s}"]
    for row in stability["perturbations"]:
        lines.append(f"  {row['name'][:16]:16s} {_number(row['embedding_rank']):>15s} {_number(row['pixel_rank']):>11s}"
                     f" {_number(row['embedding_map_shift']):>14s} {_number(row['pixel_map_shift']):>10s}")
    ranks, shifts = stability["median_rank"], stability["median_map_shift"]
    lines.append(f"  {'all copies':16s} {_number(ranks['embedding']):>15s} {_number(ranks['pixels']):>11s} "
                 f"{_number(shifts['embedding']):>14s} {_number(shifts['pixels']):>10s}")
    lines.append(f"  median displacement ratio embedding / pixels: rank {_number(stability.get('rank_ratio'))}, "
                 f"map {_number(stability.get('map_shift_ratio'))}")
    return "\n".join(lines)


def _number(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def _meaning_cell(cell: dict) -> str:
    return f"{_number(cell['neighbours']):>8s} ({_number(cell['agreement']):>5s})"


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


def embedding_only_report(tasks: list[dict], n: int, embeddings: np.ndarray, seed: int = 0, catalog=None,
                          columns: dict | None = None) -> dict:
    """The report of an embedding with no network or images to compare it with (an old bundle, or embeddings
    made elsewhere): its health, its figures on the labelled tasks and (with ``catalog``) what neighbours share."""
    tasks = tasks[:MAX_TASKS]
    rows = evaluation_rows(tasks, n, seed)
    features = {"embedding": np.asarray(embeddings[rows], dtype=np.float32)}
    return build_report(tasks, features, rows, embeddings,
                        notes={"baselines": "not computed: they need the build's images"}, seed=seed,
                        catalog=catalog, columns=columns)


def _readable_report(path: Path) -> dict | None:
    from core.contract import read_report

    try:
        return read_report(path)
    except ValueError:
        return None


def run(args) -> int:
    """Health and embedding-only figures of an existing bundle (the baselines need the build's images: run
    `python -m precompute build ... --stop-after report` for those)."""
    from core.bundle import Bundle
    from core.surveys.base import get_survey
    from precompute.assemble import colour_columns

    bundle = Bundle.open(args.bundle)
    catalog = bundle.catalog
    columns = bundle.manifest.get("colour_by", {})
    try:
        survey = get_survey(bundle.survey)
        tasks = survey.report_tasks(catalog, colour_columns(survey, catalog))
    except KeyError:   # a survey this installation does not know: its manifest still names the labelled columns
        tasks = kn.catalogue_tasks(catalog, columns)
    rep = embedding_only_report(tasks, len(catalog), bundle.embeddings, catalog=catalog, columns=columns)
    kept = _readable_report(Path(args.bundle) / "report.json")
    if kept and kept.get("stability"):   # measured by the build on its images: still true of these embeddings
        rep["stability"] = kept["stability"]
    print(format_table(rep))
    if args.write:
        write_report(rep, Path(args.bundle) / "report.json")
        print(f"wrote {Path(args.bundle) / 'report.json'}")
    return 0

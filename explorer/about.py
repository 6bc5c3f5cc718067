"""The "About this embedding" card: what the bundle's report.json says the embedding knows, beside its baselines.

The verdict comes first and says plainly when the embedding does not beat its untrained twin; then one line per
labelled test with the headline figure of each source, and the embedding's health.
"""
from __future__ import annotations

import panel as pn

from explorer.markup import html, text

HEADLINE = {"categorical": ("knn_purity", "10-NN purity", True), "continuous": ("knn_spearman", "10-NN Spearman ρ", True)}
PROBE = {"categorical": ("probe_error", "linear-probe error", False), "continuous": ("ridge_r2", "ridge R²", True)}
SOURCE_SHORT = {"embedding": "this", "untrained": "untrained", "pixel_pca": "pixels"}
MAX_TASKS = 6

CSS = """
.about-card {font-size: 12px; line-height: 1.35;}
.about-verdict {padding: 6px 8px; border-radius: 4px; margin-bottom: 6px;}
.about-good {background: #e6f4ea; color: #174d26;}
.about-bad {background: #fdecea; color: #7a1c12;}
.about-unknown {background: #f1f3f4; color: #333;}
.about-card table {border-collapse: collapse; width: 100%;}
.about-card th, .about-card td {padding: 1px 4px; text-align: right; white-space: nowrap;}
.about-card td:first-child {white-space: normal;}
.about-card th:first-child, .about-card td:first-child {text-align: left;}
.about-card td.win {font-weight: 600;}
"""


def verdict_class(ok) -> str:
    return {True: "about-good", False: "about-bad"}.get(ok, "about-unknown")


def _cell(task: dict, source: str, metric: str, higher: bool) -> str:
    score = task["scores"].get(source, {}).get(metric)
    if score is None or score.get("mean") is None:
        return "<td>—</td>"
    values = [s[metric]["mean"] for s in task["scores"].values() if s.get(metric, {}).get("mean") is not None]
    best = max(values) if higher else min(values)
    win = " class='win'" if source == "embedding" and score["mean"] == best else ""
    shown = f"{100 * score['mean']:.1f} %" if metric == "probe_error" else f"{score['mean']:.2f}"
    se = "" if score.get("se") is None else f"± {score['se']:.3f} (standard error over the splits)"
    return f"<td{win} title='{se}'>{shown}</td>"


def task_rows(task: dict, sources: list[str]) -> str:
    rows = []
    for metric, label, higher in (HEADLINE[task["kind"]], PROBE[task["kind"]]):
        cells = "".join(_cell(task, s, metric, higher) for s in sources)
        rows.append(f"<tr><td>{text(task['title'])} · {label}</td>{cells}</tr>")
    return "".join(rows)


def about_html(report: dict | None) -> str:
    """The card's HTML (every string from the report is escaped)."""
    if report is None:
        return ("<div class='about-card'><div class='about-verdict about-unknown'>This bundle has no report.json: "
                "nothing says yet what its embedding knows. Rebuild it with <code>python -m precompute build</code> "
                "to compare it with an untrained network and with the pixels.</div></div>")
    summary = report["summary"]
    sources = [s for s in ("embedding", "untrained", "pixel_pca") if s in report.get("sources", {})]
    head = "".join(f"<th>{SOURCE_SHORT[s]}</th>" for s in sources)
    body = "".join(task_rows(t, sources) for t in report["tasks"][:MAX_TASKS])
    h = report["health"]
    health = (f"Health: first principal component {100 * h['first_pc_share']:.0f} % of the variance · "
              f"{h['participation_ratio']:.1f} effective dimensions · median cosine of random pairs "
              f"{h['median_random_cosine']:.2f}")
    table = (html("<table><tr><th>test (n objects, {} splits)</th>", report.get("n_splits", 10))
             + f"{head}</tr>{body}</table>" if body else "")
    more = len(report["tasks"]) - MAX_TASKS
    note = f"<div class='muted'>{more} more tests in report.json</div>" if more > 0 else ""
    return (f"<div class='about-card'><div class='about-verdict {verdict_class(summary.get('beats_untrained'))}'>"
            f"{text(summary['message'])}</div>{table}{note}<div class='muted'>{text(health)}</div>"
            f"<div class='muted'>“untrained”: the same network with random weights, embedded the same way; "
            f"“pixels”: PCA-50 of the encoder's input pixels. Bold: this embedding is best.</div></div>")


def build_about_section(data, state):
    """Sidebar section: the report card (collapsed when the embedding beats its baselines)."""
    try:
        report = data.report
    except ValueError as e:   # validation already checked it; a file changed since gives this, not a blank page
        return pn.pane.HTML(html("<div style='background:#fff4e5;color:#663c00;border-radius:4px;padding:6px 8px'>"
                                 "report.json could not be read: {}</div>", e))
    pn.extension(raw_css=[CSS])
    ok = report["summary"].get("beats_untrained") if report else None
    card = pn.pane.HTML(about_html(report), sizing_mode="stretch_width", css_classes=["about-embedding"])
    return pn.Card(card, title="About this embedding", collapsed=ok is True, sizing_mode="stretch_width",
                   css_classes=["about-section"])


def _score_text(score: dict | None, metric: str) -> str:
    if score is None:
        return "—"
    return f"{100 * score['mean']:.1f} %" if metric == "probe_error" else f"{score['mean']:.3f}"


def _which_is_better(a: dict | None, b: dict | None, higher: bool) -> str:
    """'A', 'B' or 'same' (within 3 combined standard errors)."""
    if a is None or b is None:
        return "—"
    se = (float(a.get("se") or 0) ** 2 + float(b.get("se") or 0) ** 2) ** 0.5
    diff = a["mean"] - b["mean"]
    if abs(diff) <= 3 * se:
        return "same"
    return "A" if (diff > 0) == higher else "B"


def comparison_html(report_a: dict | None, report_b: dict | None, name_a: str, name_b: str) -> str:
    """The two bundles' embeddings on the labelled tests both reports hold: the headline and probe figure of each,
    and which is better beyond 3 combined standard errors. Each report was computed on its own bundle."""
    if report_a is None or report_b is None:
        return ("<div class='about-card muted compare-report'>One of the bundles has no report.json: rebuild it to "
                "compare what the two embeddings know.</div>")
    tasks_b = {t["name"]: t for t in report_b["tasks"]}
    rows = []
    for task in report_a["tasks"]:
        other = tasks_b.get(task["name"])
        if other is None or other["kind"] != task["kind"]:
            continue
        for metric, label, higher in (HEADLINE[task["kind"]], PROBE[task["kind"]]):
            a = task["scores"].get("embedding", {}).get(metric)
            b = other["scores"].get("embedding", {}).get(metric)
            rows.append(f"<tr><td>{text(task['title'])} · {label}</td><td>{_score_text(a, metric)}</td>"
                        f"<td>{_score_text(b, metric)}</td><td>{_which_is_better(a, b, higher)}</td></tr>")
    if not rows:
        return ("<div class='about-card muted compare-report'>The two reports share no labelled test: nothing to "
                "compare them on.</div>")
    return (f"<div class='about-card compare-report'><table><tr><th>test</th><th>A: {text(name_a)}</th>"
            f"<th>B: {text(name_b)}</th><th>better</th></tr>{''.join(rows)}</table><div class='muted'>"
            "Each figure is from its own bundle's report (10 splits); 'same': within 3 standard errors.</div></div>")

"""The "About this embedding" card: what the bundle's report.json says the embedding knows, beside its baselines.

The verdict comes first, in words, and says plainly when training taught the network nothing; then what neighbours
have in common (``report.json``'s ``similarity_meaning``) beside the untrained network, the pixels and random pairs;
warnings as what they mean for a search and what to do; then every labelled test beside the same baselines.
"""
from __future__ import annotations

import panel as pn

from explorer.markup import html, text

HEADLINE = {"categorical": ("knn_purity", "neighbours with the same label", True),
            "continuous": ("knn_spearman", "neighbours' value vs its own (rank correlation)", True)}
PROBE = {"categorical": ("probe_error", "error of a straight-line classifier", False),
         "continuous": ("ridge_r2", "share of its variation a straight-line fit predicts", True)}
SOURCE_SHORT = {"embedding": "this", "untrained": "untrained", "pixel_pca": "pixels"}
MAX_TASKS = 6
MAX_MEANING_ROWS = 6

CSS = """
.about-card {font-size: 12px; line-height: 1.35;}
.about-verdict {padding: 6px 8px; border-radius: 4px; margin-bottom: 6px;}
.about-verdict b {display: block; margin-bottom: 2px;}
.about-good {background: #e6f4ea; color: #174d26;}
.about-warn {background: #fff4e5; color: #663c00;}
.about-bad {background: #fdecea; color: #7a1c12;}
.about-unknown {background: #f1f3f4; color: #333;}
.about-card table {border-collapse: collapse; width: 100%; margin-bottom: 4px;}
.about-card th, .about-card td {padding: 1px 4px; text-align: right; white-space: nowrap;}
.about-card td:first-child {white-space: normal;}
.about-card th:first-child, .about-card td:first-child {text-align: left;}
.about-card td.win {font-weight: 600;}
.about-card td.about-task {font-weight: 600; padding-top: 4px; text-align: left; white-space: normal;}
.about-card td.about-metric {padding-left: 12px;}
.about-card h4 {margin: 6px 0 2px 0; font-size: 12px;}
.about-card ul {margin: 2px 0 4px 0; padding-left: 16px;}
.about-verdict ul {margin: 0; padding-left: 14px;}
"""


# ------------------------------------------------------------------------------------------- the verdict in words
def _outcomes(report: dict, base: str) -> tuple[list[str], list[str], int]:
    """(titles of tests the embedding wins against ``base``, titles it loses, number of tests compared)."""
    won, lost, n = [], [], 0
    for task in report["tasks"]:
        marks = list(task.get("beats", {}).get(base, {}).values())
        if not marks:
            continue
        n += 1
        if any(m > 0 for m in marks) and not any(m < 0 for m in marks):
            won.append(task["title"])
        elif any(m < 0 for m in marks):
            lost.append(task["title"])
    return won, lost, n


def verdict(report: dict) -> tuple[str, str, list[str]]:
    """(css class, headline, points): has training taught the network anything the pixels and an untrained copy of
    it do not already give? Coloured by the worst finding: red when it does not beat the untrained network, amber
    when it loses a test or its health warns, green otherwise."""
    won, lost, n = _outcomes(report, "untrained")
    won_px, lost_px, n_px = _outcomes(report, "pixel_pca")
    flags = report["health"].get("flags") or []
    if not n:
        return ("about-unknown", "Not compared with baselines",
                [report["summary"].get("message", "") or "This report has no labelled test with baselines."])
    if not won:
        return ("about-bad", "Training has not taught this network much",
                [f"On none of {n} labelled tests does it beat the same network with random weights: its neighbours "
                 "reflect the network's shape, not what it learnt. Train for longer or on more images."])
    points = [f"Better than the same network untrained on {len(won)} of {n} labelled tests"
              + (f"; worse on {_list(lost)}." if lost else ", worse on none.")]
    if n_px:
        points.append(f"Better than the raw pixels on {len(won_px)} of {n_px}"
                      + (f"; the pixels do better on {_list(lost_px)}." if lost_px else "."))
    css = "about-warn" if lost or flags else "about-good"
    head = "Training taught this network what the objects look like" if not lost else \
        "Training helped on some tests and hurt on others"
    return css, head, points


def _list(titles: list[str]) -> str:
    return ", ".join(titles[:3]) + (f" and {len(titles) - 3} more" if len(titles) > 3 else "")


def warnings_html(report: dict) -> str:
    """The health flags as what they mean for a search, and what to do."""
    h, items = report["health"], []
    top = max(meaning_rows(report), key=lambda c: c["sources"].get("embedding", {}).get("agreement") or -1,
              default=None)
    if h["first_pc_share"] > 0.5 or h["participation_ratio"] < 3:
        what = (f"neighbours mostly share {text(_short(top['title']).lower())}" if top else
                "neighbours mostly share one property")
        items.append(f"Most of the variation ({100 * h['first_pc_share']:.0f} %) lies along one direction: {what}, "
                     "before shape or type. Rebuild with <code>--whiten yes</code> or train for longer.")
    if h["median_random_cosine"] > 0.9:
        items.append(f"Any two objects score a similarity of about {h['median_random_cosine']:.2f}: rank neighbours "
                     "by the percentile shown beside each one, not by the score.")
    raw = report.get("encoder_health")
    note = ""
    if raw:
        note = (f"<div class='muted'>The stored vectors are whitened (every direction the network learnt weighs "
                f"the same in a search); before that, one direction held {100 * raw['first_pc_share']:.0f} % of "
                f"the variation.</div>")
    if not items:
        return note
    return "<h4>Warnings</h4><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" + note


# --------------------------------------------------------------------------------- what "similar" means, per column
def _meaning_value(col: dict, value: float | None) -> str:
    if value is None:
        return "—"
    if col["kind"] == "categorical":
        return f"{100 * value:.0f} %"
    if col["log"]:
        return f"×{10 ** value:.2f}"
    unit = f" {text(col['units'])}" if col.get("units") else ""
    return f"{value:.2g}{unit}"


def meaning_rows(report: dict) -> list[dict]:
    """The columns the card shows: the report's tests first (the survey's own questions), then its continuous
    colour-by columns (brightness, size, redshift ...), at most MAX_MEANING_ROWS."""
    columns = {c["column"]: c for c in report.get("similarity_meaning", {}).get("columns", [])}
    chosen = [t.get("column") for t in report["tasks"] if t["kind"] == "categorical"][:2]
    chosen += [c["column"] for c in report.get("similarity_meaning", {}).get("columns", [])
               if c["kind"] == "continuous" and c.get("units")]
    out = []
    for name in chosen:
        if name in columns and columns[name] not in out:
            out.append(columns[name])
    return out[:MAX_MEANING_ROWS]


def meaning_points(report: dict) -> list[str]:
    """"Neighbours share galaxy type 61 % of the time (random pairs 25 %, untrained 54 %, raw pixels 62 %)", "They
    match r magnitude closely: 0.30 mag apart, against 0.90 mag for random pairs"."""
    rows = meaning_rows(report)
    points = []
    cat = next((c for c in rows if c["kind"] == "categorical"), None)
    if cat:
        s = cat["sources"]
        base = ", ".join(f"{label} {_meaning_value(cat, s[k]['neighbours'])}" for k, label in
                         (("untrained", "untrained"), ("pixel_pca", "raw pixels")) if k in s)
        points.append(f"Neighbours share {text(_short(cat['title']).lower())} "
                      f"{_meaning_value(cat, s['embedding']['neighbours'])} of the time (random pairs "
                      f"{_meaning_value(cat, s['embedding']['random'])}{', ' + base if base else ''}).")
    cont = max((c for c in rows if c["kind"] == "continuous"),
               key=lambda c: c["sources"]["embedding"].get("agreement") or -1, default=None)
    if cont and (cont["sources"]["embedding"].get("agreement") or 0) > 0.3:
        s = cont["sources"]["embedding"]
        apart = "apart" if not cont["log"] else "of each other"
        points.append(f"They match {text(_short(cont['title']).lower())} closely: "
                      f"{_meaning_value(cont, s['neighbours'])} {apart}, against "
                      f"{_meaning_value(cont, s['random'])} for random pairs.")
    return points


def stability_points(report: dict) -> list[str]:
    """Hayat et al.'s Fig. 9 in words: how near rotated, shifted and noisy copies stay, beside the pixels."""
    st = report.get("stability")
    if not st or st["median_rank"].get("embedding") is None or st["median_rank"].get("pixels") is None:
        return []
    ranks, shifts = st["median_rank"], st["median_map_shift"]
    point = (f"Rotated, shifted or noisy copies of an object stay nearer to it than {_nearer(ranks['embedding'])} of "
             f"random pairs of objects (in raw pixels: {_nearer(ranks['pixels'])})")
    if shifts.get("embedding") is not None and shifts.get("pixels") is not None:
        point += (f"; on the map they land {shifts['embedding']:.2g} of a typical distance between objects away "
                  f"(on a map of their pixels: {shifts['pixels']:.2g})")
    return [text(point + ".")]


def _nearer(rank: float) -> str:
    nearer = 100 * (1 - float(rank))
    return "all but 0.01 %" if nearer >= 99.99 else f"{nearer:.4g} %"


def _short(title: str) -> str:
    """A title without its parenthesis: "Angular extent (petroR90, or ...)" -> "Angular extent"."""
    return title.split(" (")[0] or title


def meaning_table(report: dict, sources: list[str]) -> str:
    rows = meaning_rows(report)
    if not rows:
        return ""
    head = "".join(f"<th>{SOURCE_SHORT[s]}</th>" for s in sources) + "<th>random</th>"
    body = []
    for col in rows:
        cells = []
        best = max((col["sources"][s].get("agreement") or -1) for s in sources if s in col["sources"])
        for s in sources:
            cell = col["sources"].get(s, {})
            win = " class='win'" if s == "embedding" and (cell.get("agreement") or -1) == best else ""
            cells.append(f"<td{win}>{_meaning_value(col, cell.get('neighbours'))}</td>")
        random = _meaning_value(col, col["sources"]["embedding"].get("random"))
        body.append(f"<tr><td title='{text(col['title'])}'>{text(_short(col['title']))}</td>{''.join(cells)}"
                    f"<td>{random}</td></tr>")
    n = report["similarity_meaning"].get("n_objects")
    return (f"<h4>What neighbours have in common</h4><div class='muted'>Each of {n} objects beside its "
            f"{report.get('k', 10)} nearest: the share with the same value, or the typical difference.</div>"
            f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>")


# ------------------------------------------------------------------------------------------------------- the card
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
    rows = [f"<tr><td colspan='{len(sources) + 1}' class='about-task'>{text(task['title'])}</td></tr>"]
    for metric, label, higher in (HEADLINE[task["kind"]], PROBE[task["kind"]]):
        cells = "".join(_cell(task, s, metric, higher) for s in sources)
        rows.append(f"<tr><td class='about-metric'>{label}</td>{cells}</tr>")
    return "".join(rows)


def about_html(report: dict | None) -> str:
    """The card's HTML (every string from the report is escaped): the verdict in words, what neighbours have in
    common, warnings with what to do, then every test beside the baselines."""
    if report is None:
        return ("<div class='about-card'><div class='about-verdict about-unknown'>This bundle has no report.json: "
                "nothing says yet what its embedding knows. Rebuild it with <code>python -m precompute build</code> "
                "to compare it with an untrained network and with the pixels.</div></div>")
    css, head, points = verdict(report)
    sources = [s for s in ("embedding", "untrained", "pixel_pca") if s in report.get("sources", {})]
    points = [text(p) for p in points] + meaning_points(report) + stability_points(report)
    body = "".join(task_rows(t, sources) for t in report["tasks"][:MAX_TASKS])
    head_cells = "".join(f"<th>{SOURCE_SHORT[s]}</th>" for s in sources)
    tests = (html("<h4>Labelled tests ({} random splits into training and test objects)</h4>",
                  report.get("n_splits", 10)) + f"<table><tr><th></th>{head_cells}</tr>{body}</table>"
             if body else "")
    more = len(report["tasks"]) - MAX_TASKS
    note = f"<div class='muted'>{more} more tests in report.json</div>" if more > 0 else ""
    listed = "".join(f"<li>{p}</li>" for p in points)
    return (f"<div class='about-card'><div class='about-verdict {css}'><b>{text(head)}</b><ul>{listed}</ul></div>"
            f"{warnings_html(report)}"
            f"{meaning_table(report, sources)}{tests}{note}"
            f"<div class='muted'>“this”: the bundle's embedding; “untrained”: the same network with random weights, "
            f"used the same way; “pixels”: the 50 main patterns of the pixels (PCA); “random pairs”: two objects "
            f"picked at random. Bold: this embedding does best.</div></div>")


def build_about_section(data, state):
    """Sidebar section: the report card, open and coloured by the worst finding unless all is well."""
    try:
        report = data.report
    except ValueError as e:   # validation already checked it; a file changed since gives this, not a blank page
        return pn.pane.HTML(html("<div style='background:#fff4e5;color:#663c00;border-radius:4px;padding:6px 8px'>"
                                 "report.json could not be read: {}</div>", e))
    pn.extension(raw_css=[CSS])
    css = verdict(report)[0] if report else "about-unknown"
    card = pn.pane.HTML(about_html(report), sizing_mode="stretch_width", css_classes=["about-embedding"])
    colour = {"about-good": "#e6f4ea", "about-warn": "#fff4e5", "about-bad": "#fdecea"}.get(css, "#f1f3f4")
    return pn.Card(card, title="About this embedding", collapsed=css == "about-good", sizing_mode="stretch_width",
                   css_classes=["about-section"], header_background=colour)


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

"""The linear-probe sidebar section: fit a probe off the UI thread (progress, cancel), show its test metrics in
words, list the most uncertain unlabelled objects, and add this session's colour layers: the probe's prediction and
its trust (cosine distance to the nearest labelled training object, computed after the fit)."""
from __future__ import annotations

import html

import numpy as np
import panel as pn

from explorer import colour, probes
from explorer.labels_ui import session_for, store_for

N_CANDIDATES = 8
PROBE_KEY, TRUST_KEY = "session:probe", "session:probe-trust"
TRUST_TITLE = "Probe trust: distance to nearest labelled"


# ============================================================================================ colour layers
def probe_colour_layer(probe: probes.LinearProbe, pred: probes.Predictions, title: str) -> colour.ColourLayer:
    """The probe's per-object prediction as a colour layer: class codes for a multinomial probe, a 0-1 fraction
    scale for probabilities, a continuous scale for regressions (ridge, E(z))."""
    if probe.method == "multinomial":
        return colour.layer_from_values(PROBE_KEY, f"Probe: {title}", "categorical", pred.value,
                                        categories=tuple(str(c) for c in pred.classes))
    kind = "fraction" if probe.link == "sigmoid" else "continuous"
    return colour.layer_from_values(PROBE_KEY, f"Probe: {title}", kind, pred.value)


def trust_colour_layer(distance: np.ndarray) -> colour.ColourLayer:
    return colour.layer_from_values(TRUST_KEY, TRUST_TITLE, "continuous", distance, units="1 − cos")


# ============================================================================================ probe section
def probe_targets(data) -> dict[str, tuple[str, str | None]]:
    """Probe choices: every non-density colour-by column, and the user's labels."""
    out = {spec.label: ("column", name) for name, spec in data.specs.items() if spec.kind != "density"}
    out["My labels (multinomial)"] = ("labels", None)
    return out


def build_probe_section(data, state, argv: list[str] | None = None):
    """Fit a linear probe on the embeddings off the UI thread; show test metrics and labelling candidates."""
    session = session_for(state)
    targets = probe_targets(data)
    target = pn.widgets.Select(label="Probe target", options=list(targets))
    method = pn.widgets.Select(label="Method", options=["default", "z-bins (redshift)"], value="default")
    n_train = pn.widgets.IntInput(label="Training labels (0 = all)", value=0, start=0, step=100)
    fit = pn.widgets.Button(label="Fit probe", color="primary", css_classes=["probe-fit"])
    cancel = pn.widgets.Button(label="Cancel", color="light")
    bar = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", visible=False)
    status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["probe-status"])
    candidates = pn.pane.HTML("", sizing_mode="stretch_width")
    select_candidates = pn.widgets.Button(label="Select these candidates to label them", color="light",
                                          visible=False)
    last = {"candidates": np.zeros(0, np.int64)}

    def do_select_candidates(_):
        session.selection_method = "probe-candidate"  # the labels section records events with this method
        state.selection_ids = last["candidates"]

    select_candidates.on_click(do_select_candidates)
    runner = probes.ProbeRunner()
    split = data.split
    poll = {"cb": None, "kind": "fit"}  # kind: which job the runner holds, the fit or the trust after it
    trust_note = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["probe-trust"])

    def make_target():
        kind, column = targets[target.value]
        if kind == "labels":
            store = store_for(data, state.argv if argv is None else argv)
            return probes.target_from_labels(store.current(), data.catalog["object_id"])
        return probes.target_from_column(data.catalog, column, colour_by=data.bundle.colour_by)

    def job(tgt, meth, n, *, progress, cancel):
        probe = probes.fit_probe(data.bundle.embeddings, tgt, split, method=meth, n_train=n, progress=progress,
                                 cancel=cancel)
        pred = probes.score_all(probe, data.bundle.embeddings, progress=progress, cancel=cancel)
        # fit_probe drew its training rows with the same (target, split, n, seed 0): the trust layer's reference set
        train = probes.training_rows(tgt, split, n)
        return probe, pred, probes.uncertain_candidates(pred, tgt.labelled, N_CANDIDATES), train

    def trust_job(train_rows, *, progress, cancel):
        return probes.trust_distance(data.bundle.embeddings, train_rows, progress=progress, cancel=cancel)

    def start_polling():
        bar.param.update(visible=True, value=0)
        if poll["cb"] is None:
            poll["cb"] = pn.state.add_periodic_callback(check, period=250)

    def do_fit(_):
        try:
            tgt = make_target()
        except probes.ProbeError as e:
            status.object = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        meth = "z-bins" if method.value.startswith("z-bins") and tgt.kind == "continuous" else None
        runner.submit(job, tgt, meth, n_train.value or None)
        poll["kind"] = "fit"
        trust_note.object = ""
        start_polling()

    def check():
        current = runner.current
        if current is None:
            return
        bar.value = int(100 * current.progress)
        message = f"<span class='muted'>{html.escape(current.message)}</span>"
        if poll["kind"] == "fit":
            status.object = message
        else:
            trust_note.object = message
        if not current.done:
            return
        poll["cb"].stop()
        poll["cb"] = None
        bar.visible = False
        if current.cancelled:
            (status if poll["kind"] == "fit" else trust_note).object = "<span class='muted'>cancelled</span>"
            return
        try:
            result = current.future.result()
        except Exception as e:  # shown, not raised: the page must keep working
            shown = status if poll["kind"] == "fit" else trust_note
            shown.object = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
            return
        if poll["kind"] == "fit":
            show_fit(*result)
        else:
            state.add_colour_layer(trust_colour_layer(result))
            trust_note.object = (f"<span class='muted trust-ready'>colour by '{TRUST_TITLE}' to see where the probe "
                                 f"is far from its labelled objects</span>")

    def show_fit(probe, pred, cand, train_rows):
        spec = data.specs.get(probe.target)
        title = f"{spec.title if spec is not None else probe.target} ({probe.method} probe)"
        status.object = _metrics_html(probe, title)
        session.param.update(probe_values=pred.value, probe_title=title)
        state.add_colour_layer(probe_colour_layer(probe, pred, title))
        state.param.update(colour_by=PROBE_KEY, colour_range=None)   # show what was just fitted
        candidates.object = _candidates_html(data, cand, pred, probe.method)
        last["candidates"] = np.asarray(cand, dtype=np.int64)
        select_candidates.visible = len(cand) > 0
        runner.submit(trust_job, train_rows)  # after the fit, on the same background thread
        poll["kind"] = "trust"
        start_polling()

    fit.on_click(do_fit)
    cancel.on_click(lambda _: runner.current and runner.current.cancel())
    return pn.Column("### Linear probe", target, method, n_train, pn.Row(fit, cancel), bar, status, trust_note,
                     candidates, select_candidates,
                     css_classes=["probe-section"])


# what each probe metric is called and means, for the table under the fit
METRIC_WORDS = {
    "acc": ("accuracy", "share of test objects put in the right class"),
    "balanced_acc": ("balanced accuracy", "mean of the per-class recalls: not fooled by a dominant class"),
    "prec": ("precision", "of the objects the probe calls positive, the share that are"),
    "rec": ("recall", "of the positive objects, the share the probe finds"),
    "auc": ("ROC AUC", "chance a random positive scores above a random negative (0.5 = guessing, 1 = perfect)"),
    "n_high_quality": ("confident test objects", "test objects with a fraction above 0.8 or below 0.2: "
                                                 "the scores above use these, split at 0.5"),
    "bce": ("cross-entropy", "soft binary cross-entropy against the vote fractions (lower is better)"),
    "rmse": ("RMS error", "root-mean-square error, in the column's units"),
    "r2": ("R²", "share of the variance explained (0 = always predicting the mean, 1 = perfect)"),
    "bias": ("bias ⟨Δz⟩", "mean of Δz = (z_probe − z) / (1 + z)"),
    "sigma_mad": ("σ_MAD", "1.4826 × median absolute deviation of Δz: the scatter without outliers"),
    "eta_percent": ("outliers η (%)", "share of test objects with |Δz| > 0.05"),
}
NO_CANDIDATES_WHY = {
    "ridge": "A ridge probe predicts a value, not a probability, so it has no uncertainty to rank objects by and "
             "suggests no objects to label. Choose the z-bins method (redshift) for a probe that does.",
}


def _metrics_html(probe: probes.LinearProbe, title: str) -> str:
    rows = "".join(
        f"<tr><td title='{html.escape(METRIC_WORDS.get(k, (k, ''))[1])}'>{html.escape(METRIC_WORDS.get(k, (k,))[0])}"
        f"</td><td>{v:.4g}</td><td class='muted'>{html.escape(METRIC_WORDS.get(k, (k, ''))[1])}</td></tr>"
        for k, v in probe.metrics.items() if isinstance(v, (int, float)))
    return (f"<div class='probe-metrics'><b>{html.escape(title)}</b><br><span class='muted'>"
            f"{html.escape(probe.target)} · {probe.method} · trained on {probe.n_train:,}, tested on "
            f"{probe.n_test:,} held-out objects · {probe.fit_seconds:.1f} s</span><table>{rows}</table></div>")


def _candidates_html(data, rows: np.ndarray, pred: probes.Predictions, method: str) -> str:
    if len(rows) == 0:
        why = NO_CANDIDATES_WHY.get(method, "Every object already has a label: nothing left to suggest.")
        return f"<div class='probe-candidates muted'>{html.escape(why)}</div>"
    cards = "".join(
        f"<div style='display:inline-block;margin:2px;text-align:center;font-size:11px'>"
        f"<img class='candidate-thumb' src='{data.thumbnail_uri(int(i))}' width='64' height='64'>"
        f"<div>{html.escape(str(data.catalog['object_id'].iat[int(i)]))}</div>"
        f"<div class='muted'>{pred.value[int(i)]:.2f}</div></div>" for i in rows)
    return (f"<div class='probe-candidates'><b>Most uncertain unlabelled objects</b> (label these next: the probe "
            f"learns most from them)<br>{cards}</div>")

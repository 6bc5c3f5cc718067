"""The linear-probe sidebar section: fit a probe off the UI thread (progress, cancel), show its test metrics in
words, list the most uncertain unlabelled objects, and add this session's colour layers: the probe's prediction and
its trust (cosine distance to the nearest labelled training object, computed after the fit)."""
from __future__ import annotations

import numpy as np
import panel as pn

from explorer.jobs import JobRunner
from explorer.labels.labels_ui import session_for, store_for
from explorer.map import colour
from explorer.markup import text
from explorer.probes import probes
from explorer.settings import Settings

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


def build_probe_section(data, state, settings: Settings | None = None):
    """Fit a linear probe on the embeddings off the UI thread; show test metrics and labelling candidates; below it,
    fine-tune the encoder on the same target (``explorer.probes.finetune_ui``)."""
    from explorer.probes.finetune_ui import FineTunePanel

    panel = ProbePanel(data, state, settings)
    return pn.Column(panel.view, FineTunePanel(data, state, panel).view, sizing_mode="stretch_width")


class ProbePanel:
    """The probe section's widgets and what its buttons do. A fit and then the trust layer run as jobs
    (``explorer.jobs``): progress, results and errors come back on the session's event loop."""

    def __init__(self, data, state, settings: Settings | None = None):
        self.data, self.state, self.settings = data, state, settings
        self.session = session_for(state)
        self.targets = probe_targets(data)
        self.target = pn.widgets.Select(label="Probe target", options=list(self.targets))
        self.method = pn.widgets.Select(label="Method", options=["default", "z-bins (redshift)"], value="default")
        self.n_train = pn.widgets.IntInput(label="Training labels (0 = all)", value=0, start=0, step=100)
        fit = pn.widgets.Button(label="Fit probe", color="primary", css_classes=["probe-fit"])
        cancel = pn.widgets.Button(label="Cancel", color="light")
        self.bar = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", visible=False)
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["probe-status"])
        self.trust_note = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["probe-trust"])
        self.candidates = pn.pane.HTML("", sizing_mode="stretch_width")
        self.select_candidates = pn.widgets.Button(label="Select these candidates to label them", color="light",
                                                   visible=False)
        self.candidate_rows = np.zeros(0, np.int64)
        self.jobs = JobRunner("probe")
        fit.on_click(lambda _: self.fit())
        cancel.on_click(lambda _: self.cancel())
        self.select_candidates.on_click(lambda _: self.select_the_candidates())
        self.view = pn.Column("### Linear probe", self.target, self.method, self.n_train, pn.Row(fit, cancel),
                              self.bar, self.status, self.trust_note, self.candidates, self.select_candidates,
                              css_classes=["probe-section"])

    # -- the fit ------------------------------------------------------------------------------------------------
    def make_target(self) -> probes.ProbeTarget:
        kind, column = self.targets[self.target.value]
        if kind == "labels":
            store = store_for(self.data, self.settings or self.state.settings)
            return probes.target_from_labels(store.current(), self.data.catalog["object_id"])
        return probes.target_from_column(self.data.catalog, column, colour_by=self.data.bundle.colour_by)

    def fit(self) -> None:
        try:
            target = self.make_target()
        except probes.ProbeError as e:
            self.status.object = _error_html(str(e))
            return
        method = "z-bins" if self.method.value.startswith("z-bins") and target.kind == "continuous" else None
        self.trust_note.object = ""
        self.bar.param.update(visible=True, value=0)
        self.jobs.submit(fit_and_score, self.data.bundle.embeddings, target, self.data.split, method,
                         self.n_train.value or None, on_done=self.show_fit, on_error=self.fit_failed,
                         on_progress=lambda f, m: self.show_progress(self.status, f, m))

    def cancel(self) -> None:
        job = self.jobs.current
        if job is not None and not job.done:
            job.cancel()
            self.bar.visible = False
            self.status.object = "<span class='muted'>cancelled</span>"

    def show_progress(self, where, fraction: float, message: str) -> None:
        self.bar.value = int(100 * fraction)
        where.object = f"<span class='muted'>{text(message)}</span>"

    def fit_failed(self, message: str) -> None:   # shown, not raised: the page must keep working
        self.bar.visible = False
        self.status.object = _error_html(message)

    def show_fit(self, result) -> None:
        probe, pred, cand, train_rows = result
        self.bar.visible = False
        spec = self.data.specs.get(probe.target)
        title = f"{spec.title if spec is not None else probe.target} ({probe.method} probe)"
        self.status.object = _metrics_html(probe, title)
        self.session.param.update(probe_values=pred.value, probe_title=title)
        self.state.add_colour_layer(probe_colour_layer(probe, pred, title))
        self.state.param.update(colour_by=PROBE_KEY, colour_range=None)   # show what was just fitted
        self.candidates.object = _candidates_html(self.data, cand, pred, probe.method)
        self.candidate_rows = np.asarray(cand, dtype=np.int64)
        self.select_candidates.visible = len(cand) > 0
        self.bar.param.update(visible=True, value=0)
        self.jobs.submit(probes.trust_distance, self.data.bundle.embeddings, train_rows, on_done=self.show_trust,
                         on_error=self.trust_failed,
                         on_progress=lambda f, m: self.show_progress(self.trust_note, f, m))

    # -- the trust layer and the candidates -----------------------------------------------------------------
    def show_trust(self, distance: np.ndarray) -> None:
        self.bar.visible = False
        self.state.add_colour_layer(trust_colour_layer(distance))
        self.trust_note.object = (f"<span class='muted trust-ready'>colour by '{TRUST_TITLE}' to see where the probe "
                                  f"is far from its labelled objects</span>")

    def trust_failed(self, message: str) -> None:
        self.bar.visible = False
        self.trust_note.object = _error_html(message)

    def select_the_candidates(self) -> None:
        self.session.selection_method = "probe-candidate"  # the labels section records events with this method
        self.state.selection_ids = self.candidate_rows


def fit_and_score(embeddings, target: probes.ProbeTarget, split, method, n_train, *, progress, cancel):
    """Fit, score every object, and find the labelling candidates: (probe, predictions, candidates, train rows)."""
    probe = probes.fit_probe(embeddings, target, split, method=method, n_train=n_train, progress=progress,
                             cancel=cancel)
    pred = probes.score_all(probe, embeddings, progress=progress, cancel=cancel)
    # fit_probe drew its training rows with the same (target, split, n, seed 0): the trust layer's reference set
    train = probes.training_rows(target, split, n_train)
    return probe, pred, probes.uncertain_candidates(pred, target.labelled, N_CANDIDATES), train


def _error_html(message: str) -> str:
    return f"<span style='color:#b00'>{text(message)}</span>"


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
        f"<tr><td title='{text(METRIC_WORDS.get(k, (k, ''))[1])}'>{text(METRIC_WORDS.get(k, (k,))[0])}"
        f"</td><td>{v:.4g}</td><td class='muted'>{text(METRIC_WORDS.get(k, (k, ''))[1])}</td></tr>"
        for k, v in probe.metrics.items() if isinstance(v, (int, float)))
    return (f"<div class='probe-metrics'><b>{text(title)}</b><br><span class='muted'>"
            f"{text(probe.target)} · {probe.method} · trained on {probe.n_train:,}, tested on "
            f"{probe.n_test:,} held-out objects · {probe.fit_seconds:.1f} s</span><table>{rows}</table></div>")


def _candidates_html(data, rows: np.ndarray, pred: probes.Predictions, method: str) -> str:
    if len(rows) == 0:
        why = NO_CANDIDATES_WHY.get(method, "Every object already has a label: nothing left to suggest.")
        return f"<div class='probe-candidates muted'>{text(why)}</div>"
    cards = "".join(
        f"<div style='display:inline-block;margin:2px;text-align:center;font-size:11px'>"
        f"<img class='candidate-thumb' src='{data.thumbnail_uri(int(i))}' width='64' height='64'>"
        f"<div>{text(str(data.catalog['object_id'].iat[int(i)]))}</div>"
        f"<div class='muted'>{pred.value[int(i)]:.2f}</div></div>" for i in rows)
    return (f"<div class='probe-candidates'><b>Most uncertain unlabelled objects</b> (label these next: the probe "
            f"learns most from them)<br>{cards}</div>")

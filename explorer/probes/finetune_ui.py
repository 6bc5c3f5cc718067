"""The sidebar section "Fine-tune the encoder": the probe's target, learnt by the encoder itself.

- **Fine-tune the encoder on these labels**: the chosen class column (or the user's labels) trains the bundle's
  encoder with a linear head (``core.finetune``: layer-wise learning-rate decay, Slijepcevic et al. 2023), beside
  the same network trained from random weights and the linear probe, as one background job with progress and a
  cancel. The held-out errors come back as a table, the prediction for every object as this session's colour
  layer; the command that keeps the classifier in the bundle is shown.
- **Label-efficiency curve**: the linear probe's held-out error against the number of labels (3 seeds, measured
  now), with the fine-tuned and supervised curves the bundle keeps for that target (``precompute finetune
  --label-counts``).
- The classifiers the bundle keeps are colour layers from the start ("Fine-tuned: <name>").

A bundle whose embeddings were made elsewhere has no encoder to fine-tune; one whose build's cutouts are not on
this machine cannot train either: the section says so and what to do. One fine-tune runs at a time per server
(they share 2 cores); a second waits its turn.
"""
from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import panel as pn

from core import finetune as ft
from explorer.jobs import Cancelled, JobRunner
from explorer.map import colour
from explorer.markup import text
from explorer.probes import probes

FINETUNE_KEY = "session:finetuned"
METHOD_COLOURS = {"fine-tuned": "#1b9e77", "supervised": "#d95f02", "linear probe": "#7570b3",
                  "pixel probe": "#777777"}
CURVE_COUNTS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)
CURVE_SEEDS = 3
APP_EPOCHS = 50   # a CPU minute or two on a few hundred labels; the command line's default is 100

_FINETUNES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finetune")   # one at a time per server


# ============================================================================================ colour layers
def finetuned_layer(key: str, title: str, probabilities: np.ndarray, classes) -> colour.ColourLayer:
    """The most probable class of every object (no value where it had no cutout) as a categorical layer."""
    known = np.isfinite(probabilities).all(axis=1)
    codes = np.where(known, np.nan_to_num(probabilities).argmax(axis=1), np.nan).astype(np.float32)
    return colour.layer_from_values(key, title, "categorical", codes, categories=tuple(str(c) for c in classes))


def bundle_layers(data) -> list[colour.ColourLayer]:
    """The bundle's classifiers, titled by their target column's title when they have one."""
    def title(f):
        target = f.summary.get("target")
        spec = data.specs.get(target) if isinstance(target, str) else None
        return f"Fine-tuned: {spec.title if spec is not None else f.name}"

    return [finetuned_layer(f"finetuned:{f.name}", title(f), f.probabilities, f.classes) for f in data.finetuned]


# ============================================================================================ the jobs
def fine_tune_job(bundle, labels: ft.Labels, cfg, methods, *, progress, cancel):
    """(comparison, per-object probabilities) of fine-tuning ``bundle``'s encoder on ``labels``."""
    def checked(fraction, message):
        if cancel.is_set():
            raise Cancelled()
        progress(fraction, message)

    checked(0.0, "reading the cutouts")
    images = ft.find_images(bundle)
    comparison, final = ft.compare(bundle, labels, images, cfg, methods=methods,
                                   progress=lambda f, m: checked(0.95 * f, m))
    checked(0.95, "classifying every object")
    return comparison, ft.predict_all(final.model, bundle, images)


def probe_curve_job(embeddings, target: probes.ProbeTarget, split, *, progress, cancel) -> pd.DataFrame:
    """The linear probe's held-out error at each of ``CURVE_COUNTS`` the train split can supply, ``CURVE_SEEDS``
    seeds each: (method, n_labels, mean, se)."""
    available = len(probes.training_rows(target, split))
    sizes = [n for n in CURVE_COUNTS if n < available] + [available]
    rows = []
    for i, n in enumerate(sizes):
        errors = []
        for seed in range(CURVE_SEEDS):
            if cancel.is_set():
                raise Cancelled()
            try:
                probe = probes.fit_probe(embeddings, target, split, n_train=n, seed=seed)
            except probes.ProbeError:
                continue   # a small draw with a single class
            if "acc" in probe.metrics:
                errors.append(1 - probe.metrics["acc"])
        progress((i + 1) / len(sizes), f"linear probe with {n:,} labels")
        if errors:
            se = np.std(errors, ddof=1) / np.sqrt(len(errors)) if len(errors) > 1 else np.nan
            rows.append({"method": "linear probe", "n_labels": n, "mean": float(np.mean(errors)), "se": float(se)})
    return pd.DataFrame(rows)


# ============================================================================================ views
def comparison_html(comparison: ft.Comparison, title: str) -> str:
    table = comparison.table()
    rows = "".join(
        f"<tr><td style='color:{METHOD_COLOURS.get(r.method, '#333')}'><b>{text(r.method)}</b></td>"
        f"<td>{100 * r.mean:.1f} %</td><td class='muted'>{r.n_labels:,} labels · {r.seconds:.0f} s</td></tr>"
        for r in table.itertuples())
    return (f"<div class='finetune-result'><b>{text(title)}</b><br><span class='muted'>held-out error on "
            f"{comparison.n_test:,} objects (split val + test) · same labels for all three</span>"
            f"<table>{rows}</table></div>")


def keep_command(data, column: str | None) -> str:
    target = f"--column {shlex.quote(column)}" if column else "--labels-from-store"
    return (f"<span class='muted'>to keep this classifier in the bundle (and classify fetched cutouts with it): "
            f"<code>python -m precompute finetune --bundle {text(shlex.quote(str(data.bundle.path)))} "
            f"{text(target)}</code></span>")


def curve_figure(table: pd.DataFrame, title: str):
    """Error (%) against the number of labels, one line with ± SE whiskers per method, labels on a log axis."""
    from bokeh.models import ColumnDataSource, FixedTicker, Whisker
    from bokeh.plotting import figure

    fig = figure(height=320, sizing_mode="stretch_width", x_axis_type="log", title=title,
                 x_axis_label="training labels", y_axis_label="held-out error (%)", toolbar_location=None)
    for method, part in table.groupby("method", sort=False):
        part = part.sort_values("n_labels")
        se = part["se"].fillna(0).to_numpy()
        src = ColumnDataSource({"n": part["n_labels"].to_numpy(float), "err": 100 * part["mean"].to_numpy(),
                                "lo": 100 * (part["mean"].to_numpy() - se), "hi": 100 * (part["mean"].to_numpy() + se)})
        c = METHOD_COLOURS.get(method, "#333")
        fig.line("n", "err", source=src, color=c, line_width=2, legend_label=method)
        fig.scatter("n", "err", source=src, color=c, size=6, legend_label=method)
        fig.add_layout(Whisker(source=src, base="n", lower="lo", upper="hi", line_color=c))
    fig.xaxis.ticker = FixedTicker(ticks=spaced_ticks(table["n_labels"]))
    legend = fig.legend[0]
    legend.orientation, legend.label_text_font_size, legend.spacing = "horizontal", "9pt", 4
    fig.add_layout(legend, "below")   # inside, it hid the lines of a sidebar-wide chart
    return fig


def spaced_ticks(counts, min_ratio: float = 1.3) -> list[float]:
    """The label counts measured, as x ticks, leaving out any within ``min_ratio`` of the previous one (their
    labels would overlap on the log axis); the largest count is always kept."""
    values = sorted({float(n) for n in counts})
    ticks = []
    for v in values:
        if not ticks or v >= min_ratio * ticks[-1]:
            ticks.append(v)
    if values and ticks[-1] != values[-1]:
        ticks[-1] = values[-1]
    return ticks


def saved_curves(data, target_name: str) -> pd.DataFrame:
    """The curves (every method) the bundle keeps for ``target_name``, from its classifiers' summaries."""
    parts = [pd.DataFrame(f.summary.get("table") or []) for f in data.finetuned if f.summary.get("target") == target_name]
    parts = [p for p in parts if {"method", "n_labels", "mean", "se"} <= set(p.columns)]
    if not parts:
        return pd.DataFrame(columns=["method", "n_labels", "mean", "se"])
    table = pd.concat(parts, ignore_index=True)[["method", "n_labels", "mean", "se"]]
    numbers = table[["n_labels", "mean", "se"]].apply(pd.to_numeric, errors="coerce")   # a bundle's JSON: untrusted
    ok = numbers[["n_labels", "mean"]].notna().all(axis=1) & (numbers["n_labels"] > 0)
    return pd.concat([table["method"].astype(str), numbers], axis=1)[ok].reset_index(drop=True)


# ============================================================================================ section
class FineTunePanel:
    """The fine-tune section of one session; reads the probe section's target choice."""

    def __init__(self, data, state, probe_panel):
        self.data, self.state, self.probe = data, state, probe_panel
        self.epochs = pn.widgets.IntInput(label="Epochs", value=APP_EPOCHS, start=1, end=1000, width=110)
        self.depth = pn.widgets.Select(label="Layers to fine-tune", options=["all", "1", "2", "3", "0 (head only)"],
                                       value="all", width=130)
        self.baseline = pn.widgets.Checkbox(label="also train the supervised baseline (doubles the time)", value=True)
        self.go = pn.widgets.Button(label="Fine-tune the encoder on these labels", color="primary",
                                    css_classes=["finetune-go"])
        self.stop = pn.widgets.Button(label="Cancel", color="light", css_classes=["finetune-cancel"])
        self.curve_go = pn.widgets.Button(label="Label-efficiency curve", color="light",
                                          css_classes=["curve-go"])
        self.bar = pn.indicators.Progress(value=0, max=100, sizing_mode="stretch_width", visible=False)
        self.status = pn.pane.HTML(self.availability(), sizing_mode="stretch_width", css_classes=["finetune-status"])
        self.chart = pn.Column(sizing_mode="stretch_width", css_classes=["finetune-chart"])
        self.jobs = JobRunner(pool=_FINETUNES)
        self.curve_jobs = JobRunner("curve")
        self.go.on_click(lambda _: self.fine_tune())
        self.stop.on_click(lambda _: self.cancel())
        self.curve_go.on_click(lambda _: self.curve())
        self.go.disabled = not self.can_fine_tune
        for layer in bundle_layers(data):
            state.add_colour_layer(layer)
        self.view = pn.Column("### Fine-tune the encoder", pn.Row(self.epochs, self.depth), self.baseline,
                              pn.Row(self.go, self.stop), self.curve_go, self.bar, self.status, self.chart,
                              css_classes=["finetune-section"], sizing_mode="stretch_width")

    @property
    def can_fine_tune(self) -> bool:
        return not self.availability().startswith("<span class='finetune-unavailable")

    def availability(self) -> str:
        """What the section can do with this bundle, in a sentence."""
        why = ft.no_encoder(self.data.bundle)
        if why:
            return f"<span class='finetune-unavailable muted'>{text(why)}</span>"
        if ft.ingest_cache(self.data.bundle) is None:
            return ("<span class='finetune-unavailable muted'>The cutouts this bundle was built from are not on this "
                    "machine (the build's work folder is gone), so the encoder cannot be fine-tuned here; "
                    "<code>python -m precompute finetune</code> takes the survey's files again. Linear probes and the "
                    "label-efficiency curve still work.</span>")
        return ("<span class='muted'>Trains the encoder itself on the probe's target (a class column or your labels) "
                "with a learning rate that shrinks for deeper layers, beside the same network from random weights and "
                "the linear probe.</span>")

    def labels(self) -> tuple[ft.Labels, str | None, str]:
        target = self.probe.make_target()
        if target.kind != "categorical":
            raise ft.FineTuneError(f"fine-tuning learns classes; {self.probe.target.value!r} is a {target.kind} "
                                   "column: choose a class column or your labels as the probe target")
        _, column = self.probe.targets[self.probe.target.value]
        return ft.labels_from_values(target.values, column or "labels"), column, self.probe.target.value

    def config(self):
        from models.finetune import FineTuneConfig

        depth = None if self.depth.value == "all" else int(self.depth.value.split()[0])
        return FineTuneConfig(epochs=int(self.epochs.value), depth=depth)

    def fine_tune(self) -> None:
        try:
            labels, column, title = self.labels()
        except (ft.FineTuneError, probes.ProbeError) as e:
            self.status.object = _error(str(e))
            return
        methods = ft.METHODS if self.baseline.value else tuple(m for m in ft.METHODS if m != "supervised")
        self.bar.param.update(visible=True, value=0)
        self.status.object = "<span class='muted'>queued (one fine-tune at a time on this server)</span>"
        self.jobs.submit(fine_tune_job, self.data.bundle, labels, self.config(), methods,
                         on_done=lambda result: self.show(result, labels, column, title),
                         on_error=self.failed, on_progress=self.progress)

    def cancel(self) -> None:
        for jobs in (self.jobs, self.curve_jobs):
            if jobs.current is not None and not jobs.current.done:
                jobs.current.cancel()
                self.status.object = "<span class='muted'>cancelled</span>"
        self.bar.visible = False

    def progress(self, fraction: float, message: str) -> None:
        if any(j.current is not None and j.current.cancel_event.is_set() for j in (self.jobs, self.curve_jobs)):
            return   # a late report from a job already cancelled
        self.bar.value = int(100 * fraction)
        self.status.object = f"<span class='muted'>{text(message)}</span>"

    def failed(self, message: str) -> None:
        self.bar.visible = False
        self.status.object = _error(message)

    def show(self, result, labels: ft.Labels, column: str | None, title: str) -> None:
        comparison, proba = result
        self.bar.visible = False
        # the table first: whoever sees the layer appear (a test's thread, outside a server) sees the final words
        self.status.object = comparison_html(comparison, f"Fine-tuned on {title}") + keep_command(self.data, column)
        self.state.add_colour_layer(finetuned_layer(FINETUNE_KEY, f"Fine-tuned (this session): {title}", proba,
                                                    labels.classes))
        self.state.param.update(colour_by=FINETUNE_KEY, colour_range=None)

    def curve(self) -> None:
        """The bundle's own curves for the target when it keeps them (all three methods, the same held-out
        objects); else the linear probe's, measured now."""
        try:
            target = self.probe.make_target()
        except probes.ProbeError as e:
            self.status.object = _error(str(e))
            return
        if target.kind != "categorical":
            self.status.object = _error("the label-efficiency curve is drawn for class targets: choose a class column "
                                        "or your labels as the probe target")
            return
        _, column = self.probe.targets[self.probe.target.value]
        title = self.probe.target.value
        saved = saved_curves(self.data, column or "labels")
        if len(saved):
            self.show_curve(saved, column or "labels", title, measured_now=False)
            return
        self.bar.param.update(visible=True, value=0)
        self.curve_jobs.submit(probe_curve_job, self.data.bundle.embeddings, target, self.data.split,
                               on_done=lambda table: self.show_curve(table, column or "labels", title),
                               on_error=self.failed, on_progress=self.progress)

    def show_curve(self, table: pd.DataFrame, target_name: str, title: str, measured_now: bool = True) -> None:
        self.bar.visible = False
        note = (f"<span class='muted'>linear probe on the test split, {CURVE_SEEDS} seeds, measured now; the "
                "fine-tuned and supervised curves come from <code>python -m precompute finetune --bundle … --column "
                f"{text(target_name)} --label-counts …</code></span>" if measured_now else
                "<span class='muted'>kept in the bundle by <code>precompute finetune --label-counts</code>: held-out "
                "error on the val + test splits, ± standard error over seeds</span>")
        self.chart[:] = [pn.pane.Bokeh(curve_figure(table, f"Label efficiency: {title}"), sizing_mode="stretch_width"),
                         pn.pane.HTML(note, sizing_mode="stretch_width")]
        self.status.object = "<span class='muted curve-ready'>label-efficiency curve drawn below</span>"


def _error(message: str) -> str:
    return f"<span style='color:#b00'>{text(message)}</span>"

"""Sidebar sections for labelling and live probes, and the map's lasso/box selection.

- ``attach_map_selection(view)`` resolves what the user draws with the map's lasso and box-select tools server-side (``explorer.selection``) into ``state.selection_ids``;
- ``build_labels_section(data, state)``: name the selection, remove it from a label, undo, the labels so far,
  export (CSV / VOTable / FITS), import, and "send to TOPCAT" over SAMP;
- ``build_probe_section(data, state)``: fit a linear probe off the UI thread (progress, cancel), show its test
  metrics, and list the most uncertain unlabelled objects;
- this session's own colour-by layers (``state.add_colour_layer``): the last probe's prediction, its trust
  (cosine distance to the nearest labelled training object, computed off the UI thread after the fit), and the
  user labels (refreshed on every write in this session and on page load); a label filter selects a label's members.

The label store is ``--labels PATH`` (or ``$EXPLORER_LABELS``), else ``<bundle>.labels.sqlite`` beside the bundle.
"""
from __future__ import annotations

import argparse
import html
import io
import os
import sys
import tempfile
import weakref
from pathlib import Path

import astropy.units as u
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from explorer import colour, export, probes
from explorer.labels import LabelStore, LabelStoreError, default_labels_path
from explorer.selection import box_select, lasso_select

LABELS_ENV = "EXPLORER_LABELS"
EXPORT_FORMATS = {"CSV": ".csv", "VOTable": ".vot", "FITS": ".fits"}
N_CANDIDATES = 8
N_SAMPLE = 12
PROBE_KEY, TRUST_KEY, LABELS_KEY = "session:probe", "session:probe-trust", "session:user-labels"
TRUST_TITLE = "Probe trust: distance to nearest labelled"
LABELS_TITLE = "User labels"
NO_FILTER = "—"


# ============================================================================================ store per bundle
def resolve_labels_path(bundle_path, argv: list[str] | None = None, environ: dict | None = None) -> Path:
    """``--labels PATH`` in argv, else $EXPLORER_LABELS, else ``<bundle>.labels.sqlite`` beside the bundle."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--labels", default=None)
    args, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    env = os.environ if environ is None else environ
    chosen = args.labels or env.get(LABELS_ENV)
    return Path(chosen) if chosen else default_labels_path(bundle_path)


_STORES: dict[Path, LabelStore] = {}


def store_for(data, argv: list[str] | None = None) -> LabelStore:
    """One LabelStore object per path per process (it keeps one SQLite connection per thread)."""
    path = resolve_labels_path(data.bundle.path, argv).resolve()
    if path not in _STORES:
        _STORES[path] = LabelStore(path)
    return _STORES[path]


class LabelSession(param.Parameterized):
    """Per-session labelling state beside the app's ExplorerState."""

    selection_method = param.String(default="lasso", doc="how the current selection was made (lasso, box, click)")
    version = param.Integer(default=0, doc="bumped after every write, so views of the labels refresh")
    message = param.String(default="")
    probe_values = param.Array(default=None, allow_None=True,
                               doc="float32 per bundle row from the last probe fit (a colour-by layer for the map)")
    probe_title = param.String(default="", doc="what probe_values are, e.g. 'P(gz2_smooth_fraction) probe'")


def session_for(state) -> LabelSession:
    """This browser session's LabelSession, kept on its ExplorerState.

    Not in a module-level WeakKeyDictionary keyed by the state: the LabelSession's watchers refer back to the state,
    and a value that refers to its own key keeps the key alive for ever (every closed session stayed in memory)."""
    if state.label_session is None:
        state.label_session = LabelSession()
    return state.label_session


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


_ROWS_BY_ID: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def rows_by_object_id(data) -> pd.Index:
    """object_id (as text, as the label store keeps it) -> bundle row, built once per bundle per process."""
    if data not in _ROWS_BY_ID:
        _ROWS_BY_ID[data] = pd.Index(data.object_ids, copy=False)
    return _ROWS_BY_ID[data]


def label_codes(current: pd.DataFrame, rows: pd.Index) -> tuple[np.ndarray, tuple[str, ...]]:
    """float32 code per bundle row of its most recently given label (NaN: unlabelled), and the label names.

    An object with several labels shows the newest one; ids the bundle does not hold are ignored.
    """
    names = tuple(sorted(current["label"].unique())) if len(current) else ()
    values = np.full(len(rows), np.nan, np.float32)
    newest = current.sort_values("event_id", kind="stable").drop_duplicates("object_id", keep="last")
    at = rows.get_indexer(newest["object_id"].astype(str))
    known = at >= 0
    codes = pd.Categorical(newest["label"], categories=list(names)).codes
    values[at[known]] = codes[known]
    return values, names


def labels_colour_layer(data, store: LabelStore) -> colour.ColourLayer:
    values, names = label_codes(store.current(), rows_by_object_id(data))
    return colour.layer_from_values(LABELS_KEY, LABELS_TITLE, "categorical", values, categories=names)


def label_member_rows(data, store: LabelStore, label: str) -> np.ndarray:
    """Sorted bundle rows of the objects that currently carry ``label``."""
    at = rows_by_object_id(data).get_indexer(store.current(label)["object_id"].astype(str))
    return np.sort(at[at >= 0]).astype(np.int64)


# ============================================================================================ map selection
def attach_map_selection(view) -> tuple:
    """Lasso and box selection on the rasterized map, resolved to rows here (HoloViews' own is unusable there).

    The map (explorer/plot.py) carries the two tools; this returns the (Lasso, BoundsXY) streams feeding
    ``state.selection_ids``.
    """
    state, frame = view.state, view.data.frame
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    session = session_for(state)

    def on_lasso(geometry=None, **_):
        if geometry is None or len(geometry) == 0:
            return
        g = np.asarray(geometry, dtype=np.float64)
        session.selection_method = "lasso"
        state.selection_ids = lasso_select(x, y, g[:, 0], g[:, 1])

    def on_box(bounds=None, **_):
        if bounds is None:
            return
        session.selection_method = "box"
        state.selection_ids = box_select(x, y, *bounds)

    source = view.tap.source  # the map's data layer, whatever the view calls it
    lasso = hv.streams.Lasso(source=source)
    box = hv.streams.BoundsXY(source=source)
    lasso.add_subscriber(on_lasso)
    box.add_subscriber(on_box)
    return lasso, box


# ============================================================================================ labels section
def _labels_html(store: LabelStore) -> str:
    counts = store.label_counts()
    if not counts:
        return "<div class='label-list muted'>No labels yet: draw a lasso or box on the map, name it, press Label.</div>"
    items = "".join(f"<li><span class='label-name'>{html.escape(k)}</span> · {v:,}</li>" for k, v in sorted(counts.items()))
    return f"<ul class='label-list'>{items}</ul>"


HOW_TO_LABEL = ("<span class='muted label-howto'>To label a family: choose the lasso (or box) select tool in the "
                "map's toolbar, draw around the objects, type a label name and press Enter.</span>")


def build_labels_section(data, state, argv: list[str] | None = None):
    """Labelling, undo, export/import and SAMP for the current map selection."""
    session = session_for(state)
    try:
        store = store_for(data, argv)
    except LabelStoreError as e:
        return pn.Column("### Labels", pn.pane.Alert(str(e), alert_type="danger"))
    catalog = data.catalog
    object_ids = data.object_ids

    author = pn.widgets.TextInput(label="Your name", value=os.environ.get("USER", "anonymous"), css_classes=["label-author"])
    name = pn.widgets.TextInput(label="Label name", placeholder="e.g. ring galaxies", css_classes=["label-name-input"])
    add = pn.widgets.Button(label="Label selection", color="primary", css_classes=["label-add"])
    remove = pn.widgets.Button(label="Remove selection from label", color="light")
    undo = pn.widgets.Button(label="Undo my last", color="light")
    listing = pn.pane.HTML(_labels_html(store), css_classes=["labels-pane"], sizing_mode="stretch_width")
    status = pn.pane.HTML("", sizing_mode="stretch_width")

    def selected_ids():
        return object_ids[np.asarray(state.selection_ids, dtype=np.int64)]

    def write(action):
        try:
            session.message = action()
        except (ValueError, LabelStoreError, export.ExportError, export.SampError) as e:
            session.message = f"<span style='color:#b00'>{html.escape(str(e))}</span>"
        session.version += 1

    def do_add(_):
        ids = selected_ids()
        write(lambda: (store.add(name.value, ids, author=author.value, method=session.selection_method),
                       f"labelled {len(ids):,} objects '{html.escape(name.value.strip())}'")[1])

    def do_remove(_):
        ids = selected_ids()
        write(lambda: (store.remove(name.value, ids, author=author.value, method=session.selection_method),
                       f"removed {len(ids):,} objects from '{html.escape(name.value.strip())}'")[1])

    def do_undo(_):
        def action():   # only this author's own changes: undo must never reach into someone else's work
            undone = store.undo_last(author=author.value, only_by=author.value)
            if undone is None:
                return f"nothing of yours ({html.escape(author.value)}) to undo"
            ev = store.events().set_index("id").loc[undone]
            verb = "added to" if ev["kind"] == "add" else "removed from"
            return (f"undid your last change: {int(ev['n_objects']):,} objects {verb} "
                    f"'{html.escape(str(ev['label']))}'")

        write(action)

    add.on_click(do_add)
    # Enter in the name box labels the selection, as the button does (it did nothing)
    name.param.watch(lambda _: len(state.selection_ids) and do_add(None), "enter_pressed")
    add_clicked = pn.widgets.Button(label="Label clicked object", color="light")

    def do_add_clicked(_):
        i = state.selected
        if i is None:
            session.message, session.version = "click an object on the map first", session.version + 1
            return
        write(lambda: (store.add(name.value, [object_ids[i]], author=author.value, method="click"),
                       f"labelled {html.escape(object_ids[i])} '{html.escape(name.value.strip())}'")[1])

    add_clicked.on_click(do_add_clicked)
    remove.on_click(do_remove)
    undo.on_click(do_undo)

    label_filter = pn.widgets.Select(label="Select the members of a label", options=[NO_FILTER], value=NO_FILTER,
                                     css_classes=["label-filter"], width=200)
    clear = pn.widgets.Button(label="Clear selection", color="light", width=120, align="end")
    clear.on_click(lambda _: state.clear_selection())
    filtering = []  # non-empty while the filter itself sets the selection

    def on_filter(event):
        if filtering or event.new == NO_FILTER:
            return
        filtering.append(True)
        try:
            session.selection_method = "label-filter"
            state.selection_ids = label_member_rows(data, store, event.new)
        finally:
            filtering.pop()

    def on_other_selection(_):
        if not filtering and label_filter.value != NO_FILTER:
            filtering.append(True)
            try:
                label_filter.value = NO_FILTER  # the selection is no longer that label's members
            finally:
                filtering.pop()

    label_filter.param.watch(on_filter, "value")
    state.param.watch(on_other_selection, "selection_ids")

    def refresh(*_):
        listing.object = _labels_html(store)
        status.object = f"<span class='muted label-status'>{session.message}</span>"
        names = sorted(store.label_counts())
        label_filter.options = [NO_FILTER] + names
        if names or LABELS_KEY in state.session_colours:
            state.add_colour_layer(labels_colour_layer(data, store))

    session.param.watch(refresh, ["version"])

    def selection_text(ids):
        n = len(ids)
        return (f"<span class='selection-count'>{n:,} objects selected ({session.selection_method})</span>" if n
                else "<span class='muted selection-count'>Select objects with the lasso or box tool on the map.</span>")

    count = pn.pane.HTML(pn.bind(selection_text, state.param.selection_ids))
    sample = pn.pane.HTML(pn.bind(lambda rows: selection_sample_html(data, rows), state.param.selection_ids),
                          sizing_mode="stretch_width")

    # export / import / SAMP
    columns = pn.widgets.MultiChoice(label="Catalogue columns to include",
                                     options=[c for c in catalog.columns if c not in ("object_id", "ra", "dec")])
    fmt = pn.widgets.Select(label="Format", options=list(EXPORT_FORMATS), value="CSV", width=110)

    def export_file():
        table = export.labels_table(catalog, store.current(), columns=columns.value)
        return _table_bytes(table, EXPORT_FORMATS[fmt.value])

    stem = export_stem(data.bundle.path.name)
    download = pn.widgets.FileDownload(callback=export_file, filename=f"{stem}.csv", label="Download labels",
                                       color="success")
    fmt.param.watch(lambda e: setattr(download, "filename", f"{stem}{EXPORT_FORMATS[e.new]}"), "value")

    upload = pn.widgets.FileInput(accept=",".join(export.FORMATS), label="Import labels")
    match_by = pn.widgets.RadioButtonGroup(options=["object_id", "sky"], value="object_id")
    radius = pn.widgets.FloatInput(label="Sky match radius (arcsec)", value=1.0, start=0.01, step=0.5, width=160)

    def do_import(event):
        if not event.new:
            return
        suffix = Path(upload.filename or "upload.csv").suffix
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"import{suffix}"
            path.write_bytes(event.new)
            write(lambda: export.import_labels(store, catalog, path, author=author.value, by=match_by.value,
                                               radius=radius.value * u.arcsec).summary())

    upload.param.watch(do_import, "value")

    samp = pn.widgets.Button(label="Send selection to TOPCAT (SAMP)", color="light")

    def do_samp(_):
        rows = np.asarray(state.selection_ids, dtype=np.int64)
        if len(rows) == 0:
            session.message, session.version = "select objects first", session.version + 1
            return
        table = export.selection_table(catalog, rows, columns=columns.value, name=name.value or "selection")
        write(lambda: f"sent {len(rows):,} objects to {export.send_to_samp(table, name.value or 'selection')} SAMP client(s)")

    samp.on_click(do_samp)
    refresh()
    share = pn.Card(columns, pn.Row(fmt, download), samp, pn.layout.Divider(),
                    "<span class='muted'>Import labels: CSV / VOTable / FITS with object_id (or ra, dec) and label"
                    "</span>", match_by, radius, upload,
                    title="Export, import and share", collapsed=True, sizing_mode="stretch_width",
                    css_classes=["labels-share"])
    return pn.Column(
        "### Labels", pn.pane.HTML(HOW_TO_LABEL), count, sample, pn.Row(label_filter, clear), author, name,
        pn.Row(add, undo), pn.Row(add_clicked, remove), status, listing, share,
        css_classes=["labels-section"],
    )


def selection_sample_html(data, rows, k: int = N_SAMPLE, seed: int = 0) -> str:
    """Thumbnails of up to ``k`` selected objects, a fixed random draw so the same selection shows the same ones."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return ""
    shown = rows if len(rows) <= k else np.sort(np.random.default_rng(seed).choice(rows, k, replace=False))
    thumbs = "".join(f"<img class='selection-thumb' src='{data.thumbnail_uri(int(i))}' width='48' height='48' "
                     f"title='{html.escape(str(data.catalog['object_id'].iat[int(i)]))}' style='margin:1px'>"
                     for i in shown)
    what = "all of them" if len(rows) <= k else f"a sample of {k}"
    return f"<div class='selection-sample'><span class='muted'>{what}</span><br>{thumbs}</div>"


def export_stem(bundle_name: str) -> str:
    """'<bundle>-labels-<UTC date>': exports from different bundles and days do not overwrite one another."""
    import datetime as dt
    import re

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", bundle_name).strip("._") or "bundle"
    return f"{safe}-labels-{dt.datetime.now(dt.timezone.utc):%Y%m%d}"


def _table_bytes(table, suffix: str) -> io.BytesIO:
    with tempfile.TemporaryDirectory() as tmp:
        path = export.write_table(table, Path(tmp) / f"labels{suffix}")
        return io.BytesIO(path.read_bytes())


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
            return probes.target_from_labels(store_for(data, argv).current(), data.catalog["object_id"])
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


# ============================================================================================ page

"""The labels sidebar section and the label store it writes to.

- ``build_labels_section(data, state)``: name the selection, remove it from a label, undo, the labels so far,
  export (CSV / VOTable / FITS), import, and "send to TOPCAT" over SAMP;
- the user labels as this session's own colour-by layer (refreshed on every write in this session and on page
  load); a label filter selects a label's members.

The map's lasso and box selection is ``explorer.selection_ui``; the probe section is ``explorer.probe_ui``.

The label store is ``--labels PATH`` (or ``$EXPLORER_LABELS``), else ``<bundle>.labels.sqlite`` beside the bundle.
"""
from __future__ import annotations

import argparse
import html
import io
import os
import tempfile
import weakref
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import panel as pn
import param

from explorer import colour, export
from explorer.labels import LabelStore, LabelStoreError, default_labels_path

LABELS_ENV = "EXPLORER_LABELS"
EXPORT_FORMATS = {"CSV": ".csv", "VOTable": ".vot", "FITS": ".fits"}
N_SAMPLE = 12
LABELS_KEY = "session:user-labels"
LABELS_TITLE = "User labels"
NO_FILTER = "—"


# ============================================================================================ store per bundle
def resolve_labels_path(bundle_path, argv: list[str] | None = None, environ: dict | None = None) -> Path:
    """``--labels PATH`` in argv, else $EXPLORER_LABELS, else ``<bundle>.labels.sqlite`` beside the bundle."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--labels", default=None)
    args, _ = parser.parse_known_args(list(argv or []))
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
        store = store_for(data, state.argv if argv is None else argv)
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


# ============================================================================================ page

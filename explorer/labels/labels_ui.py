"""The labels sidebar section and the label store it writes to.

- ``build_labels_section(data, state)``: name the selection, remove it from a label, undo, the labels so far,
  export (CSV / VOTable / FITS), import, and "send to TOPCAT" over SAMP;
- the user labels as this session's own colour-by layer (refreshed on every write in this session and on page
  load); a label filter selects a label's members.

The map's lasso and box selection is ``explorer.map.selection_ui``; the probe section is ``explorer.probes.probe_ui``.

The label store is ``--labels PATH`` (or ``$EXPLORER_LABELS``), else ``<bundle>.labels.sqlite`` beside the bundle.
"""
from __future__ import annotations

import io
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import panel as pn
import param

from core.labels import LabelStore, LabelStoreError
from explorer.jobs import JobRunner
from explorer.labels import export
from explorer.map import colour
from explorer.markup import html, text
from explorer.settings import Settings
from explorer.visitors import visitor_name

EXPORT_FORMATS = {"CSV": ".csv", "VOTable": ".vot", "FITS": ".fits"}
N_SAMPLE = 12
LABELS_KEY = "session:user-labels"
LABELS_TITLE = "User labels"
NO_FILTER = "—"


# ============================================================================================ store per bundle
# process-wide by design: one store per label file, whichever sessions (and compared bundles) write to it
_STORES: dict[Path, LabelStore] = {}
IMPORTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-import")   # one at a time, all sessions


def store_for(data, settings: Settings | None = None) -> LabelStore:
    """The label store of ``data``'s bundle under ``settings`` (default: beside the bundle); one LabelStore object
    per path per process (it keeps one SQLite connection per thread)."""
    path = (settings or Settings()).labels_path(data.bundle.path).resolve()
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
    values, names = label_codes(store.current(), data.row_index)
    return colour.layer_from_values(LABELS_KEY, LABELS_TITLE, "categorical", values, categories=names)


def label_member_rows(data, store: LabelStore, label: str) -> np.ndarray:
    """Sorted bundle rows of the objects that currently carry ``label``."""
    at = data.row_index.get_indexer(store.current(label)["object_id"].astype(str))
    return np.sort(at[at >= 0]).astype(np.int64)


# ============================================================================================ labels section
def _labels_html(store: LabelStore) -> str:
    counts = store.label_counts()
    if not counts:
        return "<div class='label-list muted'>No labels yet: draw a lasso or box on the map, name it, press Label.</div>"
    items = "".join(f"<li><span class='label-name'>{text(k)}</span> · {v:,}</li>" for k, v in sorted(counts.items()))
    return f"<ul class='label-list'>{items}</ul>"


HOW_TO_LABEL = ("<span class='muted label-howto'>To label a family: choose the lasso (or box) select tool in the "
                "map's toolbar, draw around the objects, type a label name and press Enter.</span>")


def build_labels_section(data, state, settings: Settings | None = None):
    """Labelling, undo, export/import and SAMP for the current map selection (the store: ``settings``, default the
    session's)."""
    settings = settings or state.settings
    try:
        store = store_for(data, settings)
    except LabelStoreError as e:
        return pn.Column("### Labels", pn.pane.Alert(str(e), alert_type="danger"))
    return LabelsPanel(data, state, store, visitor_name(settings.author)).view


class LabelsPanel:
    """The labels section of one session: its widgets, what its buttons do, and the share card."""

    def __init__(self, data, state, store: LabelStore, author: str = "anonymous"):
        self.data, self.state, self.store = data, state, store
        self.session = session_for(state)
        self.jobs = JobRunner(pool=IMPORTS)
        self.object_ids = data.object_ids
        self.author = pn.widgets.TextInput(label="Your name", value=author,
                                           css_classes=["label-author"])
        self.name = pn.widgets.TextInput(label="Label name", placeholder="e.g. ring galaxies",
                                         css_classes=["label-name-input"])
        add = pn.widgets.Button(label="Label selection", color="primary", css_classes=["label-add"])
        remove = pn.widgets.Button(label="Remove selection from label", color="light")
        undo = pn.widgets.Button(label="Undo my last", color="light")
        add_clicked = pn.widgets.Button(label="Label clicked object", color="light")
        self.listing = pn.pane.HTML(_labels_html(store), css_classes=["labels-pane"], sizing_mode="stretch_width")
        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        add.on_click(lambda _: self.add_selection())
        # Enter in the name box labels the selection, as the button does (it did nothing)
        self.name.param.watch(lambda _: len(state.selection_ids) and self.add_selection(), "enter_pressed")
        add_clicked.on_click(lambda _: self.add_clicked())
        remove.on_click(lambda _: self.remove_selection())
        undo.on_click(lambda _: self.undo())
        self.label_filter = pn.widgets.Select(label="Select the members of a label", options=[NO_FILTER],
                                              value=NO_FILTER, css_classes=["label-filter"], width=200)
        clear = pn.widgets.Button(label="Clear selection", color="light", width=120, align="end")
        clear.on_click(lambda _: state.clear_selection())
        self.filtering = []  # non-empty while the filter itself sets the selection
        self.label_filter.param.watch(self.select_label_members, "value")
        state.param.watch(self.forget_filter, "selection_ids")
        self.session.param.watch(self.refresh, ["version"])
        count = pn.pane.HTML(pn.bind(self.selection_text, state.param.selection_ids))
        sample = pn.pane.HTML(pn.bind(lambda rows: selection_sample_html(data, rows), state.param.selection_ids),
                              sizing_mode="stretch_width")
        self.refresh()
        self.view = pn.Column(
            "### Labels", pn.pane.HTML(HOW_TO_LABEL), count, sample, pn.Row(self.label_filter, clear), self.author,
            self.name, pn.Row(add, undo), pn.Row(add_clicked, remove), self.status, self.listing, self.share_card(),
            css_classes=["labels-section"],
        )

    # -- labelling ----------------------------------------------------------------------------------------------
    def selected_ids(self) -> np.ndarray:
        return self.object_ids[np.asarray(self.state.selection_ids, dtype=np.int64)]

    def write(self, action) -> None:
        """Run ``action`` (a store change returning its message) and show the message, or the error in words."""
        try:
            self.session.message = text(action())
        except (ValueError, LabelStoreError, export.ExportError, export.SampError) as e:
            self.show_error(str(e))
            return
        self.session.version += 1

    def show_error(self, message: str) -> None:
        self.session.message = html("<span style='color:#b00'>{}</span>", message)
        self.session.version += 1

    def say(self, message: str) -> None:
        self.session.message, self.session.version = text(message), self.session.version + 1

    def add_selection(self) -> None:
        ids, label = self.selected_ids(), self.name.value
        self.write(lambda: (self.store.add(label, ids, author=self.author.value, method=self.session.selection_method),
                            f"labelled {len(ids):,} objects '{label.strip()}'")[1])

    def remove_selection(self) -> None:
        ids, label = self.selected_ids(), self.name.value
        self.write(lambda: (self.store.remove(label, ids, author=self.author.value,
                                              method=self.session.selection_method),
                            f"removed {len(ids):,} objects from '{label.strip()}'")[1])

    def add_clicked(self) -> None:
        i = self.state.selected
        if i is None:
            self.say("click an object on the map first")
            return
        oid, label = self.object_ids[i], self.name.value
        self.write(lambda: (self.store.add(label, [oid], author=self.author.value, method="click"),
                            f"labelled {oid} '{label.strip()}'")[1])

    def undo(self) -> None:
        author = self.author.value

        def action():   # only this author's own changes: undo must never reach into someone else's work
            undone = self.store.undo_last(author=author, only_by=author)
            if undone is None:
                return f"nothing of yours ({author}) to undo"
            ev = self.store.events().set_index("id").loc[undone]
            verb = "added to" if ev["kind"] == "add" else "removed from"
            return (f"undid your last change: {int(ev['n_objects']):,} objects {verb} "
                    f"'{ev['label']}'")

        self.write(action)

    # -- the label filter and the listing ------------------------------------------------------------------------
    def select_label_members(self, event) -> None:
        if self.filtering or event.new == NO_FILTER:
            return
        self.filtering.append(True)
        try:
            self.session.selection_method = "label-filter"
            self.state.selection_ids = label_member_rows(self.data, self.store, event.new)
        finally:
            self.filtering.pop()

    def forget_filter(self, _) -> None:
        if not self.filtering and self.label_filter.value != NO_FILTER:
            self.filtering.append(True)
            try:
                self.label_filter.value = NO_FILTER  # the selection is no longer that label's members
            finally:
                self.filtering.pop()

    def refresh(self, *_) -> None:
        self.listing.object = _labels_html(self.store)
        self.status.object = html("<span class='muted label-status'>{}</span>", self.session.message)
        names = sorted(self.store.label_counts())
        self.label_filter.options = [NO_FILTER] + names
        if names or LABELS_KEY in self.state.session_colours:
            self.state.add_colour_layer(labels_colour_layer(self.data, self.store))

    def selection_text(self, ids) -> str:
        n = len(ids)
        return (f"<span class='selection-count'>{n:,} objects selected ({self.session.selection_method})</span>" if n
                else "<span class='muted selection-count'>Select objects with the lasso or box tool on the map.</span>")

    # -- export, import, SAMP ------------------------------------------------------------------------------------
    def share_card(self):
        catalog = self.data.catalog
        self.columns = pn.widgets.MultiChoice(label="Catalogue columns to include",
                                              options={text(c): c for c in catalog.columns if c not in ("object_id", "ra", "dec")})
        # (Bokeh's MultiChoice draws its option labels as HTML: a column name is data, so its label is escaped)
        fmt = pn.widgets.Select(label="Format", options=list(EXPORT_FORMATS), value="CSV", width=110)
        stem = export_stem(self.data.bundle.path.name)
        download = pn.widgets.FileDownload(callback=lambda: self.export_file(fmt.value), filename=f"{stem}.csv",
                                           label="Download labels", color="success")
        fmt.param.watch(lambda e: setattr(download, "filename", f"{stem}{EXPORT_FORMATS[e.new]}"), "value")
        self.upload = pn.widgets.FileInput(accept=",".join(export.FORMATS), label="Import labels")
        self.match_by = pn.widgets.RadioButtonGroup(options=["object_id", "sky"], value="object_id")
        self.radius = pn.widgets.FloatInput(label="Sky match radius (arcsec)", value=1.0, start=0.01, step=0.5,
                                            width=160)
        self.upload.param.watch(self.import_upload, "value")
        samp = pn.widgets.Button(label="Send selection to TOPCAT (SAMP)", color="light")
        samp.on_click(lambda _: self.send_to_samp())
        return pn.Card(self.columns, pn.Row(fmt, download), samp, pn.layout.Divider(),
                       "<span class='muted'>Import labels: CSV / VOTable / FITS with object_id (or ra, dec) and label"
                       "</span>", self.match_by, self.radius, self.upload,
                       title="Export, import and share", collapsed=True, sizing_mode="stretch_width",
                       css_classes=["labels-share"])

    def export_file(self, fmt: str):
        table = export.labels_table(self.data.catalog, self.store.current(), columns=self.columns.value)
        return _table_bytes(table, EXPORT_FORMATS[fmt])

    def import_upload(self, event) -> None:
        """Import the uploaded table as a background job (``explorer.jobs``): the page and other visitors go on."""
        if not event.new:
            return
        content, suffix = event.new, Path(self.upload.filename or "upload.csv").suffix
        author, by, radius = self.author.value, self.match_by.value, self.radius.value * u.arcsec

        def run(*, progress, cancel):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"import{suffix}"
                path.write_bytes(content)
                return export.import_labels(self.store, self.data.catalog, path, author=author, by=by,
                                            radius=radius).summary()

        self.say(f"importing {self.upload.filename or 'the upload'}…")
        self.jobs.submit(run, on_done=self.say,
                         on_error=self.show_error)

    def send_to_samp(self) -> None:
        rows = np.asarray(self.state.selection_ids, dtype=np.int64)
        if len(rows) == 0:
            self.say("select objects first")
            return
        name = self.name.value or "selection"
        table = export.selection_table(self.data.catalog, rows, columns=self.columns.value, name=name)
        self.write(lambda: f"sent {len(rows):,} objects to {export.send_to_samp(table, name)} SAMP client(s)")


def selection_sample_html(data, rows, k: int = N_SAMPLE, seed: int = 0) -> str:
    """Thumbnails of up to ``k`` selected objects, a fixed random draw so the same selection shows the same ones."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return ""
    shown = rows if len(rows) <= k else np.sort(np.random.default_rng(seed).choice(rows, k, replace=False))
    thumbs = "".join(f"<img class='selection-thumb' src='{data.thumbnail_uri(int(i))}' width='48' height='48' "
                     f"title='{text(data.catalog['object_id'].iat[int(i)])}' style='margin:1px'>"
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

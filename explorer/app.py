"""The page: a large Datashader map, a sidebar of sections, a hover card, a detail panel and a neighbour gallery.

Sidebar sections are built by ``build_<section>(data, state) -> viewable`` functions listed in ``SIDEBAR_SECTIONS``;
a later feature (labels/lasso, probes, sky search) adds its own builder there. ``create_page(argv)`` is what
``explorer/main.py`` serves; a missing or invalid bundle gives ``build_error_page`` instead of a traceback.
"""
from __future__ import annotations

from pathlib import Path

import panel as pn

from core.contract import BundleError
from core.points import PointsError, points_command
from explorer.about import build_about_section
from explorer.cards import detail_html, hover_card_html
from explorer.data import MAKE_ONE, ExplorerData, load_explorer_data
from explorer.labels.labels_ui import build_labels_section
from explorer.layout import (
    ACCENT,
    CSS,
    MAP_HELP,
    MAP_MODES,
    TITLE,
    OfflineFast,
    build_legend,
)
from explorer.map.plot import MAP_HEIGHT, MapView, colour_layer
from explorer.map.selection_ui import attach_map_selection
from explorer.map.window import WindowSize, follow_window
from explorer.markup import html, text
from explorer.probes.probe_ui import build_probe_section
from explorer.search.gallery import build_gallery, wire_search
from explorer.search.stability_ui import build_stability_panel, copies_layer
from explorer.settings import Settings
from explorer.sky.skyquery_ui import build_sky_search_section, query_marker
from explorer.state import ExplorerState, track_session


# ------------------------------------------------------------------------------------------------- sidebar sections
def build_summary(data: ExplorerData, state: ExplorerState):
    m = data.bundle.manifest
    model = m.get("model", {})
    return pn.pane.HTML(
        html("<b>{}</b> · {:,} objects · {}-d embedding<br><span class='muted'>model: {} {} · bundle: {}</span><br>"
             "<span class='muted map-engine'>{}</span>", data.survey_title, data.n, m.get("embedding_dim"),
             model.get("method", "?"), model.get("architecture") or "", data.bundle.path.name, map_engine_note(data)),
        margin=(0, 10))


def map_engine_note(data: ExplorerData) -> str:
    """Which engine draws the map, so users know why a recolour takes the time it does."""
    if data.points is None:
        return "map engine: memory (colour columns held in the server)"
    client = data.points.client
    where = "local threaded scheduler" if client is None else f"dask.distributed at {client.scheduler.address}"
    return f"map engine: dask (colours read from points/, {data.points.npartitions} partitions, {where})"


def colour_options(data: ExplorerData, state: ExplorerState) -> dict[str, str]:
    """Colour-by choices, label -> key: the bundle's columns, then this session's own layers (probe, labels)."""
    options = {spec.label: name for name, spec in data.specs.items()}
    options.update({layer.spec.label: key for key, layer in state.session_colours.items()})
    return options


def forget_js_callbacks_on_close(widget) -> None:
    """Drop ``widget``'s (and its parts') entries in Panel's jscallback registry when this browser session ends.

    Panel keeps jscallbacks in a WeakKeyDictionary keyed by the source widget, and each callback refers back to its
    source, so an entry never dies. The editable range slider makes such callbacks internally; since our watchers on
    the slider reach this session's state, map and plots, every closed session stayed in server memory (~55 MB each
    in tests/explorer/test_soak.py) until this."""
    from panel.links import Callback

    def forget(_session_context):
        for part in widget.select():
            Callback.registry.pop(part, None)

    pn.state.on_session_destroyed(forget)


def build_colour(data: ExplorerData, state: ExplorerState):
    """Colour-by choice and, for continuous columns, a range slider (starts at the 1-99th percentile clip)."""
    select = pn.widgets.Select(label="Colour by", options=colour_options(data, state), value=state.colour_by,
                               css_classes=["colour-by"])
    slider = pn.widgets.EditableRangeSlider(label="Colour range", start=0.0, end=1.0, value=(0.0, 1.0), step=0.01,
                                            visible=False)
    syncing = []  # non-empty while the widgets follow the state, so their own watchers stay quiet

    def on_select(event):
        if not syncing:
            state.param.update(colour_by=event.new, colour_range=None)  # one batch: one re-render

    def on_state_colour(*_):
        layer = colour_layer(data, state)
        syncing.append(True)
        try:
            select.param.update(options=colour_options(data, state), value=state.colour_by)
            if layer.spec.kind != "continuous":
                slider.visible = False
                return
            lo, hi = layer.bounds
            slider.param.update(label=f"Colour range [{layer.spec.units}]" if layer.spec.units else "Colour range",
                                start=lo, end=hi, step=(hi - lo) / 200, value=state.colour_range or layer.range,
                                visible=True)
        finally:
            syncing.pop()

    def on_slider(event):
        if not syncing and colour_layer(data, state).spec.kind == "continuous":
            state.colour_range = tuple(event.new)

    select.param.watch(on_select, "value")
    slider.param.watch(on_slider, "value")
    forget_js_callbacks_on_close(slider)
    state.param.watch(on_state_colour, ["colour_by", "session_colours"])
    on_state_colour()
    hint = pn.pane.HTML("<span class='muted'>continuous columns start clipped to the 1–99th percentile</span>",
                        visible=slider.param.visible)
    return pn.Column("### Colour", build_map_mode(data, state), select, slider, hint)


def build_map_mode(data: ExplorerData, state: ExplorerState):
    """Show the map as points (Datashader) or as a mosaic of the objects' thumbnails (explorer.map.mosaic)."""
    switch = pn.widgets.RadioButtonGroup(options=MAP_MODES, value=state.map_mode,
                                         color="primary", variant="outline", css_classes=["map-mode"],
                                         disabled=not data.has_thumbnails, margin=(0, 10, 4, 10))
    switch.link(state, value="map_mode", bidirectional=True)
    note = ("images: the object nearest each cell's centre; zoom in for finer families; the frame is its colour"
            if data.has_thumbnails else "this bundle has no thumbnails: images are not available")
    return pn.Column(pn.pane.HTML("<b>Show the map as</b>", margin=(0, 10)), switch,
                     pn.pane.HTML(f"<span class='muted'>{note}</span>", margin=(0, 10)))


def build_search(data: ExplorerData, state: ExplorerState):
    k = pn.widgets.IntSlider.from_param(state.param.k, label="Neighbours (k)", start=1, end=60)
    dup = pn.widgets.FloatInput.from_param(state.param.duplicate_arcsec, label="Drop sky duplicates closer than (arcsec)",
                                           step=0.5)
    negw = pn.widgets.FloatSlider.from_param(state.param.negative_weight, label="Weight of 'fewer like these'",
                                             start=0.0, end=2.0, step=0.1)
    clear = pn.widgets.Button(label="Clear search", color="light")
    clear.on_click(lambda _: state.select(None))

    def sets(positives, negatives):
        return (f"<span class='muted'>more like: {len(positives)} · fewer like: {len(negatives)} — use + / − under "
                f"a result; ≈ restarts the search from it</span>")

    return pn.Card(pn.pane.HTML(pn.bind(sets, state.param.positives, state.param.negatives)), clear, k, dup, negw,
                   title="Similarity search settings", collapsed=True, sizing_mode="stretch_width")


def build_detail(data: ExplorerData, state: ExplorerState):
    return pn.Column("### Selected object", build_stability_panel(data, state),
                     pn.pane.HTML(pn.bind(lambda i: detail_html(data, i), state.param.selected),
                                  sizing_mode="stretch_width"))


SIDEBAR_SECTIONS = [build_summary, build_about_section, build_sky_search_section, build_colour, build_search,
                    build_labels_section, build_probe_section]


# ------------------------------------------------------------------------------------------------- page
def build_page(data: ExplorerData, state: ExplorerState | None = None, sections=None,
               settings: Settings | None = None):
    """The whole page for one session; ``settings`` (default: those of ``state``) reach every section through
    ``state.settings``."""
    pn.extension(raw_css=[CSS])
    state = state or ExplorerState()
    if settings is not None:
        state.settings = settings
    track_session(state)
    wire_search(data, state)
    view = MapView(data, state)
    plot = pn.pane.HoloViews(view.overlay(query_marker(state), copies_layer(state)), linked_axes=False)
    window = WindowSize(margin=0, height=0, width=0)
    attach_map_selection(view)
    hover = pn.pane.HTML(pn.bind(lambda i: hover_card_html(data, i), state.param.hovered), width=230,
                         css_classes=["hover-pane"])
    # the clicked object's details sit under the hover card, beside the map, where a click is followed by the eye
    # (scrolling within the map's height, so the neighbour gallery stays right under the map)
    side = pn.Column(build_legend(data, state, view), pn.layout.Divider(), hover, build_detail(data, state),
                     min_width=250, height=MAP_HEIGHT, scroll=True, styles={"flex": "1 1 250px"})
    follow_window(plot, window, beside=side)
    # a window too narrow for the map and the details side by side puts the details under the map (flex wrap)
    main = pn.Column(window, pn.FlexBox(plot, side, flex_wrap="wrap", sizing_mode="stretch_width"),
                     pn.pane.HTML(MAP_HELP, margin=(0, 10)),
                     build_gallery(data, state), sizing_mode="stretch_width")
    sidebar = [build(data, state) for build in (sections or SIDEBAR_SECTIONS)]
    template = pn.template.FastListTemplate(title=f"{TITLE} — {text(data.survey_title)}", sidebar=sidebar, main=[main],
                                            sidebar_width=380, accent=ACCENT, theme_toggle=False,
                                            design=OfflineFast)
    template.explorer_state, template.explorer_view = state, view  # handles for tests and later features
    return template


def build_error_page(path: Path, message: str, fix: str = MAKE_ONE):
    """What a visitor sees when the bundle cannot be used: the reason and the command that makes one (``fix``)."""
    pn.extension(raw_css=[CSS])
    body = pn.pane.HTML(
        html("<div style='background:#fdecea;color:#7a1c12;border:1px solid #f1b0ab;border-radius:4px;"
             "padding:4px 16px'><h3>No usable bundle</h3><p>The explorer could not open the bundle at "
             "<code>{}</code>:</p><blockquote>{}</blockquote><p>Make one with:</p><pre>{}</pre><p>or point the app at "
             "another bundle: <code>panel serve explorer --args --bundle DIR</code> (or set "
             "<code>EXPLORER_BUNDLE=DIR</code>).</p></div>", path, message, fix),
        css_classes=["bundle-error"], sizing_mode="stretch_width")
    return pn.template.FastListTemplate(title=TITLE, main=[body], accent=ACCENT, theme_toggle=False,
                                        design=OfflineFast)


def create_page(argv: list[str] | None = None, environ: dict | None = None):
    """Parse the app's settings once, load the bundle (once per process) and build this session's page, or the error
    page that says what to do."""
    settings = Settings.parse(argv, environ)
    path = settings.bundle
    try:
        engine = settings.checked_map_engine()
    except BundleError as e:
        return build_error_page(path, str(e), fix=f"panel serve explorer --args --bundle {path} --map-engine memory")
    try:
        data = load_explorer_data(path, engine, settings.dask_scheduler)
    except PointsError as e:
        return build_error_page(path, str(e), fix=points_command(path))
    except BundleError as e:
        return build_error_page(path, str(e))
    if settings.compare is not None:   # two embeddings of the same objects side by side (explorer/compare.py)
        from explorer.compare import build_compare_page

        try:
            return build_compare_page(data, load_explorer_data(settings.compare, engine, settings.dask_scheduler))
        except BundleError as e:
            return build_error_page(settings.compare, str(e))
    return build_page(data, settings=settings)

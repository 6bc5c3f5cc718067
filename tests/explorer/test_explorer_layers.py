"""The map's extra layers without a browser: the selection highlight, and the per-session colour entries
(probe prediction, probe trust, user labels) with the label filter."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import pytest
from explorer.probes.probe_ui import (
    PROBE_KEY,
    TRUST_KEY,
    TRUST_TITLE,
    probe_colour_layer,
    trust_colour_layer,
)

from core.labels import LabelStore
from explorer.data import load_explorer_data
from explorer.labels.labels_ui import (
    LABELS_KEY,
    LABELS_TITLE,
    build_labels_section,
    label_codes,
    label_member_rows,
    session_for,
)
from explorer.map import colour
from explorer.map.plot import MapView
from explorer.probes import probes
from explorer.settings import Settings
from explorer.state import ExplorerState

hv.extension("bokeh")  # element options and hv.opts need a loaded plotting backend


@pytest.fixture
def data(small_bundle):
    return load_explorer_data(small_bundle)


@pytest.fixture
def view(data):
    return MapView(data, ExplorerState())


def _finite(image, vdim):
    return np.isfinite(image.dimension_values(vdim, flat=False))


# ------------------------------------------------------------------------------------------------ selection layer
def test_selection_layer_draws_only_the_selected_rows(view):
    x = view.data.frame["x"].to_numpy()
    left = np.flatnonzero(x < np.median(x))
    view.state.selection_ids = left
    x0, x1, y0, y1 = view._extent
    layers = view.render_selection(x_range=(x0, x1), y_range=(y0, y1), width=200, height=100)
    outline, image = layers.get(0), layers.get(1)
    drawn = _finite(image, "selected")
    assert drawn.sum() > 50
    cols = np.flatnonzero(drawn.any(axis=0))
    right_edge = (np.median(x) - x0) / (x1 - x0) * 200
    assert cols.max() <= right_edge + 4, "nothing right of the selected half (spread adds at most 3 px)"
    assert image.opts.get().kwargs["cmap"] == ["#39ff14", "#39ff14"]
    ring = _finite(outline, "outline")
    assert (ring | ~drawn).all() and ring.sum() > drawn.sum(), "a black ring one pixel around every selected pixel"
    assert outline.opts.get().kwargs["cmap"] == ["#000000", "#000000"]


def test_selection_layer_clears_with_the_selection(view):
    view.state.selection_ids = np.arange(100)
    assert _finite(view.render_selection(width=120, height=80).get(1), "selected").any()
    view.state.clear_selection()
    assert not _finite(view.render_selection(width=120, height=80).get(1), "selected").any()


def test_selection_redraws_the_live_plot_without_rebuilding_it(view):
    import holoviews as hv

    plot = hv.renderer("bokeh").get_plot(view.overlay())
    figure, colour_before = plot.state, view.last_colour_image
    view.state.selection_ids = np.arange(0, 3000, 3)
    assert plot.state is figure
    assert _finite(view.last_selection_image, "selected").any()
    assert view.last_colour_image is colour_before, "a new selection must not re-aggregate the colour layer"


# ------------------------------------------------------------------------------------------------ session colours
def _probe(method, classes=()):
    return probes.LinearProbe("t", "x", method, np.zeros((2, 1), np.float32), np.zeros(1, np.float32), list(classes))


def test_probe_layer_kind_follows_the_probe():
    value = np.array([0.1, 0.9, np.nan], np.float32)
    pred = probes.Predictions(value, value, [])
    assert probe_colour_layer(_probe("soft-bce"), pred, "P(smooth)").spec.kind == "fraction"
    ridge = probe_colour_layer(_probe("ridge"), probes.Predictions(value * 3, value, []), "z")
    assert ridge.spec.kind == "continuous" and ridge.spec.title == "Probe: z"
    cats = probe_colour_layer(_probe("multinomial", ["a", "b"]),
                              probes.Predictions(np.array([0, 1, 1], np.float32), value, ["a", "b"]), "labels")
    assert cats.spec.kind == "categorical" and cats.spec.categories == ("a", "b") and cats.range == (-0.5, 1.5)
    assert cats.spec.column == PROBE_KEY


def test_probe_entry_belongs_to_one_session_and_recolours_the_map(view, data):
    import holoviews as hv

    from explorer.app import colour_options

    other = ExplorerState()
    rng = np.random.default_rng(0)
    layer = probe_colour_layer(_probe("soft-bce"), probes.Predictions(rng.random(data.n).astype(np.float32),
                                                                      np.zeros(data.n, np.float32), []), "P(x)")
    plot = hv.renderer("bokeh").get_plot(view.overlay())
    figure = plot.state
    view.state.add_colour_layer(layer)
    assert colour_options(data, view.state)["Probe: P(x)"] == PROBE_KEY
    assert "Probe: P(x)" not in colour_options(data, other)
    view.state.param.update(colour_by=PROBE_KEY, colour_range=None)
    shown = view.last_colour_image
    values = shown.dimension_values("value")
    assert plot.state is figure and np.nanmin(values) >= 0 and np.nanmax(values) <= 1
    assert shown.opts.get().kwargs["clim"] == (0.0, 1.0)

    refit = colour.layer_from_values(PROBE_KEY, "Probe: P(x)", "fraction", np.full(data.n, 0.25, np.float32))
    view.state.add_colour_layer(refit)  # the layer on show replaced: redrawn in place
    assert view.last_colour_image is not shown and plot.state is figure
    assert np.nanmax(view.last_colour_image.dimension_values("value")) == pytest.approx(0.25)


def test_trust_layer_is_zero_on_the_labelled_objects(data):
    train = np.arange(0, data.n, 50)
    distance = probes.trust_distance(data.bundle.embeddings, train)
    layer = trust_colour_layer(distance)
    assert layer.spec.title == TRUST_TITLE and layer.spec.kind == "continuous" and layer.spec.column == TRUST_KEY
    assert np.all(layer.values[train] < 1e-3) and layer.values.max() > 1e-2
    assert layer.bounds[0] <= layer.range[0] < layer.range[1] <= layer.bounds[1]


def test_label_codes_take_the_newest_label_and_leave_the_rest_unlabelled():
    rows = pd.Index(["a", "b", "c", "d"])
    current = pd.DataFrame({"object_id": ["a", "b", "a", "zz"], "label": ["ring", "bar", "merger", "ring"],
                            "event_id": [1, 2, 3, 4]})
    values, names = label_codes(current, rows)
    assert names == ("bar", "merger", "ring")
    np.testing.assert_array_equal(values, np.array([1, 0, np.nan, np.nan], np.float32))  # a: merger (newer)
    empty, none = label_codes(current.iloc[:0], rows)
    assert none == () and np.isnan(empty).all()


def test_labels_section_offers_user_labels_and_filters_by_label(data, tmp_path):
    import panel as pn

    from explorer.app import colour_options

    store = LabelStore(tmp_path / "layers.sqlite")
    ids = data.catalog["object_id"].astype(str).to_numpy()
    store.add("ring", ids[[3, 1, 2]], author="t", method="click")
    state = ExplorerState()
    section = build_labels_section(data, state, Settings(labels=tmp_path / "layers.sqlite"))
    layer = state.session_colours[LABELS_KEY]  # labels written before the page loaded (e.g. by another session)
    assert colour_options(data, state)[LABELS_TITLE] == LABELS_KEY
    assert layer.spec.categories == ("ring",) and np.flatnonzero(np.isfinite(layer.values)).tolist() == [1, 2, 3]

    store.add("bar", ids[[7]], author="t", method="click")
    session_for(state).version += 1  # what every write in this session does
    layer = state.session_colours[LABELS_KEY]
    assert layer.spec.categories == ("bar", "ring") and layer.values[7] == 0 and layer.values[1] == 1

    label_filter = next(w for w in section.select(pn.widgets.Select) if "label-filter" in w.css_classes)
    assert label_filter.options == ["—", "bar", "ring"]
    label_filter.value = "ring"
    np.testing.assert_array_equal(state.selection_ids, label_member_rows(data, store, "ring"))
    assert state.selection_ids.tolist() == [1, 2, 3] and session_for(state).selection_method == "label-filter"
    state.selection_ids = np.array([9])  # a lasso elsewhere: the filter no longer describes the selection
    assert label_filter.value == "—"
    next(b for b in section.select(pn.widgets.Button) if b.name == "Clear selection").clicks += 1
    assert len(state.selection_ids) == 0


def test_no_labels_no_user_labels_entry(data, tmp_path):
    state = ExplorerState()
    build_labels_section(data, state, Settings(labels=tmp_path / "empty.sqlite"))
    assert LABELS_KEY not in state.session_colours


def test_colour_select_follows_the_session_entries(data):
    import panel as pn

    from explorer.app import build_colour

    state = ExplorerState()
    section = build_colour(data, state)
    select = next(iter(section.select(pn.widgets.Select)))
    state.add_colour_layer(trust_colour_layer(np.linspace(0, 1, data.n, dtype=np.float32)))
    assert select.options[TRUST_TITLE + " [1 − cos]"] == TRUST_KEY
    select.value = TRUST_KEY
    slider = next(iter(section.select(pn.widgets.EditableRangeSlider)))
    assert state.colour_by == TRUST_KEY and slider.visible and slider.end == pytest.approx(1.0)


def test_probe_section_publishes_prediction_then_trust_layers(data, tmp_path):
    """Fit from the section's widgets; the jobs hand their results back (on the worker thread: no server here)."""
    import time

    import panel as pn
    from explorer.probes.probe_ui import build_probe_section

    state = ExplorerState()
    section = build_probe_section(data, state, Settings(labels=tmp_path / "probe.sqlite"))
    target = next(w for w in section.select(pn.widgets.Select) if w.name == "Probe target")
    target.value = next(label for label in target.options if "smooth" in label.lower())
    next(b for b in section.select(pn.widgets.Button) if b.name == "Fit probe").clicks += 1

    deadline = time.monotonic() + 60
    while TRUST_KEY not in state.session_colours and time.monotonic() < deadline:
        time.sleep(0.05)
    probe_layer, trust = state.session_colours[PROBE_KEY], state.session_colours[TRUST_KEY]
    assert probe_layer.spec.kind == "fraction" and probe_layer.spec.title.startswith("Probe: ")
    assert np.nanmin(probe_layer.values) >= 0 and np.nanmax(probe_layer.values) <= 1
    assert trust.values.shape == (data.n,) and np.nanmin(trust.values) < 1e-3  # the training objects themselves
    bar = next(iter(section.select(pn.indicators.Progress)))
    assert not bar.visible


def test_selection_sample_shows_a_stable_sample_of_the_selection(data):
    from explorer.labels.labels_ui import selection_sample_html

    assert selection_sample_html(data, np.zeros(0, np.int64)) == ""
    few = selection_sample_html(data, np.array([4, 8]))
    assert few.count("<img") == 2 and "all of them" in few
    many = selection_sample_html(data, np.arange(500), k=12)
    assert many.count("<img") == 12 and many == selection_sample_html(data, np.arange(500), k=12)
    ids = set(data.catalog["object_id"].astype(str).iloc[:500])
    assert all(t.split("'")[0] in ids for t in many.split("title='")[1:])

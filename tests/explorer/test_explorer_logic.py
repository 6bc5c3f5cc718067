"""Explorer logic without a browser: pointer lookup, colour mapping, similarity search, bundle loading."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.contract import BundleError, l2_normalise
from core.index import SimilaritySearch, build_index
from explorer.data import load_explorer_data
from explorer.map import colour
from explorer.map.hover import build_tree, nearest_object
from explorer.search.search import drop_sky_duplicates, find_neighbours, query_vector
from explorer.settings import Settings


# ------------------------------------------------------------------------------------------------ hover / click
def test_nearest_object_within_pixel_radius_only():
    tree = build_tree(np.array([0.0, 10.0, 10.5]), np.array([0.0, 0.0, 0.0]))
    view = dict(x_range=(-50, 50), y_range=(-50, 50), width_px=1000, height_px=1000)  # 0.1 data units / px
    assert nearest_object(tree, 0.2, 0.1, **view) == 0  # ~2 px away
    assert nearest_object(tree, 10.3, 0.0, **view) == 2  # nearer to 10.5 than to 10.0
    assert nearest_object(tree, 5.0, 5.0, **view) is None  # empty space: 50+ px from anything
    assert nearest_object(tree, None, None, **view) is None


def test_nearest_object_radius_follows_zoom():
    tree = build_tree(np.array([0.0]), np.array([0.0]))
    # the same data offset is 1 px when zoomed out and 100 px when zoomed in
    assert nearest_object(tree, 0.5, 0.0, (-250, 250), (-250, 250), 500, 500) == 0
    assert nearest_object(tree, 0.5, 0.0, (-2.5, 2.5), (-2.5, 2.5), 1000, 1000) is None


def test_nearest_object_uses_screen_pixels_not_data_units():
    # x is stretched: 1 data unit = 100 px in x, 1 px in y. A point 0.05 away in x (5 px) is nearer on screen
    # than one 3 units away in y (3 px)? No: 5 px > 3 px, so the y-offset point wins although it is further in data.
    tree = build_tree(np.array([0.05, 0.0]), np.array([0.0, 3.0]))
    assert nearest_object(tree, 0.0, 0.0, (0, 10), (0, 1000), 1000, 1000, radius_px=6) == 1


# ------------------------------------------------------------------------------------------------ colour
def _catalog():
    return pd.DataFrame({
        "frac": [0.1, np.nan, 0.9, 0.5],
        "z": [0.05, 0.2, np.nan, 0.1],
        "cls": ["spiral", None, "smooth", "spiral"],
    })


MANIFEST_COLOUR_BY = {
    "frac": {"title": "Smooth fraction", "kind": "fraction", "units": ""},
    "z": {"title": "Redshift", "kind": "continuous", "units": ""},
    "cls": {"title": "Class", "kind": "categorical", "units": ""},
    "absent": {"title": "Not in catalogue", "kind": "continuous", "units": ""},
}


def test_specs_offer_density_and_present_columns():
    specs = colour.specs_from_manifest(MANIFEST_COLOUR_BY, _catalog())
    assert list(specs) == ["density", "frac", "z", "cls"]
    assert specs["cls"].categories == ("smooth", "spiral")


def test_colour_values_keep_nulls_as_nan():
    cat = _catalog()
    specs = colour.specs_from_manifest(MANIFEST_COLOUR_BY, cat)
    frac = colour.colour_values(cat["frac"], specs["frac"])
    assert frac.dtype == np.float32 and np.isnan(frac[1]) and frac[2] == pytest.approx(0.9)
    codes = colour.colour_values(cat["cls"], specs["cls"])
    np.testing.assert_array_equal(codes, np.array([1, np.nan, 0, 1], dtype=np.float32))
    assert colour.null_fraction(codes) == pytest.approx(0.25)


def test_aggregators_and_ranges_by_kind():
    import datashader as ds

    cat = _catalog()
    specs = colour.specs_from_manifest(MANIFEST_COLOUR_BY, cat)
    assert isinstance(colour.aggregator_for(specs["density"]), ds.count)
    assert isinstance(colour.aggregator_for(specs["frac"]), ds.mean)
    agg = colour.aggregator_for(specs["cls"])
    assert isinstance(agg, ds.max) and agg.column == "c__cls"
    assert colour.default_range(colour.colour_values(cat["frac"], specs["frac"]), specs["frac"]) == (0.0, 1.0)
    assert colour.default_range(None, specs["cls"]) == (-0.5, 1.5)
    z = np.r_[np.linspace(0, 1, 1001), np.nan, 50.0].astype(np.float32)  # one outlier, one null
    lo, hi = colour.default_range(z, specs["z"])
    assert 0 <= lo < 0.02 and 0.98 < hi < 1.01  # percentile clip ignores the outlier and the null
    assert len(colour.palette_for(specs["cls"])) == 2


def test_legend_shows_units_categories_and_nulls():
    cat = _catalog()
    specs = colour.specs_from_manifest({"ext": {"title": "Angular extent", "kind": "continuous", "units": "arcsec"},
                                        **MANIFEST_COLOUR_BY}, cat.assign(ext=[1.0, 2.0, 3.0, 4.0]))
    html = colour.legend_html(specs["ext"], (1.0, 4.0), 0.0)
    assert "Angular extent [arcsec]" in html and "linear-gradient" in html
    assert "<span>0</span><span>0.25</span>" in colour.legend_html(specs["ext"], (-2.95e-5, 0.25), 0.0)
    html = colour.legend_html(specs["cls"], (-0.5, 1.5), 0.25)
    assert "smooth" in html and "spiral" in html and "no value (25%" in html
    # a category that is an empty string (the demo's artefact kind of every non-artefact) gets a name, not a blank
    blank = colour.ColourSpec(column="kind", title="Artefact kind", kind="categorical", categories=("", "satellite"))
    html = colour.legend_html(blank, (-0.5, 1.5), 0.0)
    assert "(blank in the catalogue)" in html and '"></span></div>' not in html   # no swatch without a name


def test_aggregated_mean_ignores_nulls():
    """Nulls must not pull a pixel's mean towards 0: datashader mean skips NaN."""
    import datashader as ds

    df = pd.DataFrame({"x": [0.0, 0.0, 0.0], "y": [0.0, 0.0, 0.0], "v": np.array([1.0, np.nan, 3.0], np.float32)})
    agg = ds.Canvas(plot_width=1, plot_height=1, x_range=(-1, 1), y_range=(-1, 1)).points(df, "x", "y", ds.mean("v"))
    assert float(agg.values[0, 0]) == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------------ search
@pytest.fixture(scope="module")
def toy_space():
    rng = np.random.default_rng(1)
    n, d = 400, 16
    centres = l2_normalise(rng.normal(size=(4, d)), np.float32)
    labels = np.arange(n) % 4
    emb = l2_normalise(centres[labels] + 0.15 * rng.normal(size=(n, d)), np.float16)
    ra = rng.uniform(150, 160, n)
    dec = rng.uniform(0, 10, n)
    return emb, labels, ra, dec, SimilaritySearch(build_index(emb), emb)


def test_query_vector_positive_minus_weighted_negative():
    emb = np.eye(3, dtype=np.float32)
    q = query_vector(emb, [0], [1], negative_weight=0.5)
    np.testing.assert_allclose(q, np.array([1, -0.5, 0]) / np.sqrt(1.25), rtol=1e-6)
    np.testing.assert_allclose(query_vector(emb, [0, 2]), np.array([1, 0, 1]) / np.sqrt(2), rtol=1e-6)
    with pytest.raises(ValueError):
        query_vector(emb, [])


def test_neighbours_are_same_family_and_exclude_query(toy_space):
    emb, labels, ra, dec, searcher = toy_space
    nb = find_neighbours(searcher, emb, ra, dec, [0], k=10, min_sep_arcsec=0)
    assert len(nb.ids) == 10 and 0 not in nb.ids
    assert (labels[nb.ids] == labels[0]).all()
    assert np.all(np.diff(nb.similarities) <= 1e-6)  # best first


def test_duplicate_filter_drops_close_sky_matches(toy_space):
    emb, labels, ra, dec, searcher = toy_space
    base = find_neighbours(searcher, emb, ra, dec, [0], k=5, min_sep_arcsec=0)
    dup = int(base.ids[0])
    ra2, dec2 = ra.copy(), dec.copy()
    ra2[dup], dec2[dup] = ra[0], dec[0] + 1.0 / 3600  # 1 arcsec from the query: the same source twice
    kept = find_neighbours(searcher, emb, ra2, dec2, [0], k=5, min_sep_arcsec=3.0)
    assert dup not in kept.ids and len(kept.ids) == 5 and kept.dropped_duplicates >= 1
    assert dup in find_neighbours(searcher, emb, ra2, dec2, [0], k=5, min_sep_arcsec=0.5).ids


def test_duplicate_filter_between_matches():
    ra = np.array([10.0, 20.0, 20.0, 30.0])
    dec = np.array([0.0, 0.0, 2.0 / 3600, 0.0])  # rows 1 and 2 are 2" apart
    keep = drop_sky_duplicates(np.array([1, 2, 3]), ra, dec, [0], min_sep_arcsec=3.0)
    np.testing.assert_array_equal(keep, [True, False, True])  # the better-ranked of the pair survives


def test_more_and_fewer_like_these_steer_the_search(toy_space):
    emb, labels, ra, dec, searcher = toy_space
    a = int(np.flatnonzero(labels == 0)[0])
    b, c = (int(i) for i in np.flatnonzero(labels == 1)[:2])
    mixed = find_neighbours(searcher, emb, ra, dec, [a, b], k=20, min_sep_arcsec=0)
    assert {0, 1} <= set(labels[mixed.ids])  # the mean of two families finds both
    steered = find_neighbours(searcher, emb, ra, dec, [a, b], negatives=[c], k=20, min_sep_arcsec=0,
                              negative_weight=1.0)
    assert (labels[steered.ids] == 0).mean() > (labels[mixed.ids] == 0).mean()
    assert not {a, b, c} & set(steered.ids.tolist())  # examples are never returned as results


def test_state_moves_examples_between_positive_and_negative_sets():
    from explorer.state import ExplorerState

    st = ExplorerState()
    st.select(3)
    st.add_positive(5)
    assert st.positives == [3, 5] and st.selected == 3
    st.add_negative(5)  # the later judgement wins
    assert st.positives == [3] and st.negatives == [5]
    st.select(7)  # a pivot starts afresh
    assert st.positives == [7] and st.negatives == []


# ------------------------------------------------------------------------------------------------ bundle loading
def test_bundle_path_precedence(tmp_path):
    assert str(Settings.parse(["--bundle", "x/b"], {"EXPLORER_BUNDLE": "env/b"}).bundle) == "x/b"
    assert str(Settings.parse([], {"EXPLORER_BUNDLE": "env/b"}).bundle) == "env/b"
    assert str(Settings.parse([], {}).bundle) == "bundles/demo"


def test_settings_are_parsed_once_with_their_fallbacks(tmp_path):
    settings = Settings.parse(["--bundle", "b", "--compare", "c", "--map-engine", "Dask"],
                              {"SKYQUERY_CACHE_DIR": str(tmp_path / "cutouts"), "USER": "hubble"})
    assert settings.compare == Path("c") and settings.checked_map_engine() == "dask"
    assert settings.cutout_cache == tmp_path / "cutouts" and settings.labels is None and settings.author == "hubble"
    assert Settings.parse([], {}).author == "anonymous"
    with pytest.raises(BundleError, match="unknown map engine 'gpu'"):
        Settings.parse(["--map-engine", "gpu"], {}).checked_map_engine()


def test_load_shares_one_copy_and_prepares_columns(small_bundle):
    data = load_explorer_data(small_bundle)
    assert load_explorer_data(str(small_bundle)) is data  # once per process
    assert {"x", "y", "c__redshift", "c__morph_class"} <= set(data.frame.columns)
    assert data.frame["c__redshift"].dtype == np.float32
    assert data.frame["c__redshift"].isna().sum() == data.catalog["redshift"].isna().sum()  # nulls kept
    assert data.thumbnail_uri(0).startswith("data:image/webp;base64,")
    assert isinstance(data.bundle.embeddings, np.memmap)


def test_missing_and_broken_bundles_raise_clear_errors(tmp_path, small_bundle):
    with pytest.raises(BundleError, match="no bundle folder"):
        load_explorer_data(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(small_bundle, broken)
    man = json.loads((broken / "manifest.json").read_text())
    man["n_objects"] += 1
    (broken / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="catalog.parquet"):
        load_explorer_data(broken)


def test_error_page_names_the_problem_and_the_fix(tmp_path):
    from explorer.app import create_page

    page = create_page(["--bundle", str(tmp_path / "nowhere")])
    text = page.main[0].object
    assert "no bundle folder" in text and "make demo" in text and "python -m precompute demo" in text


# ------------------------------------------------------------------------------------------------ the map
@pytest.fixture
def map_view(small_bundle):
    import holoviews as hv

    hv.renderer("bokeh")  # options need a loaded plotting backend, even when this file runs alone

    from explorer.map.plot import MapView
    from explorer.state import ExplorerState

    return MapView(load_explorer_data(small_bundle), ExplorerState())


def test_map_keeps_null_objects_visible_in_grey(map_view):
    map_view.state.colour_by = "redshift"  # ~40 % of the fixture's redshifts are null
    overlay = map_view.render(width=300, height=200)
    grey, col = overlay.get(0), overlay.get(1)
    present = np.isfinite(grey.dimension_values("present", flat=False))
    coloured = np.isfinite(col.dimension_values("value", flat=False))
    assert coloured.sum() > 0 and (present & ~coloured).sum() > 0, "pixels with only null redshifts must stay grey"
    assert not (coloured & ~present).any(), "every coloured pixel also has objects"
    assert col.opts.get().kwargs["clim"] == map_view.data.ranges["redshift"]


def test_map_reaggregates_the_requested_view(map_view):
    x0, x1, y0, y1 = map_view._extent
    zoom_x, zoom_y = (x0, x0 + (x1 - x0) / 10), (y0, y0 + (y1 - y0) / 10)
    col = map_view.render(x_range=zoom_x, y_range=zoom_y, width=200, height=100).get(1)
    assert col.dimension_values("value", flat=False).shape == (100, 200)
    assert col.range("x")[0] == pytest.approx(zoom_x[0], abs=(zoom_x[1] - zoom_x[0]) / 100)
    total = map_view.render(width=200, height=100).get(1)
    assert np.nansum(10 ** total.dimension_values("value")) >= 0.95 * map_view.data.n  # density counts everything


def test_recolour_updates_the_live_plot_without_rebuilding_it(map_view):
    import holoviews as hv

    plot = hv.renderer("bokeh").get_plot(map_view.overlay())
    figure = plot.state
    before = map_view.last_colour_image
    map_view.state.param.update(colour_by="morph_class", colour_range=None)
    after = map_view.last_colour_image
    assert plot.state is figure and after is not before
    codes = after.dimension_values("value")
    assert np.nanmax(codes) <= len(map_view.data.specs["morph_class"].categories) - 1  # ds.max on integer codes
    assert after.opts.get().kwargs["clim"] == (-0.5, len(map_view.data.specs["morph_class"].categories) - 0.5)


def test_file_rows_read_the_same_values_as_the_memory_map(small_bundle):
    data = load_explorer_data(small_bundle)
    emb = data.bundle.embeddings
    rows = np.array([0, 17, 2999, 5, 5])
    np.testing.assert_array_equal(data.embedding_rows[rows], emb[rows])
    np.testing.assert_array_equal(data.embedding_rows[7], emb[7])
    assert len(data.embedding_rows) == len(emb)
    with pytest.raises(IndexError):
        data.embedding_rows[[len(emb)]]
    import base64

    assert base64.b64decode(data.thumbnail_uri(3).split(",", 1)[1]) == data.bundle.thumbnails[3]


def test_density_legend_counts_follow_the_view(map_view):
    whole = map_view.render(width=200, height=100).get(1)
    peak = int(round(10 ** np.nanmax(whole.dimension_values("value"))))
    legend = colour.legend_html(map_view.spec, map_view.current_clim())
    assert f">{peak:,}</span>" in legend and ">1</span>" in legend and "log scale" in legend
    x0, x1, y0, y1 = map_view._extent
    cx, cy = map_view.data.frame["x"].median(), map_view.data.frame["y"].median()
    dx, dy = (x1 - x0) / 40, (y1 - y0) / 40
    map_view.render(x_range=(cx - dx, cx + dx), y_range=(cy - dy, cy + dy), width=200, height=100)
    assert map_view.density_log_peak < np.log10(peak)  # zoomed in 20x, fewer objects share a pixel


def test_map_extent_and_frame_are_square(map_view):
    import holoviews as hv

    from explorer.map.plot import MAP_FRAME

    x0, x1, y0, y1 = map_view._extent
    assert x1 - x0 == pytest.approx(y1 - y0)
    f = map_view.data.frame
    assert x0 < f["x"].min() and f["x"].max() < x1 and y0 < f["y"].min() and f["y"].max() < y1
    fig = hv.render(map_view.overlay())
    assert fig.frame_width == fig.frame_height == MAP_FRAME


def test_hovered_object_gets_a_ring(map_view):
    assert len(map_view.hover_point()) == 0
    map_view.state.hovered = 3
    ring = map_view.hover_point()
    assert len(ring) == 1 and tuple(ring.array()[0]) == tuple(map_view.data.frame[["x", "y"]].iloc[3])

"""The map: every object of the UMAP plane rasterized server-side with Datashader.

Layers (bottom to top): a grey layer of all objects (so objects with a null colour value stay visible), the colour
layer (the aggregator swapped on colour-by change: ``ds.count`` / ``ds.mean`` / ``ds.max`` on codes), the mosaic
(``state.map_mode == "images"``: thumbnails instead of the two layers below it, ``explorer.map.mosaic``), the lasso/box
selection (its own rasterized layer over just the selected rows, lime in a black outline), the similarity-search
results, and the selected object. Colour choices are the bundle's columns plus this session's own layers (``state.session_colours``). Pan and zoom re-aggregate at full resolution; Datashader's
``dynspread`` keeps isolated objects visible.

Why not ``rasterize(points) * rasterize(points)``: both layers come from ONE Datashader pass here
(``ds.summary(n=count, v=<colour aggregator>)``) in one DynamicMap callback driven by RangeXY / PlotSize / the
session's colour parameters. Measured at 1 M objects on the shared 2-core box (CPU time per pan/zoom): two
``rasterize`` + ``dynspread`` layers 130-170 ms, this 80-110 ms (benchmarks/bench_explorer.py).

Map engines (``ExplorerData.map_engine``): ``memory`` aggregates the in-memory frame; ``dask`` aggregates the
bundle's colour columns from a lazy Dask dataframe over ``points/`` (Dask's local threaded scheduler; the same
single ``ds.summary`` pass), while density and this session's own layers (in-memory arrays) use the in-memory
x/y as in memory mode.

Hover and click are PointerXY / Tap streams resolved with the KD-tree in ``explorer.map.hover``; the same RangeXY /
PlotSize streams give the pixel scale for the pointer radius.
"""
from __future__ import annotations

import warnings

import datashader as ds
import datashader.transfer_functions as tf
import holoviews as hv
import numpy as np
import pandas as pd
import param
from bokeh.core.validation import silence
from bokeh.core.validation.warnings import FIXED_SIZING_MODE
from bokeh.models import BoxZoomTool
from scipy import ndimage

from explorer.data import ExplorerData
from explorer.map import colour, mosaic
from explorer.map.hover import DEFAULT_RADIUS_PX, nearest_object
from explorer.map.kernels import SPREAD, aggregate_summary, log_counts
from explorer.state import ExplorerState

# The map's data frame is a fixed square and its extent is squared too, so one UMAP unit is as long across as up
# (a responsive width stretched x by 1.5 at 1600 px). 480 px keeps the whole plot (toolbar and axes add ~80 px)
# above the fold of a 1280x720 window, beside the 380-px sidebar and the details column.
MAP_FRAME = 480
MAP_HEIGHT = MAP_FRAME + 80
DEFAULT_WIDTH = MAP_FRAME
# The placeholder grey layer is all-NaN on purpose; HoloViews' range finding would warn on every pan.
warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
# Bokeh's W-1005 (a 'fixed' plot without width/height) misses that the map sets frame_width/frame_height instead,
# which fix its size: it was logged for every session the server opened.
silence(FIXED_SIZING_MODE, True)
# Neon lime inside a black outline: no continuous palette comes near it (the magenta before read as a high value on
# the fraction and probe scales), nor do the first ten category colours, the cyan result rings or the grey nulls.
SELECTION_COLOUR = "#39ff14"
SELECTION_OUTLINE = "#000000"
SELECTION_ALPHA = 0.9


# What each toolbar button does, shown as its tooltip (Bokeh's own names say "Wheel Zoom", "Tap", "Lasso Select").
TOOL_DESCRIPTIONS = {
    "WheelZoomTool": "Zoom with the mouse wheel (on by default)",
    "PanTool": "Drag to move the map (on by default)",
    "BoxZoomTool": "Zoom into a box you drag",
    "ResetTool": "Reset: back to the whole map",
    "TapTool": "Click an object to find objects like it",
    "LassoSelectTool": "Lasso: draw around objects to select them, then label them in the sidebar",
    "BoxSelectTool": "Box select: drag a box to select objects, then label them in the sidebar",
    "SaveTool": "Save the map as a PNG",
    "HoverTool": "Hover: name the augmented copies (triangles)",
}


def describe_tools(plot, element) -> None:
    """HoloViews hook: a plain-words tooltip on every toolbar button of the map."""
    for tool in plot.state.tools:
        words = TOOL_DESCRIPTIONS.get(type(tool).__name__)
        if words and tool.description != words:
            tool.description = words


def colour_layer(data: ExplorerData, state: ExplorerState, name: str | None = None) -> colour.ColourLayer:
    """The colour choice ``name`` (default the session's ``colour_by``): this session's own layers first, then the
    bundle's columns; an unknown name falls back to density."""
    name = state.colour_by if name is None else name
    if name in state.session_colours:
        return state.session_colours[name]
    spec = data.specs.get(name, data.specs[colour.DENSITY])
    if spec.kind == colour.DENSITY:
        return colour.ColourLayer(spec, None, (np.nan, np.nan), (np.nan, np.nan), 0.0)
    # dask engine: the values stay on disk (points/), the layer carries only their ranges
    values = data.frame[spec.value_column].to_numpy() if spec.value_column in data.frame else None
    return colour.ColourLayer(spec, values, data.ranges[spec.column], data.bounds[spec.column],
                              data.null_fractions.get(spec.column, 0.0))


def empty_image(vdim: str, x_range, y_range) -> hv.Image:
    """A 2x2 all-NaN image: an invisible layer that costs nothing to ship to the browser."""
    return hv.Image(np.full((2, 2), np.nan, np.float32), kdims=["x", "y"], vdims=[vdim],
                    bounds=(x_range[0], y_range[0], x_range[1], y_range[1]))


def square_extent(x0: float, x1: float, y0: float, y1: float, pad: float = 0.03) -> tuple:
    """The smallest square around the points (plus ``pad`` of its side), centred on them."""
    half = (1 + 2 * pad) * max(x1 - x0, y1 - y0, 1e-9) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - half, cx + half, cy - half, cy + half)


class MapView(param.Parameterized):
    state = param.ClassSelector(class_=ExplorerState)
    density_log_peak = param.Number(default=np.nan, doc="log10 of the busiest pixel's count in the density view")

    def __init__(self, data: ExplorerData, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self.data = data
        frame = data.frame
        x0, x1 = float(frame["x"].min()), float(frame["x"].max())
        y0, y1 = float(frame["y"].min()), float(frame["y"].max())
        self._extent = square_extent(x0, x1, y0, y1)
        self.range_stream = hv.streams.RangeXY()
        self.size_stream = hv.streams.PlotSize()
        self.colour_stream = hv.streams.Params(parameterized=state,
                                               parameters=["colour_by", "colour_range", "map_mode"])
        # Bumped when the layer on show gets new values under the same key (the DynamicMap memoises on stream values).
        self.recolour_stream = hv.streams.Counter()
        self.layers = hv.DynamicMap(self.render, streams=[self.range_stream, self.size_stream, self.colour_stream,
                                                          self.recolour_stream])
        self.last_colour_image = None
        self._frame, self._frame_values = None, False
        # mosaic mode (explorer.map.mosaic): the same streams; its tiles are what hover and click find
        self.mosaic_layer = hv.DynamicMap(self.render_mosaic, streams=[self.range_stream, self.size_stream,
                                                                       self.colour_stream, self.recolour_stream])
        self.last_mosaic: mosaic.Mosaic | None = None
        # The selection layer re-renders on pan/zoom (the same range/size streams) and on a new selection only.
        self.selection_stream = hv.streams.Params(parameterized=state, parameters=["selection_ids"])
        self.selection_layer = hv.DynamicMap(self.render_selection,
                                             streams=[self.range_stream, self.size_stream, self.selection_stream])
        self._selection_frame, self._selection_rows, self.last_selection_image = None, None, None
        state.param.watch(self._on_session_colours, "session_colours")
        self.pointer = hv.streams.PointerXY(x=None, y=None, source=self.layers)
        self.tap = hv.streams.Tap(x=None, y=None, source=self.layers)
        self.pointer.add_subscriber(self._on_pointer)
        self.tap.add_subscriber(self._on_tap)
        self.highlight_layer = hv.DynamicMap(self.highlight_points)
        self.hover_layer = hv.DynamicMap(self.hover_point)

    # ---------------------------------------------------------------- rendering
    def view_frame(self) -> pd.DataFrame:
        """x, y and the chosen colour values as column "v" (the arrays are the shared ones; rebuilt on recolour)."""
        values = self.layer.values
        if self._frame_values is not values:  # identity: a refitted probe under the same key is a new array
            f = self.data.frame
            cols = {"x": f["x"].to_numpy(), "y": f["y"].to_numpy()}
            if values is not None:
                cols["v"] = values
            self._frame, self._frame_values = pd.DataFrame(cols, copy=False), values
        return self._frame

    def points_frame(self):
        """The lazy Dask frame (x, y, v) of the colour layer on show, or None when it is drawn from memory (memory
        engine, density, or this session's own layers)."""
        points = self.data.points
        if points is None or self.state.colour_by in self.state.session_colours or self.spec.kind == colour.DENSITY:
            return None
        return points.frame_for(self.spec.value_column)

    def aggregate(self, x_range, y_range, width: int, height: int):
        """One Datashader pass: per-pixel object count and the colour aggregate (None for density)."""
        spec = self.spec
        cvs = ds.Canvas(plot_width=int(width), plot_height=int(height), x_range=tuple(x_range),
                        y_range=tuple(y_range))
        if spec.kind == colour.DENSITY:
            return cvs.points(self.view_frame(), "x", "y", ds.count()), None
        lazy = self.points_frame()
        frame = self.view_frame() if lazy is None else lazy
        client = self.data.points.client if lazy is not None else None
        agg = aggregate_summary(cvs, frame, colour.aggregator_for(spec, "v"), client)
        return agg["n"], agg["v"]

    def render(self, x_range=None, y_range=None, width=None, height=None, **_):
        """The grey layer and the colour layer for the current view (the DynamicMap callback)."""
        x0, x1, y0, y1 = self._extent
        x_range, y_range = x_range or (x0, x1), y_range or (y0, y1)
        width, height = int(width or DEFAULT_WIDTH), int(height or MAP_FRAME)
        if self.state.map_mode == "images":   # the mosaic layer draws the objects: nothing to aggregate here
            return empty_image("present", x_range, y_range) * empty_image("value", x_range, y_range)
        counts, values = self.aggregate(x_range, y_range, width, height)
        present = counts.astype(np.float32).where(counts > 0)
        if values is None:
            shown = present.copy(data=log_counts(counts.values))
            clim = (0.0, float(max(np.nanmax(shown.values) if np.isfinite(shown.values).any() else 0.0, 0.5)))
            self.density_log_peak = clim[1]  # the legend's numbers follow the view
        else:
            shown, clim = values.astype(np.float32), self.current_clim()
        # Spread on the raw aggregates with Datashader (HoloViews' operation wrapper costs more than the spreading).
        shown = tf.dynspread(shown, **SPREAD)
        if values is not None and self.layer.null_fraction > 0:
            grey = hv.Image(tf.dynspread(present, **SPREAD).rename("present"), kdims=["x", "y"])
        else:  # nothing is null: an empty grey layer instead of a full-size one to ship to the browser
            grey = empty_image("present", x_range, y_range)
        grey = grey.opts(cmap=[colour.NULL_GREY, colour.NULL_GREY], clim=(0, 1), alpha=0.8)
        col = hv.Image(shown.rename("value"), kdims=["x", "y"]).opts(cmap=colour.palette_for(self.spec), clim=clim)
        self.last_colour_image = col
        return grey * col

    def render_mosaic(self, x_range=None, y_range=None, width=None, height=None, **_):
        """Mosaic mode: the thumbnail of each visible cell's representative as one RGBA image, framed in its
        colour-by colour; an empty layer in points mode."""
        x0, x1, y0, y1 = self._extent
        x_range, y_range = tuple(x_range or (x0, x1)), tuple(y_range or (y0, y1))
        width, height = int(width or DEFAULT_WIDTH), int(height or MAP_FRAME)
        if self.state.map_mode != "images" or not self.data.has_thumbnails:
            self.last_mosaic = None
            return hv.RGB(np.zeros((2, 2, 4), np.uint8), bounds=(x_range[0], y_range[0], x_range[1], y_range[1]))
        grid = mosaic.grid_for_view(self._extent, x_range, y_range, width)
        tiles = mosaic.choose_tiles(self.data.tree, grid, x_range, y_range)
        image = mosaic.compose(tiles, self.data.mosaic_tiles, x_range, y_range, width, height,
                               frames=self.tile_frames(tiles.rows))
        self.last_mosaic = tiles
        return hv.RGB(image, bounds=(x_range[0], y_range[0], x_range[1], y_range[1]))

    def tile_frames(self, rows: np.ndarray) -> np.ndarray | None:
        """Each tile's colour-by colour (None for density): the same palette and limits as the points view, read
        for these rows only (from the catalogue in dask mode, where the column is not in memory)."""
        layer = self.layer
        if layer.spec.kind == colour.DENSITY:
            return None
        if layer.values is not None:
            values = layer.values[rows]
        else:
            values = colour.colour_values(self.data.catalog[layer.spec.column].iloc[rows], layer.spec)
        return mosaic.frame_colours(values, colour.palette_for(layer.spec), self.current_clim(), colour.NULL_GREY)

    def selection_frame(self) -> pd.DataFrame:
        """x, y of the selected rows only, rebuilt when the selection array changes."""
        rows = self.state.selection_ids
        if self._selection_rows is not rows:
            rows_i = np.asarray(rows, dtype=np.int64)
            f = self.data.frame
            self._selection_frame = pd.DataFrame({"x": f["x"].to_numpy()[rows_i], "y": f["y"].to_numpy()[rows_i]})
            self._selection_rows = rows
        return self._selection_frame

    def render_selection(self, x_range=None, y_range=None, width=None, height=None, **_):
        """The current selection rasterized on its own (one Datashader count over the selected rows, never one
        Bokeh glyph per object), drawn in one colour; an empty layer when nothing is selected."""
        x0, x1, y0, y1 = self._extent
        x_range, y_range = x_range or (x0, x1), y_range or (y0, y1)
        frame = self.selection_frame()
        if len(frame) == 0:
            image, outline = empty_image("selected", x_range, y_range), empty_image("outline", x_range, y_range)
        else:
            cvs = ds.Canvas(plot_width=int(width or DEFAULT_WIDTH), plot_height=int(height or MAP_FRAME),
                            x_range=tuple(x_range), y_range=tuple(y_range))
            counts = cvs.points(frame, "x", "y", ds.count())
            present = tf.dynspread(counts.astype(np.float32).where(counts > 0), **SPREAD)
            image = hv.Image(present.rename("selected"), kdims=["x", "y"])
            ring = ndimage.binary_dilation(np.isfinite(present.values), iterations=1)
            outline = hv.Image(present.copy(data=np.where(ring, 1.0, np.nan).astype(np.float32)).rename("outline"),
                               kdims=["x", "y"])
        self.last_selection_image = image
        return (outline.opts(cmap=[SELECTION_OUTLINE, SELECTION_OUTLINE], clim=(0, 1), alpha=SELECTION_ALPHA)
                * image.opts(cmap=[SELECTION_COLOUR, SELECTION_COLOUR], clim=(0, 1), alpha=SELECTION_ALPHA))

    # ---------------------------------------------------------------- colour (dynamic operation parameters)
    @property
    def layer(self) -> colour.ColourLayer:
        return colour_layer(self.data, self.state)

    @property
    def spec(self) -> colour.ColourSpec:
        return self.layer.spec

    def current_clim(self) -> tuple:
        layer = self.layer
        if layer.spec.kind == colour.DENSITY:
            return (0.0, self.density_log_peak)
        if layer.spec.kind == "continuous" and self.state.colour_range is not None:
            return tuple(self.state.colour_range)
        return layer.range

    def _on_session_colours(self, event) -> None:
        """Redraw when the layer on show was replaced (a refitted probe, changed labels); other changes cost nothing."""
        shown = self.state.colour_by
        if event.old.get(shown) is not event.new.get(shown):
            if shown not in event.new and shown not in self.data.specs:
                self.state.param.update(colour_by=colour.DENSITY, colour_range=None)
            else:
                self.recolour_stream.event()

    # ---------------------------------------------------------------- overlays
    @param.depends("state.neighbour_ids")
    def highlight_points(self):
        """Search results (rings) and the query object (star) as one layer: a click refreshes the plot once
        (the search that follows a selection always sets neighbour_ids)."""
        ids = np.asarray(self.state.neighbour_ids, dtype=np.int64)
        sel = [] if self.state.selected is None else [int(self.state.selected)]
        rows = np.r_[ids, np.asarray(sel, dtype=np.int64)]
        role = np.array(["neighbour"] * len(ids) + ["selected"] * len(sel), dtype=object)
        x, y = self.data.frame["x"].to_numpy()[rows], self.data.frame["y"].to_numpy()[rows]
        return hv.Points((x, y, role), kdims=["x", "y"], vdims=["role"]).opts(
            marker=hv.dim("role").categorize({"neighbour": "circle", "selected": "star"}),
            size=hv.dim("role").categorize({"neighbour": 11, "selected": 22}),
            fill_color=hv.dim("role").categorize({"neighbour": "#00000000", "selected": "#ff2d55"}),
            line_color=hv.dim("role").categorize({"neighbour": "#00e5ff", "selected": "white"}),
            line_width=2.0)

    @param.depends("state.hovered")
    def hover_point(self):
        """A ring on the object under the pointer, so the eye can tell which dot the hover card describes."""
        i = self.state.hovered
        xy = ([], []) if i is None else ([self.data.frame["x"].iat[int(i)]], [self.data.frame["y"].iat[int(i)]])
        return hv.Points(xy, kdims=["x", "y"]).opts(marker="circle", size=16, fill_alpha=0, line_color="#111111",
                                                    line_width=2)

    # ---------------------------------------------------------------- pointer
    def view_geometry(self):
        """Current (x_range, y_range, width_px, height_px), falling back to the full extent before first render."""
        x0, x1, y0, y1 = self._extent
        xr = self.range_stream.x_range or (x0, x1)
        yr = self.range_stream.y_range or (y0, y1)
        w = self.size_stream.width or DEFAULT_WIDTH
        h = self.size_stream.height or MAP_FRAME
        return xr, yr, w, h

    def object_at(self, x, y, radius_px: float = DEFAULT_RADIUS_PX):
        """The object under (x, y): in mosaic mode the tile's, else the nearest within ``radius_px`` screen pixels."""
        if self.state.map_mode == "images" and self.last_mosaic is not None:
            return self.last_mosaic.object_at(x, y)
        xr, yr, w, h = self.view_geometry()
        return nearest_object(self.data.tree, x, y, xr, yr, w, h, radius_px)

    def _on_pointer(self, x=None, y=None, **_):
        self.state.hovered = self.object_at(x, y)

    def _on_tap(self, x=None, y=None, **_):
        i = self.object_at(x, y, radius_px=2 * DEFAULT_RADIUS_PX)
        if i is not None:
            self.state.select(i)

    # ---------------------------------------------------------------- the plot
    def overlay(self, *extra_layers):
        """The map: data layers, the neighbour highlight, then any ``extra_layers`` (e.g. the sky-query marker).
        Extra layers go inside so the overlay's options (toolbar, tools) still apply to the whole plot."""
        x0, x1, y0, y1 = self._extent
        plot = self.layers * self.mosaic_layer * self.selection_layer * self.highlight_layer * self.hover_layer
        for layer in extra_layers:
            plot = plot * layer
        return plot.opts(
            hv.opts.Image(frame_width=MAP_FRAME, frame_height=MAP_FRAME, tools=["tap", "lasso_select", "box_select"],
                          default_tools=[], colorbar=False,
                          active_tools=["wheel_zoom"], xlabel="UMAP 1", ylabel="UMAP 2",
                          xlim=(x0, x1), ylim=(y0, y1)),
            hv.opts.Overlay(frame_width=MAP_FRAME, frame_height=MAP_FRAME, toolbar="above",
                            tools=["wheel_zoom", "pan", BoxZoomTool(match_aspect=True), "reset", "tap", "save"],
                            active_tools=["wheel_zoom", "pan"], bgcolor="white", hooks=[describe_tools]),
        )

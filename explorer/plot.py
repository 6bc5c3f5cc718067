"""The map: every object of the UMAP plane rasterized server-side with Datashader.

Layers (bottom to top): a grey density layer of all objects (so objects with a null colour value stay visible),
the colour layer (one aggregator swapped on colour-by change: ``ds.count`` / ``ds.mean`` / ``ds.max`` on codes),
the similarity-search results, and the selected object. Pan and zoom re-aggregate at full resolution.
Hover and click are PointerXY / Tap streams resolved with the KD-tree in ``explorer.hover``; the
RangeXY / PlotSize streams give the pixel scale for the pointer radius.
"""
from __future__ import annotations

import datashader as ds
import holoviews as hv
import numpy as np
import param
from holoviews.operation.datashader import dynspread, rasterize

from explorer import colour
from explorer.data import ExplorerData
from explorer.hover import DEFAULT_RADIUS_PX, nearest_object
from explorer.state import ExplorerState

MAP_HEIGHT = 680
DEFAULT_WIDTH = 900
SPREAD = dict(threshold=0.6, max_px=3, how="max")  # 'max' suits means and codes; 'add' would sum them


def _with_opts(element, style: dict):
    """Apply the colour layer's plot options; density counts are shown as log10 (see colour.density_spec)."""
    style = dict(style)
    if style.pop("log", False):
        vd = element.vdims[0].name
        counts = np.asarray(element.data[vd].values, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            logc = np.where(counts > 0, np.log10(counts), np.nan)  # spreading leaves 0 where nothing is
        data = element.data.copy(deep=False)
        data[vd] = (data[vd].dims, logc)
        element = element.clone(data)
        top = np.nanmax(logc) if np.isfinite(logc).any() else 1.0
        style["clim"] = (0.0, float(max(top, 0.5)))
    return element.opts(**style)


class MapView(param.Parameterized):
    state = param.ClassSelector(class_=ExplorerState)

    def __init__(self, data: ExplorerData, state: ExplorerState, **params):
        super().__init__(state=state, **params)
        self.data = data
        frame = data.frame
        self._extent = (float(frame["x"].min()), float(frame["x"].max()), float(frame["y"].min()),
                        float(frame["y"].max()))
        vdims = [c for c in frame.columns if c not in ("x", "y")]
        self.points = hv.Points(frame, kdims=["x", "y"], vdims=vdims)
        self.grey = dynspread(rasterize(self.points, aggregator=ds.count()), **SPREAD).opts(
            cmap=[colour.NULL_GREY, colour.NULL_GREY], alpha=0.8)
        self.colour = dynspread(rasterize(self.points, aggregator=self.aggregator), **SPREAD).apply(
            _with_opts, style=self.style)
        self.range_stream = hv.streams.RangeXY(source=self.colour)
        self.size_stream = hv.streams.PlotSize(source=self.colour)
        self.pointer = hv.streams.PointerXY(x=None, y=None, source=self.colour)
        self.tap = hv.streams.Tap(x=None, y=None, source=self.colour)
        self.pointer.add_subscriber(self._on_pointer)
        self.tap.add_subscriber(self._on_tap)
        self.neighbour_layer = hv.DynamicMap(self.neighbour_points)
        self.selected_layer = hv.DynamicMap(self.selected_point)

    # ---------------------------------------------------------------- colour (dynamic operation parameters)
    @property
    def spec(self) -> colour.ColourSpec:
        return self.data.specs.get(self.state.colour_by, self.data.specs[colour.DENSITY])

    @param.depends("state.colour_by")
    def aggregator(self):
        return colour.aggregator_for(self.spec)

    @param.depends("state.colour_by", "state.colour_range")
    def style(self) -> dict:
        """Plot options of the colour layer (one dependency so a change triggers one update)."""
        return dict(cmap=colour.palette_for(self.spec), clim=self.current_clim(), log=self.spec.kind == colour.DENSITY)

    def current_clim(self) -> tuple:
        spec = self.spec
        if spec.kind == colour.DENSITY:
            return (np.nan, np.nan)
        if spec.kind == "continuous" and self.state.colour_range is not None:
            return tuple(self.state.colour_range)
        return self.data.ranges[spec.column]

    # ---------------------------------------------------------------- overlays
    @param.depends("state.neighbour_ids")
    def neighbour_points(self):
        ids = np.asarray(self.state.neighbour_ids, dtype=np.int64)
        return hv.Points((self.data.frame["x"].to_numpy()[ids], self.data.frame["y"].to_numpy()[ids]),
                         kdims=["x", "y"]).opts(size=11, fill_alpha=0, line_color="#00e5ff", line_width=2.5,
                                                marker="circle")

    @param.depends("state.selected")
    def selected_point(self):
        i = self.state.selected
        xy = ([], []) if i is None else ([self.data.frame["x"].iat[i]], [self.data.frame["y"].iat[i]])
        return hv.Points(xy, kdims=["x", "y"]).opts(size=22, marker="star", color="#ff2d55", line_color="white",
                                                    line_width=1.5)

    # ---------------------------------------------------------------- pointer
    def view_geometry(self):
        """Current (x_range, y_range, width_px, height_px), falling back to the full extent before first render."""
        x0, x1, y0, y1 = self._extent
        xr = self.range_stream.x_range or (x0, x1)
        yr = self.range_stream.y_range or (y0, y1)
        w = self.size_stream.width or DEFAULT_WIDTH
        h = self.size_stream.height or MAP_HEIGHT
        return xr, yr, w, h

    def object_at(self, x, y, radius_px: float = DEFAULT_RADIUS_PX):
        xr, yr, w, h = self.view_geometry()
        return nearest_object(self.data.tree, x, y, xr, yr, w, h, radius_px)

    def _on_pointer(self, x=None, y=None, **_):
        self.state.hovered = self.object_at(x, y)

    def _on_tap(self, x=None, y=None, **_):
        i = self.object_at(x, y, radius_px=2 * DEFAULT_RADIUS_PX)
        if i is not None:
            self.state.select(i)

    # ---------------------------------------------------------------- the plot
    def overlay(self):
        x0, x1, y0, y1 = self._extent
        pad_x, pad_y = 0.03 * (x1 - x0 or 1), 0.03 * (y1 - y0 or 1)
        return (self.grey * self.colour * self.neighbour_layer * self.selected_layer).opts(
            hv.opts.Image(responsive=True, height=MAP_HEIGHT, tools=["tap"], default_tools=[], colorbar=False,
                          active_tools=["wheel_zoom"], xlabel="UMAP 1", ylabel="UMAP 2",
                          xlim=(x0 - pad_x, x1 + pad_x), ylim=(y0 - pad_y, y1 + pad_y)),
            hv.opts.Overlay(responsive=True, height=MAP_HEIGHT, toolbar="above",
                            tools=["wheel_zoom", "pan", "box_zoom", "reset", "tap", "save"],
                            active_tools=["wheel_zoom", "pan"], bgcolor="white"),
        )

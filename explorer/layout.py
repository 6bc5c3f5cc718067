"""What every explorer page shares: the offline page design, its title, accent and CSS, the map's help line and the
colour legend beside the map."""
from __future__ import annotations

import panel as pn
from panel.theme.fast import Fast

from explorer.data import ExplorerData
from explorer.map import colour
from explorer.map.plot import MapView
from explorer.state import ExplorerState


class OfflineFast(Fast):
    """Panel's Fast design without its Google web font: the page loads nothing the server does not serve (the font
    request failed offline and told a third party of every visit)."""

    _resources = {kind: files for kind, files in Fast._resources.items() if kind != "font"}


OfflineFast.__name__ = "Fast"   # Panel finds a design's bundled files (fast/js/...) by its lower-cased class name


TITLE = "Latent-space explorer"
MAP_MODES = {"Points": "points", "Images": "images"}   # the map as Datashader points or as a thumbnail mosaic
ACCENT = "#1f6f8b"

CSS = """
.cb-legend {font-size: 12px; line-height: 1.35;}
.cb-bar {height: 14px; border-radius: 2px; margin: 4px 0 2px 0; width: 100%;}
.cb-ticks {display: flex; justify-content: space-between; color: #444;}
.cb-cat {display: flex; align-items: center; gap: 6px; margin: 2px 0;}
.cb-swatch {display: inline-block; width: 12px; height: 12px; border-radius: 2px; flex: none;}
.cb-note {color: #777; font-size: 11px; margin-top: 4px;}
.obj-card {font-size: 12px; line-height: 1.3;}
.obj-card img, .nb-card img, .detail img {image-rendering: pixelated; border-radius: 3px; display: block;}
.obj-card table, .detail table {border-collapse: collapse;}
.obj-card td, .detail td {padding: 1px 6px 1px 0; vertical-align: top;}
.obj-card td:first-child, .detail td:first-child {color: #666;}
.obj-card td, .detail td {overflow-wrap: anywhere;}
.obj-card td:first-child, .detail td:first-child {overflow-wrap: normal; hyphens: auto; min-width: 70px;}
.obj-id {white-space: nowrap;}
.detail-group summary {cursor: pointer; margin-top: 6px; font-weight: 600; color: #333; font-size: 12px;}
.stability-table {font-size: 12px;}
.stability-table td:first-child {white-space: nowrap; padding-right: 6px;}
.muted {color: #888; font-size: 12px;}
.nb-card {font-size: 11px; text-align: center;}
.nb-sim {font-weight: 600;}
"""


# the toolbar's icons carry no words: say once what the pointer and each tool do
MAP_HELP = ("<span class='muted map-help'><b>Map</b>: hover shows an object · click finds similar objects · drag pans "
            "· wheel zooms · toolbar: <b>lasso</b> or <b>box select</b> to pick objects to label, <b>reset</b> for "
            "the whole map, <b>save</b> for a PNG</span>")


MOSAIC_NOTE = ("<div class='cb-note mosaic-note'><b>Images</b>: each tile is the object nearest the centre of its "
               "cell; zoom in for finer families. {}</div>")


def build_legend(data: ExplorerData, state: ExplorerState, view: MapView):
    def legend(colour_by, colour_range, session_colours, density_log_peak, map_mode):
        layer = view.layer
        if map_mode != "images":
            return colour.legend_html(layer.spec, view.current_clim(), layer.null_fraction)
        if layer.spec.kind == colour.DENSITY:
            return MOSAIC_NOTE.format("Choose a <i>Colour by</i> to frame each tile in its value.")
        return (colour.legend_html(layer.spec, view.current_clim(), layer.null_fraction)
                + MOSAIC_NOTE.format("Each tile's frame shows its value."))

    return pn.pane.HTML(pn.bind(legend, state.param.colour_by, state.param.colour_range, state.param.session_colours,
                                view.param.density_log_peak, state.param.map_mode), width=230,
                        css_classes=["colour-legend"])

"""The map grows with the browser window: the page reports its viewport size, and the map's square frame is resized
to the largest that fits beside the sidebar and the details column and above the fold.

Bokeh cannot size a plot to "square, and no taller than the window" by itself (``scale_height`` follows the parent's
height, which a scrolling page does not fix), so a small JavaScript component sends ``window.innerWidth/Height`` at
load and after each resize; the server then sets the figure's frame size, and the PlotSize stream redraws the map at
the new pixel size (no re-render of the plot itself).
"""
from __future__ import annotations

import param
from panel.reactive import ReactiveHTML

MIN_FRAME, MAX_FRAME = 360, 1100
# What the page puts around the map's frame (measured in Chromium on the Fast template): the header, the card's
# padding, the toolbar row and the x axis above/below; the sidebar, the y axis and the details column beside it.
CHROME_HEIGHT_PX = 215
SIDEBAR_PX, DETAILS_PX, CHROME_WIDTH_PX = 380, 260, 140


def frame_for_window(width: int, height: int, sidebar: bool = True) -> int:
    """Side (px) of the square map frame for a viewport of ``width`` x ``height``."""
    by_height = height - CHROME_HEIGHT_PX
    by_width = width - (SIDEBAR_PX if sidebar else 0) - DETAILS_PX - CHROME_WIDTH_PX
    return int(max(MIN_FRAME, min(MAX_FRAME, by_height, by_width)))


class WindowSize(ReactiveHTML):
    """The browser's viewport size, reported at load and (debounced) after each resize."""

    window_width = param.Integer(default=0)
    window_height = param.Integer(default=0)

    _template = '<span id="probe"></span>'
    _scripts = {"render": """
  const report = () => { data.window_width = window.innerWidth; data.window_height = window.innerHeight; };
  report();
  window.addEventListener('resize', () => { clearTimeout(state.timer); state.timer = setTimeout(report, 300); });
"""}


def follow_window(map_pane, window: WindowSize, beside=None, extra_height: int = 80) -> None:
    """Resize the map's figure in every view of ``map_pane`` (a ``pn.pane.HoloViews``) when the window changes, and
    ``beside`` (the column next to the map) to the plot's height (frame + ``extra_height`` of toolbar and axis)."""
    def resize(*_):
        if not (window.window_width and window.window_height):
            return
        side = frame_for_window(window.window_width, window.window_height)
        if beside is not None:
            beside.height = side + extra_height
        for plot, _pane in list(map_pane._plots.values()):   # Panel keeps one HoloViews plot per browser view
            figure = plot.state
            if figure.frame_width != side or figure.frame_height != side:
                figure.update(frame_width=side, frame_height=side)

    window.param.watch(resize, ["window_width", "window_height"])

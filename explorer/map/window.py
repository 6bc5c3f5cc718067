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
SIDEBAR_PX, DETAILS_PX, CHROME_WIDTH_PX = 380, 260, 165


def frame_for_window(width: int, height: int, sidebar: bool = True) -> int:
    """Side (px) of the square map frame for a viewport of ``width`` x ``height``: beside the sidebar and the details
    column, or, in a window too narrow for both (the details then wrap below the map), beside the sidebar only."""
    by_height = height - CHROME_HEIGHT_PX
    main = width - (SIDEBAR_PX if sidebar else 0)
    by_width = main - DETAILS_PX - CHROME_WIDTH_PX
    if by_width < MIN_FRAME:
        by_width = main - CHROME_WIDTH_PX
    return int(max(MIN_FRAME // 2, min(MAX_FRAME, by_height, by_width)))


# the compare page: two maps side by side, each with its legend and hover card below it, under a few lines of text
COMPARE_CHROME_HEIGHT_PX, COMPARE_CHROME_WIDTH_PX = 320, 150


def compare_frame_for_window(width: int, height: int) -> int:
    """Side (px) of each of the compare page's two square map frames."""
    by_width = width // 2 - COMPARE_CHROME_WIDTH_PX
    return int(max(MIN_FRAME // 2, min(MAX_FRAME, height - COMPARE_CHROME_HEIGHT_PX, by_width)))


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


def follow_window(map_panes, window: WindowSize, beside=None, extra_height: int = 80,
                  frame_for=frame_for_window) -> None:
    """Resize the map's figure in every view of each of ``map_panes`` (``pn.pane.HoloViews``) to ``frame_for(width,
    height)`` when the window changes, and ``beside`` (the column next to the map) to the plot's height (frame +
    ``extra_height`` of toolbar and axis)."""
    panes = map_panes if isinstance(map_panes, (list, tuple)) else [map_panes]

    def resize(*_):
        if not (window.window_width and window.window_height):
            return
        side = frame_for(window.window_width, window.window_height)
        if beside is not None:
            beside.height = side + extra_height
        for pane in panes:
            for plot, _pane in list(pane._plots.values()):   # Panel keeps one HoloViews plot per browser view
                figure = plot.state
                if figure.frame_width != side or figure.frame_height != side:
                    figure.update(frame_width=side, frame_height=side)

    window.param.watch(resize, ["window_width", "window_height"])

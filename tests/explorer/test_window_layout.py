"""The map's size follows the window (explorer/map/window.py), and every toolbar button says what it does."""
from __future__ import annotations

from explorer.map.window import (
    CHROME_HEIGHT_PX,
    CHROME_WIDTH_PX,
    DETAILS_PX,
    MAX_FRAME,
    SIDEBAR_PX,
    compare_frame_for_window,
    frame_for_window,
)


def test_the_map_takes_the_room_it_has_and_stays_above_the_fold():
    assert frame_for_window(1600, 1000) == 1000 - CHROME_HEIGHT_PX          # height-bound on a wide screen
    assert frame_for_window(1280, 720) == 1280 - SIDEBAR_PX - DETAILS_PX - CHROME_WIDTH_PX   # width-bound
    assert frame_for_window(1920, 1080) > frame_for_window(1600, 1000) > frame_for_window(1280, 720)
    assert frame_for_window(3840, 2160) == MAX_FRAME
    # 900 px: no room for the details beside the map; they wrap under it and the map takes the main area's width
    assert frame_for_window(900, 700) == 900 - SIDEBAR_PX - CHROME_WIDTH_PX
    assert frame_for_window(900, 700, sidebar=False) > frame_for_window(900, 700)


def test_the_compare_page_fits_two_maps_side_by_side():
    for width, height in ((1600, 1000), (1280, 720)):
        side = compare_frame_for_window(width, height)
        assert 2 * (side + 150) <= width and side + 320 <= height


def test_every_toolbar_button_has_words(small_bundle):
    import holoviews as hv

    hv.renderer("bokeh")
    from explorer.search.stability_ui import copies_layer

    from explorer.data import load_explorer_data
    from explorer.map.plot import TOOL_DESCRIPTIONS, MapView
    from explorer.sky.skyquery_ui import query_marker
    from explorer.state import ExplorerState

    state = ExplorerState()
    view = MapView(load_explorer_data(small_bundle), state)
    plot = hv.renderer("bokeh").get_plot(view.overlay(query_marker(state), copies_layer(state)))
    tools = {type(t).__name__: t.description for t in plot.state.tools}
    assert {"WheelZoomTool", "PanTool", "BoxZoomTool", "ResetTool", "TapTool", "LassoSelectTool", "BoxSelectTool",
            "SaveTool"} <= set(tools)
    assert all(tools[name] == TOOL_DESCRIPTIONS[name] for name in tools), tools

"""`panel serve tests/recorded/skyquery_app.py --args --bundle DIR`: the explorer page with the sky-search section
added to the sidebar and the query marker on the map (for the browser tests, until explorer/app.py does both)."""
import sys

import panel as pn

from explorer.app import SIDEBAR_SECTIONS, build_error_page, build_page
from explorer.data import load_explorer_data, resolve_bundle_path
from explorer.skyquery_ui import build_sky_search_section, query_marker
from precompute.bundle import BundleError

path = resolve_bundle_path(sys.argv[1:])
sections = list(SIDEBAR_SECTIONS)
if build_sky_search_section not in sections:
    sections.insert(1, build_sky_search_section)
try:
    page = build_page(load_explorer_data(path), sections=sections)
    # The query marker on the map, as explorer/app.py would add it: overlay it on the map pane's plot.
    map_pane = next(iter(page.main[0].select(pn.pane.HoloViews)))
    map_pane.object = map_pane.object * query_marker(page.explorer_state)
except BundleError as e:
    page = build_error_page(path, str(e))
page.servable()

"""`panel serve tests/recorded/skyquery_app.py --args --bundle DIR`: the explorer page with the sky-search section
added to the sidebar (for the browser tests, until explorer/app.py lists it in SIDEBAR_SECTIONS itself)."""
import sys

from explorer.app import SIDEBAR_SECTIONS, build_error_page, build_page
from explorer.data import load_explorer_data, resolve_bundle_path
from explorer.skyquery_ui import build_sky_search_section
from precompute.bundle import BundleError

path = resolve_bundle_path(sys.argv[1:])
sections = list(SIDEBAR_SECTIONS)
if build_sky_search_section not in sections:
    sections.insert(1, build_sky_search_section)
try:
    page = build_page(load_explorer_data(path), sections=sections)
except BundleError as e:
    page = build_error_page(path, str(e))
page.servable()

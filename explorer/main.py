"""Entry point of `panel serve explorer` (Bokeh directory app): one page per browser session.

    panel serve explorer --args --bundle bundles/demo
"""
import sys

from explorer.app import create_page

create_page(sys.argv[1:]).servable()

"""The explorer web app: `panel serve explorer` serves explorer/main.py (this folder is a Bokeh directory app).

Kept import-light on purpose: Bokeh runs this file once per server process as the app's package.
"""

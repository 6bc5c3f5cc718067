"""A closed browser session must leave nothing behind in the server process.

Each test builds the whole page in a Bokeh document the way `panel serve` does, ends the session the way Bokeh does
(the document's session-destroyed callbacks, then its models are released), and checks with weak references that
the session's state and map are garbage. Two leaks were found this way (tests/explorer/test_soak.py saw ~60 MB kept per
visitor): Panel's jscallback registry pinned the colour range slider, and a WeakKeyDictionary whose values referred
to their own keys pinned the labels state.
"""
from __future__ import annotations

import gc
import types
import weakref

from bokeh.document import Document
from panel.io.state import set_curdoc

from explorer import app
from explorer.data import load_explorer_data
from explorer.state import sessions_in_memory


def open_and_close_session(data, sections=None):
    """Build one session's page in its own document, end the session; weak references to its state and map."""
    doc = Document()
    with set_curdoc(doc):
        page = app.build_page(data, sections=sections)
        page.server_doc(doc)
    refs = weakref.ref(page.explorer_state), weakref.ref(page.explorer_view)
    del page
    context = types.SimpleNamespace(_document=doc, id="test-session", server_context=None)
    for callback in list(doc.session_destroyed_callbacks):
        try:
            callback(context)
        except Exception:  # noqa: BLE001 - callbacks that need a live server (e.g. pn.state.location) cannot run here
            pass
    doc.callbacks.destroy()
    doc.models.destroy()
    doc.modules.destroy()
    return refs


def test_closed_sessions_are_released(small_bundle):
    data = load_explorer_data(small_bundle)
    before = sessions_in_memory()
    refs = [open_and_close_session(data) for _ in range(2)]
    gc.collect()
    kept = [name for state, view in refs for name, ref in (("state", state), ("map", view)) if ref() is not None]
    assert not kept, f"closed sessions are still in memory: {kept}"
    assert sessions_in_memory() == before  # what the server logs after each session ends

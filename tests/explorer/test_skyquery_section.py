"""The sky-search section's own behaviour, without a browser: the bundle's object ids are found by the search box,
and a fetch that fails leaves no earlier object standing as if it were the answer."""
from __future__ import annotations

import time

import numpy as np

from core.surveys.services import FetchError
from explorer.data import load_explorer_data
from explorer.sky.skyquery import parse_position
from explorer.sky.skyquery_ui import build_sky_search_section
from explorer.state import ExplorerState


def section_for(bundle):
    state = ExplorerState()
    data = load_explorer_data(bundle)
    return data, state, build_sky_search_section(data, state).sky_search


def test_an_object_id_of_the_bundle_selects_that_object(small_bundle):
    data, state, section = section_for(small_bundle)
    oid = str(data.object_ids[42])
    section.find(f"  {oid} ")
    assert state.selected == 42 and "sky-status-ok" in section.status.object and oid in section.status.object
    section.find("not-an-id-or-a-position")   # anything else still goes to the position parser
    assert state.selected == 42 and "sky-status-ok" not in section.status.object


def test_a_failed_fetch_clears_the_earlier_object_and_its_neighbours(small_bundle, monkeypatch):
    data, state, section = section_for(small_bundle)
    state.select(5)
    state.param.update(neighbour_ids=np.array([5, 6, 7]), neighbour_sims=np.array([1, 0.9, 0.8], np.float32))
    section.locate(parse_position("10.0 -80.0", resolve_names=False))   # far from every object

    def unreachable(query):
        raise FetchError("the cutout service did not answer within 20 s; try again later")

    monkeypatch.setattr(section, "_embedded", unreachable)
    section.fetch_here()
    deadline = time.monotonic() + 30
    while section.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "did not answer" in section.status.object
    assert state.selected is None and len(state.neighbour_ids) == 0

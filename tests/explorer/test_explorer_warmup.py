"""The explorer's start-up: what the first page does not need is built in a background thread, once, and a hover or
search that comes first waits for it instead of building a second copy or failing."""
from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest

from explorer import data as explorer_data
from explorer.data import (
    built_once,
    clear_cache,
    load_explorer_data,
    open_bundle_for_serving,
    prepare,
)


class Slow:
    """A stand-in holder with one slow shared structure."""

    def __init__(self):
        self.builds = 0
        self._locks, self._guard = {}, threading.Lock()

    def build_lock(self, name):
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    @built_once
    def thing(self):
        self.builds += 1
        time.sleep(0.05)
        return object()


def test_built_once_builds_once_when_threads_race():
    holder = Slow()
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(holder.thing)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert holder.builds == 1 and len(seen) == 8 and all(s is seen[0] for s in seen)
    assert holder.thing is seen[0]


@pytest.fixture
def fresh_data(small_bundle):
    return prepare(open_bundle_for_serving(small_bundle))


def test_a_hover_during_the_warm_up_waits_for_the_one_tree(fresh_data, monkeypatch):
    calls, building = [], threading.Event()
    real_build = explorer_data.build_tree

    def slow_build(x, y):
        calls.append(threading.current_thread().name)
        building.set()
        time.sleep(0.2)
        return real_build(x, y)

    monkeypatch.setattr(explorer_data, "build_tree", slow_build)
    worker = fresh_data.warm_in_background(after_request=False)
    assert building.wait(30)  # the worker is inside the tree build now
    tree = fresh_data.tree  # what a hover does: waits, then gets the worker's tree
    worker.join(60)
    assert calls == ["explorer-warm"] and tree is fresh_data.tree and tree.n == fresh_data.n
    assert {"searcher", "embedding_rows", "ra", "dec"} <= set(vars(fresh_data))


def test_a_failed_warm_up_is_logged_and_the_first_use_raises(fresh_data, monkeypatch, caplog):
    import core.index

    def broken(*_a, **_k):
        raise RuntimeError("index unusable")

    monkeypatch.setattr(core.index, "SimilaritySearch", broken)
    with caplog.at_level(logging.ERROR, logger="explorer"):
        fresh_data.warm_in_background(after_request=False).join(60)
    assert "background warm-up" in caplog.text
    assert fresh_data.tree.n == fresh_data.n  # built before the failure, still usable
    with pytest.raises(RuntimeError, match="index unusable"):
        _ = fresh_data.searcher


def test_inside_a_request_the_warm_up_starts_after_it(fresh_data):
    """In a server the loop answering the first request must finish it before the warm-up takes the GIL."""

    async def request():
        worker = fresh_data.warm_in_background()
        started_during_request = worker.ident is not None
        for _ in range(5):
            await asyncio.sleep(0)
        return worker, started_during_request

    worker, started_during_request = asyncio.run(request())
    assert not started_during_request
    worker.join(60)
    assert "tree" in vars(fresh_data)


def test_load_explorer_data_serves_before_the_hover_structures_exist(small_bundle, monkeypatch):
    """The first page needs only the map frame; the tree and searcher come from the background thread."""
    release = threading.Event()
    real_warm = explorer_data.ExplorerData.warm

    def held_warm(self):
        release.wait(30)
        return real_warm(self)

    monkeypatch.setattr(explorer_data.ExplorerData, "warm", held_warm)
    clear_cache()
    try:
        data = load_explorer_data(small_bundle)
        assert "tree" not in vars(data) and "searcher" not in vars(data)
        assert np.isfinite(data.frame["x"].to_numpy()).all()
        release.set()
        xy = data.frame[["x", "y"]].to_numpy(np.float64)
        assert data.tree.query(xy[5])[1] == 5  # waits for / builds the tree, never fails
    finally:
        release.set()
        clear_cache()


def test_gallery_cards_are_made_when_a_search_needs_them(small_bundle):
    """The page starts with no result cards (they were most of its Bokeh models); a search makes k of them, a smaller
    k hides the rest, and a card's pivot button searches from its object."""
    from explorer.search.gallery import NeighbourGallery, wire_search

    from explorer.state import ExplorerState

    data, state = load_explorer_data(small_bundle), ExplorerState()
    wire_search(data, state)
    gallery = NeighbourGallery(data, state)
    assert gallery.cards == [] and gallery.empty.visible
    state.select(5)
    assert len(gallery.cards) == len(gallery.box.objects) == state.k == len(state.neighbour_ids)
    assert all(card.visible for card in gallery.cards) and not gallery.empty.visible
    assert "nb-thumb" in gallery.images[0].object
    state.k = 4
    assert len(gallery.cards) == 12 and [c.visible for c in gallery.cards].count(True) == 4
    pivot = gallery.cards[1].objects[1].objects[0]
    target = gallery.ids[1]
    pivot.clicks += 1
    assert state.selected == target

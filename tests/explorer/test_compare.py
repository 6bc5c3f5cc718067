"""Two bundles of the same objects side by side (explorer/compare.py): the pairing by object_id, mirrored selections
and clicks, and in Chromium a lasso in one map selecting the same objects in the other."""
from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import deep_query_all, deep_text, draw_lasso, inked, pixels, start_explorer_server, wait_for

from explorer.compare import Pairing, link_states, overlap_html
from explorer.state import ExplorerState


def test_pairing_maps_shared_objects_and_drops_the_rest():
    p = Pairing(["a", "b", "c", "d"], ["d", "x", "b"])
    assert p.n_shared == 2 and list(p.a_to_b) == [-1, 2, -1, 0] and list(p.b_to_a) == [3, -1, 1]
    assert list(p.across([0, 1, 3], to_b=True)) == [2, 0] and list(p.across([1], to_b=False)) == []


def test_selections_and_clicks_are_mirrored_without_echo():
    p = Pairing(["a", "b", "c"], ["c", "b", "a"])
    a, b = ExplorerState(), ExplorerState()
    link_states(a, b, p)
    a.selection_ids = np.array([0, 1])
    assert sorted(b.selection_ids) == [1, 2]
    b.selection_ids = np.array([0])
    assert list(a.selection_ids) == [2]
    b.select(1)
    assert a.selected == 1 and b.selected == 1
    a.param.update(neighbour_ids=np.array([0, 2]))
    b.param.update(neighbour_ids=np.array([2, 1]))
    assert "<b>1 of 2</b>" in overlap_html(a, b, p)   # a's 0 is b's 2: one object in common


def _map_canvases(driver):
    """One canvas per map (Bokeh stacks a primary and an overlay canvas per plot): the first at each x position."""
    per_x = {}
    for c in deep_query_all(driver, "canvas"):
        if c.size["width"] > 300:
            per_x.setdefault(round(c.location["x"]), c)
    return [per_x[x] for x in sorted(per_x)]


@pytest.mark.browser
def test_a_lasso_in_one_map_selects_the_same_objects_in_the_other(browser, small_bundle, make_bundle, tmp_path,
                                                                   screenshot_dir):
    other = make_bundle("small-other-seed", n=3000, dim=32, seed=1)   # same object ids, another embedding
    server = start_explorer_server(small_bundle, tmp_path, extra_args=["--compare", other])
    try:
        browser.set_window_size(1700, 1100)
        browser.get(server.url)
        canvases = wait_for(lambda: len(c := _map_canvases(browser)) == 2 and c, timeout=120, message="two maps")
        for canvas in canvases:
            wait_for(lambda canvas=canvas: inked(pixels(canvas)).sum() > 200, timeout=60, message="a map to draw")
        assert "3,000</b> objects are in both bundles" in browser.page_source or "3,000 objects" in deep_text(browser)
        draw_lasso(browser, canvases[0], 0.25, 0.3)

        def counts():
            texts = [e.text for e in deep_query_all(browser, ".selection-count") if "selected" in e.text]
            return texts if len(texts) == 2 and texts[0] != "0 selected" else None

        a_text, b_text = wait_for(counts, timeout=60, message="both maps' selection counts")
        assert a_text == b_text and int(a_text.split()[0].replace(",", "")) > 10
        time.sleep(1.0)
        browser.save_screenshot(str(screenshot_dir / "compare-linked-lasso.png"))
    finally:
        server.stop()


def test_report_comparison_says_which_embedding_knows_more():
    from explorer.about import comparison_html

    def report(purity, se, error):
        return {"tasks": [{"name": "fr", "title": "FRI vs FRII", "kind": "categorical",
                           "scores": {"embedding": {"knn_purity": {"mean": purity, "se": se},
                                                    "probe_error": {"mean": error, "se": 0.005}}}}]}

    table = comparison_html(report(0.80, 0.005, 0.10), report(0.70, 0.005, 0.102), "ours", "hayat<2021>")
    assert "hayat&lt;2021&gt;" in table and "0.800" in table and "10.0 %" in table
    rows = table.split("<tr>")[2:]
    assert rows[0].endswith("<td>A</td></tr>") and rows[1].split("</table>")[0].endswith("<td>same</td></tr>")
    assert "no report.json" in comparison_html(None, report(0.7, 0.01, 0.1), "a", "b")

"""The build's stability stage (precompute/stages.py: stability) on a simulated FIRST build, and the app's copies of
the clicked object (explorer/search/stability_ui.py) from the build's cutouts."""
from __future__ import annotations

import json
import shutil

import numpy as np

from core.stability import PERTURBATIONS


def test_the_build_reports_stability_beside_the_pixels(sim_first_build, tmp_path, capsys):
    from core.contract import read_report
    from precompute.__main__ import main

    report = read_report(sim_first_build / "report.json")
    st = report["stability"]
    assert [r["name"] for r in st["perturbations"]] == list(PERTURBATIONS)
    assert st["n_objects"] >= 3 and st["n_reference"] > st["n_objects"]
    assert all(0 <= st["median_rank"][s] <= 1 for s in ("embedding", "pixels"))
    assert st["median_map_shift"]["embedding"] >= 0 and st["rank_ratio"] is not None
    # `precompute report --write` recomputes the embedding-only figures and keeps the build's stability
    bundle = tmp_path / "bundle"
    shutil.copytree(sim_first_build, bundle)
    capsys.readouterr()
    assert main(["report", str(bundle), "--write"]) == 0
    assert "stability under augmentations" in capsys.readouterr().out
    assert json.loads((bundle / "report.json").read_text())["stability"] == st


def test_the_clicked_object_s_copies_land_on_the_map(sim_first_build, tmp_path):
    from explorer.search.stability_ui import copies_of, copies_table_html

    from explorer.data import load_explorer_data

    data = load_explorer_data(sim_first_build)
    assert data.bundle_images is not None, "the fixture keeps its work folder: the cutouts are beside the bundle"
    result = copies_of(data, 7, tmp_path / "cache")
    assert result["source"] == "the build's cutouts" and result["xy"].shape == (len(PERTURBATIONS), 2)
    assert np.isfinite(result["xy"]).all() and (result["cosine"] <= 1.0001).all()
    assert ((0 <= result["share_closer"]) & (result["share_closer"] <= 1)).all()
    x = data.frame["x"].to_numpy()
    assert (x.min() <= result["xy"][:, 0]).all() and (result["xy"][:, 0] <= x.max()).all(), "placed among objects"
    card = copies_table_html(result, data.report["stability"])
    assert "rotated 45°" in card and "Over" in card and "pixel space" in card


def test_without_cutouts_or_a_service_the_copies_say_why(sim_first_build, tmp_path):
    from explorer.search.stability_ui import StabilityError, copies_of

    from explorer.data import open_bundle_for_serving, prepare

    bundle = tmp_path / "alone"
    shutil.copytree(sim_first_build, bundle)   # no .work folder beside this copy
    data = prepare(open_bundle_for_serving(bundle))
    assert data.bundle_images is None
    try:
        copies_of(data, 0, tmp_path / "cache")
    except StabilityError as e:
        assert "ingest cache" in str(e) and "fetching it failed" in str(e)
    else:
        raise AssertionError("no cutout and no network: the copies cannot be made")


def test_the_button_shows_only_where_copies_can_be_embedded(sim_first_build, small_bundle):
    from explorer.search.stability_ui import build_stability_panel

    from explorer.data import load_explorer_data
    from explorer.state import ExplorerState

    for bundle, shown in ((sim_first_build, True), (small_bundle, False)):   # the fixture bundle has no encoder/
        state = ExplorerState()
        panel = build_stability_panel(load_explorer_data(bundle), state).stability_panel
        assert not panel.button.visible
        state.select(3)
        assert panel.button.visible is shown
        state.select(None)
        assert not panel.button.visible

"""A survey and a method, each from one file of its own (tests/plugins/), build a bundle through the ordinary
command line and open as a page: nothing else in the code base names them."""
from __future__ import annotations

import panel as pn
import pytest

from core.surveys import base as surveys


@pytest.mark.slow
def test_a_toy_survey_and_method_build_a_bundle_and_a_page(toy_plugins, tmp_path):
    from explorer.app import colour_options, create_page
    from explorer.cards import detail_html
    from explorer.data import load_explorer_data
    from explorer.state import ExplorerState
    from precompute.__main__ import main

    toy_survey, toy_method = toy_plugins
    images, catalog = toy_survey.write_toy_survey(tmp_path / "toy")
    out = tmp_path / "bundle"
    assert main(["build", "--survey", "toy", "--images", str(images), "--labels", str(catalog), "--out", str(out),
                 "--no-progress", "--n-neighbors", "10", "--device", "cpu"]) == 0

    data = load_explorer_data(out)
    manifest = data.bundle.manifest
    assert manifest["survey"] == "toy" and manifest["model"]["method"] == "toy" and data.n == 160
    assert toy_method.STEPS_SEEN and toy_method.STEPS_SEEN[-1] == (5, 5)   # 160 / 32 steps, one epoch
    assert {"Shape", "Size [arcsec]"} <= set(colour_options(data, ExplorerState()))
    assert "Toy archive" in detail_html(data, 0)
    page = create_page(["--bundle", str(out)])
    assert not isinstance(page.main[0], pn.pane.Alert)   # the explorer, not the "no usable bundle" page


def test_the_toy_survey_is_known_by_name_only_while_registered(toy_plugins):
    from core.surveys.base import find_survey, known_surveys

    assert "toy" in known_surveys() and find_survey("toy").name == "toy" and not find_survey("toy").fetchable
    surveys._REGISTRY.pop("toy")
    assert "toy" not in known_surveys() and find_survey("toy").name == "none"   # any sky: links by position

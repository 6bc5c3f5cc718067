"""In headless Chromium: draw a lasso on the map, name the selection, reload the page, find the label.

Serves the explorer over the session's small fixture bundle with its own label store (``--labels``).
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    ServerInfo,
    deep_query_all,
    deep_text,
    draw_lasso,
    inked,
    map_canvas,
    pixels,
    start_explorer_server,
    wait_for,
)

pytestmark = pytest.mark.browser


def start_labels_server(bundle: Path, labels: Path, workdir: Path) -> ServerInfo:
    return start_explorer_server(bundle, workdir, extra_args=["--labels", labels])


def _inked_pixels(element) -> int:
    return int(inked(pixels(element)).sum())


def _selection_pixels(element) -> int:
    """Pixels of the neon-lime selection layer: strong green, little red and blue (no map palette does that)."""
    r, g, b = np.moveaxis(pixels(element), 2, 0)
    return int(((g > 200) & (g - r > 120) & (g - b > 120)).sum())


def _wait_for_map(driver):
    canvas = wait_for(lambda: map_canvas(driver), timeout=90, message="the map canvas")
    wait_for(lambda: _inked_pixels(canvas) > 200, timeout=60, message="the map to draw")
    return canvas


def _button(driver, text):
    return wait_for(lambda: [b for b in deep_query_all(driver, "button") if b.text.strip() == text],
                    message=f"the button '{text}'")[0]


@pytest.fixture(scope="module")
def labels_server(small_bundle, tmp_path_factory):
    work = tmp_path_factory.mktemp("labels-server")
    info = start_labels_server(small_bundle, work / "labels.sqlite", work)
    info.labels_path = work / "labels.sqlite"
    yield info
    info.stop()


def test_lasso_name_reload_finds_the_label(browser, labels_server, screenshot_dir):
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(labels_server.url)
    canvas = _wait_for_map(driver)
    draw_lasso(driver, canvas, 0.22, 0.3)   # a loop around the middle of the map
    text = wait_for(lambda: (s := deep_text(driver)) and "objects selected (lasso)" in s and s, timeout=45,
                    message="the lasso selection count")
    n_selected = int(text.split("objects selected (lasso)")[0].split()[-1].replace(",", ""))
    assert n_selected > 10
    driver.save_screenshot(str(screenshot_dir / "labels-01-lasso.png"))

    name_input = wait_for(lambda: [i for i in deep_query_all(driver, "input")
                                   if i.get_attribute("placeholder") == "e.g. ring galaxies"], message="the label name")[0]
    name_input.send_keys("blob-in-the-middle", Keys.ENTER)   # Enter labels the selection (no button click)
    wait_for(lambda: "blob-in-the-middle" in deep_text(driver) and "labelled" in deep_text(driver), timeout=30,
             message="the label to be recorded")
    driver.save_screenshot(str(screenshot_dir / "labels-02-labelled.png"))
    assert wait_for(lambda: _selection_pixels(canvas) > 50, timeout=30, message="the selection layer (lime)")

    # The labels become this session's "User labels" colour entry; choosing it recolours the map in place.
    from selenium.webdriver.support.ui import Select

    colour_select = wait_for(lambda: [s for s in deep_query_all(driver, "select") if "User labels" in s.text],
                             timeout=30, message="'User labels' in the colour-by select")[0]
    before = pixels(canvas)
    Select(colour_select).select_by_visible_text("User labels")
    wait_for(lambda: np.abs(pixels(canvas) - before).max(axis=2).astype(bool).mean() > 0.005, timeout=30,
             message="the map to recolour by user labels")
    driver.save_screenshot(str(screenshot_dir / "labels-02b-coloured-by-labels.png"))

    with sqlite3.connect(labels_server.labels_path) as con:
        (method, author, label), = con.execute("SELECT method, author, label FROM events WHERE kind = 'add'")
        (members,), = con.execute("SELECT count(*) FROM event_members")
    assert (method, label) == ("lasso", "blob-in-the-middle") and author and members == n_selected

    driver.refresh()
    _wait_for_map(driver)
    listing = wait_for(lambda: [e for e in deep_query_all(driver, ".label-list") if "blob-in-the-middle" in e.text],
                       timeout=60, message="the label after a reload")
    assert f"{n_selected:,}" in listing[0].text
    driver.save_screenshot(str(screenshot_dir / "labels-03-after-reload.png"))


def test_probe_fits_off_thread_and_shows_metrics_and_candidates(browser, labels_server, screenshot_dir):
    from selenium.webdriver.support.ui import Select

    driver = browser
    if "/explorer" not in driver.current_url:
        driver.get(labels_server.url)
        _wait_for_map(driver)
    target = wait_for(lambda: [s for s in deep_query_all(driver, "select")
                               if "My labels (multinomial)" in s.text], message="the probe target select")[0]
    Select(target).select_by_visible_text("GZ2 smooth fraction")
    time.sleep(0.5)
    fit = _button(driver, "Fit probe")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", fit)
    fit.click()
    metrics = wait_for(lambda: [e for e in deep_query_all(driver, ".probe-metrics") if "ROC AUC" in e.text], timeout=60,
                       message="the probe's test metrics")[0]
    assert "GZ2 smooth fraction" in metrics.text and "soft-bce" in metrics.text
    assert "confident test objects" in metrics.text and "chance a random positive" in metrics.text
    thumbs = wait_for(lambda: deep_query_all(driver, "img.candidate-thumb"), message="labelling candidates")
    assert len(thumbs) == 8 and all(t.get_attribute("src").startswith("data:image/") for t in thumbs)
    # the map switches to the prediction, named by the column's title
    colour_select = deep_query_all(driver, "select")[0]
    wait_for(lambda: Select(colour_select).first_selected_option.text.startswith("Probe: GZ2 smooth fraction"),
             timeout=30, message="the map to show the probe's prediction")
    driver.save_screenshot(str(screenshot_dir / "labels-04-probe.png"))

"""In headless Chromium, on a pipeline-built simulated FIRST bundle: fine-tune the encoder from the probe section,
see the three held-out errors and the map painted by the fine-tuned classifier, then draw the label-efficiency
chart."""
from __future__ import annotations

import shutil
import time

import pytest
from conftest import (
    deep_query_all,
    inked,
    map_canvas,
    pixels,
    start_explorer_server,
    wait_for,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def finetune_server(sim_first_build, tmp_path_factory):
    work = tmp_path_factory.mktemp("finetune-server")
    shutil.copytree(sim_first_build, work / "bundle")
    shutil.copytree(sim_first_build.with_name("bundle.work"), work / "bundle.work")
    info = start_explorer_server(work / "bundle", work, extra_args=["--labels", work / "labels.sqlite"])
    yield info
    info.stop()


def _button(driver, text):
    return wait_for(lambda: [b for b in deep_query_all(driver, "button") if b.text.strip() == text],
                    message=f"the button '{text}'")[0]


def _click(driver, element):
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def test_fine_tune_from_the_page_reports_three_methods_and_paints_the_map(browser, finetune_server, screenshot_dir):
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(finetune_server.url)
    canvas = wait_for(lambda: map_canvas(driver), timeout=90, message="the map canvas")
    wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=60, message="the map to draw")
    target = wait_for(lambda: [s for s in deep_query_all(driver, "select") if "My labels (multinomial)" in s.text],
                      message="the probe target select")[0]
    Select(target).select_by_visible_text("Fanaroff-Riley class")
    epochs = wait_for(lambda: [i for i in deep_query_all(driver, "input")
                               if i.get_attribute("value") == "50" and i.get_attribute("type") != "hidden"],
                      message="the epochs input")[0]
    epochs.clear()
    epochs.send_keys("3\n")
    time.sleep(0.5)
    _click(driver, _button(driver, "Fine-tune the encoder on these labels"))
    result = wait_for(lambda: [e for e in deep_query_all(driver, ".finetune-result") if "linear probe" in e.text],
                      timeout=240, message="the fine-tune's held-out errors")[0]
    for method in ("fine-tuned", "supervised", "linear probe"):
        assert method in result.text
    colour_select = deep_query_all(driver, "select")[0]
    wait_for(lambda: Select(colour_select).first_selected_option.text.startswith("Fine-tuned (this session)"),
             timeout=30, message="the map to show the fine-tuned prediction")
    driver.save_screenshot(str(screenshot_dir / "finetune-01-result.png"))
    canvases = deep_query_all(driver, "canvas")
    _click(driver, _button(driver, "Label-efficiency curve"))
    wait_for(lambda: [e for e in deep_query_all(driver, ".curve-ready")], timeout=120,
             message="the label-efficiency chart")
    chart = wait_for(lambda: [c for c in deep_query_all(driver, "canvas") if c not in canvases], timeout=30,
                     message="the chart's canvas")[0]   # the chart lives in Bokeh's shadow roots: a new canvas
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
    wait_for(lambda: inked(pixels(chart)).sum() > 100, timeout=30, message="the chart to draw")
    driver.save_screenshot(str(screenshot_dir / "finetune-02-curve.png"))
    assert "Traceback" not in finetune_server.log()


def test_the_clicked_object_s_augmented_copies_appear_on_the_map(browser, finetune_server, screenshot_dir):
    """Rotate, shift, add noise (explorer/search/stability_ui.py): the table of how far each copy moved, and the copies
    drawn on the map as yellow triangles."""
    import numpy as np
    from conftest import move_to

    driver = browser
    driver.get(finetune_server.url)
    canvas = wait_for(lambda: map_canvas(driver), timeout=90, message="the map canvas")
    img = wait_for(lambda: (p := pixels(canvas)) is not None and inked(p).sum() > 200 and [p], timeout=60,
                   message="the map to draw")[0]
    ys, xs = np.nonzero(inked(img))
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    for dx in (0, 1, 0):   # the hover stream needs the pointer to move onto the point first
        move_to(driver, canvas, x + dx, y)
        time.sleep(0.3)
    move_to(driver, canvas, x, y, click=True)

    def yellow_pixels() -> int:   # the copies' triangles are #ffd600
        p = pixels(map_canvas(driver))
        return int(((p[..., 0] > 230) & (p[..., 1] > 190) & (p[..., 1] < 230) & (p[..., 2] < 60)).sum())

    time.sleep(2)
    before = yellow_pixels()
    _click(driver, _button(driver, "Rotate, shift, add noise"))
    table = wait_for(lambda: [e for e in deep_query_all(driver, ".stability-table") if "rotated 45°" in e.text],
                     timeout=120, message="the table of the copies")[0]
    assert "noise 3× MAD" in table.text and "the build's cutouts" in table.text
    driver.execute_script("window.scrollTo(0, 0)")

    wait_for(lambda: yellow_pixels() > before + 40, timeout=30, message="the copies drawn on the map")
    driver.save_screenshot(str(screenshot_dir / "stability-copies.png"))

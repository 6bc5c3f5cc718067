"""End to end in headless Chromium against a live `panel serve explorer` (fixtures in conftest.py).

One screenshot per step goes to the session's screenshot folder (printed at the end of the run).
"""
from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from conftest import (
    TOOLBAR_ROWS as TOOLBAR,
)
from conftest import (
    colour_by,
    deep_query_all,
    deep_text,
    inked,
    map_canvas,
    move_to,
    pixels,
    start_explorer_server,
    wait_for,
)

pytestmark = pytest.mark.browser


def _densest_point(img: np.ndarray, box: int = 9) -> tuple[int, int]:
    """(x, y) pixel with the most coloured pixels around it."""
    from scipy.ndimage import uniform_filter

    score = uniform_filter(inked(img).astype(np.float32), size=box)
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(x), int(y)


@pytest.fixture(scope="module")
def page(browser, explorer_server, screenshot_dir):
    browser.get(explorer_server.url)
    canvas = wait_for(lambda: map_canvas(browser), timeout=60, message="the map canvas")
    wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=30, message="the map to draw")
    time.sleep(1.0)
    browser.save_screenshot(str(screenshot_dir / "01-loaded.png"))
    return browser


def test_map_is_not_blank(page):
    img = pixels(map_canvas(page))
    mask = inked(img)
    assert mask.sum() > 500, "the map shows almost no coloured pixels"
    # several density levels (the fixture's busiest pixels hold a handful of objects): not one flat colour
    assert len(np.unique(img[mask].reshape(-1, 3), axis=0)) >= 3, "the map is one flat colour"


def test_colour_by_changes_the_image(page, screenshot_dir):
    colour_by(page, "Morphology (truth)")
    wait_for(lambda: "edge-on" in deep_text(page), message="the categorical legend")
    page.save_screenshot(str(screenshot_dir / "02-colour-morphology.png"))
    colour_by(page, "Redshift")
    wait_for(lambda: "Colour range" in deep_text(page), message="the range slider for a continuous column")
    time.sleep(1.0)
    page.save_screenshot(str(screenshot_dir / "03-colour-redshift.png"))


def test_hover_then_click_shows_neighbours(page, screenshot_dir):
    canvas = map_canvas(page)
    x, y = _densest_point(pixels(canvas))
    wiggle = iter(np.tile([0, 1, 0, -1], 200))

    def hover_card():  # keep the pointer moving by a pixel: each move is one PointerXY event
        move_to(page, canvas, x + next(wiggle), y)
        return deep_query_all(page, ".hover-card img")

    wait_for(hover_card, timeout=45, interval=1.0, message="the hover card")
    page.save_screenshot(str(screenshot_dir / "04-hover.png"))

    move_to(page, canvas, x, y, click=True)
    thumbs = wait_for(lambda: len(deep_query_all(page, "img.nb-thumb")) == 12 and deep_query_all(page, "img.nb-thumb"),
                      timeout=45, message="12 neighbour thumbnails")
    assert all(t.get_attribute("src").startswith("data:image/") for t in thumbs)
    assert deep_query_all(page, "img.detail-thumb"), "the detail panel shows the selected object"
    text = deep_text(page)
    assert "Simbad" in text and "12 most similar objects" in text
    page.save_screenshot(str(screenshot_dir / "05-neighbours.png"))


def test_more_like_this_adds_a_positive(page, screenshot_dir):
    if not deep_query_all(page, "img.nb-thumb"):
        pytest.skip("needs the neighbours of the previous test")
    plus = [b for b in deep_query_all(page, "button") if b.text.strip() == "+"]
    assert plus, "each result has a '+' (more like this) button"
    page.execute_script("arguments[0].scrollIntoView({block: 'center'});", plus[0])
    time.sleep(0.3)
    plus[0].click()
    wait_for(lambda: "query: 2 positive" in deep_text(page), timeout=20, message="a two-object query")
    page.save_screenshot(str(screenshot_dir / "06-more-like-this.png"))


def test_missing_bundle_shows_explanation(browser, tmp_path, screenshot_dir):
    server = start_explorer_server(tmp_path / "no-such-bundle", tmp_path)
    try:
        browser.get(server.url)
        text = wait_for(lambda: (t := deep_text(browser)) and "No usable bundle" in t and t, timeout=60,
                        message="the missing-bundle page")
        assert "no bundle folder" in text and "make demo" in text and "Traceback" not in text
        browser.save_screenshot(str(screenshot_dir / "07-missing-bundle.png"))
    finally:
        server.stop()


def test_map_stays_square_and_above_the_fold_at_1280x720(explorer_server, screenshot_dir):
    from conftest import chrome_driver

    driver, profile = chrome_driver(window="1280,720")
    try:
        inner_w, inner_h = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * 1280 - inner_w, 2 * 720 - inner_h)   # the viewport itself 1280 x 720
        driver.get(explorer_server.url)
        canvas = wait_for(lambda: map_canvas(driver), timeout=90, message="the map canvas")
        wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=60, message="the map to draw")
        time.sleep(1.0)
        rect = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                     "return [r.left, r.top, r.right, r.bottom, window.innerWidth, window.innerHeight]",
                                     canvas)
        left, top, right, bottom, width, height = rect
        assert (width, height) == (1280, 720)
        assert bottom <= height and right <= width, f"map canvas {rect[:4]} runs outside the 1280x720 window"
        # the plotted frame is square: the ink of the data spans as many pixels across as the extent allows up
        ink = inked(pixels(canvas))
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        assert right - left > 400 and 0.5 < np.ptp(cols) / max(np.ptp(rows), 1) < 2.0
        driver.save_screenshot(str(screenshot_dir / "08-1280x720.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def fresh_page(browser, explorer_server):
    """The app in its first state again (tests above leave the browser on the missing-bundle page)."""
    browser.get(explorer_server.url)
    canvas = wait_for(lambda: map_canvas(browser), timeout=60, message="the map canvas")
    wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=30, message="the map to draw")
    return browser


def test_the_map_grows_with_the_window(fresh_page):
    """The test browser's 1600 x 1100 window: the square map takes what the sidebar and details column leave."""
    page = fresh_page
    canvas = map_canvas(page)
    wait_for(lambda: canvas.size["width"] > 700, timeout=30, message="the map to grow past its 480 px minimum")
    top, bottom, height = page.execute_script("const r = arguments[0].getBoundingClientRect();"
                                              "return [r.top, r.bottom, window.innerHeight]", canvas)
    assert bottom - top > 700 and bottom <= height + page.execute_script("return window.scrollY")


def test_images_mode_shows_thumbnails_and_a_tile_click_selects(fresh_page, screenshot_dir):
    page = fresh_page
    before = pixels(map_canvas(page))
    button = wait_for(lambda: [b for b in deep_query_all(page, "button") if b.text.strip() == "Images"],
                      message="the Images switch")[0]
    page.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    page.execute_script("window.scrollTo(0, 0)")
    wait_for(lambda: "each tile is the object nearest" in deep_text(page), message="the mosaic's legend note")

    def tiles():   # the points map is white paper with dots; tiles cover much of it with their images
        img = pixels(map_canvas(page))
        covered = img.min(axis=2) < 200
        covered[:TOOLBAR] = False
        return img.shape == before.shape and covered.mean() > 2 * (before.min(axis=2) < 200).mean() and [covered]

    covered = wait_for(tiles, timeout=45, message="thumbnail tiles on the map")[0]
    page.save_screenshot(str(screenshot_dir / "09-images-mode.png"))
    canvas = map_canvas(page)
    ys, xs = np.nonzero(covered)
    x, y = int(np.median(xs)), int(np.median(ys))
    while not covered[y, x]:   # a pixel inside some tile, near the middle of the mosaic
        x += 1
    move_to(page, canvas, x, y)
    move_to(page, canvas, x + 1, y, click=True)
    wait_for(lambda: len(deep_query_all(page, "img.nb-thumb")) == 12 and deep_query_all(page, "img.detail-thumb"),
             timeout=45, message="a tile's click to select its object and find its neighbours")


def test_at_900_px_the_legend_and_details_wrap_under_the_map(explorer_server, screenshot_dir):
    """A window too narrow for map, sidebar and details side by side: the details column moves under the map, inside
    the window (it used to sit off to the right, unreachable until the sidebar was hidden)."""
    from conftest import chrome_driver

    driver, profile = chrome_driver(window="900,700")
    try:
        inner_w, inner_h = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * 900 - inner_w, 2 * 700 - inner_h)
        driver.get(explorer_server.url)
        canvas = wait_for(lambda: map_canvas(driver), timeout=90, message="the map canvas")
        wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=60, message="the map to draw")
        legend = wait_for(lambda: deep_query_all(driver, ".colour-legend"), message="the legend")[0]
        time.sleep(1.0)
        rect = "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom];"
        map_box, legend_box = driver.execute_script(rect, canvas), driver.execute_script(rect, legend)
        assert map_box[2] <= 900, f"the map {map_box} runs out of the 900 px window"
        assert legend_box[2] <= 900 and legend_box[1] >= map_box[3] - 5, f"legend {legend_box} is not under the map"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", legend)
        time.sleep(0.5)
        assert 0 <= driver.execute_script(rect, legend)[1] < 700, "scrolling brings the legend into the window"
        driver.save_screenshot(str(screenshot_dir / "10-900px.png"))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

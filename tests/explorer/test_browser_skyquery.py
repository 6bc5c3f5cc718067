"""The sky-search section in headless Chromium against a live `panel serve` (fixtures in conftest.py).

The explorer is served with the sky-search section in its sidebar. The fetch path is pointed at a localhost server replaying SkyView's real FIRST answer, so nothing touches the network.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import (
    ServerInfo,
    deep_query_all,
    deep_text,
    map_canvas,
    pixels,
    start_explorer_server,
    wait_for,
)
from recorded.first_bundle import (
    build_first_bundle,
    original_answer,
    original_centre,
    real_data_present,
)
from recorded.replay import ReplayServer, recorded

pytestmark = pytest.mark.browser
FIRST_PATH = "/cgi-bin/firstcutout"


def start_skyquery_server(bundle: Path, workdir: Path, env: dict | None = None) -> ServerInfo:
    return start_explorer_server(bundle, workdir, env=env)


def open_page(driver, url: str):
    driver.get(url)
    return wait_for(lambda: deep_query_all(driver, "input[placeholder^='RA Dec']"), timeout=120,
                    message="the sky search box")[0]


def search(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = deep_query_all(driver, "input[placeholder^='RA Dec']")[0]
    box.clear()
    box.send_keys(text + Keys.ENTER)


def status_text(driver) -> str:
    return " ".join(e.text for e in deep_query_all(driver, ".sky-status"))


def orange_pixels(canvas) -> int:
    r, g, b = np.moveaxis(pixels(canvas), 2, 0)
    return int(((r > 220) & (g > 80) & (g < 140) & (b < 60)).sum())


@pytest.fixture(scope="module")
def fixture_page(browser, small_bundle, tmp_path_factory):
    with ReplayServer() as sesame:
        sesame.route("GET", "/cgi-bin/nph-sesame/SNV", recorded("sesame_m51.txt"), content_type="text/plain")
        env = {"SKYQUERY_CACHE_DIR": str(tmp_path_factory.mktemp("skyq-cache")),
               "SKYQUERY_SESAME_URL": sesame.url("/cgi-bin/nph-sesame/")}
        info = start_skyquery_server(small_bundle, tmp_path_factory.mktemp("skyq-server"), env=env)
        open_page(browser, info.url)
        yield browser
        info.stop()


def test_typing_a_bundle_objects_position_selects_it_and_shows_neighbours(fixture_page, small_bundle,
                                                                          screenshot_dir):
    import pandas as pd

    row = pd.read_parquet(small_bundle / "catalog.parquet").iloc[123]
    search(fixture_page, f"{row['ra']:.6f} {row['dec']:+.6f}")
    wait_for(lambda: len(deep_query_all(fixture_page, "img.nb-thumb")) > 0, timeout=30, message="neighbours")
    wait_for(lambda: f"Object {row['object_id']} is" in status_text(fixture_page), timeout=10,
             message="the match message")
    assert row["object_id"] in deep_text(fixture_page)  # the detail panel shows the selected object
    fixture_page.save_screenshot(str(screenshot_dir / "skyquery-01-bundle-object.png"))


def test_fast_paste_and_enter_searches_the_whole_string_every_time(fixture_page, small_bundle):
    """Text pasted and Enter pressed at once: the search must use all of it (it read a lagging copy, e.g. '14:23:4',
    in 7 of 16 tries). Twenty different objects in a row, each typed in one send_keys burst."""
    import pandas as pd
    from selenium.webdriver.common.keys import Keys

    cat = pd.read_parquet(small_bundle / "catalog.parquet")
    box = deep_query_all(fixture_page, "input[placeholder^='RA Dec']")[0]
    for i in range(200, 220):
        row = cat.iloc[i]
        box.clear()
        box.send_keys(f"{row['ra']:.6f} {row['dec']:+.6f}" + Keys.ENTER)
        wait_for(lambda: f"Object {row['object_id']} is" in status_text(fixture_page), timeout=15,
                 message=f"the match for row {i} (status: {status_text(fixture_page)!r})")


def test_garbage_gets_a_message_and_the_map_stays_usable(fixture_page, small_bundle, screenshot_dir):
    import pandas as pd

    search(fixture_page, "13:61:00 +95:00:00")
    wait_for(lambda: "minutes and seconds must be below 60" in status_text(fixture_page), timeout=15,
             message="the parse error message")
    assert map_canvas(fixture_page) is not None
    fixture_page.save_screenshot(str(screenshot_dir / "skyquery-02-garbage.png"))
    # Still usable: a good position after the bad one works.
    row = pd.read_parquet(small_bundle / "catalog.parquet").iloc[7]
    search(fixture_page, f"{row['ra']:.6f}, {row['dec']:+.6f}")
    wait_for(lambda: f"Object {row['object_id']} is" in status_text(fixture_page), timeout=15,
             message="the match after an error")


def test_object_name_is_resolved_off_the_ui_thread(fixture_page):
    search(fixture_page, "M51")
    wait_for(lambda: "resolved by Sesame" in status_text(fixture_page), timeout=20, message="the resolved name")
    assert "13:29:52.70 +47:11:42.93" in status_text(fixture_page)


def test_off_catalogue_without_service_says_so(fixture_page):
    search(fixture_page, "10 -80")
    wait_for(lambda: "outside this bundle's footprint" in status_text(fixture_page), timeout=15,
             message="the footprint warning")
    assert "No online image service for survey 'fixture'" in deep_text(fixture_page)


@pytest.fixture(scope="module")
def first_page(browser, tmp_path_factory):
    if not real_data_present():
        pytest.skip("real FIRST data (shared/data/first_mirabest) not present; the fetch test needs its SkyView answer")
    root = tmp_path_factory.mktemp("skyq-first")
    bundle = build_first_bundle(root / "first-bundle", n=39, skip_first=True)  # row 0 is off-catalogue
    with ReplayServer() as replay:
        replay.route("POST", FIRST_PATH, original_answer(), content_type="application/fits")
        env = {"SKYQUERY_FIRST_URL": replay.url(FIRST_PATH), "SKYQUERY_SKYVIEW_URL": replay.url("/none"),
               "SKYQUERY_CACHE_DIR": str(root / "cache")}
        info = start_skyquery_server(bundle, root, env=env)
        open_page(browser, info.url)
        yield browser, replay
        info.stop()


def test_off_catalogue_position_is_fetched_embedded_and_searched(first_page, screenshot_dir):
    driver, replay = first_page
    centre = original_centre()
    search(driver, centre.to_string("hmsdms", sep=":", precision=2))
    wait_for(lambda: "No catalogue object within" in status_text(driver), timeout=20, message="the off-catalogue note")
    fetch = wait_for(lambda: [b for b in deep_query_all(driver, "button") if "Fetch the survey cutout" in b.text],
                     timeout=10, message="the fetch button")[0]
    assert orange_pixels(map_canvas(driver)) < 30, "no query marker before the query"
    fetch.click()
    # generous: the server loads torch and the encoder on this first query, on a shared 2-core machine
    wait_for(lambda: deep_query_all(driver, "img.sky-query-thumb"), timeout=120, message="the query thumbnail")
    wait_for(lambda: len(deep_query_all(driver, "img.nb-thumb")) > 0, timeout=20, message="the query's neighbours")
    assert "most similar objects to the query cutout" in status_text(driver)
    assert "nearest neighbours" in deep_text(driver)
    assert replay.hits[("POST", FIRST_PATH)] == 1
    # The query's place on the map: the orange marker (#ff6d00) is drawn on the canvas.
    wait_for(lambda: orange_pixels(map_canvas(driver)) > 30, timeout=20, message="the query marker on the map")
    driver.save_screenshot(str(screenshot_dir / "skyquery-03-fetched.png"))

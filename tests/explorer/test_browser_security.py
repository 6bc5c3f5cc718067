"""What the server and the page trust, checked against a live server (and in Chromium where it takes a browser):
a label name cannot run script, a websocket from another origin is refused, the page loads nothing from elsewhere."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from conftest import (
    chrome_driver,
    deep_query_all,
    deep_text,
    inked,
    map_canvas,
    pixels,
    start_explorer_server,
    wait_for,
)

XSS_NAME = '<img src=x onerror="window.__xss_ran = true">'


@pytest.fixture(scope="module")
def hostile_server(small_bundle, tmp_path_factory):
    """The explorer over a label store that already holds a label whose name is HTML with a script in it."""
    from explorer.labels import LabelStore

    work = tmp_path_factory.mktemp("hostile")
    store = LabelStore(work / "labels.sqlite")
    ids = __import__("pandas").read_parquet(Path(small_bundle) / "catalog.parquet")["object_id"].astype(str)
    store.add(XSS_NAME, list(ids[:50]), author="mallory", method="click")
    info = start_explorer_server(small_bundle, work, extra_args=["--labels", work / "labels.sqlite"])
    yield info
    info.stop()


@pytest.mark.browser
def test_a_label_name_is_shown_as_text_not_run(browser, hostile_server, screenshot_dir):
    from selenium.webdriver.support.ui import Select

    browser.get(hostile_server.url)
    canvas = wait_for(lambda: map_canvas(browser), timeout=90, message="the map canvas")
    wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=60, message="the map to draw")
    select = wait_for(lambda: [s for s in deep_query_all(browser, "select") if "User labels" in s.text],
                      timeout=30, message="'User labels' in the colour-by select")[0]
    Select(select).select_by_visible_text("User labels")
    wait_for(lambda: XSS_NAME in deep_text(browser), timeout=30, message="the label name in the legend, as text")
    browser.save_screenshot(str(screenshot_dir / "security-label-as-text.png"))
    assert browser.execute_script("return window.__xss_ran === true") is False


def test_a_websocket_from_another_origin_is_refused(hostile_server):
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    url = f"ws://127.0.0.1:{hostile_server.port}/explorer/ws"

    async def connect(origin):
        request = HTTPRequest(url, headers={"Origin": origin}, connect_timeout=10, request_timeout=20)
        try:
            conn = await websocket_connect(request)
        except HTTPClientError as e:
            return e.code
        conn.close()
        return 101

    assert asyncio.run(connect(f"http://127.0.0.1:{hostile_server.port}")) in (101, 403, 400, 200)
    code = asyncio.run(connect("http://evil.example.org"))
    assert code == 403, f"a websocket from another origin got {code}"


@pytest.mark.browser
def test_the_page_requests_nothing_outside_the_server(hostile_server):
    """Every request the page makes while loading and drawing goes to the explorer's own host and port."""
    driver, profile = chrome_driver(window="1280,720", network_log=True)
    try:
        driver.get(hostile_server.url)
        canvas = wait_for(lambda: map_canvas(driver), timeout=90, message="the map canvas")
        wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=60, message="the map to draw")
        import json

        urls = set()
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                urls.add(msg["params"]["request"]["url"])
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    own = (f"http://127.0.0.1:{hostile_server.port}/", f"ws://127.0.0.1:{hostile_server.port}/")
    network = [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))]   # not chrome://, data:, blob:
    outside = sorted(u for u in network if not u.startswith(own))
    assert urls and not outside, f"requests outside the server: {outside}"

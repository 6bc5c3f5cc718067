"""What the server and the page trust, checked against a live server (and in Chromium where it takes a browser):
a label name cannot run script, a websocket from another origin is refused, the page loads nothing from elsewhere."""
from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from conftest import (
    CHROMIUM as CHROMIUM_PATH,
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
    from core.labels import LabelStore

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


# ------------------------------------------------------------------------------------------------ a hostile bundle
# Script, a Markdown image from elsewhere and a broken tag: what a shared bundle could hold in any of its strings.
PAYLOAD = '<img src=x onerror="window.__xss_ran = true">![m](http://evil.example.org/m.png)</table>'
DIR_PAYLOAD = "hostile<img src=x onerror=window.__xss_ran=true>"


def hostile_report(title: str) -> dict:
    scores = {"embedding": {"knn_purity": {"mean": 0.6, "se": 0.01}, "probe_error": {"mean": 0.3, "se": 0.01}}}
    return {"summary": {"message": PAYLOAD, "beats_untrained": None},
            "health": {"first_pc_share": 0.2, "participation_ratio": 9.0, "median_random_cosine": 0.3, "flags": []},
            "tasks": [{"name": "hostile", "title": title, "kind": "categorical", "scores": scores}],
            "sources": {"embedding": {}}, "n_splits": 3,
            "similarity_reference": {"quantiles": [-0.2, 0.1, 0.3, 0.9], "levels": [0.0, 0.5, 0.9, 1.0]}}


def make_hostile_bundle(base: Path, out: Path) -> Path:
    """A copy of a fixture bundle whose survey, model, column names and titles, units, values, object ids, report
    and folder name are all markup, re-sealed (an attacker writes a consistent inventory as easily as we do)."""
    import json

    import pandas as pd

    from core.write import file_inventory

    bundle = Path(shutil.copytree(base, out / DIR_PAYLOAD))
    cat = pd.read_parquet(bundle / "catalog.parquet")
    cat[PAYLOAD] = [PAYLOAD if i % 2 else "plain" for i in range(len(cat))]
    cat["object_id"] = [f"{PAYLOAD}{i}" for i in range(len(cat))]
    from core.contract import write_catalogue

    write_catalogue(cat, bundle / "catalog.parquet")
    (bundle / "report.json").write_text(json.dumps(hostile_report(PAYLOAD)))
    man = json.loads((bundle / "manifest.json").read_text())
    man.update(survey=PAYLOAD, report="report.json",
               model={"method": PAYLOAD, "architecture": PAYLOAD})
    man["colour_by"][PAYLOAD] = {"title": PAYLOAD, "kind": "categorical", "units": ""}
    man["colour_by"]["redshift"]["title"] = "Redshift " + PAYLOAD
    man["colour_by"]["r_mag"]["units"] = PAYLOAD
    man["files"] = file_inventory(bundle)
    (bundle / "manifest.json").write_text(json.dumps(man))
    return bundle


def _requests_and_xss(driver) -> tuple[bool, list[str]]:
    import json

    urls = [json.loads(e["message"])["message"]["params"]["request"]["url"] for e in driver.get_log("performance")
            if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
    return driver.execute_script("return window.__xss_ran === true"), [u for u in urls if "evil.example" in u]


@pytest.fixture(scope="module")
def hostile_bundle(make_bundle, tmp_path_factory):
    return make_hostile_bundle(make_bundle("xss-base", n=600, dim=16), tmp_path_factory.mktemp("xss"))


@pytest.mark.browser
def test_no_string_of_a_hostile_bundle_runs_or_loads_anything(hostile_bundle, tmp_path, screenshot_dir):
    """Every string the bundle supplies reaches the page as text: the survey, model, column names, titles, units,
    values, object ids, report text and the folder's name; the details of a clicked object and the export card's
    column list included. Nothing runs and nothing is fetched from elsewhere."""
    from selenium.webdriver.support.ui import Select

    from core.validate import validate_bundle

    validate_bundle(hostile_bundle)           # a valid bundle: only the page's escaping stands between it and a visitor
    server = start_explorer_server(hostile_bundle, tmp_path)
    driver, profile = chrome_driver(window="1600,1000", network_log=True)
    try:
        driver.get(server.url)
        canvas = wait_for(lambda: map_canvas(driver), timeout=90, message="the map canvas")
        wait_for(lambda: inked(pixels(canvas)).sum() > 200, timeout=60, message="the map to draw")
        wait_for(lambda: PAYLOAD in deep_text(driver), timeout=30, message="the survey name shown as text")
        select = wait_for(lambda: [s for s in deep_query_all(driver, "select") if PAYLOAD in s.text],
                          timeout=30, message="the hostile column in the colour-by select")[0]
        Select(select).select_by_visible_text(PAYLOAD)
        wait_for(lambda: deep_query_all(driver, ".cb-legend") and PAYLOAD in deep_text(driver), timeout=30,
                 message="the legend")
        _click_an_object(driver, canvas)
        wait_for(lambda: deep_query_all(driver, "img.detail-thumb"), timeout=45, message="the clicked object's details")
        for header in [e for e in deep_query_all(driver, "button, .card-header")
                       if "Export, import and share" in (e.text or "")][:1]:
            driver.execute_script("arguments[0].click()", header)
        time.sleep(2.0)
        driver.save_screenshot(str(screenshot_dir / "security-hostile-bundle.png"))
        ran, elsewhere = _requests_and_xss(driver)
        assert not ran, "a script from the bundle ran"
        assert not elsewhere, f"the page fetched from elsewhere: {elsewhere}"
        assert "Traceback" not in server.log()
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.stop()


@pytest.mark.browser
def test_the_compare_page_shows_hostile_strings_as_text(hostile_bundle, tmp_path, screenshot_dir):
    twin = Path(shutil.copytree(hostile_bundle, tmp_path / "B"))
    server = start_explorer_server(hostile_bundle, tmp_path, extra_args=["--compare", twin])
    driver, profile = chrome_driver(window="1700,1100", network_log=True)
    try:
        driver.get(server.url)
        wait_for(lambda: len([c for c in deep_query_all(driver, "canvas") if c.size["width"] > 300]) >= 2,
                 timeout=120, message="two maps")
        wait_for(lambda: PAYLOAD in deep_text(driver), timeout=30, message="the hostile strings as text")
        time.sleep(2.0)
        driver.save_screenshot(str(screenshot_dir / "security-hostile-compare.png"))
        ran, elsewhere = _requests_and_xss(driver)
        assert not ran and not elsewhere, (ran, elsewhere)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        server.stop()


def _click_an_object(driver, canvas) -> None:
    """Click the map's most inked pixel block (where objects are)."""
    import numpy as np

    from conftest import move_to

    mask = inked(pixels(canvas)).astype(np.int32)
    h, w = mask.shape
    cells = mask[: h // 9 * 9, : w // 9 * 9].reshape(h // 9, 9, w // 9, 9).sum(axis=(1, 3))
    cy, cx = np.unravel_index(int(np.argmax(cells)), cells.shape)
    move_to(driver, canvas, cx * 9 + 4, cy * 9 + 4, click=True)


# ------------------------------------------------------------------------------------------------ host and identity
def test_a_page_or_websocket_under_a_foreign_host_name_is_refused(hostile_server):
    """DNS rebinding: a foreign name resolved to this machine sends Host and Origin both foreign; Tornado alone lets
    such a websocket through (Origin == Host), so the Host itself is checked against the allowed origins."""
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    port = hostile_server.port

    async def websocket(host):
        request = HTTPRequest(f"ws://127.0.0.1:{port}/explorer/ws", connect_timeout=10, request_timeout=20,
                              headers={"Host": host, "Origin": f"http://{host}"})
        try:
            (await websocket_connect(request)).close()
            return 101
        except HTTPClientError as e:
            return e.code

    async def page(host):
        try:
            return (await AsyncHTTPClient().fetch(HTTPRequest(f"http://127.0.0.1:{port}/explorer",
                                                              headers={"Host": host}, request_timeout=60))).code
        except HTTPClientError as e:
            return e.code

    foreign = f"rebound.example.org:{port}"
    assert asyncio.run(websocket(foreign)) == 403
    assert asyncio.run(page(foreign)) == 403
    assert asyncio.run(page(f"127.0.0.1:{port}")) == 200
    assert asyncio.run(websocket(f"localhost:{port}")) == 101


@pytest.mark.browser
def test_each_browser_labels_under_its_own_identity(hostile_server):
    """Two browsers get two visitor identities in the labels' name field (not the server's $USER), so one's
    "Undo my last" cannot reach the other's labels; a reload keeps the browser's identity."""
    names = []
    for _ in range(2):
        driver, profile = chrome_driver(window="1280,720")
        try:
            driver.get(hostile_server.url)
            field = wait_for(lambda: [e for e in deep_query_all(driver, "input[type=text]")
                                      if (e.get_attribute("value") or "").startswith("visitor-")],
                             timeout=90, message="the visitor's identity in 'Your name'")[0]
            names.append(field.get_attribute("value"))
            driver.get(hostile_server.url)
            wait_for(lambda: [e for e in deep_query_all(driver, "input[type=text]")
                              if e.get_attribute("value") == names[-1]], timeout=90,
                     message="the same identity after a reload")
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
    assert names[0] != names[1], names


# ------------------------------------------------------------------------------------------------ bounded work
@pytest.mark.browser
@pytest.mark.slow
def test_a_second_visitor_is_not_held_up_by_an_attack(small_bundle, tmp_path):
    """Visitor A uploads a 12 MB FITS of 150,000 header cards, a FITS asking for SIP order 6,000, and imports
    20,000 distinct labels; each gets its one message, and visitor B's page loads meanwhile stay near B's
    baseline (the target is 2x; 1 s of slack for a shared CI box). Before the bounds: 1,055 CPU-seconds and no
    answer, 99 s, and 15.7 s page loads. benchmarks/bench_attacks.py reports the figures."""
    from benchmarks.bench_attacks import run_attacks

    if not (CHROMIUM_PATH.exists()):
        pytest.skip("needs /usr/bin/chromium")
    result = run_attacks(small_bundle, tmp_path, cards=150_000, labels=20_000, baseline_loads=3, window=45.0)
    for name, row in result["attacks"].items():
        assert row["answer_s"] is not None, f"{name}: the attacker's page never got its message"
        assert row["b_median_s"] <= 2 * row["b_baseline_median_s"] + 1.0, (name, row)

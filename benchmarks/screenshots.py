"""Render the explorer's main page states to PNGs in headless Chromium, so anyone can look at what ships.

    .venv/bin/python benchmarks/screenshots.py --bundle bundles/demo --out /tmp/shots
    .venv/bin/python benchmarks/screenshots.py --bundle bundles/demo --out assets --only first-load --sizes 1600x1000

States: first load; the "About this embedding" card opened; a click on a dense part of the map with its neighbours.
Each at every ``--sizes`` (default 1600x1000 and 1280x720). Needs Debian's chromium + chromedriver
(`make browser-deps`).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STATES = ("first-load", "about", "click")


def start_server(bundle: Path, port: int, log: Path) -> subprocess.Popen:
    panel = Path(sys.executable).with_name("panel")
    cmd = [str(panel), "serve", "explorer", "--port", str(port), "--address", "127.0.0.1",
           "--allow-websocket-origin", f"127.0.0.1:{port}", "--args", "--bundle", str(bundle)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/js/bokeh.min.js", timeout=5):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"panel serve did not start; see {log}")


def driver_at(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="chromium-shots-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    # make the viewport itself width x height (a window of that size loses ~140 px to the browser's own frame)
    inner_w, inner_h = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner_w, 2 * height - inner_h)
    return driver, profile


DEEP = """const sel = arguments[0]; const out = [];
function walk(r) { r.querySelectorAll(sel).forEach(e => out.push(e));
  r.querySelectorAll('*').forEach(e => { if (e.shadowRoot) walk(e.shadowRoot); }); }
walk(document); return out;"""


def wait(fn, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout} s")


def map_canvas(driver):
    canvases = [c for c in driver.execute_script(DEEP, "canvas") if c.size["width"] > 300]
    return max(canvases, key=lambda c: c.size["width"] * c.size["height"]) if canvases else None


def densest_offset(driver, canvas) -> tuple[int, int]:
    from io import BytesIO

    from PIL import Image
    from scipy.ndimage import uniform_filter

    img = np.asarray(Image.open(BytesIO(canvas.screenshot_as_png)).convert("RGB")).astype(np.int16)
    ink = ((img.max(axis=2) - img.min(axis=2)) > 60).astype(np.float32)   # coloured data, not grey axis ink
    ink[:45] = 0   # the toolbar row above the plot (its Bokeh logo is as colourful as the data)
    score = uniform_filter(ink, size=9)
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(x - img.shape[1] / 2), int(y - img.shape[0] / 2)


def shoot(url: str, out: Path, width: int, height: int, states) -> list[Path]:
    from selenium.webdriver.common.action_chains import ActionChains

    driver, profile = driver_at(width, height)
    written = []
    try:
        driver.get(url)
        canvas = wait(lambda: map_canvas(driver))
        time.sleep(8)   # the first render, then the one at the page's final size
        tag = f"{width}x{height}"
        if "first-load" in states:
            written.append(out / f"first-load-{tag}.png")
            driver.save_screenshot(str(written[-1]))
        if "about" in states:   # the card opens by itself when the embedding does not beat its baselines
            cards = driver.execute_script(DEEP, ".about-card")
            if not cards:
                headers = [h for h in driver.execute_script(DEEP, ".card-header") if "About this" in h.text]
                headers[0].click()
                cards = wait(lambda: driver.execute_script(DEEP, ".about-card"))
            driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", cards[0])
            time.sleep(1.0)
            written.append(out / f"about-{tag}.png")
            driver.save_screenshot(str(written[-1]))
        if "click" in states:
            driver.execute_script("window.scrollTo(0, 0)")
            dx, dy = densest_offset(driver, canvas)
            for wiggle in (3, -3, 0):   # the hover stream needs the pointer to move over the point first
                ActionChains(driver).move_to_element_with_offset(canvas, dx + wiggle, dy).perform()
                time.sleep(0.5)
            wait(lambda: driver.execute_script(DEEP, ".hover-card"), timeout=60)
            ActionChains(driver).click().perform()
            wait(lambda: driver.execute_script(DEEP, ".nb-card"), timeout=150)
            time.sleep(2)
            written.append(out / f"click-{tag}.png")
            driver.save_screenshot(str(written[-1]))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sizes", nargs="+", default=["1600x1000", "1280x720"])
    p.add_argument("--only", nargs="+", choices=STATES, default=list(STATES))
    p.add_argument("--port", type=int, default=5099)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc = start_server(Path(args.bundle).resolve(), args.port, out / "panel-serve.log")
    try:
        for size in args.sizes:
            w, h = (int(v) for v in size.split("x"))
            for path in shoot(f"http://127.0.0.1:{args.port}/explorer", out, w, h, args.only):
                print(path)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Render the explorer's main page states to PNGs in headless Chromium, so anyone can look at what ships.

    .venv/bin/python benchmarks/screenshots.py --bundle bundles/demo --out /tmp/shots
    .venv/bin/python benchmarks/screenshots.py --bundle bundles/demo --out assets --only first-load --sizes 1600x1000

States, in this order in one browser session: first load; the "About this embedding" card opened; coloured by a
Galaxy Zoo 2 vote fraction; a click on a dense part of the map with its neighbours; a lasso around the middle of the
map labelled by pressing Enter; a linear probe fitted (the map shows its prediction); the bundle's fine-tuned
classifier as the map's colours with its label-efficiency chart (bundles with ``finetuned/``); a sky search for the first
catalogue object's position; the brightest spiral, elliptical (smooth) and edge-on disc of a simulated catalogue found
by position, each with its neighbours. Each at every ``--sizes`` (default 1600x1000 and 1280x720). Labels go to a throw-away
SQLite file, never the bundle's. Needs Debian's chromium + chromedriver
(`make browser-deps`).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.quick import add_quick, parse_quick, quick_bundle, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
STATES = ("first-load", "about", "colour-fraction", "click", "gallery", "stability", "lasso-label", "probe", "finetune-curve", "sky-search",
          "types", "mosaic", "mosaic-zoom")
# "types": one object of each kind found by its position, with its neighbours (do they look like the same kind?)
TYPES = ("spiral", "smooth", "edge_on_disk")


def start_server(bundle: Path, port: int, log: Path, compare: Path | None = None) -> subprocess.Popen:
    from explorer.serve import serve_command

    extra = ["--compare", compare] if compare else []
    cmd = serve_command(bundle, port, args=["--labels", log.with_name("screenshot-labels.sqlite"), *extra])
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


def map_to_top(driver) -> None:
    """Scroll every container that holds the map back to its top (the page's main area scrolls on its own, so
    window.scrollTo alone leaves the map off screen after a section further down was scrolled into view); the
    details column beside the map keeps its own scroll."""
    canvas = map_canvas(driver)
    driver.execute_script("let e = arguments[0]; while (e) { if (e.scrollTop) e.scrollTop = 0; "
                          "e = e.parentNode ? e.parentNode : e.host; } window.scrollTo(0, 0);", canvas)


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


def by_text(driver, selector: str, text: str, timeout=60):
    return wait(lambda: [e for e in driver.execute_script(DEEP, selector) if text in e.text], timeout=timeout)


def choose_colour(driver, containing: str) -> None:
    from selenium.webdriver.support.ui import Select

    select = Select(driver.execute_script(DEEP, "select.bk-input")[0])
    select.select_by_visible_text(next(o.text for o in select.options if containing in o.text))
    time.sleep(3)


def lasso_and_label(driver, canvas) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    map_to_top(driver)
    wait(lambda: driver.execute_script(DEEP, ".bk-tool-icon-lasso-select"))[0].click()
    w, h = canvas.size["width"], canvas.size["height"]
    t = np.linspace(0, 2 * np.pi, 25)
    pts = np.column_stack([0.15 * w * np.cos(t), 0.2 * h * np.sin(t)]).astype(int)
    chain = ActionChains(driver).move_to_element_with_offset(canvas, int(pts[0, 0]), int(pts[0, 1])).click_and_hold()
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        chain.move_by_offset(int(x1 - x0), int(y1 - y0)).pause(0.02)
    chain.release().perform()
    by_text(driver, ".selection-count", "objects selected")
    box = wait(lambda: [i for i in driver.execute_script(DEEP, "input")
                        if i.get_attribute("placeholder") == "e.g. ring galaxies"])[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.send_keys("middle of the map", Keys.ENTER)
    by_text(driver, ".label-status", "labelled")
    time.sleep(1.5)


def choose_probe_target(driver, containing: str) -> None:
    """The probe section's target: the first option whose text contains ``containing`` (case-insensitive)."""
    from selenium.webdriver.support.ui import Select

    select = Select(by_text(driver, "select", "My labels (multinomial)")[0])
    select.select_by_visible_text(next(o.text for o in select.options if containing in o.text.lower()))


def press_and_show(driver, button_text: str, result_css: str, result_text: str, where: str = "center") -> None:
    """Press a sidebar button, wait for its result and scroll the result into view."""
    button = by_text(driver, "button", button_text)[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    result = by_text(driver, result_css, result_text, timeout=180)[0]
    time.sleep(2.5)
    driver.execute_script(f"arguments[0].scrollIntoView({{block: '{where}'}})", result)
    time.sleep(1)


def fit_probe(driver) -> None:
    choose_probe_target(driver, "fraction")
    press_and_show(driver, "Fit probe", ".probe-metrics", "ROC AUC")


def finetune_curve(driver) -> None:
    """The bundle's fine-tuned classifier as the map's colours and its label-efficiency chart (a bundle with
    ``finetuned/``, e.g. after ``python -m precompute finetune --label-counts``); the probe's first class column."""
    choose_colour(driver, "Fine-tuned")
    choose_probe_target(driver, "class")
    press_and_show(driver, "Label-efficiency curve", ".curve-ready", "drawn", where="start")


def show_gallery(driver) -> None:
    """The neighbours of the clicked object (below the map in a small window: the click state shows only the map)."""
    cards = wait(lambda: driver.execute_script(DEEP, ".nb-card"), timeout=60)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cards[0])
    time.sleep(1.5)


def show_copies(driver) -> None:
    """The clicked object's rotated, shifted and noisy copies on the map, and the table of how far they moved."""
    button = by_text(driver, "button", "Rotate, shift")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    wait(lambda: driver.execute_script(DEEP, ".stability-table, .stability-error"), timeout=120)
    map_to_top(driver)
    time.sleep(3)


def show_images(driver) -> None:
    """The map as a mosaic of thumbnails (the colour choice of the states before frames the tiles)."""
    button = by_text(driver, "button", "Images")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    time.sleep(0.5)
    button.click()
    map_to_top(driver)
    wait(lambda: driver.execute_script(DEEP, ".mosaic-note"), timeout=60)
    time.sleep(4)


def zoom_map(driver, canvas, clicks: int = 3) -> None:
    """Wheel-zoom into the middle of the map (the toolbar's wheel zoom is active by default)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    map_to_top(driver)
    for _ in range(clicks):
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -200).perform()
        time.sleep(0.5)
    time.sleep(4)


def sky_search(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = wait(lambda: driver.execute_script(DEEP, "input[placeholder^='RA Dec']"))[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", box)
    box.send_keys(text, Keys.ENTER)
    status = by_text(driver, ".sky-status", "—", timeout=60)[0]
    time.sleep(3)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", status)   # the answer, in view
    map_to_top(driver)


def first_object_position(bundle: Path) -> str:
    import pandas as pd

    row = pd.read_parquet(bundle / "catalog.parquet", columns=["ra", "dec"]).iloc[0]
    return f"{row['ra']:.5f} {row['dec']:+.5f}"


def type_examples(bundle: Path) -> dict[str, str]:
    """For each of TYPES in the catalogue's ``truth_type``: the position of its brightest member (a clear example)."""
    import pandas as pd

    cat = pd.read_parquet(bundle / "catalog.parquet")
    if "truth_type" not in cat or "r_mag" not in cat:
        return {}
    out = {}
    for kind in TYPES:
        rows = cat[cat["truth_type"].astype(str) == kind]
        if len(rows):
            row = rows.loc[rows["r_mag"].idxmin()]
            out[kind] = f"{row['ra']:.5f} {row['dec']:+.5f}"
    return out


def find_and_show(driver, text: str) -> None:
    """A sky search for a catalogue object's position, then scroll to its neighbours."""
    from selenium.webdriver.common.keys import Keys

    box = wait(lambda: driver.execute_script(DEEP, "input[placeholder^='RA Dec']"))[0]
    box.clear()
    box.send_keys(text, Keys.ENTER)
    time.sleep(4)
    cards = wait(lambda: driver.execute_script(DEEP, ".nb-card"), timeout=120)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cards[0])
    time.sleep(2)


def open_about(driver) -> None:
    """The card opens by itself when the embedding does not beat its baselines; else open it."""
    cards = driver.execute_script(DEEP, ".about-card")
    if not (cards and cards[0].is_displayed()):   # a collapsed card keeps its content, hidden
        # the title sits in the header's own shadow root, out of reach of .text: the about card is the first card
        driver.execute_script(DEEP, ".card-header")[0].click()
        cards = wait(lambda: [c for c in driver.execute_script(DEEP, ".about-card") if c.is_displayed()])
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", cards[0])
    time.sleep(1.0)


def click_densest(driver, canvas) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    map_to_top(driver)
    dx, dy = densest_offset(driver, canvas)
    for wiggle in (3, -3, 0):   # the hover stream needs the pointer to move over the point first
        ActionChains(driver).move_to_element_with_offset(canvas, dx + wiggle, dy).perform()
        time.sleep(0.5)
    wait(lambda: driver.execute_script(DEEP, ".hover-card"), timeout=60)
    ActionChains(driver).click().perform()
    wait(lambda: driver.execute_script(DEEP, ".nb-card"), timeout=150)
    time.sleep(2)


def shoot(url: str, out: Path, width: int, height: int, states, sky_text: str = "",
          examples: dict[str, str] | None = None) -> list[Path]:
    driver, profile = driver_at(width, height)
    written = []
    try:
        driver.get(url)
        canvas = wait(lambda: map_canvas(driver))
        time.sleep(8)   # the first render, then the one at the page's final size
        actions = {"first-load": lambda: None, "about": lambda: open_about(driver),
                   "colour-fraction": lambda: choose_colour(driver, "fraction"),
                   "click": lambda: click_densest(driver, canvas), "gallery": lambda: show_gallery(driver),
                   "stability": lambda: show_copies(driver),
                   "lasso-label": lambda: lasso_and_label(driver, canvas),
                   "probe": lambda: fit_probe(driver), "finetune-curve": lambda: finetune_curve(driver),
                   "sky-search": lambda: sky_search(driver, sky_text), "mosaic": lambda: show_images(driver),
                   "mosaic-zoom": lambda: zoom_map(driver, canvas)}
        for state in STATES:   # in this order: later states build on earlier ones
            if state == "types" and state in states:
                for kind, position in (examples or {}).items():
                    find_and_show(driver, position)
                    written.append(out / f"type-{kind}-{width}x{height}.png")
                    driver.save_screenshot(str(written[-1]))
            elif state in states:
                actions[state]()
                written.append(out / f"{state}-{width}x{height}.png")
                driver.save_screenshot(str(written[-1]))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return written


def shoot_compare(url: str, out: Path, width: int, height: int) -> list[Path]:
    """The compare page (``--compare``): as it opens, after a click in map A, and both maps as images."""
    driver, profile = driver_at(width, height)
    written = []

    def save(name):
        written.append(out / f"compare-{name}-{width}x{height}.png")
        driver.save_screenshot(str(written[-1]))

    try:
        driver.get(url)
        wait(lambda: len([c for c in driver.execute_script(DEEP, "canvas") if c.size["width"] > 200]) >= 2)
        time.sleep(8)
        save("first-load")
        canvas = min((c for c in driver.execute_script(DEEP, "canvas") if c.size["width"] > 200),
                     key=lambda c: c.location["x"])
        click_densest(driver, canvas)
        map_to_top(driver)
        save("click")
        show_images(driver)
        save("images")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle")
    p.add_argument("--out")
    p.add_argument("--sizes", nargs="+", default=["1600x1000", "1280x720"])
    p.add_argument("--only", nargs="+", choices=STATES, default=list(STATES))
    p.add_argument("--port", type=int, default=5099)
    p.add_argument("--compare", help="a second bundle of the same objects: shoot the compare page instead")
    add_quick(p, bundle=lambda: str(quick_bundle()), out=lambda: str(scratch_dir()), sizes=["1280x720"],
              only=["first-load"])
    args = parse_quick(p, argv)
    if not (args.bundle and args.out):
        p.error("--bundle and --out are required (or --quick)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    states = [s for s in args.only if s != "finetune-curve" or (Path(args.bundle) / "finetuned").is_dir()]
    compare = Path(args.compare).resolve() if args.compare else None
    proc = start_server(Path(args.bundle).resolve(), args.port, out / "panel-serve.log", compare)
    try:
        for size in args.sizes:
            w, h = (int(v) for v in size.split("x"))
            if compare:
                for path in shoot_compare(f"http://127.0.0.1:{args.port}/explorer", out, w, h):
                    print(path)
                continue
            for path in shoot(f"http://127.0.0.1:{args.port}/explorer", out, w, h, states,
                              first_object_position(Path(args.bundle)), type_examples(Path(args.bundle))):
                print(path)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

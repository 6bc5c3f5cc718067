"""Shared test fixtures: small fixture bundles, a live `panel serve explorer`, and a headless Chromium driver.

Fixtures (all reusable by any test module):

- ``small_bundle`` (session): a 3,000-object, 32-d synthetic bundle written once per test session by
  ``benchmarks.fixture_bundle.make_fixture_bundle`` (colour_by: gz2_smooth_fraction, redshift,
  angular_extent_arcsec, r_mag, morph_class; survey "fixture").
- ``make_bundle`` (session): a factory ``make_bundle(name, n=..., dim=..., **kw) -> Path`` for other sizes; bundles
  are cached by name for the session.
- ``explorer_server`` (session): ``panel serve explorer`` on a free port over ``small_bundle``; yields a
  ``ServerInfo`` (``url``, ``port``, ``process``, ``log_path``, ``log()``). ``start_explorer_server(bundle, tmp)``
  starts another one (e.g. on a missing bundle) and must be stopped with ``.stop()``.
- ``browser`` (session): a headless selenium Chrome driver over Debian's /usr/bin/chromium; browser tests are
  skipped with a reason when chromium/chromedriver are absent. Mark them ``@pytest.mark.browser``.
- ``deep_query_all(driver, css)`` / ``wait_for(predicate, timeout)``: helpers. Panel 1.x renders every component in
  its own shadow DOM, so plain ``find_elements`` does not see inside; ``deep_query_all`` walks the shadow roots.
- ``screenshot_dir`` (session): a temp folder where browser tests save one PNG per step (path printed at the end).
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Hypothesis: `ci` (the default, `make test`) draws the same examples on every run and every clone, so a red run is
# the code's doing and reruns the same; `fuzz` (`make fuzz`) explores many new random examples. A failure `fuzz`
# finds is kept as an @example beside its test. No example database: a clean clone and a reused one run alike.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
_hypothesis_settings.register_profile("fuzz", derandomize=False, database=None, print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_hypothesis_settings.load_profile(HYPOTHESIS_PROFILE)
# Fixture bundles are written with a fixed creation time, so their bytes are the same on every run.
os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")


# ------------------------------------------------------------------------------------------------ bundles
@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def make_bundle(bundle_root):
    """Factory: ``make_bundle(name, n=2000, dim=32, **kwargs)`` writes (once) and returns a fixture bundle."""
    from benchmarks.fixture_bundle import make_fixture_bundle

    made: dict[str, Path] = {}

    def _make(name: str, n: int = 2000, dim: int = 32, **kwargs) -> Path:
        if name not in made:
            made[name] = make_fixture_bundle(bundle_root / name, n=n, dim=dim, **kwargs)
        return made[name]

    return _make


@pytest.fixture(scope="session")
def small_bundle(make_bundle) -> Path:
    return make_bundle("small", n=3000, dim=32)


@pytest.fixture(scope="session")
def sim_first_build(tmp_path_factory) -> Path:
    """A 160-object simulated FIRST bundle built by the pipeline (encoder, report), with its work folder beside it
    (``bundle.work``: the ingest cache holds the cutouts that fine-tuning reads). Copy it before writing into it."""
    from precompute.__main__ import main

    root = tmp_path_factory.mktemp("sim_first")
    assert main(["simulate", "--survey", "first", "--n", "160", "--out", str(root / "sim"), "--no-progress",
                 "--workers", "1"]) == 0
    out = root / "bundle"
    assert main(["build", "--survey", "first", "--catalog", str(root / "sim" / "catalog.csv"), "--out", str(out),
                 "--epochs", "1", "--batch-size", "32", "--no-progress", "--n-neighbors", "10"]) == 0
    return out


@pytest.fixture
def torch_one_thread():
    """Small-model tests: one torch thread (less noise on a shared CPU) and a fixed seed."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------------ the map in a page
def map_canvas(driver):
    """The largest canvas on the page: the Bokeh plot (None until it is drawn)."""
    canvases = [c for c in deep_query_all(driver, "canvas") if c.size["width"] > 200 and c.size["height"] > 200]
    return max(canvases, key=lambda c: c.size["width"] * c.size["height"]) if canvases else None


def pixels(element) -> np.ndarray:
    """RGB screenshot of a page element as an int16 array (differences between two stay signed)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")).astype(np.int16)


def colour_by(driver, label: str, message: str = "the map to recolour") -> None:
    """Choose ``label`` in the colour-by select and wait until the map image changes (> 0.5 % of its pixels)."""
    from selenium.webdriver.support.ui import Select

    before = pixels(map_canvas(driver))
    select = wait_for(lambda: deep_query_all(driver, "select"), message="the colour-by select")[0]
    Select(select).select_by_visible_text(label)

    def changed():
        after = pixels(map_canvas(driver))
        return after.shape == before.shape and np.abs(after - before).sum(axis=2).astype(bool).mean() > 0.005

    wait_for(changed, timeout=30, message=message)


TOOLBAR_ROWS = 45   # the map canvas's top rows hold the toolbar, whose Bokeh logo is as colourful as the data


def inked(img):
    """Mask of coloured (data) pixels of a map canvas's RGB array: saturated, i.e. not white, grey or black axis
    ink, and below the toolbar row (on the square map the logo outscored the data as the 'densest' spot)."""
    mask = (img.max(axis=2) - img.min(axis=2)) > 60
    mask[:TOOLBAR_ROWS] = False
    return mask


def draw_lasso(driver, canvas, rx: float, ry: float, n_points: int = 25) -> None:
    """Pick the map's lasso tool and drag an ellipse of half-axes ``rx``, ``ry`` (fractions of the canvas) around its
    middle, as a held-down drag through ``n_points`` points."""
    from selenium.webdriver.common.action_chains import ActionChains

    wait_for(lambda: deep_query_all(driver, ".bk-tool-icon-lasso-select"), message="the lasso tool")[0].click()
    w, h = canvas.size["width"], canvas.size["height"]
    t = np.linspace(0, 2 * np.pi, n_points)
    pts = np.column_stack([rx * w * np.cos(t), ry * h * np.sin(t)]).astype(int)
    chain = ActionChains(driver).move_to_element_with_offset(canvas, int(pts[0, 0]), int(pts[0, 1])).click_and_hold()
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        chain.move_by_offset(int(x1 - x0), int(y1 - y0)).pause(0.02)
    chain.release().perform()


def move_to(driver, element, x: int, y: int, click: bool = False):
    """Move the pointer to pixel (x, y) of ``element`` (top-left origin), optionally clicking there."""
    from selenium.webdriver.common.action_chains import ActionChains

    w, h = element.size["width"], element.size["height"]
    chain = ActionChains(driver).move_to_element_with_offset(element, x - w // 2, y - h // 2)
    (chain.click() if click else chain).perform()


# ------------------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerInfo:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_explorer_server(bundle: Path | str, workdir: Path, timeout: float = 90.0, extra_args=(),
                          env: dict | None = None, serve_args=()) -> ServerInfo:
    """Start ``panel serve explorer [serve_args] --args --bundle BUNDLE [extra_args]`` on a free port and wait until
    it answers.

    ``env`` adds environment variables (e.g. the sky-query service URLs pointed at a local replay server);
    ``serve_args`` are ``panel serve`` options (e.g. ``--unused-session-lifetime 2000``), placed before ``--args``."""
    port = free_port()
    log_path = Path(workdir) / f"panel-serve-{port}.log"
    from explorer.serve import serve_command

    cmd = serve_command(bundle, port, args=extra_args, serve_args=serve_args)
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", BOKEH_LOG_LEVEL="info", **(env or {}))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    info = ServerInfo(url=f"http://127.0.0.1:{port}/explorer", port=port, process=proc, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited with {proc.returncode}:\n{info.log()}")
        try:
            # a static file answers as soon as the server listens; "/" would build a whole session
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/js/bokeh.min.js", timeout=5):
                return info
        except OSError:
            time.sleep(0.5)
    info.stop()
    raise RuntimeError(f"panel serve did not answer within {timeout:.0f} s:\n{info.log()}")


@pytest.fixture(scope="session")
def explorer_server(small_bundle, tmp_path_factory):
    info = start_explorer_server(small_bundle, tmp_path_factory.mktemp("server"))
    yield info
    info.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the panel server's log to failing tests that used a server."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "explorer_server" in item.fixturenames:
        server = item.funcargs.get("explorer_server")
        if server is not None:
            report.sections.append(("panel serve log", server.log()[-6000:]))


# ------------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("screenshots")
    yield d
    print(f"\nbrowser screenshots: {d}")


def chrome_driver(window: str = "1600,1100", network_log: bool = False):
    """(driver, profile folder) for headless Debian Chromium; ``network_log`` records every request the page makes
    (``driver.get_log("performance")``). Skips the test when Chromium is absent."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless browser tests need /usr/bin/chromium and /usr/bin/chromedriver (make browser-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--window-size={window}", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    if network_log:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    return driver, profile


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    driver, profile = chrome_driver()
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


_DEEP_QUERY_JS = """
const selector = arguments[0];
const out = [];
function walk(root) {
  root.querySelectorAll(selector).forEach(e => out.push(e));
  root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) walk(e.shadowRoot); });
}
walk(document);
return out;
"""


def deep_query_all(driver, css: str) -> list:
    """All elements matching ``css`` in the document and in every (nested) shadow root."""
    return driver.execute_script(_DEEP_QUERY_JS, css)


def deep_text(driver) -> str:
    """All text of the page including shadow roots."""
    return driver.execute_script("""
      const parts = [];
      function walk(root) {
        root.childNodes.forEach(n => {
          if (n.nodeType === 3) parts.push(n.textContent);
          if (n.shadowRoot) walk(n.shadowRoot);
          if (n.childNodes) walk(n);
        });
      }
      walk(document.body);
      return parts.join(' ');
    """)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.25, message: str = "condition"):
    """Poll ``predicate()`` until it returns a truthy value; return it, or fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # the page is still building: stale elements etc.
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {message} (last: {last!r})")


@pytest.fixture
def shared_data_dir() -> Path:
    """The real data folder beside the repo; tests using it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real survey data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def toy_plugins():
    """Register the toy survey and method (by importing their files) and unregister them afterwards."""
    import importlib

    from core.surveys import base as surveys
    from models.methods import METHOD_REGISTRY
    from tests.plugins import toy_method, toy_survey

    importlib.reload(toy_method)
    importlib.reload(toy_survey)
    toy_method.STEPS_SEEN.clear()
    yield toy_survey, toy_method
    METHOD_REGISTRY.pop("toy", None)
    surveys._REGISTRY.pop("toy", None)

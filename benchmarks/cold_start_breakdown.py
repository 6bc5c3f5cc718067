"""Where the explorer's cold start goes: a real ``panel serve`` of a timed copy of explorer/main.py, printing seconds
since process start at each step until the first HTTP 200 (the same span as ``app_cold_start_s`` in
benchmarks/run.py).

    .venv/bin/python -m benchmarks.cold_start_breakdown --bundle bundles/bench-1m [--runs 2]

Steps: server up and the app script started, ``import explorer.app``, ``load_explorer_data`` (validation + map
frame), ``build_page``, the server-side document (Bokeh models, including the first map render, timed on its
own), the HTTP 200. The hover tree, searcher and Datashader kernels are built after that, in the background.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.quick import add_quick, parse_quick, quick_bundle
from benchmarks.run import REPO, _free_port

APP = '''
import os, sys, time
T0 = float(os.environ["COLD_START_T0"])
def step(what):
    print(f"STEP {time.time() - T0:.3f} {what}", file=sys.stderr, flush=True)
step("app script starts (panel serve up)")
import explorer.app as app
from explorer.map import plot
step("import explorer.app")
_render = plot.MapView.render
def timed_render(self, *a, **k):
    t = time.time()
    out = _render(self, *a, **k)
    step(f"  map render inside the document: {time.time() - t:.2f} s")
    return out
plot.MapView.render = timed_render
from explorer.data import load_explorer_data
from explorer.settings import Settings
data = load_explorer_data(Settings.parse(sys.argv[1:]).bundle)
step("load_explorer_data")
page = app.build_page(data)
step("build_page")
page.servable()
step("server-side document (Bokeh models)")
'''


def one_start(bundle: Path, timeout_s: float = 600) -> list[tuple[float, str]]:
    """Serve the timed app once; the (seconds since start, step) list, ending with the first HTTP 200."""
    port = _free_port()
    steps: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        app = Path(tmp) / "timed_explorer.py"
        app.write_text(APP)
        t0 = time.time()
        env = dict(os.environ, COLD_START_T0=repr(t0))
        from explorer.serve import serve_command

        cmd = serve_command(bundle, port, app=app)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def collect():
            for line in proc.stderr:
                if line.startswith("STEP "):
                    _, t, what = line.rstrip("\n").split(" ", 2)
                    steps.append((float(t), what))

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        try:
            while time.time() - t0 < timeout_s and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/timed_explorer", timeout=timeout_s) as r:
                        r.read()
                        steps.append((time.time() - t0, f"HTTP {r.status}"))
                    break
                except OSError:
                    time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(10)
            reader.join(5)
    return sorted(steps)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="bundles/bench-1m")
    p.add_argument("--runs", type=int, default=2)
    add_quick(p, bundle=lambda: str(quick_bundle()), runs=1)
    a = parse_quick(p, argv)
    totals = []
    for run in range(a.runs):
        load = os.getloadavg()[0]
        steps = one_start(Path(a.bundle))
        print(f"run {run + 1} (load average {load:.2f} at start):")
        last = 0.0
        for t, what in steps:
            print(f"  {t:6.2f} s  (+{t - last:5.2f})  {what}" if not what.startswith("  ") else f"{'':26}{what}")
            last = t if not what.startswith("  ") else last
        totals.append(steps[-1][0] if steps and steps[-1][1].startswith("HTTP") else float("nan"))
    print(f"first HTTP 200: median {statistics.median(totals):.2f} s of {[round(t, 2) for t in totals]}")


if __name__ == "__main__":
    main()

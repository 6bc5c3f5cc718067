"""BENCHMARK: a second visitor's page load while another visitor attacks the server (issue 22's bounded-work target:
within 2x its baseline during each attack).

    .venv/bin/python -m benchmarks.bench_attacks [--bundle DIR] [--json out.json]

A real ``panel serve`` (the Makefile's command line) over a fixture bundle; visitor A, in headless Chromium, sends
each attack through the page's own upload widgets; visitor B meanwhile loads the page over HTTP once a second (a GET
builds the whole server-side page: the work an attack would delay). Reported per attack: B's median and worst load
during the attack against B's baseline median, measured just before with A's page open and idle, and how long A
waited for the page's answer.

Attacks: a 12 MB FITS upload of 150,000 header cards (held a core for 1,055 s before the header caps); a FITS
header asking for SIP order 6,000 (99 s); a label import of 20,000 distinct labels (stalled B to 15.7 s).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.quick import add_quick, parse_quick, quick_bundle, scratch_dir
from benchmarks.screenshots import DEEP, driver_at, wait


def fits_with_cards(n_cards: int, **extra) -> bytes:
    """A 64 x 64 image with a celestial WCS, ``extra`` keywords and ``n_cards`` more header cards, written card by
    card (astropy's Header.append is quadratic: 150,000 cards took it minutes)."""
    cards = {"SIMPLE": "T", "BITPIX": -32, "NAXIS": 2, "NAXIS1": 64, "NAXIS2": 64, "CTYPE1": "'RA---TAN'",
             "CTYPE2": "'DEC--TAN'", "CRVAL1": 180.0, "CRVAL2": 20.0, "CRPIX1": 32, "CRPIX2": 32,
             "CDELT1": -0.4 / 3600, "CDELT2": 0.4 / 3600, **extra}
    text = "".join(f"{k:<8}= {v!s:>20}".ljust(80) for k, v in cards.items())
    text += "".join(f"X{i:07d}= {i:>20}".ljust(80) for i in range(n_cards)) + "END".ljust(80)
    header = text.encode("ascii")
    header += b" " * (-len(header) % 2880)
    data = np.zeros((64, 64), ">f4").tobytes()
    return header + data + b"\0" * (-len(data) % 2880)


def labels_csv(bundle: Path, n_labels: int) -> bytes:
    import pandas as pd

    ids = pd.read_parquet(bundle / "catalog.parquet", columns=["object_id"])["object_id"].astype(str)
    rows = [f"{ids.iat[i % len(ids)]},family-{i}" for i in range(n_labels)]
    return ("object_id,label\n" + "\n".join(rows) + "\n").encode()


def page_load_s(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        r.read()
    return time.perf_counter() - t


def upload(driver, accept: str, path: Path) -> None:
    inputs = wait(lambda: [e for e in driver.execute_script(DEEP, "input[type=file]")
                           if accept in (e.get_attribute("accept") or "")])
    inputs[0].send_keys(str(path))


def page_text(driver) -> str:
    """Every text node of the page, shadow roots included (Panel draws each component in its own)."""
    return driver.execute_script("""
      const parts = [];
      function walk(root) { root.childNodes.forEach(n => { if (n.nodeType === 3) parts.push(n.textContent);
        if (n.shadowRoot) walk(n.shadowRoot); if (n.childNodes) walk(n); }); }
      walk(document.body); return parts.join(' ');""")


def measure_attack(url: str, driver, accept: str, path: Path, answered: str, window_s: float) -> dict:
    """B's loads while A's upload runs; stops when A's page shows ``answered`` (or after ``window_s``)."""
    loads, done = [], threading.Event()

    def visitor_b():   # a visitor opening the page every second, not back to back: each load is ~1-2 s of loop work
        while not done.is_set():
            loads.append(page_load_s(url))
            done.wait(1.0)

    t0 = time.perf_counter()
    upload(driver, accept, path)
    b = threading.Thread(target=visitor_b, daemon=True)
    b.start()
    answer_s = None
    while time.perf_counter() - t0 < window_s:
        if answered in page_text(driver):
            answer_s = time.perf_counter() - t0
            break
        time.sleep(0.2)
    while len(loads) < 4 and time.perf_counter() - t0 < window_s + 60:   # at least four loads during the attack
        time.sleep(0.2)
    done.set()
    b.join(timeout=120)
    return {"answer_s": None if answer_s is None else round(answer_s, 2), "b_loads": len(loads),
            "b_median_s": round(statistics.median(loads), 2), "b_worst_s": round(max(loads), 2)}


def run_attacks(bundle: Path, work: Path, cards: int, labels: int, baseline_loads: int, window: float) -> dict:
    """Serve ``bundle``, measure visitor B's baseline, then each attack by visitor A (see the module docstring)."""
    import subprocess

    from benchmarks.run import _free_port
    from explorer.serve import serve_command

    port = _free_port()
    log = open(work / "serve.log", "wb")
    proc = subprocess.Popen(serve_command(bundle, port, args=["--labels", work / "labels.sqlite"]), stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    url = f"http://127.0.0.1:{port}/explorer"
    attacks = {
        f"FITS upload, {cards:,} header cards": (".fits", "many.fits", fits_with_cards(cards), "cards"),
        "FITS upload, SIP order 6,000": (".fits", "sip.fits", fits_with_cards(10, A_ORDER=6000, B_ORDER=6000),
                                         "order 6000"),
        f"label import, {labels:,} distinct labels": (".csv", "labels.csv", labels_csv(bundle, labels),
                                                      "distinct labels" if labels > 1000 else "rows matched"),
    }
    driver, profile = driver_at(1280, 720)
    try:
        wait(lambda: page_load_s(url), timeout=120)
        result = {"machine": {"cores": os.cpu_count(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]},
                  "bundle": str(bundle), "attacks": {}}
        for name, (accept, filename, content, answered) in attacks.items():
            driver.get(url)   # A's page open and idle: B's baseline in the same conditions as during the attack
            wait(lambda: driver.execute_script(DEEP, "canvas"), timeout=120)
            time.sleep(2.0)
            baseline = []
            for _ in range(baseline_loads):
                baseline.append(page_load_s(url))
                time.sleep(1.0)
            path = work / filename
            path.write_bytes(content)
            row = {"b_baseline_median_s": round(statistics.median(baseline), 2),
                   **measure_attack(url, driver, accept, path, answered, window)}
            driver.save_screenshot(str(work / f"{filename}.png"))
            row["b_median_over_baseline"] = round(row["b_median_s"] / row["b_baseline_median_s"], 2)
            row["upload_mb"] = round(len(content) / 2**20, 1)
            result["attacks"][name] = row
            print(json.dumps({name: row}), flush=True)
        return result
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        proc.terminate()
        proc.wait(timeout=20)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="bundle to serve (default: a 3,000-object fixture bundle)")
    p.add_argument("--cards", type=int, default=150_000)
    p.add_argument("--labels", type=int, default=20_000)
    p.add_argument("--baseline-loads", type=int, default=5)
    p.add_argument("--window", type=float, default=30.0, help="seconds to wait for A's answer")
    p.add_argument("--json")
    p.add_argument("--keep", help="folder for the server log and A's screenshots (default: a temporary one)")
    add_quick(p, cards=3_000, labels=1_500, baseline_loads=2, window=15.0)
    a = parse_quick(p, argv)
    work = Path(a.keep) if a.keep else scratch_dir("bench-attacks-")
    work.mkdir(parents=True, exist_ok=True)
    bundle = Path(a.bundle) if a.bundle else quick_bundle(n=3_000, dim=32)
    result = run_attacks(bundle, work, a.cards, a.labels, a.baseline_loads, a.window)
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How long a new user waits for `make demo`: cold (no bundle, no work folder) and warm (the bundle exists), from the
command to the explorer's first page answering, with the pipeline's own time per stage (issue 21).

    .venv/bin/python -m benchmarks.bench_demo --bundle /tmp/demo-timing/demo

Runs the Makefile's `demo` target itself (`.venv` must exist: its set-up is measured separately), on a port of its
own, and stops the server after each start. The stage times are the `[stage] done in N s` lines of the build log.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from benchmarks.quick import add_quick, parse_quick, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
STAGE_DONE = re.compile(r"^\[(\w+)\] done in ([\d.]+) s", re.M)


def time_make_demo(bundle: Path, port: int, log: Path, demo_args: str = "", timeout: float = 1800) -> float:
    """Seconds from `make demo` to a 200 from the explorer's page; the server is stopped afterwards."""
    cmd = ["make", "demo", f"BUNDLE={bundle}", f"PORT={port}"] + ([f"DEMO_ARGS={demo_args}"] if demo_args else [])
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"make demo exited with {proc.returncode} before serving; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer", timeout=30) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.5)
        raise SystemExit(f"no page within {timeout} s; see {log}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="/tmp/demo-timing/demo", help="bundle folder (removed first, with its work "
                                                                   "folder, for the cold start)")
    p.add_argument("--port", type=int, default=5097)
    p.add_argument("--demo-args", default="", help="extra `precompute demo` options (DEMO_ARGS)")
    add_quick(p, bundle=lambda: str(scratch_dir() / "demo"), demo_args="--n 200 --epochs 1")
    args = parse_quick(p, argv)
    bundle = Path(args.bundle).resolve()
    work = bundle.with_name(bundle.name + ".work")
    for path in (bundle, work):
        shutil.rmtree(path, ignore_errors=True)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    log = bundle.with_name(bundle.name + ".make.log")
    log.unlink(missing_ok=True)
    load = os.getloadavg()
    cold = time_make_demo(bundle, args.port, log, args.demo_args)
    stages = {name: float(s) for name, s in STAGE_DONE.findall(log.read_text(errors="replace"))}
    warm = time_make_demo(bundle, args.port, log, args.demo_args)
    report = json.loads((bundle / "report.json").read_text())
    row = {"cold_seconds": round(cold, 1), "warm_seconds": round(warm, 1), "stages": stages,
           "report_health": {k: report["health"][k] for k in ("first_pc_share", "participation_ratio")},
           "load_before": [round(v, 2) for v in load], "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ten million objects on this box: synthetic 128-d embeddings and a catalogue, through `python -m precompute
from-embeddings` (sampled UMAP, the index chosen by size, the report, HATS) to the explorer's first page, then the
explorer's interactive steps on the result.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.scale.bench_10m --n 10000000 --dir /data/b10m --json 10m.json

Steps (each in its own child process, so each peak RSS is its own): ``inputs`` (``clustered_embeddings``: 40
families of very different sizes, float16 .npy, and a catalogue of id, RA/Dec over a quarter of the sky, a
redshift and a family class), ``build`` (from-embeddings, wall time and the peak RSS of the command, polled),
``serve`` (``panel serve explorer``: process start to the first HTTP 200 of the page), ``measure`` (in one process:
the bundle loaded as the server loads it, then the p50 of a map render at full view and 10x zoom through
``MapView.render``, of click -> 12 neighbours (``ExplorerData.searcher``) and of a sky match (``ExplorerData.
matcher``: the in-memory KD-tree below ``core.hats.LSDB_ABOVE``, and both ways whenever the bundle has ``hats/``)).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.quick import add_quick, parse_quick, scratch_dir

REPO = Path(__file__).resolve().parents[2]


def write_inputs(n: int, dim: int, folder: Path, seed: int = 0) -> None:
    import pandas as pd

    from benchmarks.fixture_bundle import clustered_embeddings

    folder.mkdir(parents=True, exist_ok=True)
    emb, labels, _ = clustered_embeddings(n, dim, seed=seed)
    np.save(folder / "emb.npy", emb)
    del emb
    rng = np.random.default_rng(seed + 1)
    family_z = rng.uniform(0.02, 0.6, labels.max() + 1)
    pd.DataFrame({"object_id": pd.array(np.char.add("obj", np.arange(n).astype(str)), dtype="string"),
                  "ra": rng.uniform(120, 240, n),
                  "dec": np.degrees(np.arcsin(rng.uniform(0, np.sin(np.radians(60)), n))),   # uniform on the sphere
                  "redshift": np.clip(family_z[labels] + rng.normal(0, 0.03, n), 0, None).astype(np.float32),
                  "family": pd.Categorical([f"family {i:02d}" for i in labels])}).to_parquet(folder / "cat.parquet")


def run_polled(cmd: list[str], log_path: Path, timeout_s: float) -> dict:
    """Run ``cmd``; its wall time and the peak RSS of it and its children, polled every 0.2 s, in all and while
    each stage ran (the last '[stage]' line of its log at each poll)."""
    import re

    import psutil

    t0 = time.perf_counter()
    peaks: dict[str, int] = {}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        peak, stage, seen = 0, "start", 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None and time.perf_counter() - t0 < timeout_s:
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
            except psutil.Error:
                rss = 0
            text = log_path.read_text(errors="replace")
            for m in re.finditer(r"^\[([\w-]+)\]", text[seen:], re.M):
                stage = m[1]
            seen = len(text)
            peak, peaks[stage] = max(peak, rss), max(peaks.get(stage, 0), rss)
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
    return {"returncode": proc.wait(), "wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(peak / 2**20),
            "peak_rss_mb_by_stage": {k: round(v / 2**20) for k, v in peaks.items()}}


def stage_times(log_text: str) -> dict:
    """'[stage] done in X s' lines of the pipeline's log."""
    import re

    return {m[1]: float(m[2]) for m in re.finditer(r"\[(\w[\w-]*)\] done in ([\d.]+) s", log_text)}


def measure(bundle: Path, repeats: int) -> dict:
    import astropy.units as u
    import holoviews as hv
    from astropy.coordinates import SkyCoord

    from benchmarks.run import latency, timed
    from core.hats import HATS_DIR, open_hats
    from explorer.data import load_explorer_data
    from explorer.map.plot import MapView
    from explorer.sky.hats_match import HatsMatcher
    from explorer.sky.skyquery import CatalogueMatcher
    from explorer.state import ExplorerState

    hv.extension("bokeh")
    out = {}
    t = time.perf_counter()
    data = load_explorer_data(bundle)
    out["load_s"] = round(time.perf_counter() - t, 2)
    view = MapView(data, ExplorerState())
    x0, x1, y0, y1 = view._extent
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 20, (y1 - y0) / 20
    for colour_by in ("density", "redshift"):
        view.state.colour_by = colour_by
        for name, ranges in (("full", ((x0, x1), (y0, y1))), ("zoom10", ((cx - hx, cx + hx), (cy - hy, cy + hy)))):
            p50, p95 = latency(timed(lambda r=ranges: view.render(*r), repeats), "MapView.render (aggregate + spread)")
            out[f"render_{colour_by}_{name}_p50_ms"], out[f"render_{colour_by}_{name}_p95_ms"] = p50, p95
    rng = np.random.default_rng(5)
    rows = rng.choice(data.n, 50, replace=False)
    t = time.perf_counter()
    searcher = data.searcher
    out["searcher_ready_s"] = round(time.perf_counter() - t, 2)
    vectors = [np.asarray(data.bundle.embeddings[r], dtype=np.float32)[None] for r in rows]
    it = iter(range(10**9))
    p50, p95 = latency(timed(lambda: searcher.search(vectors[next(it) % len(vectors)], 12), len(vectors)),
                       "ExplorerData.searcher.search(one object's vector, 12): click -> neighbours")
    out["click_neighbours_p50_ms"], out["click_neighbours_p95_ms"] = p50, p95
    coords = SkyCoord(data.ra[rows] * u.deg, data.dec[rows] * u.deg).directional_offset_by(0 * u.deg, 0.5 * u.arcsec)
    t = time.perf_counter()
    matcher = data.matcher
    out["matcher"] = type(matcher).__name__
    out["matcher_ready_s"] = round(time.perf_counter() - t, 2)
    matchers = {"explorer": matcher}
    if (bundle / HATS_DIR).is_dir():      # both ways, whichever the explorer uses at this size
        t = time.perf_counter()
        matchers["lsdb"] = HatsMatcher(open_hats(bundle, data.n, data.bundle.manifest.get("created"),
                                                 data.object_ids), data.ra, data.dec, data.object_ids)
        out["lsdb_matcher_build_s"] = round(time.perf_counter() - t, 2)
        if type(matcher) is not CatalogueMatcher:
            t = time.perf_counter()
            matchers["kdtree"] = CatalogueMatcher(data.ra, data.dec, data.object_ids)
            out["kdtree_matcher_build_s"] = round(time.perf_counter() - t, 2)
    for name, m in matchers.items():
        it = iter(range(10**9))
        p50, p95 = latency(timed(lambda m=m: m.match(coords[next(it) % len(rows)], radius=2 * u.arcsec), len(rows)),
                           f"{type(m).__name__}.match")
        out[f"sky_match_{name}_p50_ms"], out[f"sky_match_{name}_p95_ms"] = p50, p95
    answers = {name: [m.match(c, radius=2 * u.arcsec).index for c in coords[:20]] for name, m in matchers.items()}
    out["matchers_agree_on_20"] = len({tuple(a) for a in answers.values()}) == 1
    import resource

    out["measure_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main(argv=None) -> int:
    from benchmarks.run import bench_cold_start, finish, machine

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--dir", type=Path, default=Path("bundles/scale-10m-fe"))
    p.add_argument("--steps", nargs="+", default=["inputs", "build", "serve", "measure"],
                   choices=["inputs", "build", "serve", "measure"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--timeout", type=float, default=3 * 3600)
    p.add_argument("--json")
    add_quick(p, n=3_000, dim=16, dir=lambda: scratch_dir() / "b", repeats=2)
    args = parse_quick(p, argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    bundle = args.dir / "bundle"
    results = {"machine": machine(), "n": args.n, "dim": args.dim}
    if "inputs" in args.steps:
        code = (f"from benchmarks.scale.bench_10m import write_inputs; from pathlib import Path; "
                f"write_inputs({args.n}, {args.dim}, Path({str(args.dir)!r}))")
        results["inputs"] = run_polled([sys.executable, "-c", code], args.dir / "inputs.log", args.timeout)
    if "build" in args.steps:
        cmd = [sys.executable, "-m", "precompute", "from-embeddings", "--embeddings", str(args.dir / "emb.npy"),
               "--catalog", str(args.dir / "cat.parquet"), "--out", str(bundle), "--survey", "none", "--hats",
               "--no-progress"]
        results["build"] = run_polled(cmd, args.dir / "build.log", args.timeout)
        log_text = (args.dir / "build.log").read_text()
        results["build"]["stages_s"] = stage_times(log_text)
        results["build"]["log_tail"] = log_text.splitlines()[-3:]
        if results["build"]["returncode"] != 0:
            finish(results, args.json)
            return 1
    if "serve" in args.steps:
        results["serve"] = bench_cold_start(bundle)
    if "measure" in args.steps:
        code = (f"import json; from benchmarks.scale.bench_10m import measure; from pathlib import Path; "
                f"print('MEASURE' + json.dumps(measure(Path({str(bundle)!r}), {args.repeats})))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEASURE")), None)
        results["measure"] = json.loads(line[7:]) if line else {"error": (proc.stdout + proc.stderr)[-3000:]}
    finish(results, args.json)
    return 0 if "error" not in results.get("measure", {}) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""End-to-end benchmarks of the explorer's interactive paths and precompute stages, measured with the app's own
functions where they exist (each figure records its ``source``).

    python -m benchmarks.run --n 1000000 --json results.json          # uses/creates bundles/bench-1m
    python -m benchmarks.run --quick --json quick.json                 # CI smoke test: 20 k × 128, ~1–2 min

Every latency is a median (and p95) over repeats after warm-up. Search recall is measured against exact search
in the same run. The machine (cores, RAM, CPU, load average, versions) is recorded with the figures: on a shared
box the load average matters as much as the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIEW_PX = (900, 680)  # the explorer's default map size (explorer.map.plot.DEFAULT_WIDTH, MAP_HEIGHT)


# ============================================================================================ helpers
def timed(fn, repeats: int, warmup: int = 2) -> np.ndarray:
    """Milliseconds of ``repeats`` calls of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return np.array(out)


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn()`` after ``warmup`` calls, to 0.1 ms."""
    return round(float(np.median(timed(fn, repeats, warmup))), 1)


def finish(results: dict, json_path: str | None) -> dict:
    """Stamp the load average at the end, print ``results`` and write them to ``json_path`` when given."""
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(results, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text)
    return results


def figure(value, unit: str, source: str, **detail) -> dict:
    return {"value": None if value is None else round(float(value), 4), "unit": unit, "source": source, **detail}


def latency(ms: np.ndarray, source: str, **detail) -> tuple[dict, dict]:
    """(p50 figure, p95 figure) of per-call milliseconds."""
    p50, p95 = np.median(ms), np.percentile(ms, 95)
    return figure(p50, "ms", source, repeats=len(ms), **detail), figure(p95, "ms", source, repeats=len(ms), **detail)


def machine() -> dict:
    import psutil

    from core.write import software_versions

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "cpu": cpu,
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "platform": platform.platform(), "software": software_versions(),
            "note": "shared machine: other engineers' jobs ran at the same time; see the load averages"}


# ============================================================================================ figures
def bench_search(bundle, queries: int, repeats_exact: int = 3) -> dict:
    from core.index import SimilaritySearch, exact_search, recall_at_k

    emb = bundle.embeddings
    searcher = SimilaritySearch(bundle.index, emb)
    rng = np.random.default_rng(7)
    q = np.asarray(emb[np.sort(rng.choice(len(emb), queries, replace=False))], dtype=np.float32)
    _, truth = exact_search(emb, q, 10)
    for row in q[:5]:
        searcher.search(row[None], 10)
    ms, found = [], []
    for row in q:
        t = time.perf_counter()
        found.append(searcher.search(row[None], 10)[1][0])
        ms.append((time.perf_counter() - t) * 1e3)
    ms = np.array(ms)
    exact_ms = timed(lambda: exact_search(emb, q[:1], 10), repeats_exact, warmup=1)
    src = "core.index.SimilaritySearch.search (explorer.data.ExplorerData.searcher)"
    p50, p95 = latency(ms, src, index=type(searcher.index).__name__, rerank=searcher.rerank)
    return {
        "search_p50_ms": p50, "search_p95_ms": p95,
        "search_recall_at_10": figure(recall_at_k(np.array(found), truth), "fraction",
                                      "vs core.index.exact_search in the same run", queries=queries),
        "search_exact_ms": figure(np.median(exact_ms), "ms", "core.index.exact_search, one query"),
        "search_speedup_vs_exact": figure(np.median(exact_ms) / np.median(ms), "x", "exact_ms / search_p50_ms"),
    }


def _view_ranges(x: np.ndarray, y: np.ndarray, zoom: float):
    cx, cy = float(np.median(x)), float(np.median(y))
    hx, hy = (float(x.max() - x.min()) / 2 / zoom, float(y.max() - y.min()) / 2 / zoom)
    return (cx - hx, cx + hx), (cy - hy, cy + hy)


def bench_render(frame, repeats: int) -> dict:
    """Aggregate + shade at full view and at 10× zoom: Datashader directly, and the explorer's HoloViews path."""
    import datashader as ds
    import datashader.transfer_functions as tf

    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    out = {}
    for name, zoom in (("full", 1.0), ("zoom10", 10.0)):
        xr, yr = _view_ranges(x, y, zoom)

        def render():
            cvs = ds.Canvas(plot_width=VIEW_PX[0], plot_height=VIEW_PX[1], x_range=xr, y_range=yr)
            return tf.shade(cvs.points(frame, "x", "y", agg=ds.count()), how="log")

        p50, p95 = latency(timed(render, repeats), "datashader Canvas.points(count) + tf.shade(log)",
                           view=name, pixels=VIEW_PX)
        suffix = "" if name == "full" else "_zoom10"
        out[f"render_p50_ms{suffix}"], out[f"render_p95_ms{suffix}"] = p50, p95
    out.update(bench_render_explorer(frame, repeats))
    return out


def bench_render_explorer(frame, repeats: int) -> dict:
    """The explorer's own layer: holoviews rasterize(mean of a colour column) + dynspread, as MapView builds it."""
    try:
        import datashader as ds
        import holoviews as hv
        from holoviews.operation.datashader import dynspread, rasterize

        from explorer.map.kernels import SPREAD
    except ImportError as e:
        return {"render_explorer_p50_ms": figure(None, "ms", f"unavailable: {e}")}
    col = next((c for c in frame.columns if c not in ("x", "y")), None)
    points = hv.Points(frame, kdims=["x", "y"], vdims=[c for c in frame.columns if c not in ("x", "y")])
    agg = ds.mean(col) if col else ds.count()
    xr, yr = _view_ranges(frame["x"].to_numpy(), frame["y"].to_numpy(), 1.0)

    def render():
        img = rasterize(points, aggregator=agg, x_range=xr, y_range=yr, width=VIEW_PX[0], height=VIEW_PX[1],
                        dynamic=False)
        return dynspread(img, dynamic=False, **SPREAD)

    p50, _ = latency(timed(render, repeats), "holoviews rasterize + dynspread with explorer.map.kernels.SPREAD "
                     "(the MapView colour layer, without Bokeh serialisation)", column=col, view="full")
    return {"render_explorer_p50_ms": p50}


def bench_hover(frame, repeats: int) -> dict:
    from explorer.map.hover import build_tree, nearest_object

    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    t = time.perf_counter()
    tree = build_tree(x, y)
    build_s = time.perf_counter() - t
    xr, yr = _view_ranges(x, y, 1.0)
    rng = np.random.default_rng(3)
    pts = np.column_stack([rng.uniform(*xr, repeats), rng.uniform(*yr, repeats)])
    it = iter(np.concatenate([pts[:5], pts]))
    ms = timed(lambda: nearest_object(tree, *next(it), xr, yr, *VIEW_PX), repeats, warmup=5)
    p50, p95 = latency(ms, "explorer.map.hover.nearest_object (cKDTree, 6 px radius)")
    return {"hover_p50_ms": p50, "hover_p95_ms": p95,
            "hover_tree_build_s": figure(build_s, "s", "explorer.map.hover.build_tree")}


def lasso_ring(x: np.ndarray, y: np.ndarray, fraction: float, vertices: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A hand-drawn-like closed path around the densest area that encloses about ``fraction`` of the points."""
    cx, cy = float(np.median(x)), float(np.median(y))
    r = float(np.quantile(np.hypot(x - cx, y - cy), fraction))
    theta = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    wobble = 1 + 0.05 * np.sin(5 * theta)
    return cx + r * wobble * np.cos(theta), cy + r * wobble * np.sin(theta)


def bench_lasso(frame, repeats: int) -> dict:
    from explorer.map.selection import lasso_select

    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    xs, ys = lasso_ring(x, y, 0.25)
    inside = len(lasso_select(x, y, xs, ys))
    p50, p95 = latency(timed(lambda: lasso_select(x, y, xs, ys), repeats),
                       "explorer.map.selection.lasso_select (bbox prefilter + shapely)", inside=inside, vertices=len(xs))
    return {"lasso_p50_ms": p50, "lasso_p95_ms": p95}


def bench_probe(bundle, n_train: int) -> dict:
    from explorer.probes.probes import fit_probe, score_all, target_from_column

    cat = bundle.catalog
    column = next(c for c, spec in bundle.colour_by.items() if spec.get("kind") == "fraction" and c in cat)
    target = target_from_column(cat, column, colour_by=bundle.colour_by)
    split = cat["split"].to_numpy()
    t = time.perf_counter()
    probe = fit_probe(bundle.embeddings, target, split, n_train=n_train)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    score_all(probe, bundle.embeddings)
    score_s = time.perf_counter() - t
    dim = bundle.embeddings.shape[1]
    return {"probe_fit_s": figure(fit_s, "s", "explorer.probes.probes.fit_probe (soft-BCE, incl. test-set evaluation)",
                                  column=column, n_train=int(probe.n_train), dim=dim),
            "probe_score_all_s": figure(score_s, "s", "explorer.probes.probes.score_all", n=len(bundle.embeddings))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_cold_start(path: Path, timeout_s: float = 600) -> dict:
    """A real ``panel serve explorer`` start until the first HTTP 200 of /explorer (that request loads the bundle
    and builds the page), then the server's resident memory."""
    import psutil

    port = _free_port()
    from explorer.serve import serve_command

    cmd = serve_command(path, port)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        status = None
        while time.perf_counter() - t < timeout_s and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer", timeout=timeout_s) as r:
                    status = r.status
                    body = r.read()
                break
            except OSError:
                time.sleep(0.2)
        cold = time.perf_counter() - t
        if status != 200:
            err = proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timed out"
            return {"app_cold_start_s": figure(None, "s", f"panel serve failed: {err}")}
        if b"No usable bundle" in body:
            return {"app_cold_start_s": figure(None, "s", "panel serve showed the bundle error page")}
        rss = sum(p.memory_info().rss for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)])
        src = "panel serve explorer: process start to first HTTP 200 of /explorer (bundle load + page build)"
        return {"app_cold_start_s": figure(cold, "s", src),
                "app_rss_mb": figure(rss / 2**20, "MB", "psutil RSS of the panel server after one page")}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def bundle_bytes(path: Path, n: int) -> dict:
    parts = {}
    for f in path.rglob("*"):
        if f.is_file():
            key = f.relative_to(path).parts[0]
            parts[key] = parts.get(key, 0) + f.stat().st_size
    per = {k: round(v / n, 1) for k, v in sorted(parts.items())}
    return {"bytes_per_object": figure(sum(parts.values()) / n, "B", "sum of the bundle's file sizes / n_objects",
                                       parts=per)}


def bench_umap(bundle, n_fit: int, label: str) -> dict:
    """PCA to 50 then UMAP (n_neighbors 15, low_memory, init='pca') with precompute.project's functions."""
    from precompute.project import fit_pca, fit_umap

    emb = bundle.embeddings
    rows = np.sort(np.random.default_rng(5).choice(len(emb), min(n_fit, len(emb)), replace=False))
    x = np.asarray(emb[rows], dtype=np.float32)
    t = time.perf_counter()
    fit_umap(np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32), n_neighbors=15)
    jit_s = time.perf_counter() - t
    t = time.perf_counter()
    pca = fit_pca(x, 50)
    reduced = pca.transform(x).astype(np.float32)
    fit_umap(reduced, n_neighbors=15)
    fit_s = time.perf_counter() - t
    src = "precompute.project.fit_pca(50) + fit_umap(n_neighbors=15, low_memory, init='pca', n_jobs=1)"
    return {label: figure(fit_s, "s", src, n=len(rows)),
            "umap_jit_warmup_s": figure(jit_s, "s", "first fit_umap call on 300 points (numba compile/cache load)")}


# ============================================================================================ driver
FIGURES = ("search_p50_ms", "search_p95_ms", "search_recall_at_10", "search_exact_ms", "search_speedup_vs_exact",
           "render_p50_ms", "render_p95_ms", "render_p50_ms_zoom10", "render_p95_ms_zoom10", "render_explorer_p50_ms",
           "hover_p50_ms", "hover_p95_ms", "hover_tree_build_s", "lasso_p50_ms", "lasso_p95_ms", "probe_fit_s",
           "probe_score_all_s", "bytes_per_object", "app_cold_start_s", "app_rss_mb", "umap_fit_s",
           "umap_jit_warmup_s")


def expected_figures(args) -> list[str]:
    """The figure names a run with these arguments produces (all of FIGURES unless steps were skipped)."""
    skipped = {"search": "search_", "render": "render_", "hover": "hover_", "lasso": "lasso_", "probe": "probe_",
               "bytes": "bytes_", "cold start": "app_", "umap": "umap_"}
    prefixes = tuple(skipped[s] for s in args.skip if s in skipped)
    return [f for f in FIGURES if not f.startswith(prefixes)] + (["umap_fit_full_s"] if args.umap_full else [])


def ensure_bundle(path: Path, n: int, dim: int) -> Path:
    if (path / "manifest.json").exists():
        return path
    from benchmarks.fixture_bundle import make_fixture_bundle

    print(f"building fixture bundle {path} ({n} x {dim}) ...", flush=True)
    return make_fixture_bundle(path, n=n, dim=dim)


def run(args) -> dict:
    from core.bundle import Bundle
    from explorer.data import prepare

    path = ensure_bundle(Path(args.bundle), args.n, args.dim)
    t = time.perf_counter()
    bundle = Bundle.open(path, validate=False)
    data = prepare(bundle)
    print(f"loaded {path}: {bundle.n} objects in {time.perf_counter() - t:.1f} s", flush=True)
    results = {"command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *sys.argv[1:]]),
               "machine": machine(), "bundle": {"path": str(path), "n_objects": bundle.n,
                                                "embedding_dim": int(bundle.embeddings.shape[1]),
                                                "embedding_dtype": str(bundle.embeddings.dtype),
                                                "survey": bundle.survey},
               "figures": {}}
    figs = results["figures"]
    steps = [
        ("search", lambda: bench_search(bundle, args.queries)),
        ("render", lambda: bench_render(data.frame, args.repeats)),
        ("hover", lambda: bench_hover(data.frame, max(200, args.repeats * 20))),
        ("lasso", lambda: bench_lasso(data.frame, args.repeats)),
        ("probe", lambda: bench_probe(bundle, args.probe_train)),
        ("bytes", lambda: bundle_bytes(path, bundle.n)),
        ("cold start", lambda: bench_cold_start(path)),
        ("umap", lambda: bench_umap(bundle, args.umap_n, "umap_fit_s")),
    ]
    if args.umap_full:
        steps.append(("umap full", lambda: {"umap_fit_full_s": bench_umap(bundle, bundle.n, "x")["x"]}))
    for name, step in steps:
        if name in args.skip:
            continue
        t = time.perf_counter()
        figs.update(step())
        print(f"{name}: {time.perf_counter() - t:.1f} s  "
              + ", ".join(f"{k}={v['value']}" for k, v in figs.items() if k.split('_')[0] in name.split()[0]),
              flush=True)
    results["figures_expected"] = expected_figures(args)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--bundle", help="bundle to measure (default bundles/bench-1m, or bundles/bench-N; built if absent)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--quick", action="store_true", help="CI smoke test: 20 k × 128 in a temporary bundle, small fits")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--probe-train", type=int, default=100_000)
    p.add_argument("--umap-n", type=int, default=100_000)
    p.add_argument("--umap-full", action="store_true", help="also fit UMAP on every object (18+ min at 1 M)")
    p.add_argument("--skip", nargs="*", default=[], help="steps to leave out, e.g. umap 'cold start'")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.dim, a.queries, a.repeats, a.probe_train, a.umap_n = 20_000, 128, 50, 5, 5_000, 1_000
    if a.bundle is None and not a.quick:
        a.bundle = "bundles/bench-1m" if a.n == 1_000_000 else f"bundles/bench-{a.n}"
    return a


def main(argv=None):
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-quick-") as tmp:
        if a.bundle is None:
            a.bundle = str(Path(tmp) / "bundle")
        results = run(a)
    text = json.dumps(results, indent=2)
    if a.json:
        Path(a.json).write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()

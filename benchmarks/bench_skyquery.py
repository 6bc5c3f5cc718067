"""BENCHMARK: sky queries — parsing, catalogue matching at bundle scale, and fetch-and-embed of one FIRST cutout.

    python -m benchmarks.bench_skyquery --n 1000000
    python -m benchmarks.bench_skyquery --n 1000000 --no-fetch      # without the real-FIRST part

Matching: a ``CatalogueMatcher`` over N random positions (SDSS-like footprint) is built once (SkyCoord + KD-tree +
the footprint spacing estimate), then single-position queries are timed. Fetch-and-embed (when
../shared/data/first_mirabest is present): a 40-object FIRST bundle with a small untrained encoder, the SkyView
answer replayed from a localhost server; timed cold (request + resample + embed + search + UMAP place) and warm
(disk-cache hit). Nothing touches the network.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.quick import add_quick, parse_quick

REPO = Path(__file__).resolve().parents[1]


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def bench_parse(repeats: int = 200) -> dict:
    from explorer.sky.skyquery import parse_position

    forms = ["201.42 23.38", "13:25:41.2 +23:22:53", "J132541.2+232253",
             "https://skyserver.sdss.org/dr16/en/tools/chart/navi.aspx?ra=201.42&dec=23.38", "25:00:00 +10:00:00"]
    return {f"parse '{f[:30]}' ms": _median_ms(lambda f=f: parse_position(f, resolve_names=False), repeats)
            for f in forms}


def bench_match(n: int, queries: int = 200) -> dict:
    from astropy.coordinates import SkyCoord

    from explorer.sky.skyquery import CatalogueMatcher, footprint_plot

    rng = np.random.default_rng(0)
    ra = rng.uniform(120, 240, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-5)), np.sin(np.radians(60)), n)))
    t = time.perf_counter()
    matcher = CatalogueMatcher(ra, dec)
    build_s = time.perf_counter() - t
    probes = SkyCoord(rng.uniform(0, 360, queries), rng.uniform(-30, 70, queries), unit="deg")
    it = iter(range(queries))
    match_ms = _median_ms(lambda: matcher.match(probes[next(it)]), queries)
    t = time.perf_counter()
    footprint_plot(matcher, probes[0])  # the first pays for importing HoloViews' Bokeh backend
    first_plot_s = time.perf_counter() - t
    plot_ms = _median_ms(lambda: footprint_plot(matcher, probes[1]), 5)
    return {f"matcher build s (N={n:,})": build_s, "match one position ms (median)": match_ms,
            "footprint plot, first in process s": first_plot_s, "footprint plot (5000 points) ms": plot_ms}


def bench_fetch_embed() -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from recorded.first_bundle import (
        build_first_bundle,
        original_answer,
        original_centre,
        real_data_present,
    )
    from recorded.replay import ReplayServer

    if not real_data_present():
        return {"fetch-and-embed": "skipped: ../shared/data/first_mirabest not present"}
    from core.bundle import Bundle
    from explorer.sky.query_embed import QueryEmbedder

    with tempfile.TemporaryDirectory() as tmp, ReplayServer() as srv:
        bundle = Bundle.open(build_first_bundle(Path(tmp) / "b", n=40))
        srv.route("POST", "/cgi-bin/firstcutout", original_answer(), content_type="application/fits")
        os.environ["SKYQUERY_FIRST_URL"] = srv.url("/cgi-bin/firstcutout")
        q = QueryEmbedder(bundle, cache_dir=Path(tmp) / "cache")
        centre = original_centre()
        t = time.perf_counter()
        q.embedder, q.search  # noqa: B018  (load the encoder and the search: once per process in the app)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        result = q.from_position(centre, k=10)
        cold_ms = 1000 * (time.perf_counter() - t)
        warm_ms = _median_ms(lambda: q.from_position(centre, k=10), 5)
        cos = float(np.asarray(bundle.embeddings[0], np.float32) @ result.embedding)
        return {"encoder + reducer load s": load_s, "fetch (local replay) + embed + search + place ms": cold_ms,
                "cache hit + embed + search + place ms": warm_ms, "cosine to stored embedding": cos,
                "requests sent": int(srv.hits[("POST", "/cgi-bin/firstcutout")])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="catalogue size for the matching benchmark")
    p.add_argument("--no-fetch", action="store_true", help="skip the real-FIRST fetch-and-embed part")
    add_quick(p, n=20_000)
    a = parse_quick(p, argv)
    import torch

    torch.set_num_threads(1)
    results = {**bench_parse(), **bench_match(a.n)}
    if not a.no_fetch:
        results.update(bench_fetch_embed())
    for k, v in results.items():
        print(f"{k:60s} {v:.3f}" if isinstance(v, float) else f"{k:60s} {v}")


if __name__ == "__main__":
    main()

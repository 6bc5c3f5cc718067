"""BENCHMARK: what checking a bundle costs at start-up, with and without the manifest's inventory of sizes and
hashes, and what ``precompute validate`` (every hash) costs, on the same bundle in the same run.

    .venv/bin/python -m benchmarks.bench_validation --bundle bundles/bench-1m-128 [--repeats 3]

"server start" is ``explorer.data.open_bundle_for_serving`` (structure, 2,000 sampled norms, the inventory's sizes,
hashes of everything but embeddings/index/thumbnail blob); "no inventory" is the same on a hard-linked copy whose
manifest lacks ``files`` (a bundle from before the inventory: structure only); "validate" hashes every file.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.quick import add_quick, parse_quick, quick_bundle, scratch_dir
from benchmarks.run import median_ms


def linked_copy_without_inventory(bundle: Path, out: Path) -> Path:
    """Hard links to every file of ``bundle`` (no bytes copied) and a manifest without ``files``."""
    for src in bundle.rglob("*"):
        dst = out / src.relative_to(bundle)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif src.name != "manifest.json" or src.parent != bundle:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)
    man = json.loads((bundle / "manifest.json").read_text())
    man.pop("files", None)
    (out / "manifest.json").write_text(json.dumps(man))
    return out


def median_s(fn, repeats: int) -> float:
    return round(median_ms(fn, repeats, warmup=0) / 1000, 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="bundles/bench-1m-128")
    p.add_argument("--repeats", type=int, default=3)
    add_quick(p, bundle=lambda: str(quick_bundle()), repeats=1)
    a = parse_quick(p, argv)
    from core.validate import validate_bundle
    from explorer.data import open_bundle_for_serving

    bundle = Path(a.bundle)
    plain = linked_copy_without_inventory(bundle, scratch_dir("bench-validation-") if a.quick
                                          else Path(f"{bundle}.no-inventory"))
    try:
        sizes = {p.name: p.stat().st_size for p in bundle.iterdir() if p.is_file()}
        result = {
            "bundle": str(bundle), "n_objects": json.loads((bundle / "manifest.json").read_text())["n_objects"],
            "file_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()},
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
            "server_start_s": median_s(lambda: open_bundle_for_serving(bundle), a.repeats),
            "server_start_no_inventory_s": median_s(lambda: open_bundle_for_serving(plain), a.repeats),
            "validate_all_hashes_s": median_s(lambda: validate_bundle(bundle), a.repeats),
        }
    finally:
        if not a.quick:
            import shutil

            shutil.rmtree(plain, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

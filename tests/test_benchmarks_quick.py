"""The benchmark driver's quick mode (CI smoke test): every figure is produced, with its source and the machine.

Thresholds are not checked here (the box is shared); docs/SCALING.md has the measured figures.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_benchmark_produces_every_figure(tmp_path):
    out = tmp_path / "quick.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    figures = results["figures"]
    missing = [name for name in results["figures_expected"] if name not in figures]
    assert not missing, f"figures not produced: {missing}"
    assert len(results["figures_expected"]) >= 20
    for name, fig in figures.items():
        assert fig["source"] and fig["unit"], name
        assert fig["value"] is not None and math.isfinite(fig["value"]) and fig["value"] >= 0, (name, fig)
    assert 0 <= figures["search_recall_at_10"]["value"] <= 1
    assert figures["lasso_p50_ms"]["inside"] > 0.15 * results["bundle"]["n_objects"]
    assert results["bundle"]["n_objects"] == 20_000
    for key in ("cores", "ram_gb", "cpu", "load_average_1_5_15", "software"):
        assert results["machine"][key], key


def test_expected_figures_follow_skips():
    from benchmarks.run import FIGURES, expected_figures, parse_args

    assert expected_figures(parse_args(["--quick"])) == list(FIGURES)
    names = expected_figures(parse_args(["--quick", "--skip", "umap", "cold start"]))
    assert "umap_fit_s" not in names and "app_cold_start_s" not in names and "search_p50_ms" in names


def test_lasso_ring_encloses_the_requested_fraction():
    import numpy as np

    from benchmarks.run import lasso_ring
    from explorer.map.selection import lasso_select

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20_000), rng.normal(size=20_000) * 2
    xs, ys = lasso_ring(x, y, 0.25)
    assert 0.2 < len(lasso_select(x, y, xs, ys)) / 20_000 < 0.3


def test_dask_render_matches_in_memory_aggregate(tmp_path):
    import numpy as np

    from benchmarks.scale.dask_points import (
        aggregate_points,
        points_extent,
        render_points,
    )
    from benchmarks.scale.dask_render import synthetic_points
    from core.points import load_points_dask, write_points_parquet

    parts = list(synthetic_points(30_000, partition_rows=10_000))
    write_points_parquet(parts, tmp_path / "points")
    ddf = load_points_dask(tmp_path / "points")
    assert ddf.npartitions == 3
    xr, yr = points_extent(ddf)
    frame = ddf.compute()
    lazy = aggregate_points(ddf, xr, yr, 120, 90)
    eager = aggregate_points(frame, xr, yr, 120, 90)
    assert int(lazy.sum()) == 30_000 and np.array_equal(lazy.values, eager.values)
    mean = aggregate_points(ddf, xr, yr, 120, 90, column="colour")
    np.testing.assert_allclose(mean.values, aggregate_points(frame, xr, yr, 120, 90, column="colour").values,
                               rtol=1e-5, equal_nan=True)
    img = render_points(ddf, xr, yr, 120, 90)
    assert img.shape == (90, 120)


def test_load_points_dask_names_the_missing_folder(tmp_path):
    from core.points import load_points_dask

    with pytest.raises(FileNotFoundError, match="no-such"):
        load_points_dask(tmp_path / "no-such")


def test_bundle_catalogue_repartitions_into_map_points(tmp_path):
    import numpy as np
    import pandas as pd

    from benchmarks.scale.dask_points import catalog_to_points_parquet
    from core.points import load_points_dask

    n = 2_500
    cat = pd.DataFrame({"object_id": [f"o{i}" for i in range(n)], "umap_x": np.linspace(0, 1, n),
                        "umap_y": np.linspace(1, 2, n), "redshift": np.where(np.arange(n) % 3, 0.1, np.nan)})
    cat.to_parquet(tmp_path / "catalog.parquet", index=False)
    out = catalog_to_points_parquet(tmp_path / "catalog.parquet", tmp_path / "points",
                                    columns=["umap_x", "umap_y", "redshift"], rows_per_partition=1_000)
    ddf = load_points_dask(out)
    assert ddf.npartitions == 3
    back = ddf.compute()
    assert len(back) == n and str(back["umap_x"].dtype) == "float32"
    assert back["redshift"].isna().sum() == cat["redshift"].isna().sum()  # nulls stay nulls
    with pytest.raises(ValueError, match="no columns"):
        catalog_to_points_parquet(tmp_path / "catalog.parquet", tmp_path / "p2", columns=["umap_z"])


# ------------------------------------------------------------------------------------------------ every script, tiny
QUICK_RUNS = {   # module -> the arguments of its --quick run (benchmarks.run has its own test above)
    "bench_density_render": [], "bench_explorer": [], "bench_explorer_layers": [], "bench_from_embeddings": [],
    "bench_index": [], "bench_mosaic": [], "bench_labels_probes": [], "bench_placement": [], "bench_representation": [],
    "bench_shards": [], "bench_simulate": [], "bench_skyquery": [], "bench_train": [], "bench_whitening": [],
    "cold_start_breakdown": [], "fixture_bundle": [], "screenshots": [], "scale.dask_render": [],
    "scale.explorer_dask": [["build"], ["measure"]], "bench_pipeline": [["demo"]], "bench_attacks": [],
    "probe_bad_input": [], "bench_validation": [], "bench_demo": [], "bench_demo_recipe": [],
    "bench_finetune": [], "bench_projection": [], "scale.bench_10m": [],
}


def benchmark_scripts() -> set[str]:
    """Every module under benchmarks/ that runs as a script."""
    root = REPO / "benchmarks"
    return {str(p.relative_to(root).with_suffix("")).replace("/", ".") for p in root.rglob("*.py")
            if 'if __name__ == "__main__"' in p.read_text()} - {"run"}


def test_every_benchmark_script_has_a_quick_run_listed():
    assert benchmark_scripts() == set(QUICK_RUNS), "add the new script's --quick run to QUICK_RUNS"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_benchmark_script_runs_in_its_quick_mode(tmp_path):
    """Each script end to end at a tiny size (two at a time: the box has two cores), so none rots unnoticed: two
    crashed on main for weeks (a removed helper, a removed attribute)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    runs = [(m, args) for m, variants in QUICK_RUNS.items() for args in (variants or [[]])]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")

    def run(item):
        module, args = item
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args, "--quick"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=400)
        return module, args, proc

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [f"benchmarks.{m} {' '.join(a)} --quick exited {p.returncode}:\n{(p.stdout + p.stderr)[-1500:]}"
                  for m, a, p in pool.map(run, runs) if p.returncode != 0]
    assert not failed, "\n\n".join(failed)

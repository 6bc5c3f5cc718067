"""The Legacy Surveys grz survey end to end, with nothing registered for it outside its own file: a simulated survey
built through the ordinary command line, opened as a page, a sky fetch (the cutout service replayed) that finds the
object itself, and Zoobot-shaped embeddings imported with ``--survey legacy`` and with ``--survey none``."""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord

from core.bundle import Bundle
from core.validate import validate_bundle
from precompute.__main__ import main
from tests.recorded.legacy import CUTOUT_PATH, cutout_service
from tests.recorded.replay import ReplayServer

ROOT = Path(__file__).resolve().parents[2]
# where the survey may be named: its file, its simulator, and tests
ALLOWED = {"core/surveys/legacy.py", "precompute/simulators/sim_legacy.py"}


@pytest.fixture(scope="module")
def legacy_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy-e2e")
    assert main(["simulate", "--survey", "legacy", "--n", "160", "--out", str(root / "sim"), "--no-progress"]) == 0
    sim = root / "sim"
    assert main(["build", "--survey", "legacy", "--images", str(sim / "images.h5"), "--gz-decals",
                 str(sim / "gz_decals.csv"), "--truth", str(sim / "truth.parquet"), "--out", str(root / "bundle"),
                 "--epochs", "1", "--batch-size", "64", "--n-neighbors", "10", "--device", "cpu",
                 "--no-progress"]) == 0
    return root


@pytest.mark.slow
def test_a_simulated_grz_survey_builds_opens_and_finds_a_fetched_object(legacy_build, tmp_path, monkeypatch):
    import panel as pn

    from explorer.app import colour_options, create_page
    from explorer.cards import detail_html
    from explorer.data import load_explorer_data
    from explorer.sky.query_embed import QueryEmbedder
    from explorer.state import ExplorerState

    out = legacy_build / "bundle"
    manifest = validate_bundle(out)
    assert manifest["survey"] == "legacy" and manifest["bands"] == ["g", "r", "z"]
    assert manifest["pixel_scale_arcsec"] == 0.262 and manifest["n_objects"] == 160
    data = load_explorer_data(out)
    options = colour_options(data, ExplorerState())
    assert {"gzd_smooth_or_featured_smooth_fraction", "photo_z", "r_minus_z"} <= set(options.values())
    assert "GZ DECaLS smooth fraction" in {label for label, key in options.items() if key.startswith("gzd_")}
    assert "Legacy Surveys viewer" in detail_html(data, 0)
    assert not isinstance(create_page(["--bundle", str(out)]).main[0], pn.pane.Alert)

    # the sky fetch: the cutout service (replayed) answers the stored pixels of the object at that position
    with h5py.File(legacy_build / "sim" / "images.h5") as h5:
        images, ra, dec = h5["images"][:], h5["ra"][:], h5["dec"][:]
    nearest = lambda r, d: int(np.argmin((ra - r) ** 2 + (dec - d) ** 2))
    bundle = Bundle.open(out)
    row = 17
    target = SkyCoord(bundle.catalog["ra"].iloc[row], bundle.catalog["dec"].iloc[row], unit="deg")
    with ReplayServer() as srv:
        srv.route("GET", CUTOUT_PATH, cutout_service(images, pick=nearest), content_type="application/fits")
        monkeypatch.setenv("SKYQUERY_LEGACY_URL", srv.url(CUTOUT_PATH))
        result = QueryEmbedder(bundle, cache_dir=tmp_path).from_position(target, k=5)
    assert result.image.shape == (3, 152, 152)
    assert result.neighbour_ids[0] == row and result.similarities[0] >= 0.98
    assert "Legacy Surveys cutout service" in result.notes[0]


def zoobot_shaped(tmp_path: Path, n: int = 120, dim: int = 40):
    """Zoobot's representations table (``id_str`` and ``feat_0 … feat_{D-1}``) and a catalogue keyed by ``id_str``."""
    rng = np.random.default_rng(0)
    family = np.arange(n) % 3
    vectors = rng.normal(size=(3, dim))[family] * 3 + rng.normal(size=(n, dim))
    ids = [f"J{150 + i / 100:08.4f}+02.0000" for i in range(n)]
    emb = pd.DataFrame(vectors, columns=[f"feat_{i}" for i in range(dim)]).assign(id_str=ids)
    emb.to_parquet(tmp_path / "zoobot.parquet")
    pd.DataFrame({"id_str": ids, "ra": 150 + np.arange(n) / 100, "dec": 2.0, "photo_z": 0.05 + 0.1 * family,
                  "smooth-or-featured_smooth_fraction": np.where(family == 0, 0.9, 0.2)}).to_csv(
        tmp_path / "catalogue.csv", index=False)
    cutouts = rng.normal(size=(n, 3, 64, 64)).astype(np.float32) * 0.01
    np.save(tmp_path / "cutouts.npy", cutouts)
    return tmp_path / "zoobot.parquet", tmp_path / "catalogue.csv", tmp_path / "cutouts.npy"


@pytest.mark.parametrize("survey", ["legacy", "none"])
def test_zoobot_embeddings_import_as_legacy_or_as_any_sky(tmp_path, survey):
    from explorer.cards import detail_html
    from explorer.data import load_explorer_data

    emb, cat, cutouts = zoobot_shaped(tmp_path)
    extra = ["--images", str(cutouts)] if survey == "legacy" else []
    assert main(["from-embeddings", "--survey", survey, "--embeddings", str(emb), "--catalog", str(cat),
                 "--id-column", "id_str", "--out", str(tmp_path / "b"), "--n-neighbors", "10", "--no-progress",
                 *extra]) == 0
    manifest = validate_bundle(tmp_path / "b")
    details = detail_html(load_explorer_data(tmp_path / "b"), 0)
    if survey == "legacy":
        assert manifest["bands"] == ["g", "r", "z"] and manifest["thumbnails"]["format"] == "webp"
        assert "Legacy Surveys viewer" in details
    else:
        assert manifest["survey"] == "none" and manifest["thumbnails"]["format"] == "none"
        assert "NED" in details and "Aladin" in details and "Legacy Surveys viewer" not in details
    assert "photo_z" in manifest["colour_by"]


def test_cutouts_with_the_wrong_bands_are_refused_naming_the_survey(tmp_path, capsys):
    emb, cat, _ = zoobot_shaped(tmp_path)
    np.save(tmp_path / "one_band.npy", np.ones((120, 1, 32, 32), np.float32))
    assert main(["from-embeddings", "--survey", "legacy", "--embeddings", str(emb), "--catalog", str(cat),
                 "--id-column", "id_str", "--images", str(tmp_path / "one_band.npy"), "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 1
    assert "1 channel(s) per cutout, but --survey legacy images have 3 (g, r, z)" in capsys.readouterr().err


def test_nothing_outside_the_surveys_own_files_names_it():
    """Adding the survey registered nothing anywhere else: no list, table or branch in the code names it."""
    named = re.compile(r"""["']legacy["']""")
    found = []
    for folder in ("core", "models", "precompute", "explorer"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in ALLOWED and named.search(path.read_text()):
                found.append(rel)
    assert found == []

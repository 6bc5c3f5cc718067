"""Fetch-and-embed: a cutout from outside the bundle goes through the encoder's preprocessing, the index and the map.

The real-data tests build a small FIRST bundle in the test from shared/data/first_mirabest (tests/recorded/
first_bundle.py: 40 real cutouts, a small untrained ResNet saved with models.io and embedded through
core.encoder.load_embedder — the pipeline's trained FIRST bundle was not available when these were written).
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from recorded.first_bundle import (
    DATA,
    build_first_bundle,
    original_answer,
    original_centre,
    real_data_present,
)
from recorded.replay import ReplayServer

from benchmarks.fixture_bundle import make_fixture_bundle
from core.bundle import Bundle
from core.surveys.services import FetchError
from explorer.sky.query_embed import PLACED_BY_NEIGHBOURS, QueryEmbedder, QueryError

FIRST_PATH = "/cgi-bin/firstcutout"


def need_real_data():
    if not real_data_present():
        pytest.skip(f"real FIRST data not present at {DATA} (shared test data is not shipped with the project)")


@pytest.fixture(scope="module")
def real_first(tmp_path_factory):
    """(bundle, a second bundle of the same objects) over 40 real FIRST cutouts, each with a saved encoder/."""
    need_real_data()
    root = tmp_path_factory.mktemp("bundles")
    return (Bundle.open(build_first_bundle(root / "one")), Bundle.open(build_first_bundle(root / "two")))


@pytest.fixture
def first_server(monkeypatch):
    with ReplayServer() as srv:
        monkeypatch.setenv("SKYQUERY_FIRST_URL", srv.url(FIRST_PATH))
        monkeypatch.setenv("SKYQUERY_SKYVIEW_URL", srv.url("/current/cgi/basicform.pl"))
        yield srv


def original_bytes_and_centre():
    return original_answer(), original_centre()


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_fetched_bundle_object_lands_on_its_stored_embedding(real_first, first_server, tmp_path):
    bundle, _ = real_first
    body, centre = original_bytes_and_centre()
    first_server.route("POST", FIRST_PATH, body, content_type="application/fits")
    q = QueryEmbedder(bundle, cache_dir=tmp_path)
    result = q.from_position(centre, k=5)
    assert cosine(result.embedding, bundle.embeddings[0]) >= 0.98
    assert result.neighbour_ids[0] == 0 and result.similarities[0] >= 0.98
    assert result.placement == PLACED_BY_NEIGHBOURS
    # placed among its neighbours: closer to the object itself than the typical distance between map points
    xy = bundle.catalog[["umap_x", "umap_y"]].to_numpy()
    spread = np.median(np.linalg.norm(xy - xy.mean(axis=0), axis=1))
    assert np.linalg.norm(np.asarray(result.map_xy) - xy[0]) < 0.5 * spread
    assert "FIRST cutout server" in result.notes[0]
    # A second query for the same place is served from the disk cache.
    q.from_position(centre, k=5)
    assert first_server.hits[("POST", FIRST_PATH)] == 1


def test_a_pickle_in_the_bundle_is_never_loaded(real_first, first_server, tmp_path):
    """projection/*.joblib from older (or tampered) bundles: placing a fetched object must not unpickle them."""
    import pickle

    bundle, _ = real_first
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    folder = bundle.path / "projection"
    folder.mkdir(exist_ok=True)
    for name in ("pca.joblib", "umap.joblib"):
        (folder / name).write_bytes(pickle.dumps(Payload()))
    try:
        body, centre = original_bytes_and_centre()
        first_server.route("POST", FIRST_PATH, body)
        result = QueryEmbedder(bundle).from_position(centre, k=3)
        assert np.isfinite(result.map_xy).all() and not marker.exists()
    finally:
        for name in ("pca.joblib", "umap.joblib"):
            (folder / name).unlink()


def test_uploaded_fits_with_wcs_is_cut_around_its_centre(real_first):
    bundle, _ = real_first
    body, _ = original_bytes_and_centre()
    result = QueryEmbedder(bundle).from_fits(body, k=3)
    assert result.image.shape == (1, 150, 150)
    assert cosine(result.embedding, bundle.embeddings[0]) >= 0.98
    assert result.neighbour_ids[0] == 0


def test_service_failure_reaches_the_caller_as_fetch_error(real_first, first_server):
    bundle, _ = real_first
    first_server.route("POST", FIRST_PATH, b"down", status=503)
    with pytest.raises(FetchError, match="HTTP 503"):
        QueryEmbedder(bundle, timeout=2).from_position(SkyCoord(150, 2, unit="deg"))


# --------------------------------------------------------------------------------------------- no real data needed
@pytest.fixture(scope="module")
def fixture_bundle(tmp_path_factory):
    bundle = Bundle.open(make_fixture_bundle(tmp_path_factory.mktemp("fx") / "b", n=300, dim=16))
    bundle.manifest["cutout_size"] = 32  # the fixture survey has no Survey class to say its cutout size
    return bundle


def test_query_path_on_a_synthetic_bundle(fixture_bundle):
    """An embedder that returns row 7's vector must find row 7 first and sit at its map position."""
    target = np.asarray(fixture_bundle.embeddings[7], dtype=np.float32)
    q = QueryEmbedder(fixture_bundle, embedder=lambda imgs: np.repeat(target[None], len(imgs), axis=0))
    result = q.from_image(np.zeros((3, 8, 8), np.float32), k=4)
    assert result.neighbour_ids[0] == 7 and result.similarities[0] == pytest.approx(1, abs=2e-3)
    # placed by its neighbours' positions, weighted towards the identical row 7
    xy = fixture_bundle.catalog[["umap_x", "umap_y"]].to_numpy()[result.neighbour_ids]
    assert np.isfinite(result.map_xy).all()
    assert np.linalg.norm(np.asarray(result.map_xy) - xy[0]) <= np.linalg.norm(xy - xy[0], axis=1).max()
    assert q.thumbnail_png(result.image).startswith(b"\x89PNG")


def test_bundle_without_encoder_says_so(fixture_bundle):
    with pytest.raises(QueryError, match="no encoder/ folder"):
        QueryEmbedder(fixture_bundle).from_position(SkyCoord(150, 2, unit="deg"))


def fits_bytes(data: np.ndarray, with_wcs: bool = True) -> bytes:
    from astropy.wcs import WCS

    header = fits.Header()
    if with_wcs:
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [150.0, 2.0]
        w.wcs.crpix = [data.shape[-1] / 2 + 0.5, data.shape[-2] / 2 + 0.5]
        w.wcs.cdelt = [-0.396 / 3600, 0.396 / 3600]
        header = w.to_header()
    buf = io.BytesIO()
    fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(buf)
    return buf.getvalue()


def test_bad_uploads_get_one_clear_message(fixture_bundle):
    target = np.asarray(fixture_bundle.embeddings[0], dtype=np.float32)
    q = QueryEmbedder(fixture_bundle, embedder=lambda imgs: np.repeat(target[None], len(imgs), axis=0))
    with pytest.raises(QueryError, match="not a FITS file"):
        q.from_fits(b"<html>", name="galaxy.png")
    with pytest.raises(QueryError, match="no celestial WCS"):
        q.from_fits(fits_bytes(np.ones((3, 40, 40)), with_wcs=False), name="nowcs.fits")
    with pytest.raises(QueryError, match="has 1 image plane.*3 band"):
        q.from_fits(fits_bytes(np.ones((40, 40))), name="one.fits")


def test_three_band_upload_is_cut_onto_the_bundle_grid(fixture_bundle, monkeypatch):
    seen = []
    target = np.asarray(fixture_bundle.embeddings[3], dtype=np.float32)

    def embedder(imgs):
        seen.append(imgs.shape)
        return np.repeat(target[None], len(imgs), axis=0)

    cube = np.stack([np.full((64, 64), b, np.float32) for b in (1, 2, 3)])
    result = QueryEmbedder(fixture_bundle, embedder=embedder).from_fits(fits_bytes(cube), name="cube.fits")
    assert seen == [(1, 3, 32, 32)]
    np.testing.assert_allclose(result.image[:, 16, 16], [1, 2, 3])
    assert result.coord.separation(SkyCoord(150, 2, unit="deg")).arcsec < 0.5


def test_sidebar_section_embeds_an_upload_off_the_ui_thread(real_first):
    import time

    from explorer.data import load_explorer_data
    from explorer.sky.skyquery_ui import (
        build_sky_search_section,
        marker_for,
        query_marker,
    )
    from explorer.state import ExplorerState

    bundle, _ = real_first
    state = ExplorerState()
    section = build_sky_search_section(load_explorer_data(bundle.path), state).sky_search
    state.select(5)  # an earlier click: its star must go when the fetched cutout becomes the query
    section.embed_upload(original_answer(), "first.fits")
    deadline = time.monotonic() + 60
    while section.busy and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not section.busy, "the worker finished"
    assert "sky-query-thumb" in section.card.object and "nearest neighbours" in section.card.object
    assert state.neighbour_ids[0] == 0 and state.selected is None and state.positives == []
    marker = marker_for(state)
    assert marker.xy is not None
    layer = query_marker(state)[()]  # the DynamicMap's current element: one point at the query's map position
    assert len(layer) == 1 and tuple(layer.array()[0]) == pytest.approx(marker.xy)
    state.select(3)  # a click on a bundle object clears the query marker
    assert marker.xy is None
    section.box.value = "25:00:00 +10:00:00"
    assert "sky-status-error" in section.status.object and "RA 25h is out of range" in section.status.object
    section.box.value = ""  # clearing the box clears the error and the query card
    assert "sky-status-error" not in section.status.object and section.card.object == ""


def test_sdss_query_fetches_five_bands_in_order_and_finds_itself(tmp_path, monkeypatch):
    """An SDSS bundle of synthetic ugriz galaxies; hips2fits (replayed) answers each band of object 0 on the
    requested grid, so fetch -> embed must land on object 0's stored embedding."""
    import json

    import torch
    from astropy.wcs import WCS

    from core.encoder import load_embedder
    from core.surveys.sdss import SDSS
    from core.write import assign_splits, write_bundle
    from models.encoders import build_encoder
    from models.io import save_encoder

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, size = 24, 107
    yy, xx = np.mgrid[:size, :size] - 53.0
    images = np.stack([np.stack([(b + 1) * np.exp(-np.hypot(xx * rng.uniform(0.5, 1), yy) / rng.uniform(2, 9))
                                 for b in range(5)]) for _ in range(n)]).astype(np.float32)
    images += rng.normal(0, 0.01, images.shape).astype(np.float32)
    torch.manual_seed(0)
    config = {"arch": "small", "in_channels": 5, "stem": "hayat", "width": 8, "survey": "sdss",
              "bands": list("ugriz"), "cutout_size": size, "preprocessing": SDSS().fit_preprocessing(images)}
    save_encoder(build_encoder("small", 5, stem="hayat", width=8), config, tmp_path / "encoder")
    emb = load_embedder(tmp_path / "encoder")(images)
    catalog = pd.DataFrame({"object_id": [f"G{i}" for i in range(n)], "ra": rng.uniform(150, 160, n),
                            "dec": rng.uniform(0, 10, n), "umap_x": rng.normal(size=n), "umap_y": rng.normal(size=n),
                            "split": assign_splits(n)})
    bundle = Bundle.open(write_bundle(tmp_path / "sdss", catalog=catalog, embeddings=emb, thumbnails=[b"x"] * n,
                                      manifest={"survey": "sdss", "bands": list("ugriz"), "pixel_scale_arcsec": 0.396,
                                                "model": {"method": "none (test)"}},
                                      encoder_dir=tmp_path / "encoder"))

    def hips2fits(query):
        header = fits.Header(json.loads(query["wcs"][0]))
        band = "ugriz".index(query["hips"][0].rsplit("/", 1)[1])
        buf = io.BytesIO()
        fits.PrimaryHDU(images[0, band], header=WCS(header).to_header()).writeto(buf)
        return buf.getvalue()

    with ReplayServer() as srv:
        srv.route("GET", "/hips2fits", hips2fits, content_type="application/fits")
        monkeypatch.setenv("SKYQUERY_HIPS2FITS_URL", srv.url("/hips2fits"))
        coord = SkyCoord(catalog["ra"][0], catalog["dec"][0], unit="deg")
        result = QueryEmbedder(bundle, timeout=5).from_position(coord, k=3)
    assert srv.hits[("GET", "/hips2fits")] == 5
    np.testing.assert_allclose(result.image, images[0], atol=1e-6)
    assert result.neighbour_ids[0] == 0 and cosine(result.embedding, bundle.embeddings[0]) >= 0.98


def test_a_decompression_bomb_is_refused_before_allocation():
    """A ~0.5 MB tile-compressed upload that decompresses to 36 M pixels (144 MB) is refused from its header."""
    import io
    import tracemalloc

    from astropy.io import fits

    from explorer.sky.query_embed import QueryError, _read_planes

    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.zeros((6000, 6000), np.float32),
                                                       compression_type="RICE_1")]).writeto(buf)
    content = buf.getvalue()
    assert len(content) < 2_000_000
    tracemalloc.start()
    with pytest.raises(QueryError, match="decompress to 36,000,000 pixels"):
        _read_planes(content, "bomb.fits")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20


def test_gzipped_fits_is_read_and_a_gzip_bomb_is_not():
    import gzip

    from astropy.io import fits

    from explorer.sky.query_embed import QueryError, _read_planes

    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(buf)
    with pytest.raises(QueryError, match="no celestial WCS"):    # it was opened: the gz layer is not the problem
        _read_planes(gzip.compress(buf.getvalue()), "cut.fits.gz")
    bomb = gzip.compress(b"SIMPLE  = " + b" " * (300 * 2**20))
    with pytest.raises(QueryError, match="decompresses to more than"):
        _read_planes(bomb, "bomb.fits.gz")

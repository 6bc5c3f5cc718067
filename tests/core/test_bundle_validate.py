"""`validate_bundle` / `python -m precompute validate` on a good fixture bundle and on each kind of corruption:
every failure names the file and exits 1."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.fixture_bundle import make_fixture_bundle
from precompute.__main__ import main
from core.contract import BundleError, sha256_of
from core.validate import validate_bundle

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A valid 300-object bundle with an encoder checkpoint, and the manifest's inventory of every file."""
    from core.write import file_inventory

    path = make_fixture_bundle(tmp_path_factory.mktemp("fixture") / "bundle", n=300, dim=32)
    (path / "encoder").mkdir()
    (path / "encoder" / "weights.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    man = json.loads((path / "manifest.json").read_text())
    man["model"].update(checkpoint="encoder/weights.pt", sha256=sha256_of(path / "encoder" / "weights.pt"))
    man["files"] = file_inventory(path)
    (path / "manifest.json").write_text(json.dumps(man))
    return path


@pytest.fixture(scope="module")
def pristine(sealed, tmp_path_factory):
    """The same bundle without the inventory (as written before it existed, or re-sealed by whoever changed it):
    what the structural checks alone must catch."""
    path = Path(shutil.copytree(sealed, tmp_path_factory.mktemp("unsealed") / "bundle"))
    man = json.loads((path / "manifest.json").read_text())
    del man["files"]
    (path / "manifest.json").write_text(json.dumps(man))
    return path


@pytest.fixture
def bundle(pristine, tmp_path):
    return Path(shutil.copytree(pristine, tmp_path / "bundle"))


def rewrite_catalog(bundle: Path, change) -> None:
    cat = pd.read_parquet(bundle / "catalog.parquet")
    change(cat)
    cat.to_parquet(bundle / "catalog.parquet", index=False)


def cli(bundle: Path, capsys) -> tuple[int, str]:
    code = main(["validate", str(bundle)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_pristine_bundle_is_valid(bundle, capsys):
    man = validate_bundle(bundle)
    assert man["n_objects"] == 300 and man["embedding_dim"] == 32
    code, text = cli(bundle, capsys)
    assert code == 0 and "ok:" in text and "300 objects" in text


@pytest.mark.parametrize("rel", ["manifest.json", "catalog.parquet", "embeddings.npy", "index.faiss",
                                 "thumbnails/blob.bin", "thumbnails/offsets.npy", "encoder/weights.pt"])
def test_missing_file_is_named(bundle, capsys, rel):
    (bundle / rel).unlink()
    with pytest.raises(BundleError, match=str(bundle / rel).replace(".", r"\.") + ".*missing"):
        validate_bundle(bundle)
    code, text = cli(bundle, capsys)
    assert code == 1 and rel in text


def test_row_count_mismatch_between_catalogue_and_arrays(bundle, capsys):
    rewrite_catalog(bundle, lambda cat: cat.drop(cat.index[-1], inplace=True))
    code, text = cli(bundle, capsys)
    assert code == 1 and "catalog.parquet" in text and "299 rows" in text and "n_objects = 300" in text


def test_embeddings_with_fewer_rows_than_the_catalogue(bundle, capsys):
    emb = np.load(bundle / "embeddings.npy")
    np.save(bundle / "embeddings.npy", emb[:-5])
    code, text = cli(bundle, capsys)
    assert code == 1 and "embeddings.npy" in text and "(295, 32)" in text


def test_non_normalised_embeddings(bundle, capsys):
    emb = np.load(bundle / "embeddings.npy").astype(np.float32)
    emb[7] *= 3
    np.save(bundle / "embeddings.npy", emb.astype(np.float16))
    code, text = cli(bundle, capsys)
    assert code == 1 and "embeddings.npy" in text and "not L2-normalised" in text and "row 7" in text


def test_nan_coordinates(bundle, capsys):
    rewrite_catalog(bundle, lambda cat: cat.__setitem__("umap_x", cat["umap_x"].where(cat.index != 42)))
    code, text = cli(bundle, capsys)
    assert code == 1 and "catalog.parquet" in text and "'umap_x' has 1 NaN" in text and "row 42" in text


def test_duplicate_object_id(bundle, capsys):
    def dup(cat):
        cat.loc[10, "object_id"] = cat.loc[3, "object_id"]
    rewrite_catalog(bundle, dup)
    code, text = cli(bundle, capsys)
    assert code == 1 and "catalog.parquet" in text and "1 duplicate object_id" in text and "FIX3" in text


def test_checkpoint_sha256_mismatch(bundle, capsys):
    with open(bundle / "encoder" / "weights.pt", "ab") as f:
        f.write(b"tampered")
    code, text = cli(bundle, capsys)
    assert code == 1 and "encoder/weights.pt" in text and "sha256" in text


def test_truncated_thumbnail_blob(bundle, capsys):
    blob = (bundle / "thumbnails" / "blob.bin").read_bytes()
    (bundle / "thumbnails" / "blob.bin").write_bytes(blob[:-100])
    code, text = cli(bundle, capsys)
    assert code == 1 and "thumbnails/blob.bin" in text and "truncated" in text


def test_manifest_not_json_and_colour_by_unknown_column(bundle, capsys):
    man = json.loads((bundle / "manifest.json").read_text())
    man["colour_by"]["no_such_column"] = {"title": "x", "kind": "continuous"}
    (bundle / "manifest.json").write_text(json.dumps(man))
    code, text = cli(bundle, capsys)
    assert code == 1 and "manifest.json" in text and "no_such_column" in text
    (bundle / "manifest.json").write_text("{not json")
    code, text = cli(bundle, capsys)
    assert code == 1 and "manifest.json" in text and "not valid JSON" in text


def test_command_line_exit_code_and_message(bundle):
    (bundle / "index.faiss").unlink()
    proc = subprocess.run([sys.executable, "-m", "precompute", "validate", str(bundle)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "index.faiss" in proc.stderr and "is missing" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------ server's sample
def scale_embedding_rows(bundle: Path, rows, factor: float = 3.0) -> None:
    emb = np.load(bundle / "embeddings.npy").astype(np.float32)
    emb[rows] *= factor
    np.save(bundle / "embeddings.npy", emb.astype(np.float16))


def test_norm_sample_checks_spread_rows_and_every_row_of_a_small_bundle(bundle):
    """check_norms_rows is the only check a server narrows: a bad row off a 10-row sample passes that sample, the
    full check (the CLI default) and a sample as large as the bundle still name it."""
    scale_embedding_rows(bundle, [7])
    assert validate_bundle(bundle, check_norms_rows=10)["n_objects"] == 300  # rows 0, 33, 66, ... skip row 7
    for rows in (100_000, 300, 5_000):
        with pytest.raises(BundleError, match="not L2-normalised.*row 7"):
            validate_bundle(bundle, check_norms_rows=rows)


def test_norm_sample_still_catches_a_wholly_unnormalised_bundle(bundle):
    scale_embedding_rows(bundle, slice(None), factor=0.5)
    with pytest.raises(BundleError, match="embeddings.npy.*not L2-normalised"):
        validate_bundle(bundle, check_norms_rows=3)


@pytest.mark.parametrize("break_it", ["row count", "index missing", "blob truncated", "nan coordinates"])
def test_server_validation_keeps_every_structural_check(bundle, break_it):
    """The server's quick validation (explorer.data.open_bundle_for_serving) fails on each structural fault the
    full validation finds, with the same message."""
    from explorer.data import open_bundle_for_serving

    if break_it == "row count":
        rewrite_catalog(bundle, lambda cat: cat.drop(cat.index[-1], inplace=True))
    elif break_it == "index missing":
        (bundle / "index.faiss").unlink()
    elif break_it == "blob truncated":
        blob = (bundle / "thumbnails" / "blob.bin").read_bytes()
        (bundle / "thumbnails" / "blob.bin").write_bytes(blob[:-100])
    else:
        rewrite_catalog(bundle, lambda cat: cat.__setitem__("umap_x", cat["umap_x"].where(cat.index != 42)))
    with pytest.raises(BundleError) as full:
        validate_bundle(bundle)
    with pytest.raises(BundleError) as quick:
        open_bundle_for_serving(bundle, norm_rows=3)
    assert str(quick.value) == str(full.value)


def test_server_validation_keeps_the_index_it_read(bundle):
    from explorer.data import open_bundle_for_serving

    opened = open_bundle_for_serving(bundle, norm_rows=3)
    assert opened.loaded_index is not None and opened.index is opened.loaded_index and opened.index.ntotal == 300


def test_a_swap_killed_between_its_renames_names_the_surviving_bundle(small_bundle, tmp_path):
    import shutil

    import pytest

    from core.contract import BundleError
    from core.validate import validate_bundle

    survivor = tmp_path / ".mybundle.old-4242"
    shutil.copytree(small_bundle, survivor)
    with pytest.raises(BundleError, match=r"survives as .*\.mybundle\.old-4242.*mv "):
        validate_bundle(tmp_path / "mybundle")


def test_sdss_hdf5_with_mismatched_or_text_columns_says_which(tmp_path):
    import h5py
    import numpy as np
    import pytest

    from core.inputs import InputError
    from core.surveys.sdss import SDSS

    for name, ra in (("short.h5", np.zeros(3)), ("text.h5", np.array([b"a", b"b", b"c", b"d"]))):
        with h5py.File(tmp_path / name, "w") as h5:
            h5["images"] = np.zeros((4, 5, 107, 107), np.float32)
            h5["ra"], h5["dec"] = ra, np.zeros(4)
        with pytest.raises(InputError, match="dataset 'ra'"):
            SDSS().read_local(tmp_path / name)


# ------------------------------------------------------------------------------------------------ the inventory
@pytest.mark.parametrize("rel", ["catalog.parquet", "embeddings.npy", "index.faiss", "thumbnails/blob.bin",
                                 "thumbnails/offsets.npy", "encoder/weights.pt"])
def test_one_flipped_byte_in_any_file_is_refused_by_name(sealed, tmp_path, rel):
    bundle = Path(shutil.copytree(sealed, tmp_path / "bundle"))
    data = bytearray((bundle / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / rel).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{rel}: does not match the sha256"):
        validate_bundle(bundle)


def test_the_server_hashes_small_files_and_sizes_large_ones(sealed, tmp_path):
    from explorer.data import open_bundle_for_serving

    bundle = Path(shutil.copytree(sealed, tmp_path / "bundle"))
    blob = bytearray((bundle / "thumbnails" / "blob.bin").read_bytes())
    blob[100] ^= 0x01                      # same size: only a hash sees it; the server does not read GBs at start
    (bundle / "thumbnails" / "blob.bin").write_bytes(bytes(blob))
    open_bundle_for_serving(bundle, norm_rows=3)
    (bundle / "thumbnails" / "blob.bin").write_bytes(bytes(blob) + b"x")
    with pytest.raises(BundleError, match="blob.bin: has .* bytes but manifest.json recorded"):
        open_bundle_for_serving(bundle, norm_rows=3)
    cat = bytearray((bundle / "catalog.parquet").read_bytes())
    cat[len(cat) // 3] ^= 0x01
    (bundle / "catalog.parquet").write_bytes(bytes(cat))
    with pytest.raises(BundleError, match="catalog.parquet: does not match the sha256"):
        open_bundle_for_serving(bundle, norm_rows=3)


@pytest.mark.parametrize("rel", ["thumbnails/blob.bin", "report.json", "manifest.json", "encoder"])
def test_a_symbolic_link_in_a_bundle_is_refused_by_name(sealed, tmp_path, rel):
    bundle = Path(shutil.copytree(sealed, tmp_path / "bundle"))
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's own file")
    target = bundle / rel
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    target.symlink_to(secret if rel != "encoder" else tmp_path)
    with pytest.raises(BundleError, match=rf"{rel}: is a symbolic link"):
        validate_bundle(bundle)


@pytest.mark.parametrize("entry", ["../secret.txt", "/etc/passwd", ""])
def test_an_inventory_entry_outside_the_bundle_is_refused(sealed, tmp_path, entry):
    bundle = Path(shutil.copytree(sealed, tmp_path / "bundle"))
    man = json.loads((bundle / "manifest.json").read_text())
    man["files"][entry] = {"bytes": 1, "sha256": "0" * 64}
    (bundle / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="outside the bundle"):
        validate_bundle(bundle)


def test_an_inventory_that_leaves_out_a_required_file_is_refused(sealed, tmp_path):
    bundle = Path(shutil.copytree(sealed, tmp_path / "bundle"))
    man = json.loads((bundle / "manifest.json").read_text())
    del man["files"]["catalog.parquet"]
    (bundle / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="does not account for .*catalog.parquet"):
        validate_bundle(bundle)


def test_the_catalogue_is_written_with_page_checksums_and_bad_text_is_refused(pristine, tmp_path):
    """Without the inventory, a damaged page or a string that is not UTF-8 still ends in one BundleError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert pq.ParquetFile(pristine / "catalog.parquet").metadata.row_group(0).column(0).statistics is not None
    bundle = Path(shutil.copytree(pristine, tmp_path / "bundle"))
    cat = pd.read_parquet(bundle / "catalog.parquet")
    ids = pa.array([b"\xff\xfebad" if i == 7 else s.encode() for i, s in enumerate(cat["object_id"])], pa.binary())
    table = pa.Table.from_pandas(cat, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("object_id"), "object_id", ids.cast(pa.string(), safe=False))
    pq.write_table(table, bundle / "catalog.parquet")
    with pytest.raises(BundleError, match="catalog.parquet: cannot be read .*UTF8|catalog.parquet: cannot be read"):
        validate_bundle(bundle)


def test_a_checkpoint_that_would_expand_in_memory_fails_validation(pristine, tmp_path):
    import zipfile

    import torch

    bundle = Path(shutil.copytree(pristine, tmp_path / "bundle"))
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1_000_000)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bundle / "encoder" / "weights.pt", "w",
                                                        zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    man = json.loads((bundle / "manifest.json").read_text())
    man["model"]["sha256"] = sha256_of(bundle / "encoder" / "weights.pt")   # re-sealed: only the sizes tell
    (bundle / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="weights.pt: would expand from"):
        validate_bundle(bundle)


def test_a_raw_bytes_column_reaches_the_page_as_text(pristine, tmp_path):
    """A categorical colour column of raw bytes that are not UTF-8 (a FITS-born catalogue) raised
    UnicodeDecodeError while the page was built; it is read as text, undecodable bytes replaced."""
    from core.contract import write_catalogue
    from explorer.app import create_page
    from explorer.data import clear_cache

    bundle = Path(shutil.copytree(pristine, tmp_path / "bundle"))
    cat = pd.read_parquet(bundle / "catalog.parquet")
    cat["flag"] = [b"\xff\x00" if i % 2 else b"ok" for i in range(len(cat))]
    write_catalogue(cat, bundle / "catalog.parquet")
    man = json.loads((bundle / "manifest.json").read_text())
    man["colour_by"]["flag"] = {"title": "Flag", "kind": "categorical"}
    (bundle / "manifest.json").write_text(json.dumps(man))
    validate_bundle(bundle)
    clear_cache()
    page = create_page(["--bundle", str(bundle)])
    assert "bundle-error" not in page.main[0].css_classes
    page.explorer_state.colour_by = "flag"
    page.explorer_view.render()
    assert set(page.explorer_view.data.catalog["flag"]) == {"ok", "\ufffd\x00"}
    clear_cache()

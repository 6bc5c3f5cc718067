"""PROBE: bad input, tried as an attacker would, area by area; every outcome counted.

    .venv/bin/python -m benchmarks.probe_bad_input [--json out.json] [--flips 200]

Each input ends as one of: handled (one clear message naming the file, or a correct result), traceback (any other
exception), blank page (the explorer's page could not be built), hang (slower than --slow seconds), silently
accepted (taken without a message although it changed what the bundle says), data lost (a file outside the
product's own changed). Areas: single-byte flips of catalog.parquet with and without the manifest's inventory,
wrong manifest values, malformed report.json and points/, symbolic links, FITS uploads, checkpoints, label
imports, ``--labels`` files, from-embeddings inputs, sky-search text and markup in every string the page shows.
Everything runs in this process against the real functions (validation, page build, upload reader, importer);
the browser-level checks are the tests in tests/explorer/test_browser_security.py.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_attacks import fits_with_cards
from benchmarks.quick import add_quick, parse_quick, scratch_dir

OUTCOMES = ("handled", "traceback", "blank page", "hang", "silently accepted", "data lost")
PAYLOAD = '<img src=x onerror="window.__xss=1">![m](http://evil.example.org/m.png)'


class Probe:
    """Counts outcomes per area; ``run(area, name, fn)`` classifies one input."""

    def __init__(self, slow_s: float):
        self.slow_s, self.counts, self.notes = slow_s, collections.defaultdict(collections.Counter), []

    def run(self, area: str, name: str, fn, slow_s: float | None = None) -> None:
        """``slow_s``: the time after which this input counts as a hang (default: the probe's, for requests)."""
        from core.contract import BundleError

        slow_s = self.slow_s if slow_s is None else slow_s
        t = time.perf_counter()
        try:
            outcome = fn() or "handled"
        except BundleError:
            outcome = "handled"
        except Exception as e:   # noqa: BLE001 - what the probe counts
            outcome = "traceback"
            self.notes.append(f"{area} / {name}: {type(e).__name__}: {str(e)[:160]}")
        if time.perf_counter() - t > slow_s and outcome == "handled":
            outcome = "hang"
            self.notes.append(f"{area} / {name}: {time.perf_counter() - t:.1f} s")
        if outcome not in ("handled", "traceback", "hang"):
            self.notes.append(f"{area} / {name}: {outcome}")
        self.counts[area][outcome] += 1

    def table(self) -> str:
        lines = ["| area | tried | " + " | ".join(OUTCOMES) + " |", "|---|---:|" + "---:|" * len(OUTCOMES)]
        total = collections.Counter()
        for area, c in self.counts.items():
            total.update(c)
            lines.append(f"| {area} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |")
        lines.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ bundles
def page_builds(bundle: Path, *extra) -> str | None:
    """'blank page' when the explorer cannot build its page for ``bundle`` (an error page is a page)."""
    from explorer.app import create_page
    from explorer.data import clear_cache

    clear_cache()
    try:
        create_page(["--bundle", str(bundle), *map(str, extra)])
    except Exception:   # noqa: BLE001
        return "blank page"
    finally:
        clear_cache()
    return None


def opened_or_refused(bundle: Path, original: pd.DataFrame | None = None) -> str | None:
    """Validation refuses (handled), or accepts: then the catalogue must be what it was and the page must build."""
    from core.contract import BundleError
    from core.validate import validate_bundle

    try:
        validate_bundle(bundle)
    except BundleError:
        return page_builds(bundle)
    if original is not None:
        from core.contract import read_catalogue

        if not read_catalogue(bundle / "catalog.parquet").equals(original):
            return "silently accepted"
    return page_builds(bundle)


def fresh_copy(src: Path, work: Path, sealed: bool = True) -> Path:
    from benchmarks.fixture_bundle import copy_bundle

    return copy_bundle(src, work / "b", sealed)


def probe_catalogue_flips(probe: Probe, base: Path, work: Path, n_flips: int) -> None:
    from core.contract import read_catalogue

    original = read_catalogue(base / "catalog.parquet")
    size = (base / "catalog.parquet").stat().st_size
    for sealed in (True, False):
        area = f"catalog.parquet byte flips ({'with' if sealed else 'without'} inventory)"
        for at in np.linspace(0, size - 1, n_flips).astype(int):
            def flip(at=at, sealed=sealed):
                b = fresh_copy(base, work, sealed)
                data = bytearray((b / "catalog.parquet").read_bytes())
                data[at] ^= 0xFF
                (b / "catalog.parquet").write_bytes(bytes(data))
                return opened_or_refused(b, original)
            probe.run(area, f"byte {at}", flip)


WRONG_VALUES = [None, True, -1, 1.5, "x", "", [], {}, [1, "a"], {"a": None}, 10**12, PAYLOAD, "../../etc/passwd"]
MANIFEST_FIELDS = ("format_version", "survey", "n_objects", "embedding_dim", "embedding_dtype", "bands", "model",
                   "colour_by", "thumbnails", "report", "files", "created", "umap", "source")


def probe_manifest(probe: Probe, base: Path, work: Path) -> None:
    for field in MANIFEST_FIELDS:
        for value in WRONG_VALUES:
            def change(field=field, value=value):
                b = fresh_copy(base, work)
                man = json.loads((b / "manifest.json").read_text())
                man[field] = value
                (b / "manifest.json").write_text(json.dumps(man))
                return opened_or_refused(b)
            probe.run("manifest.json values", f"{field}={value!r}", change)
    for key in ("title", "units", "kind"):
        for value in WRONG_VALUES:
            def colour(key=key, value=value):
                b = fresh_copy(base, work)
                man = json.loads((b / "manifest.json").read_text())
                man["colour_by"]["redshift"][key] = value
                (b / "manifest.json").write_text(json.dumps(man))
                return opened_or_refused(b)
            probe.run("manifest.json values", f"colour_by.{key}={value!r}", colour)


def good_report() -> dict:
    scores = {"embedding": {"knn_purity": {"mean": 0.6, "se": 0.01}, "probe_error": {"mean": 0.3, "se": 0.01}}}
    return {"summary": {"message": "ok", "beats_untrained": True},
            "health": {"first_pc_share": 0.2, "participation_ratio": 9.0, "median_random_cosine": 0.3, "flags": []},
            "tasks": [{"name": "t", "title": "T", "kind": "categorical", "scores": scores}],
            "sources": {"embedding": {}}, "n_splits": 3,
            "similarity_reference": {"quantiles": [-0.2, 0.1, 0.3, 0.9], "levels": [0.0, 0.5, 0.9, 1.0]}}


def probe_report(probe: Probe, base: Path, work: Path) -> None:
    damages = {
        "not JSON": lambda r: "{", "a list": lambda r: [], "bad UTF-8": lambda r: b"\xff\xfe",
        "n_splits markup": lambda r: {**r, "n_splits": PAYLOAD}, "n_splits huge": lambda r: {**r, "n_splits": 10**9},
        "health text": lambda r: {**r, "health": {**r["health"], "first_pc_share": "63 %"}},
        "message object": lambda r: {**r, "summary": {**r["summary"], "message": {"a": 1}}},
        "beats text": lambda r: {**r, "summary": {**r["summary"], "beats_untrained": "yes"}},
        "task a string": lambda r: {**r, "tasks": ["t"]}, "tasks an object": lambda r: {**r, "tasks": {}},
        "kind unknown": lambda r: {**r, "tasks": [{**r["tasks"][0], "kind": "ordinal"}]},
        "score text": lambda r: {**r, "tasks": [{**r["tasks"][0], "scores": {"embedding": {"knn_purity": {"mean": "a"}}}}]},
        "title markup": lambda r: {**r, "tasks": [{**r["tasks"][0], "title": PAYLOAD}]},
        "reference reversed": lambda r: {**r, "similarity_reference": {"quantiles": [0.9, 0.1], "levels": [0, 1]}},
        "sources a list": lambda r: {**r, "sources": []},
    }
    for name, damage in damages.items():
        def write(damage=damage):
            b = fresh_copy(base, work, sealed=False)
            content = damage(good_report())
            if isinstance(content, bytes):
                (b / "report.json").write_bytes(content)
            else:
                (b / "report.json").write_text(content if isinstance(content, str) else json.dumps(content))
            outcome = opened_or_refused(b)
            from core.contract import read_report
            from explorer.about import about_html

            try:
                report = read_report(b / "report.json")
            except ValueError:
                return outcome
            return "silently accepted" if PAYLOAD in about_html(report) else outcome
        probe.run("report.json", name, write)


def probe_compare(probe: Probe, base: Path, work: Path, n_flips: int) -> None:
    """The compare page (``--compare B``) with a damaged B: its catalogue flipped, its report malformed."""
    size = (base / "catalog.parquet").stat().st_size
    for at in np.linspace(0, size - 1, n_flips).astype(int):
        def flip(at=at):
            b = fresh_copy(base, work, sealed=False)
            data = bytearray((b / "catalog.parquet").read_bytes())
            data[at] ^= 0xFF
            (b / "catalog.parquet").write_bytes(bytes(data))
            return page_builds(base, "--compare", b)
        probe.run("--compare with a damaged bundle", f"catalogue byte {at}", flip)
    for name, content in {"report not JSON": "{", "report n_splits markup": json.dumps({**good_report(),
                          "n_splits": PAYLOAD}), "report title markup": json.dumps({**good_report(), "tasks": [
                          {**good_report()["tasks"][0], "title": PAYLOAD}]})}.items():
        def report(content=content):
            b = fresh_copy(base, work, sealed=False)
            (b / "report.json").write_text(content)
            from core.contract import read_report
            from explorer.about import comparison_html

            outcome = page_builds(base, "--compare", b)
            try:
                r = read_report(b / "report.json")
            except ValueError:
                return outcome
            return "silently accepted" if "<img src=x" in comparison_html(r, r, "A", "B") else outcome
        probe.run("--compare with a damaged bundle", name, report)


def probe_points(probe: Probe, base: Path, work: Path) -> None:
    from core.points import write_points

    with_points = work / "with-points"
    shutil.rmtree(with_points, ignore_errors=True)
    shutil.copytree(base, with_points)
    write_points(with_points, rows_per_partition=700)

    def edit_meta(d, change):
        meta = json.loads((d / "points.json").read_text())
        change(meta)
        (d / "points.json").write_text(json.dumps(meta))

    def flip(p, at):
        data = bytearray(p.read_bytes())
        data[int(at * (len(data) - 1))] ^= 0xFF
        p.write_bytes(bytes(data))

    damages = {f"part flip at {w:.2f}": (lambda d, w=w: flip(d / "part-00000.parquet", w))
               for w in np.linspace(0, 1, 12)}
    damages.update({
        "part truncated": lambda d: (d / "part-00001.parquet").write_bytes((d / "part-00001.parquet").read_bytes()[:99]),
        "part missing": lambda d: (d / "part-00001.parquet").unlink(),
        "extra part": lambda d: shutil.copyfile(d / "part-00000.parquet", d / "part-00007.parquet"),
        "part a symlink": lambda d: ((d / "part-00000.parquet").unlink(),
                                     (d / "part-00000.parquet").symlink_to("/etc/hostname")),
        "meta not JSON": lambda d: (d / "points.json").write_text("{"),
        "meta a list": lambda d: (d / "points.json").write_text("[]"),
        "meta missing": lambda d: (d / "points.json").unlink(),
        "meta columns wrong": lambda d: edit_meta(d, lambda m: m["columns"].__setitem__("redshift", 5)),
        "meta range text": lambda d: edit_meta(d, lambda m: m["columns"]["redshift"].__setitem__("range", "a")),
        "meta xy wrong": lambda d: edit_meta(d, lambda m: m.__setitem__("xy", ["a"])),
        "meta categories wrong": lambda d: edit_meta(d, lambda m: m["columns"]["morph_class"].__setitem__("categories", [])),
        "meta n_rows wrong": lambda d: edit_meta(d, lambda m: m.__setitem__("n_rows", 5)),
        "meta part size wrong": lambda d: edit_meta(d, lambda m: m["parts"]["part-00000.parquet"].__setitem__("bytes", 3)),
        "meta older build": lambda d: edit_meta(d, lambda m: m.__setitem__("bundle_created", "2000")),
    })
    for name, damage in damages.items():
        def run(damage=damage):
            b = fresh_copy(with_points, work)
            damage(b / "points")
            return page_builds(b, "--map-engine", "dask")
        probe.run("points/ folder", name, run)


def probe_links(probe: Probe, base: Path, work: Path) -> None:
    secret = work / "server-secret.txt"
    secret.write_text("a file of the server's")
    for rel in ("thumbnails/blob.bin", "thumbnails/offsets.npy", "catalog.parquet", "embeddings.npy",
                "index.faiss", "manifest.json", "report.json", "thumbnails"):
        def link(rel=rel):
            b = fresh_copy(base, work, sealed=False)
            target = b / rel
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
            target.symlink_to(secret if rel != "thumbnails" else work)
            from core.contract import BundleError
            from core.validate import validate_bundle

            try:
                validate_bundle(b)
            except BundleError as e:
                return None if "symbolic link" in str(e) else "silently accepted"
            return "silently accepted"
        probe.run("symbolic links and paths", rel, link)
    for entry in ("../server-secret.txt", "/etc/passwd", "thumbnails/../../server-secret.txt"):
        def outside(entry=entry):
            b = fresh_copy(base, work)
            man = json.loads((b / "manifest.json").read_text())
            man["files"][entry] = {"bytes": 1, "sha256": "0" * 64}
            man["model"]["checkpoint"] = entry
            (b / "manifest.json").write_text(json.dumps(man))
            return opened_or_refused(b)
        probe.run("symbolic links and paths", f"manifest names {entry}", outside)


# ------------------------------------------------------------------------------------------------ uploads
def fits_bytes(header_cards: int = 0, data=None, **extra) -> bytes:
    from astropy.io import fits

    h = fits.Header()
    h.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 180.0, "CRVAL2": 20.0, "CRPIX1": 16,
              "CRPIX2": 16, "CDELT1": -1.8 / 3600, "CDELT2": 1.8 / 3600, **extra})
    for i in range(header_cards):
        h.append((f"X{i % 9_999_999:07d}", i), useblanks=False, bottom=True)
    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((32, 32), np.float32) if data is None else data, h).writeto(buf)
    return buf.getvalue()


def probe_fits(probe: Probe) -> None:
    from explorer.sky.query_embed import QueryError, _read_planes

    good = fits_bytes()
    inputs = {
        "150,000 header cards (12 MB)": fits_with_cards(150_000), "SIP order 6,000": fits_bytes(A_ORDER=6000),
        "SIP order 9": fits_bytes(A_ORDER=9, B_ORDER=9), "garbage": b"garbage" * 100, "empty": b"",
        "truncated": good[:3000], "no WCS": fits_bytes(CTYPE1="", CTYPE2=""),
        "NaN-filled": fits_bytes(data=np.full((32, 32), np.nan, np.float32)),
        "20 HDUs": b"".join([good] * 20), "gzip bomb": gzip.compress(b"\0" * (600 << 20)),
        "NAXIS1 huge": good.replace(b"NAXIS1  =                   32", b"NAXIS1  =          999999999", 1),
        "BITPIX text": good.replace(b"BITPIX  =                  -32", b"BITPIX  =                  'x'", 1),
    }
    for i, at in enumerate(np.linspace(0, len(good) - 1, 20).astype(int)):
        data = bytearray(good)
        data[at] ^= 0xFF
        inputs[f"byte flip {i}"] = bytes(data)
    for name, content in inputs.items():
        def read(content=content, name=name):
            try:
                _read_planes(content, "upload.fits")
            except QueryError:
                pass
        probe.run("FITS uploads", name, read)


def probe_checkpoints(probe: Probe, work: Path) -> None:
    import pickle

    import torch

    from models.checkpoints import CheckpointError, read_checkpoint

    plain = work / "plain.pt"
    torch.save({"w": torch.zeros(2_000_000)}, plain)
    bomb = work / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(work / "pwned"),))

    evil = work / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": Evil()}))   # the attack: code in a pickle; written here, never loaded
    files = {"deflate bomb": bomb, "pickled code": evil, "truncated": plain, "garbage": work / "garbage.pt",
             "a list": work / "list.pt", "empty": work / "empty.pt"}
    (work / "garbage.pt").write_bytes(b"garbage" * 50)
    torch.save([1, 2, 3], work / "list.pt")
    (work / "empty.pt").write_bytes(b"")
    truncated = work / "truncated.pt"
    truncated.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    files["truncated"] = truncated
    for name, path in files.items():
        def load(path=path):
            try:
                read_checkpoint(path)
            except CheckpointError:
                pass
            return "data lost" if (work / "pwned").exists() else None
        probe.run("checkpoints", name, load)


def probe_imports(probe: Probe, base: Path, work: Path) -> None:
    from astropy.table import Table

    from core.labels import LabelStore
    from explorer.labels import export

    catalog = pd.read_parquet(base / "catalog.parquet")
    ids = catalog["object_id"].astype(str).tolist()
    files = {
        "20,000 distinct labels": ("csv", {"object_id": [ids[i % len(ids)] for i in range(20_000)],
                                           "label": [f"L{i}" for i in range(20_000)]}),
        "markup labels": ("csv", {"object_id": ids[:10], "label": [PAYLOAD] * 10}),
        "no label column": ("csv", {"object_id": ids[:10]}),
        "unknown ids": ("csv", {"object_id": ["nope"] * 10, "label": ["a"] * 10}),
        "empty labels": ("csv", {"object_id": ids[:10], "label": [""] * 10}),
        "sky positions out of range": ("csv", {"ra": [400.0] * 5, "dec": [-100.0] * 5, "label": ["a"] * 5}),
    }
    for name, (fmt, columns) in files.items():
        def imp(columns=columns, fmt=fmt, name=name):
            path = work / f"import.{fmt}"
            Table(columns).write(path, overwrite=True)
            store = LabelStore(work / f"import-{hashlib.md5(name.encode()).hexdigest()}.sqlite")
            try:
                export.import_labels(store, catalog, path, author="probe", by="sky" if "ra" in columns else "object_id")
            except export.ExportError:
                pass
        probe.run("label imports", name, imp)
    for name, content in {"garbage csv": b"\xff\xfe\x00" * 50, "garbage fits": b"SIMPLE  = garbage",
                          "not xml": b"<VOTABLE"}.items():
        def bad(content=content, name=name):
            path = work / ("import." + ("fits" if "fits" in name else "vot" if "xml" in name else "csv"))
            path.write_bytes(content)
            try:
                export.import_labels(LabelStore(work / "bad.sqlite"), catalog, path, author="probe")
            except export.ExportError:
                pass
        probe.run("label imports", name, bad)


def probe_label_stores(probe: Probe, base: Path, work: Path) -> None:
    foreign = work / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE events (x INT)")
    con.commit()
    con.close()
    before = hashlib.sha256(foreign.read_bytes()).hexdigest()
    (work / "garbage.sqlite").write_bytes(b"not sqlite" * 100)
    for name, path in {"another program's database": foreign, "garbage": work / "garbage.sqlite",
                       "a folder": work, "a missing folder": work / "nope" / "l.sqlite"}.items():
        def open_store(path=path):
            outcome = page_builds(base, "--labels", path)
            if path == foreign and hashlib.sha256(foreign.read_bytes()).hexdigest() != before:
                return "data lost"
            return outcome
        probe.run("--labels files", name, open_store)


def probe_from_embeddings(probe: Probe, work: Path) -> None:
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    from precompute.__main__ import main

    n, rng = 120, np.random.default_rng(0)
    vec = rng.normal(size=(n, 16)).astype(np.float32)
    cat = pd.DataFrame({"objid": [f"o{i}" for i in range(n)], "RA": 150 + rng.uniform(0, 2, n),
                        "DEC": rng.uniform(0, 2, n)})
    cat.to_csv(work / "cat.csv", index=False)
    np.save(work / "ok.npy", vec)
    cases = {}
    (work / "garbage.npy").write_bytes(b"garbage" * 10)
    cases["npy garbage"] = work / "garbage.npy"
    np.save(work / "obj.npy", np.array([{"a": 1}] * n, dtype=object), allow_pickle=True)
    cases["npy pickled objects"] = work / "obj.npy"
    np.save(work / "str.npy", np.array([["x"] * 4] * n))
    cases["npy text"] = work / "str.npy"
    np.save(work / "huge.npy", np.full((n, 4), 1e38, np.float32))
    cases["npy one repeated vector"] = work / "huge.npy"
    (work / "bad.parquet").write_bytes(b"PAR1garbagePAR1")
    cases["parquet garbage"] = work / "bad.parquet"
    rows = [list(map(float, v)) for v in vec]
    rows[3], rows[4] = rows[3] + [1.0], rows[4][:-1]
    pq.write_table(pa.table({"objid": cat["objid"], "emb": rows}), work / "ragged.parquet")
    cases["parquet ragged rows"] = work / "ragged.parquet"
    (work / "bad.h5").write_bytes(b"garbage")
    cases["hdf5 garbage"] = work / "bad.h5"
    with h5py.File(work / "grp.h5", "w") as f:
        f.create_group("embeddings")
        f["object_id"] = np.array([b"o1"])
    cases["hdf5 group"] = work / "grp.h5"
    cases["missing file"] = work / "nope.npy"
    catalogues = {"RA 400": cat.assign(RA=400.0), "Dec -95": cat.assign(DEC=-95.0),
                  "markup column": cat.assign(**{PAYLOAD: 1.0}), "text RA": cat.assign(RA="a")}
    build_s = 120.0   # a whole build (UMAP, index, report), not a request
    for name, emb in cases.items():
        probe.run("from-embeddings", name, lambda emb=emb: _from_embeddings(main, emb, work / "cat.csv", work, vec),
                  build_s)
    for name, frame in catalogues.items():
        frame.to_csv(work / "c2.csv", index=False)
        probe.run("from-embeddings", f"catalogue {name}",
                  lambda: _from_embeddings(main, work / "ok.npy", work / "c2.csv", work, vec), build_s)


def _from_embeddings(main, emb: Path, catalog: Path, work: Path, vec: np.ndarray) -> str | None:
    out = work / "fe-bundle"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "fe-bundle.work", ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["from-embeddings", "--survey", "sdss", "--embeddings", str(emb), "--catalog", str(catalog),
                     "--out", str(out), "--no-progress", "--n-neighbors", "10"])
    if code != 0:
        return None
    from core.bundle import Bundle
    from core.validate import validate_bundle

    validate_bundle(out)
    b = Bundle.open(out)
    ids = b.catalog["object_id"].astype(str).tolist()
    if "o10" in ids and emb.suffix == ".parquet":   # ragged rows must not shift later vectors
        v = vec[10] / np.linalg.norm(vec[10])
        if not np.allclose(np.asarray(b.embeddings[ids.index("o10")], np.float32), v, atol=2e-3):
            return "silently accepted"
    return None


def probe_markup(probe: Probe, base: Path, work: Path) -> None:
    """Every HTML builder of the page fed the payload: the output must hold it escaped, never raw."""
    from core.colour import ColourSpec
    from explorer.about import about_html, comparison_html
    from explorer.cards import detail_html, hover_card_html, neighbour_card_html
    from explorer.data import clear_cache, load_explorer_data
    from explorer.map.colour import legend_html

    b = fresh_copy(base, work, sealed=False)
    cat = pd.read_parquet(b / "catalog.parquet")
    cat[PAYLOAD] = PAYLOAD
    cat["object_id"] = [f"{PAYLOAD}{i}" for i in range(len(cat))]
    from core.contract import write_catalogue

    write_catalogue(cat, b / "catalog.parquet")
    man = json.loads((b / "manifest.json").read_text())
    man.update(survey=PAYLOAD, model={"method": PAYLOAD, "architecture": PAYLOAD})
    man["colour_by"]["r_mag"]["units"] = PAYLOAD
    man["colour_by"]["redshift"]["title"] = PAYLOAD
    (b / "manifest.json").write_text(json.dumps(man))
    clear_cache()
    data = load_explorer_data(b)
    report = good_report()
    report["tasks"][0]["title"] = report["summary"]["message"] = PAYLOAD
    spec = ColourSpec(column="c", title=PAYLOAD, kind="categorical", units=PAYLOAD, categories=(PAYLOAD,))
    builders = {"hover card": lambda: hover_card_html(data, 0), "details": lambda: detail_html(data, 0),
                "neighbour card": lambda: neighbour_card_html(data, 1, 0, 0.9),
                "about card": lambda: about_html(report),
                "compare card": lambda: comparison_html(report, report, PAYLOAD, PAYLOAD),
                "legend": lambda: legend_html(spec, (0.0, 1.0), 0.1)}
    for name, build in builders.items():
        probe.run("markup from data", name, lambda build=build: "silently accepted" if "<img src=x" in build() else None)
    probe.run("markup from data", "page (survey, model, bundle name)", lambda: page_builds(b))
    clear_cache()


def probe_sky_text(probe: Probe) -> None:
    from explorer.sky.skyquery import parse_position

    rng = np.random.default_rng(0)
    texts = ["", " ", "nan nan", "inf -inf", "400 0", "0 95", "12:00:00 +91:00:00", "J999999+999999", "1e309 1",
             "-0 -0", "٣ ٤", "13h25m41s +23d22m53s" * 50, "\x00\x01", PAYLOAD, "http://evil/?ra=1&dec=2",
             "https://skyserver.sdss.org/dr16/en/tools/chart/navi.aspx?ra=abc&dec=2", "1" * 5000]
    texts += ["".join(rng.choice(list("0123456789 .:+-hmsdJ,'\"°"), size=int(rng.integers(1, 60)))) for _ in range(80)]
    for i, t in enumerate(texts):
        def parse(t=t):
            parsed = parse_position(t, resolve_names=False)
            if not (parsed.ok or parsed.message):
                return "silently accepted"
        probe.run("sky-search text", f"text {i}", parse)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flips", type=int, default=200, help="byte positions flipped in catalog.parquet, per variant")
    p.add_argument("--slow", type=float, default=5.0, help="seconds after which an answer counts as a hang")
    p.add_argument("--json")
    add_quick(p, flips=5, slow=30.0)   # quick: does the script still work (a loaded CI box is slow, not hung)
    a = parse_quick(p, argv)
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")
    from benchmarks.fixture_bundle import make_fixture_bundle

    work = scratch_dir("probe-")
    base = make_fixture_bundle(work / "base", n=2000, dim=16, n_clusters=8)
    probe = Probe(a.slow)
    # The process's first page imports panel and compiles the map's kernels (5.8 s once on a loaded CI box, which
    # counted the first flip as a hang): built once from the intact bundle before anything is timed.
    opened_or_refused(fresh_copy(base, work))
    steps = [lambda: probe_catalogue_flips(probe, base, work, a.flips), lambda: probe_manifest(probe, base, work),
             lambda: probe_report(probe, base, work), lambda: probe_compare(probe, base, work, max(a.flips // 5, 2)),
             lambda: probe_points(probe, base, work),
             lambda: probe_links(probe, base, work), lambda: probe_fits(probe),
             lambda: probe_checkpoints(probe, work), lambda: probe_imports(probe, base, work),
             lambda: probe_label_stores(probe, base, work), lambda: probe_from_embeddings(probe, work),
             lambda: probe_markup(probe, base, work), lambda: probe_sky_text(probe)]
    if a.quick:
        steps = steps[:1] + steps[5:7]
    for step in steps:
        step()
    print(probe.table())
    for note in probe.notes:
        print("  -", note)
    if a.json:
        Path(a.json).write_text(json.dumps({"counts": {k: dict(v) for k, v in probe.counts.items()},
                                            "notes": probe.notes}, indent=2))
    bad = sum(c[o] for c in probe.counts.values() for o in OUTCOMES if o != "handled")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

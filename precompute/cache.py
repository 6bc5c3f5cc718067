"""Stage cache: each stage writes into ``<work>/<stage>-<key>/``, where the key hashes the stage's arguments and
the keys (or file fingerprints) of its inputs. A stage folder is built under a temporary name and renamed when
complete, so a folder that exists is a finished result and a killed run leaves only a ``.partial`` to discard.
Long stages that checkpoint (training) keep their checkpoints in ``<work>/<stage>-<key>.ckpt/``, outside the
temporary folder, so a rerun resumes them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

KEY_LENGTH = 16


def fingerprint_file(path: str | Path, full_hash_below: int = 64 << 20) -> str:
    """Content hash for files up to 64 MB; above that size + mtime + the hash of the first and last MB, which
    catches replaced or rewritten files without reading gigabytes on every run."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= full_hash_below:
            while block := f.read(1 << 20):
                h.update(block)
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            h.update(f.read(1 << 20))
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()


def fingerprint_files(paths) -> str:
    """One hash over many (small) files, e.g. a catalogue's FITS cutouts: name, size and mtime of each."""
    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
        except FileNotFoundError:
            h.update(f"{p}:missing;".encode())
    return h.hexdigest()


def stage_key(stage: str, params: dict, inputs: dict[str, str]) -> str:
    """Deterministic key of (stage name, JSON-able arguments, input keys/fingerprints)."""
    blob = json.dumps({"stage": stage, "params": params, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_LENGTH]


@dataclass
class StageResult:
    name: str
    key: str
    path: Path
    cached: bool
    seconds: float


class WorkDir:
    """A folder of cached stage results."""

    def __init__(self, root: str | Path, log: Callable[[str], None] = print):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.remove_dead_partials()

    def remove_dead_partials(self) -> None:
        """Delete half-built stage folders left by runs that were killed (their process no longer exists)."""
        for d in self.root.glob(".*.partial-*"):
            try:
                pid = int(d.name.rsplit("-", 1)[1])
                os.kill(pid, 0)  # raises if no such process
            except ProcessLookupError:
                shutil.rmtree(d, ignore_errors=True)
            except (ValueError, PermissionError):
                pass  # not ours to judge

    def path(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    def checkpoint_dir(self, stage: str, key: str) -> Path:
        d = self.root / f"{stage}-{key}.ckpt"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def run(self, stage: str, params: dict, inputs: dict[str, str], build: Callable[[Path, str], None]) -> StageResult:
        """Return the cached result of ``stage`` or build it: ``build(tmp_folder, key)`` fills a fresh folder
        that is renamed into place only when it returns."""
        key = stage_key(stage, params, inputs)
        final = self.path(stage, key)
        if (final / "done.json").is_file():
            self.log(f"[{stage}] cached ({final.name})")
            return StageResult(stage, key, final, True, 0.0)
        tmp = self.root / f".{stage}-{key}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for stale in self.root.glob(f".{stage}-{key}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
        tmp.mkdir(parents=True)
        self.log(f"[{stage}] running ({final.name})")
        t0 = time.perf_counter()
        try:
            build(tmp, key)
            seconds = time.perf_counter() - t0
            (tmp / "done.json").write_text(json.dumps({"stage": stage, "key": key, "params": params,
                                                        "inputs": inputs, "seconds": round(seconds, 2)},
                                                       indent=2, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.log(f"[{stage}] done in {seconds:.1f} s")
        return StageResult(stage, key, final, False, seconds)

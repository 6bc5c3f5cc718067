"""The stage cache: keys, reuse, atomic completion, clean-up after killed runs."""
from __future__ import annotations

import os
import subprocess

import pytest

from precompute.cache import WorkDir, fingerprint_file, stage_key


def test_key_depends_on_arguments_and_inputs_only():
    a = stage_key("train", {"epochs": 2, "lr": None}, {"ingest": "abc"})
    assert a == stage_key("train", {"lr": None, "epochs": 2}, {"ingest": "abc"})
    assert a != stage_key("train", {"epochs": 3, "lr": None}, {"ingest": "abc"})
    assert a != stage_key("train", {"epochs": 2, "lr": None}, {"ingest": "abd"})
    assert a != stage_key("embed", {"epochs": 2, "lr": None}, {"ingest": "abc"})


def test_file_fingerprint_follows_content(tmp_path):
    f = tmp_path / "cat.csv"
    f.write_text("ra,dec\n1,2\n")
    before = fingerprint_file(f)
    f.write_text("ra,dec\n1,3\n")
    assert fingerprint_file(f) != before


def test_stage_runs_once_and_a_failed_build_leaves_nothing(tmp_path):
    wd, calls = WorkDir(tmp_path, log=lambda m: None), []

    def build(folder, key):
        calls.append(key)
        (folder / "out.txt").write_text("x")
    first = wd.run("s", {"a": 1}, {}, build)
    again = wd.run("s", {"a": 1}, {}, build)
    assert not first.cached and again.cached and len(calls) == 1 and (again.path / "out.txt").read_text() == "x"

    def broken(folder, key):
        (folder / "half.txt").write_text("x")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        wd.run("s", {"a": 2}, {}, broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.path.name]


def test_partials_of_dead_processes_are_removed(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    (tmp_path / f".train-abc.partial-{proc.pid}").mkdir()
    (tmp_path / f".train-def.partial-{os.getpid()}").mkdir()  # a live run: kept
    WorkDir(tmp_path, log=lambda m: None)
    assert [p.name for p in tmp_path.iterdir()] == [f".train-def.partial-{os.getpid()}"]

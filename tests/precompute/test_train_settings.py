"""Training settings have one source (``precompute.config.TrainSettings``): every field that changes what is learnt
reaches the train stage's cache key, and both command lines take their options from the same fields."""
from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

import pytest

from precompute.config import (
    Config,
    TrainSettings,
    add_train_options,
    settings_from_args,
)

# a value for each field unlike any default or recipe value, to see that a change reaches the key
CHANGED = {"method": "byol", "arch": "resnet18", "stem": "hayat", "width": 48, "epochs": 77, "batch_size": 96,
           "lr": 0.123, "optimizer": "adamw", "max_steps": 5, "train_limit": 321, "queue_size": 999, "bin": 3,
           "crop": 40, "views": "d4", "centre": True, "whiten": True, "method_cfg": {"temperature": 0.3},
           "augment": {"jitter": 2}, "device": "cuda:1", "num_workers": 7}


def config(**train) -> Config:
    return Config(survey="sdss", out=Path("b"), work=Path("w"), train=TrainSettings(**train))


def test_every_field_that_changes_what_is_learnt_reaches_the_train_key():
    assert set(CHANGED) == {f.name for f in fields(TrainSettings)}, "a new setting needs a value in CHANGED"
    base = config(arch="small", stem="standard")
    for f in fields(TrainSettings):
        changed = replace(base, train=replace(base.train, **{f.name: CHANGED[f.name]}))
        moved = changed.train_key() != base.train_key()
        assert moved == f.metadata["in_key"], f"{f.name}: in_key={f.metadata['in_key']} but the key moved={moved}"
    # what only chooses where and how fast training runs stays out, on purpose
    assert {f.name for f in fields(TrainSettings) if not f.metadata["in_key"]} == {"device", "num_workers"}
    assert replace(base, seed=9).train_key() != base.train_key()


def test_the_stage_key_is_the_settings_key():
    """The train stage's parameters are ``Config.train_key`` itself, not a list typed out again."""
    import inspect

    from precompute import stages

    source = inspect.getsource(stages.train)
    assert "params = cfg.train_key()" in source


def parse(options: list[str], only=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_options(parser, only)
    return parser.parse_args(options)


def test_every_option_sets_its_field_and_unset_ones_stay_unset():
    args = parse(["--method", "byol", "--batch-size", "96", "--centre", "yes", "--whiten", "no", "--lr", "0.5",
                  "--train-limit", "100", "--num-workers", "2"])
    s = settings_from_args(args)
    assert (s.method, s.batch_size, s.centre, s.whiten, s.lr, s.train_limit, s.num_workers) == \
        ("byol", 96, True, False, 0.5, 100, 2)
    assert s.epochs is None and s.optimizer == TrainSettings().optimizer
    assert settings_from_args(parse([]), {"epochs": 6}).epochs == 6          # the demo's defaults fill the rest
    with pytest.raises(SystemExit):
        parse(["--centre", "maybe"])


def dests(module, command: str) -> set[str]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser, command)
    return {a.dest for a in parser._actions}


def test_both_command_lines_offer_the_fields_options():
    from precompute import pipeline, train_array

    options = {f.name for f in fields(TrainSettings) if f.metadata["option"]}
    assert options <= dests(pipeline, "build") and options <= dests(pipeline, "demo")
    assert set(train_array.ARRAY_OPTIONS) <= options
    assert set(train_array.ARRAY_OPTIONS) <= dests(train_array, "train-array")

"""The resumable sweep and the command-line tool."""

import subprocess
import sys

import pandas as pd
import pytest

import experiments
from coverage_lab import cli
from coverage_lab.sweep import run_sweep, setting_id, setting_seed

SETTINGS = [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]


def fake_run(setting):
    rng = setting_seed(setting) % 1000
    return pd.DataFrame({"algorithm": "dpo", "seed": [0, 1], "step": 0, "metric": "kl", "value": [rng / 7, rng / 3]})


class Killed(Exception):
    pass


def test_killed_sweep_rerun_gives_the_same_csv(tmp_path):
    whole = tmp_path / "whole.csv"
    run_sweep(SETTINGS, fake_run, whole, progress=False)
    part = tmp_path / "part.csv"
    calls = []

    def dies_on_the_fourth(setting):
        calls.append(setting)
        if len(calls) == 4:
            raise Killed
        return fake_run(setting)

    with pytest.raises(Killed):
        run_sweep(SETTINGS, dies_on_the_fourth, part, progress=False)
    assert len(pd.read_csv(part)["setting"].unique()) == 3  # nothing finished was lost
    rerun = []
    run_sweep(SETTINGS, lambda s: rerun.append(s) or fake_run(s), part, progress=True)
    assert rerun == SETTINGS[3:]  # the rerun skips what is done
    assert part.read_text() == whole.read_text()


def test_setting_ids_are_stable_and_distinct():
    assert setting_id({"b": 1, "a": 2}) == setting_id({"a": 2, "b": 1})
    assert len({setting_id(s) for s in SETTINGS}) == len(SETTINGS)
    with pytest.raises(ValueError, match="duplicates"):
        run_sweep([SETTINGS[0], SETTINGS[0]], fake_run, "unused.csv")


def coverage_lab(*args):
    return subprocess.run(
        [sys.executable, "-m", "coverage_lab.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_list_and_errors():
    out = coverage_lab("list")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == experiments.available()
    for args in (
        ["reproduce", "no_such_experiment"],
        ["reproduce", "--bogus"],
        ["frobnicate"],
        ["reproduce", "--seeds", "0"],
    ):
        res = coverage_lab(*args)
        assert res.returncode == 2, args
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr


def test_cli_main_returns_zero_for_list(capsys):
    assert cli.main(["list"]) == 0

"""The resumable sweep and the command-line tool."""

import os
import pickle
import subprocess
import sys

import pandas as pd
import pytest

import experiments
from coverage_lab import cli, timings
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


def test_a_sweep_refuses_a_csv_of_another_settings_list(tmp_path):
    path = tmp_path / "part.csv"
    run_sweep(SETTINGS[:2], fake_run, path, progress=False)
    with pytest.raises(ValueError, match="path"):  # its rows would end up in the other sweep's table
        run_sweep(SETTINGS[2:], fake_run, path, progress=False)
    assert run_sweep(SETTINGS[:3], fake_run, path, progress=False)["setting"].nunique() == 3  # a longer list resumes


def test_an_interrupted_smoke_run_does_not_leak_into_the_full_run(tmp_path, monkeypatch):
    class Fake:  # an experiment module: its settings, run and plot
        SMOKE = [{"n": 1}, {"n": 4}]
        SETTINGS = [{"n": 2}, {"n": 3}]

        @staticmethod
        def run(setting, key):
            if setting["n"] == 4:
                raise Killed
            return pd.DataFrame({"algorithm": "dpo", "seed": [0], "step": 0, "metric": "kl", "value": [setting["n"]]})

        @staticmethod
        def plot(df):
            import matplotlib.figure

            return matplotlib.figure.Figure()

    monkeypatch.setattr(experiments, "get", lambda name: Fake)
    with pytest.raises(Killed):  # the smoke run dies after its first setting, leaving its partial CSV
        cli.reproduce("fake", smoke=True, out=tmp_path, progress=False)
    assert len(list(tmp_path.glob(".fake.*.partial.csv"))) == 1
    cli.reproduce("fake", out=tmp_path, progress=False)
    assert pd.read_csv(tmp_path / "fake.csv")["value"].tolist() == [2, 3]  # not the smoke run's 1
    assert not list(tmp_path.glob(".fake*partial.csv"))  # and its partial CSV is gone


def test_setting_ids_are_stable_and_distinct():
    assert setting_id({"b": 1, "a": 2}) == setting_id({"a": 2, "b": 1})
    assert len({setting_id(s) for s in SETTINGS}) == len(SETTINGS)
    with pytest.raises(ValueError, match="duplicates"):
        run_sweep([SETTINGS[0], SETTINGS[0]], fake_run, "unused.csv")


def coverage_lab(*args):
    return subprocess.run(
        [sys.executable, "-m", "coverage_lab.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_list_and_errors(capsys):
    out = coverage_lab("list")  # the command itself, in a process of its own
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == experiments.available()
    capsys.readouterr()
    for args in (  # the errors in this process (the same main; a process each cost 12 s of the suite)
        ["reproduce", "no_such_experiment"],
        ["reproduce", "--bogus"],
        ["frobnicate"],
        ["reproduce", "--seeds", "0"],
        ["reproduce", "--jobs", "0"],
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, args
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_cli_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    for out in (a_file, a_file / "sub"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["reproduce", "lower_bound", "--smoke", "--out", str(out), "--jobs", "1", "--no-compile-cache"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("coverage-lab: error: --out"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert a_file.read_text() == "x"


def test_cli_main_returns_zero_for_list(capsys):
    assert cli.main(["list"]) == 0


def test_groups_keep_experiments_that_share_a_run_in_one_process():
    names = ["transformer_table", "rates", "transformer_reverse_kl", "lower_bound"]
    assert experiments.groups(names) == [["transformer_table", "transformer_reverse_kl"], ["rates"], ["lower_bound"]]
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.groups(["rates", "no_such"])


def test_reproduce_all_starts_the_longest_recorded_group_first(tmp_path, monkeypatch):
    pd.DataFrame(
        {"experiment": ["rates", "lower_bound", "rates"], "seconds": [1.0, 5.0, 9.0], "smoke": [True, True, False]}
    ).to_csv(tmp_path / "timings.csv", index=False)
    ran = []
    monkeypatch.setattr(cli, "_run_group", lambda names, *a: ran.append(names) or [(n, 0.5, 0) for n in names])
    seconds = cli.reproduce_all(["rates", "kl_estimators", "lower_bound"], smoke=True, out=tmp_path)
    assert ran == [["kl_estimators"], ["lower_bound"], ["rates"]]  # unknown, then 5 s, then 1 s (smoke times)
    assert seconds == {"rates": 0.5, "kl_estimators": 0.5, "lower_bound": 0.5}
    recorded = pd.read_csv(tmp_path / "timings.csv")  # written before the jobs column: those rows ran alone
    assert recorded["jobs"].tolist() == [1] * len(recorded) and len(recorded) == 4
    for bad in (dict(jobs=0), dict(jobs=2.5), dict(seeds=0), dict(names=[]), dict(names="rates")):
        kw = {"names": ["rates"], "out": tmp_path, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            cli.reproduce_all(**kw)


def test_a_failing_experiment_keeps_the_times_of_those_that_ran_before_it_in_its_group(tmp_path, monkeypatch):
    def fake(name, **kw):
        if name == "transformer_table":
            raise RuntimeError("boom")
        return tmp_path / f"{name}.csv"

    monkeypatch.setattr(cli, "reproduce", fake)
    with pytest.raises(RuntimeError, match="boom") as info:
        cli._run_group(["transformer_reverse_kl", "transformer_table"], True, None, str(tmp_path), False)
    back = pickle.loads(pickle.dumps(info.value))  # as it comes back from a worker process
    assert [name for name, *_ in back.completed] == ["transformer_reverse_kl"]
    with pytest.raises(RuntimeError, match="boom"):
        cli.reproduce_all(["transformer_reverse_kl", "transformer_table"], smoke=True, out=tmp_path)
    assert pd.read_csv(tmp_path / "timings.csv")["experiment"].tolist() == ["transformer_reverse_kl"]


def test_timings_file_is_rewritten_whole_and_read_forgivingly(tmp_path):
    path = tmp_path / "timings.csv"
    timings.record_time(path, "rates", 2.04, False, 2)
    timings.record_time(path, "all", 3.0, False, 2)
    timings.record_time(path, "all", None, False)  # a partial run drops the whole-run row
    timings.record_time(path, "rates_smoke", 1.0, True, loaded=3)
    assert path.read_text() == "experiment,seconds,smoke,jobs,loaded\nrates,2.0,False,2,0\nrates_smoke,1.0,True,1,3\n"
    assert not list(tmp_path.glob("*.tmp"))
    first = tmp_path / "first.csv"  # the first row of a new file: its smoke flag was written as 1.0, read as False
    timings.record_time(first, "rates", 1.0, True)
    assert first.read_text() == "experiment,seconds,smoke,jobs,loaded\nrates,1.0,True,1,0\n"
    assert timings.read_timings(first)["smoke"].tolist() == [True]
    path.write_text("not,a\ntimings file")
    assert timings.read_timings(path).empty and timings.read_timings(tmp_path / "missing.csv").empty


@pytest.mark.slow  # run by .ci/run after make test
def test_reproduce_in_two_processes_writes_the_same_csvs(tmp_path, monkeypatch):
    """Worker processes change where an experiment runs, not what it computes."""
    monkeypatch.setenv("JAX_NUMPY_RANK_PROMOTION", "raise")  # the workers run under the suite's strict setting
    names = ["ood_without_fa", "kl_estimators"]
    for jobs in (1, 2):
        cli.reproduce_all(names, jobs=jobs, smoke=True, out=tmp_path / str(jobs))
    for name in names:
        assert (tmp_path / "1" / f"{name}.csv").read_bytes() == (tmp_path / "2" / f"{name}.csv").read_bytes()
    recorded = pd.read_csv(tmp_path / "2" / "timings.csv").set_index("experiment")
    assert sorted(recorded.index) == sorted(names) and (recorded["jobs"] == 2).all()


_COUNT_CACHE_HITS = """
import os, sys
if os.environ.get("ONE_CPU"):  # held to one CPU before XLA starts its threads (it sizes them by this mask)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import jax
from coverage_lab import cli
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
cli.main(["reproduce", "kl_estimators", "--smoke", "--jobs", "1", "--out", sys.argv[1], *sys.argv[2:]])
print("hits", len(hits))
"""


def test_reproduce_loads_what_an_earlier_run_compiled_and_computes_the_same(tmp_path):
    """A second run loads the first one's programs; either way, and in a process held to one CPU (the tabular
    programs' numbers do not depend on how many threads XLA splits them over), the CSV is the same."""
    env = {
        **os.environ,
        "COVERAGE_LAB_CACHE": str(tmp_path / "cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def run(out, *flags, one_cpu=False):
        done = subprocess.run(
            [sys.executable, "-c", _COUNT_CACHE_HITS, str(tmp_path / out), *flags],
            env={**env, "ONE_CPU": "1"} if one_cpu else env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split("hits")[-1])

    first = run("first")  # may load a program compiled earlier in the same run under another jit
    assert any((tmp_path / "cache" / "xla").iterdir())
    second = run("second")
    assert second > first
    csv = "kl_estimators.csv"
    assert (tmp_path / "first" / csv).read_bytes() == (tmp_path / "second" / csv).read_bytes()
    loaded = pd.read_csv(tmp_path / "second" / "timings.csv").set_index("experiment")["loaded"]
    assert loaded["kl_estimators"] == second  # the timings say the run loaded programs
    env |= {"COVERAGE_LAB_CACHE": str(tmp_path / "other"), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "env")}
    one_cpu = hasattr(os, "sched_setaffinity")  # Linux
    assert run("third", "--no-compile-cache", one_cpu=one_cpu) == 0  # off, even where the environment names a folder
    assert not (tmp_path / "other" / "xla").exists() and not (tmp_path / "env").exists()
    assert (tmp_path / "third" / csv).read_bytes() == (tmp_path / "first" / csv).read_bytes()

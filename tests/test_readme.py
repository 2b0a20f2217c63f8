"""The README's Python quick start runs as written and stays within fifteen lines."""

import re
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start() -> str:
    section = README.read_text().split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_runs_and_is_short(capsys):
    code = quick_start()
    assert len(code.strip().splitlines()) <= 15
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "C_glo = inf" in out and "worst J over DPO's minimisers = -inf" in out


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make reproduce" in text and "make test" in text


def blocks(section_title: str, lang: str) -> list[str]:
    section = README.read_text().split(section_title, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def insert_after_function(source: str, name: str, code: str) -> str:
    start = source.index(f"\ndef {name}(")
    end = source.index("\n\n\n", start + 1)
    return source[:end] + "\n\n\n" + code.rstrip() + source[end:]


def _before_the_example(path: Path, root: Path) -> str:
    """``path``'s text, or, if a reader has already followed the worked example in this checkout (``hinge`` is
    defined), the committed version (``git show HEAD:...``), so ``make test`` still passes after the first hour."""
    text = path.read_text()
    if "def hinge(" not in text:
        return text
    rel = path.relative_to(path.parents[1]).as_posix()  # coverage_lab/<name>.py
    shown = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=root, capture_output=True, text=True, timeout=30)
    if shown.returncode or "def hinge(" in shown.stdout:
        pytest.skip("the worked example is already part of this checkout's coverage_lab")
    return shown.stdout


def test_the_worked_example_works_when_followed_literally(tmp_path):
    """Apply the README's three steps to a copy of the package, then run its new test and ruff."""
    import shutil
    import sys

    loss_code, algo_code, test_code = blocks("## Adding an algorithm", "python")
    root = README.parent
    clone = tmp_path / "clone"
    for package in ("coverage_lab", "experiments", "tests"):
        shutil.copytree(root / package, clone / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", clone)
    losses_py, algorithms_py = clone / "coverage_lab" / "losses.py", clone / "coverage_lab" / "algorithms.py"
    losses_py.write_text(insert_after_function(_before_the_example(losses_py, root), "ipo", loss_code))
    algorithms_py.write_text(insert_after_function(_before_the_example(algorithms_py, root), "ipo", algo_code))
    (clone / "tests" / "test_hinge.py").write_text(test_code)
    env = {"PYTHONPATH": str(clone), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_hinge.py"],
        cwd=clone,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "coverage_lab", "tests/test_hinge.py"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ruff.returncode == 0, ruff.stdout[-3000:]


def _committed_timings() -> str:
    """``figures/timings.csv`` as committed (``git show HEAD:...``), else as it is in the working tree.

    A local ``make reproduce`` rewrites the file with this machine's times (a second run, loading compiled programs,
    much shorter); the README documents the committed run, and ``make test`` must pass after ``make reproduce``."""
    path = README.parent / "figures" / "timings.csv"
    try:
        done = subprocess.run(
            ["git", "show", "HEAD:figures/timings.csv"], cwd=README.parent, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return path.read_text()
    return done.stdout if done.returncode == 0 else path.read_text()


def test_reproductions_table_minutes_are_the_recorded_timings():
    """The minutes column of the Reproductions table is ``figures/timings.csv``, not numbers typed apart from it."""
    import io

    import pandas as pd

    timings = pd.read_csv(io.StringIO(_committed_timings()))
    seconds = timings[~timings["smoke"]].set_index("experiment")["seconds"]
    section = README.read_text().split("## Reproductions", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| \[`(\w+)`\].*\| ([0-9.]+) \|$", section, re.M)
    assert len(rows) == len(seconds) - ("all" in seconds), rows
    for name, minutes in rows:
        assert abs(float(minutes) - seconds[name] / 60) <= 0.005 + 0.05 * seconds[name] / 60, name
    wall = re.search(r"\((\d+) s wall in all", section)
    assert wall and abs(int(wall.group(1)) - seconds["all"]) <= 1

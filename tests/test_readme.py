"""The README's Python quick start runs as written and stays within fifteen lines."""

import re
from pathlib import Path

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

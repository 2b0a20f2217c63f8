"""``timings.csv``: how long each reproduction took, read to order the next run's work (the longest first) and
written after each experiment (``coverage-lab reproduce``; ``benchmarks/experiments_cost.py`` reports it)."""

from __future__ import annotations

import os
from pathlib import Path

COMMITTED = Path(__file__).resolve().parents[1] / "figures" / "timings.csv"


def read_timings(path: str | Path):
    """``timings.csv`` as a DataFrame (experiment, seconds, smoke as bool, jobs and loaded as int; files from
    before those columns count as one job and nothing loaded); empty if the file is missing or unreadable (the
    timings only order work)."""
    import pandas as pd

    empty = pd.DataFrame({"experiment": [], "seconds": [], "smoke": [], "jobs": [], "loaded": []})
    try:
        df = pd.read_csv(path)
        df = df.assign(
            seconds=df["seconds"].astype(float),
            smoke=df["smoke"].astype(str).str.lower().isin(("true", "1", "1.0")),
            jobs=(df["jobs"].fillna(1) if "jobs" in df else 1),
            loaded=(df["loaded"].fillna(0) if "loaded" in df else 0),
        )
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return empty
    return df.astype({"jobs": int, "loaded": int})[list(empty.columns)]


def recorded_seconds(path: Path, smoke: bool) -> dict[str, float]:
    """Seconds per experiment recorded in ``path`` for runs of this size (``smoke`` or full); empty if none."""
    df = read_timings(path)
    df = df[df["smoke"] == bool(smoke)]
    return dict(zip(df["experiment"], df["seconds"], strict=True))


def record_time(path: Path, name: str, seconds: float | None, smoke: bool, jobs: int = 1, *, loaded: int = 0) -> None:
    """Keep ``path`` (columns experiment, seconds, smoke, jobs, loaded) with one row per experiment and size, the
    latest run (``seconds=None``: drop the row); ``jobs``: how many experiments ran at a time beside it; ``loaded``:
    how many compiled programs it loaded from the compilation cache (0: it compiled everything). Written to a
    temporary file and renamed, so an interrupted write leaves the old file."""
    import pandas as pd

    path = Path(path)
    old = read_timings(path)
    rows = old[~((old["experiment"] == name) & (old["smoke"] == bool(smoke)))]
    if seconds is not None:
        new = pd.DataFrame({"experiment": [name], "seconds": [round(seconds, 1)], "smoke": [bool(smoke)]})
        rows = pd.concat([rows, new.assign(jobs=int(jobs), loaded=int(loaded))], ignore_index=True)
    if rows.empty and not path.exists():
        return
    tmp = path.with_name(path.name + ".tmp")
    rows.astype({"smoke": bool, "jobs": int, "loaded": int}).to_csv(tmp, index=False)
    os.replace(tmp, path)

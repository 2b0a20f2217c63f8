"""A resumable sweep: settings × seeds → one tidy CSV, each finished setting appended atomically.

An interrupted sweep loses nothing: a rerun reads the CSV, skips the settings already there and appends the
rest in the same order, so it ends with the same file as an uninterrupted run (each setting's randomness
comes from its own id, not from what ran before it).
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd


def setting_id(setting: dict) -> str:
    """A stable text id of a setting (its items as sorted JSON)."""
    if not isinstance(setting, dict):
        raise ValueError(f"setting must be a dict of plain values, got {type(setting).__name__}")
    try:
        return json.dumps(setting, sort_keys=True, default=str)
    except TypeError as err:
        raise ValueError(f"setting must be a dict of plain values, got {setting!r}") from err


def setting_seed(setting: dict) -> int:
    """A 32-bit seed derived from the setting alone (for ``jax.random.key``)."""
    return zlib.crc32(setting_id(setting).encode())


def run_sweep(
    settings: Iterable[dict],
    run: Callable[[dict], pd.DataFrame],
    path: str | os.PathLike,
    *,
    label: str = "sweep",
    progress: bool = True,
) -> pd.DataFrame:
    """Run ``run(setting)`` for each setting not yet in the CSV at ``path``; return the whole table.

    Each result gets a ``setting`` column (``setting_id``) and is appended by rewriting the CSV to a
    temporary file and renaming it over the old one (atomic on POSIX). Progress, with an ETA, goes to stderr.
    A CSV holding a setting that is not in ``settings`` (another sweep's) is refused, not mixed in.
    """
    if isinstance(settings, (str, bytes, dict)) or not hasattr(settings, "__iter__"):
        raise ValueError(f"settings must be an iterable of dicts, got {type(settings).__name__}")
    settings = list(settings)
    if not settings:
        raise ValueError("settings must not be empty")
    if not all(isinstance(s, dict) for s in settings):
        raise ValueError("settings must be an iterable of dicts")
    ids = [setting_id(s) for s in settings]
    if len(set(ids)) != len(ids):
        raise ValueError("settings has duplicates")
    if not callable(run):
        raise ValueError(f"run must be a function setting -> DataFrame, got {run!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(path) if path.exists() else None
    if table is not None and "setting" not in table:
        raise ValueError(f"{path} has no 'setting' column: not a sweep's CSV (path)")
    done = set() if table is None else set(table["setting"].unique())
    stale = sorted(done - set(ids))
    if stale:
        raise ValueError(f"{path} holds {len(stale)} settings that are not in settings, e.g. {stale[0]} (path)")
    todo = [(s, i) for s, i in zip(settings, ids, strict=True) if i not in done]
    start = time.perf_counter()
    for n, (setting, sid) in enumerate(todo, 1):
        rows = run(setting)
        if not isinstance(rows, pd.DataFrame):
            raise ValueError(f"run must return a pandas DataFrame, got {type(rows).__name__} for setting {sid}")
        rows = rows.assign(setting=sid)
        table = rows if table is None else pd.concat([table, rows], ignore_index=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)
        if progress:
            elapsed = time.perf_counter() - start
            eta = elapsed / n * (len(todo) - n)
            print(
                f"\r{label}: {n}/{len(todo)} settings, {elapsed:.0f}s elapsed, ETA {eta:.0f}s", end="", file=sys.stderr
            )
    if progress and todo:
        print(file=sys.stderr)
    return pd.read_csv(path)

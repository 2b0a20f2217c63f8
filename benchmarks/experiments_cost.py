"""Compile time against run time of every experiment, and the cost of the whole ``make reproduce``.

Each experiment runs in a fresh Python process (so nothing another benchmark compiled is reused, as for a
user who runs one experiment): its first full-size setting (``SETTINGS[0]``; ``SMOKE[0]`` with ``smoke``)
through ``module.run(setting, key)`` twice, within a cap per experiment (45 s by default; past it the
experiment is timed at its ``SMOKE`` size instead, and the rows say so). The first call compiles and runs, the
second (on another key) runs from JAX's in-memory cache. Compile time is the wall time covered by XLA
compilations in the call (from JAX's compile-duration events; see :mod:`benchmarks._timing`), so a second call
that compiles again (a recompilation) shows; a run stopped at the cap still reports the compile time it had
spent by then. The whole ``make reproduce`` is too long for the benchmark budget; its cost is read from
``figures/timings.csv`` (``experiment, seconds, smoke, jobs``; experiment ``all``: the whole run's wall time)
when a ``coverage-lab reproduce`` has written one.

    python -m benchmarks.experiments_cost NAME [--smoke] [--deadline EPOCH_SECONDS]   # one child, JSON out
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ._timing import row, union

NAME = "experiments"
ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ROOT / "figures" / "timings.csv"


def _child(name: str, smoke: bool, deadline: float, status: str | None = None) -> dict:
    import jax

    import experiments
    from coverage_lab.sweep import setting_seed

    from . import _timing
    from ._timing import compile_clock

    if status:  # progress for the parent, should it stop this process before the end

        def progress():
            Path(status).write_text(json.dumps(_timing.compile_status()))

        _timing._on_compile.append(progress)
    module = experiments.get(name)
    setting = dict((module.SMOKE if smoke else module.SETTINGS)[0])
    out = {"setting": repr(setting)}
    key = jax.random.key(setting_seed(setting))
    # another key for the second call (an experiment may remember a run: transformer_reverse_kl does), made
    # before the clock starts so that its own small compilation is not counted
    keys = {"first": key, "second": jax.block_until_ready(jax.random.fold_in(key, 1))}
    for call in ("first", "second"):
        if call == "second" and time.time() + out["first"] > deadline:
            break  # the second call would overrun the budget; the first call's events still split it
        c0, n0 = compile_clock()
        start = time.perf_counter()
        jax.block_until_ready(module.run(setting, keys[call]))
        out[call] = time.perf_counter() - start
        c1, n1 = compile_clock()
        out[f"{call}_compile"], out[f"{call}_compiles"] = c1 - c0, n1 - n0
    return out


def measure(name: str, *, smoke: bool = False, deadline: float = math.inf, timeout: float | None = None) -> dict:
    """Run experiment ``name`` in a child process; returns the child's timings, or ``{"error": ...}`` (with
    ``"partial"``, the child's last :func:`~benchmarks._timing.compile_status`, when it was stopped at ``timeout``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        status = Path(tmp) / "status.json"
        cmd = [sys.executable, "-m", "benchmarks.experiments_cost", name, "--deadline", str(deadline)]
        cmd += ["--status", str(status)] + (["--smoke"] if smoke else [])
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            partial = json.loads(status.read_text()) if status.exists() else {}
            if partial:
                intervals = [tuple(i) for i in partial["intervals"]]
                if partial["last_lowered"] and partial["lowered"] > len(intervals):  # stopped mid-compilation
                    intervals.append((partial["last_lowered"], time.time()))
                partial["compile"] = union(intervals)
            return {"error": f"timed out after {timeout:.0f} s", "timed_out": True, "partial": partial}
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def reproduce_cost(path: Path = TIMINGS) -> pd.DataFrame | None:
    """Seconds per experiment of the latest full-size ``coverage-lab reproduce`` in ``path``, and the compiled
    programs each loaded from the compilation cache (``loaded``), or None."""
    from coverage_lab.timings import read_timings

    df = read_timings(path)
    full = df[~df["smoke"]]
    if full.empty:
        return None
    return full.groupby("experiment", sort=False).last().reset_index()[["experiment", "seconds", "loaded"]]


def bench(
    names=None,
    *,
    smoke: bool = False,
    deadline: float = math.inf,
    cap: float = 45.0,
    smoke_cap: float = 120.0,
    timings: Path = TIMINGS,
):
    """Rows per experiment (first and second call, compile / run, recompilations) and the ``make reproduce``
    cost. Each experiment gets at most ``cap`` seconds at full size (the second call only if it fits); one that
    does not finish, or whose whole full-size run in ``timings`` took over ``2 cap``, is timed at its ``SMOKE``
    size instead (at most ``smoke_cap`` seconds), and labelled so. Nothing starts after ``deadline``."""
    import experiments

    rows, first_compile = [], {}
    cost = reproduce_cost(timings)
    known = {} if cost is None else dict(zip(cost["experiment"], cost["seconds"], strict=True))
    for name in names if names is not None else experiments.available():
        label, m = name, {"error": "not run"}
        sizes = (True,) if smoke else (False, True)
        if not smoke and known.get(name, 0.0) > 2 * cap:
            sizes, label = (True,), f"{name} (smoke size: its full reproduce took {known[name]:.0f} s)"
        for size_smoke in sizes:
            left = deadline - time.time()
            if left < 15:
                m = {"error": "skipped, out of the time budget"}
                break
            limit = min(smoke_cap if size_smoke else cap, left)
            m = measure(name, smoke=size_smoke, deadline=time.time() + limit, timeout=limit)
            if not m.get("timed_out"):
                break
            partial, size = m.get("partial"), "smoke size" if size_smoke else "full size"
            if partial:  # what the stopped run had done
                rows.append(
                    row(
                        NAME,
                        f"{name}: {size} stopped at {limit:.0f} s, XLA compile by then (at least)",
                        partial["compile"],
                        "s",
                    )
                )
            if not size_smoke:
                label = f"{name} (smoke size: full size took over {limit:.0f} s)"
        if "error" in m:
            rows.append(row(NAME, f"{label}: {m['error'][:90]}", np.nan, "-"))
            continue
        run = m["second"] if "second" in m else max(m["first"] - m["first_compile"], 1e-9)
        if label == name and not smoke:
            first_compile[name] = m["first_compile"]
        rows += [
            row(NAME, f"{label}: first call (compile + run)", m["first"], "s"),
            row(NAME, f"{label}: compile / run", m["first_compile"] / run, "x"),
        ]
        if "second" in m:
            rows += [
                row(NAME, f"{label}: second call (run)", m["second"], "s"),
                row(NAME, f"{label}: first / second call", m["first"] / m["second"], "x"),
                row(NAME, f"{label}: XLA compilations in the second call", m["second_compiles"], "count"),
            ]
        else:
            rows.append(row(NAME, f"{label}: second call skipped (budget); run = first - compile", run, "s"))
    if cost is None:
        rows.append(
            row(NAME, f"make reproduce: not measured yet (no {timings.parent.name}/{timings.name})", np.nan, "s")
        )
        return rows
    whole = cost[cost["experiment"] == "all"]
    cost = cost[cost["experiment"] != "all"]
    total = cost["seconds"].sum()
    loaded = int(cost["loaded"].sum())
    warm = f" ({loaded} programs loaded from the compilation cache, not compiled)" if loaded else ""
    rows.append(row(NAME, f"make reproduce: sum of the {len(cost)} experiments' times{warm}", total, "s"))
    if len(whole):  # experiments run side by side: the wall time is less than the sum
        rows.append(row(NAME, "make reproduce: wall time of the whole run", float(whole["seconds"].iloc[0]), "s"))
    for name, seconds in zip(cost["experiment"], cost["seconds"], strict=True):
        rows.append(row(NAME, f"make reproduce: {name} / sum", seconds / total, "fraction"))
        if name in first_compile:  # full-size first setting vs the whole full-size experiment
            rows.append(
                row(
                    NAME,
                    f"make reproduce: {name}, first-setting compile / its reproduce time",
                    first_compile[name] / seconds,
                    "fraction",
                )
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time one experiment's first setting twice (a child process).")
    parser.add_argument("name")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--deadline", type=float, default=math.inf)
    parser.add_argument("--status", help="file to write progress to (compile seconds so far)")
    args = parser.parse_args(argv)
    print(json.dumps(_child(args.name, args.smoke, args.deadline, args.status)))


if __name__ == "__main__":
    main()

"""The benchmark suite (``make bench``): prints a table and writes a tidy CSV (benchmark, quantity, value, unit).

Every figure that matters is a ratio of two times measured in this run, minutes apart, because the machine is
shared and noisy; the load average at the start and the end is recorded beside them.

- ``vmap_seeds``: 64 and 512 seeds vmapped against a Python loop of single-seed calls, for one optimizer step
  of ``fit`` and for whole ``coverage_lab.run`` calls (:mod:`benchmarks.vmap_seeds`).
- ``exact_dpo_grad``: the exact population DPO gradient for ``|Y|`` from 16 to 2048, the fitted exponent, the
  FLOP rate against the measured matmul rate (:mod:`benchmarks.exact_grad`).
- ``frameworks``: the tabular exact DPO loop against NumPy and PyTorch references at equal accuracy
  (:mod:`benchmarks.frameworks`).
- ``experiments``: compile time against run time of every experiment's first full-size setting, and the cost
  of the whole ``make reproduce`` from ``figures/timings.csv`` (:mod:`benchmarks.experiments_cost`).

    python -m benchmarks.run [--quick] [--out benchmarks/results.csv] [--budget S] [--experiment-cap S]
                             [--only NAME ...]

``--quick`` shrinks every benchmark (seconds to a minute in all) and runs the experiments' ``SMOKE`` settings.
The experiments come last and get what is left of ``--budget`` (default 540 s, so that ``make bench`` stays
under ten minutes); each gets at most ``--experiment-cap`` seconds (default 45) at full size and is otherwise
timed at its ``SMOKE`` size (the rows say which; up to 120 s); one that no longer fits at all is reported as skipped.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from . import exact_grad, experiments_cost, frameworks, vmap_seeds
from ._timing import matmul_rate, read_rate, row

BENCHMARKS = ("machine", "exact_dpo_grad", "frameworks", "vmap_seeds", "experiments")
SEEDS_FLOOR = 20.0  # issue #7: 64 vmapped seeds at least 20x faster than 64 sequential calls of the same step


def _machine(quick: bool) -> tuple[list, float, float]:
    mm, rd = matmul_rate(512 if quick else 1024), read_rate(1 << 25 if quick else 1 << 27)
    rows = [
        row(
            "machine",
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"jax {jax.__version__} on {jax.devices()[0].platform}",
            np.nan,
            "-",
        ),
        row("machine", "load average (1 min) at the start", os.getloadavg()[0], "procs"),
        row("machine", f"float32 matmul rate ({512 if quick else 1024}^2 jnp.dot)", mm / 1e9, "GFLOP/s"),
        row("machine", "memory read bandwidth (jnp.sum)", rd / 1e9, "GB/s"),
    ]
    return rows, mm, rd


def suite(
    quick: bool = False, budget: float = 540.0, only=BENCHMARKS, experiment_cap: float = 45.0, log=print
) -> pd.DataFrame:
    """Run the benchmarks named in ``only``; returns the tidy rows. ``log`` receives each row as measured."""
    start = time.time()
    deadline = start + budget
    rows: list[dict] = []

    def add(new):
        for r in new:
            log(_format(r))
        rows.extend(new)

    new, mm, rd = _machine(quick)
    add(new if "machine" in only else new[:0])
    if "exact_dpo_grad" in only:
        sizes = tuple(2**k for k in range(4, 10 if quick else 12))
        add(exact_grad.bench(sizes, matmul_flops=mm, read_bytes=rd))
    if "frameworks" in only:
        add(frameworks.bench(((4, 16), (8, 64)) if quick else ((4, 16), (8, 128)), steps=1000))
    if "vmap_seeds" in only:
        add(vmap_seeds.bench((64,) if quick else (64, 512), run_steps=200 if quick else 500, step_steps=50))
    if "experiments" in only:
        add(experiments_cost.bench(smoke=quick, deadline=deadline, cap=experiment_cap))
    add(
        [
            row("machine", "load average (1 min) at the end", os.getloadavg()[0], "procs"),
            row("suite", "total wall time", time.time() - start, "s"),
        ]
    )
    return pd.DataFrame(rows, columns=["benchmark", "quantity", "value", "unit"])


def _format(r: dict) -> str:
    v = r["value"]
    value = "" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}"
    return f"{r['benchmark']:15s} {r['quantity']:78s} {value:>11s} {r['unit']}"


def checks(df: pd.DataFrame) -> list[str]:
    """The issue's must-hold lines: the 64-seed step ratio against 20x, and the suite's time against 10 min."""
    out = []
    ratio = df.loc[df.quantity == "step: 64 seeds, loop / vmapped", "value"]
    if len(ratio):
        ok = ratio.iloc[0] >= SEEDS_FLOOR
        out.append(
            f"64 vmapped seeds vs 64 sequential calls of the same compiled step: {ratio.iloc[0]:.1f}x "
            f"({'meets' if ok else 'BELOW'} the {SEEDS_FLOOR:.0f}x floor)"
        )
    total = df.loc[df.quantity == "total wall time", "value"].iloc[0]
    out.append(f"suite wall time {total:.0f} s ({'within' if total < 600 else 'OVER'} the 10-minute budget)")
    return out


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and the experiments' SMOKE settings")
    parser.add_argument("--out", default="benchmarks/results.csv", help="tidy CSV (default benchmarks/results.csv)")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the suite; experiments get the rest")
    parser.add_argument("--experiment-cap", type=float, default=45.0, help="seconds per experiment at full size")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), help="a subset")
    args = parser.parse_args(argv)
    print(f"{'benchmark':15s} {'quantity':78s} {'value':>11s} unit")
    df = suite(quick=args.quick, budget=args.budget, only=args.only, experiment_cap=args.experiment_cap)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    print()
    for line in checks(df):
        print(line)
    print(f"wrote {out}")
    return df


if __name__ == "__main__":
    main()

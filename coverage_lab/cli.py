"""``coverage-lab``: list the reproductions and run them, writing ``DIR/NAME.csv`` then ``DIR/NAME.png``.

coverage-lab list
coverage-lab reproduce [NAME ...] [--smoke] [--seeds N] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax

from coverage_lab.sweep import run_sweep, setting_seed


def reproduce(name: str, *, smoke: bool = False, seeds: int | None = None, out: str | Path = "figures") -> Path:
    """Run experiment ``name`` from scratch into ``out/NAME.csv``, then draw ``out/NAME.png`` from that CSV.

    The sweep writes ``out/.NAME.partial.csv`` as it goes and renames it when complete, so an interrupted run
    resumes where it stopped, while a finished ``NAME.csv`` (for instance the committed one) is recomputed.
    Returns the CSV path."""
    import experiments
    from coverage_lab import plotting

    module = experiments.get(name)
    settings = [dict(s) for s in (module.SMOKE if smoke else module.SETTINGS)]
    if seeds is not None:
        for s in settings:
            s["seeds"] = seeds

    def run(setting):
        df = module.run(setting, jax.random.key(setting_seed(setting)))
        df.insert(0, "experiment", name)
        for k, v in setting.items():
            if k not in df.columns:
                df[k] = v if not isinstance(v, (list, tuple, dict)) else str(v)
        return df

    out = Path(out)
    csv, partial = out / f"{name}.csv", out / f".{name}.partial.csv"
    df = run_sweep(settings, run, partial, label=name)  # an interrupted run resumes from the partial CSV
    os.replace(partial, csv)
    fig = module.plot(df)
    plotting.save(fig, out / f"{name}.png")
    if hasattr(module, "report"):  # a table experiment also writes its Markdown table
        (out / f"{name}.md").write_text(module.report(df))
    return csv


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, no traceback
        print(f"coverage-lab: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only; set here, not in plotting, so notebooks keep their inline backend
    import experiments

    parser = _Parser(prog="coverage-lab", description="Reproduce arXiv:2406.01462 in miniature.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the experiments")
    rep = sub.add_parser("reproduce", help="run experiments and draw their figures")
    rep.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default: all)")
    rep.add_argument("--smoke", action="store_true", help="tiny settings, seconds each")
    rep.add_argument("--seeds", type=int, help="override the number of seeds")
    rep.add_argument("--out", default="figures", help="output folder (default: figures/)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in experiments.available():
            print(f"{name:24s} {experiments.get(name).__doc__.strip().splitlines()[0]}")
        return 0
    names = args.names or experiments.available()
    unknown = [n for n in names if n not in experiments.available()]
    if unknown:
        parser.error(f"unknown experiment(s): {', '.join(unknown)}; see 'coverage-lab list'")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be >= 1")
    for name in names:
        start = time.perf_counter()
        csv = reproduce(name, smoke=args.smoke, seeds=args.seeds, out=args.out)
        seconds = time.perf_counter() - start
        record_time(Path(args.out) / "timings.csv", name, seconds, args.smoke)
        print(f"{name}: {csv} and {csv.with_suffix('.png')} in {seconds:.1f}s")
    return 0


def record_time(path: Path, name: str, seconds: float, smoke: bool) -> None:
    """Keep ``path`` (columns experiment, seconds, smoke) with one row per experiment and size, the latest run."""
    import pandas as pd

    row = pd.DataFrame({"experiment": [name], "seconds": [round(seconds, 1)], "smoke": [bool(smoke)]})
    if path.exists():
        old = pd.read_csv(path)
        row = pd.concat([old[~((old.experiment == name) & (old.smoke == bool(smoke)))], row], ignore_index=True)
    row.to_csv(path, index=False)


if __name__ == "__main__":
    raise SystemExit(main())

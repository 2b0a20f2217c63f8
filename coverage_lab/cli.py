"""``coverage-lab``: list the reproductions and run them, writing ``DIR/NAME.csv`` then ``DIR/NAME.png``.

coverage-lab list
coverage-lab reproduce [NAME ...] [--smoke] [--seeds N] [--out DIR] [--jobs N] [--no-compile-cache]

Experiments run ``--jobs`` processes at a time (default: the CPUs this process may use), the longest first by the
last recorded times; each experiment is a pure function of its settings' keys, so the CSVs do not depend on it.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import jax

from coverage_lab import _validate as V
from coverage_lab.sweep import run_sweep, setting_id, setting_seed
from coverage_lab.timings import COMMITTED, record_time, recorded_seconds


def reproduce(
    name: str, *, smoke: bool = False, seeds: int | None = None, out: str | Path = "figures", progress: bool = True
) -> Path:
    """Run experiment ``name`` from scratch into ``out/NAME.csv``, then draw ``out/NAME.png`` from that CSV.

    The sweep writes ``out/.NAME.DIGEST.partial.csv`` as it goes (``DIGEST``: of the settings, so a ``--smoke``
    or ``--seeds`` run or edited settings never resume another list's rows) and renames it when complete, so an
    interrupted run resumes where it stopped, while a finished ``NAME.csv`` (for instance the committed one) is
    recomputed. Partial files of other settings lists of ``name`` are removed.
    ``progress``: a line with the sweep's progress on stderr. Returns the CSV path."""
    import experiments
    from coverage_lab import plotting

    module = experiments.get(name)
    smoke = V.flag("smoke", smoke)
    if seeds is not None:
        V.integer("seeds", seeds, minimum=1)
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
    ids = "\n".join(setting_id(s) for s in settings)
    csv, partial = out / f"{name}.csv", out / f".{name}.{zlib.crc32(ids.encode()):08x}.partial.csv"
    for other in [*out.glob(f".{name}.*.partial.csv"), out / f".{name}.partial.csv"] if out.is_dir() else []:
        if other != partial and other.exists():
            other.unlink()  # another settings list's (or an older version's) rows
    # an interrupted run resumes from the partial CSV of the same settings
    df = run_sweep(settings, run, partial, label=name, progress=progress)
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
    rep.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile every program afresh instead of loading those an earlier run compiled (default: loaded)",
    )
    rep.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help=f"experiments run at a time, each in its own process (default: the CPUs available, {default_jobs()} here)",
    )
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
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    blocked = _not_a_folder(Path(args.out))
    if blocked is not None:
        parser.error(f"--out {args.out}: {blocked} exists and is not a folder")
    cache = False if args.no_compile_cache else default_compile_cache()
    reproduce_all(names, jobs=args.jobs, smoke=args.smoke, seeds=args.seeds, out=args.out, compile_cache=cache)
    return 0


def _not_a_folder(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists, if it is not a folder (``path`` cannot be made one)."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def default_jobs() -> int:
    """The CPUs this process may use (``os.sched_getaffinity`` where there is one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_compile_cache() -> Path:
    """Where ``coverage-lab reproduce`` keeps compiled programs: ``xla`` in the project's cache folder
    (:func:`coverage_lab.transformer.reference.cache_dir`, beside the cached reference weights)."""
    from coverage_lab.transformer.reference import cache_dir

    return cache_dir() / "xla"


def use_compile_cache(directory: str | os.PathLike | bool) -> Path | None:
    """Turns on JAX's persistent compilation cache in ``directory`` for the rest of this process (unless a folder
    is set already, e.g. by ``JAX_COMPILATION_CACHE_DIR``) and returns the folder in use; ``False`` turns it off
    (whatever the environment says) and returns None.

    A later run loads the programs an earlier one compiled (those that took a second or more) instead of compiling
    them again. JAX keys each entry on the program, the compiler options, the devices and the jax/jaxlib versions,
    so an edited experiment recompiles what changed and nothing else, and a loaded program computes what a fresh
    one would (the same executable). An entry that cannot be read (a run killed while writing it) is compiled
    afresh with a warning, every run, because JAX does not replace an existing entry: delete the folder then."""
    if directory is False:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if isinstance(directory, (bool, bytes)) or not isinstance(directory, (str, os.PathLike)):
        raise ValueError(f"directory must be a folder (a str or os.PathLike) or False, got {directory!r}")
    current = jax.config.jax_compilation_cache_dir
    if not current:
        jax.config.update("jax_compilation_cache_dir", str(directory))
    return Path(current or directory)


_LOADED = [0]  # compiled programs this process has loaded from the persistent compilation cache


def _count_loaded(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _LOADED[0] += 1


jax.monitoring.register_event_listener(_count_loaded)


def reproduce_all(
    names: list[str],
    *,
    jobs: int = 1,
    smoke: bool = False,
    seeds: int | None = None,
    out: str | Path = "figures",
    compile_cache: str | os.PathLike | bool | None = None,
) -> dict[str, float]:
    """:func:`reproduce` each experiment, ``jobs`` worker processes at a time; seconds per experiment.

    Experiments go to the workers in groups (``experiments.groups``: those that share a run in memory stay in one
    process), the group that took longest in ``out/timings.csv`` (else in the repository's ``figures/``) first,
    unknown ones before known ones, so the longest does not start last. With ``jobs = 1``, or one group,
    everything runs in this process. Each experiment's time goes to ``out/timings.csv`` as it ends, with the number
    of jobs it shared the machine with and the number of compiled programs it loaded from the compilation cache
    (``loaded``); when every experiment ran, the whole run's wall time goes there as experiment ``all`` (a partial
    run drops an older ``all`` row). If an experiment fails, the ones that finished are recorded (with several jobs
    the other groups still run), then the first failure is raised. ``compile_cache``: JAX's persistent compilation
    cache, in this process and the workers: a folder, ``False`` (off), or None (JAX's own setting, untouched)."""
    import experiments

    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"names must be a non-empty list of experiment names, got {names!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if seeds is not None:
        V.integer("seeds", seeds, minimum=1)
    if compile_cache is not None:  # the workers get the folder in use, or False
        in_use = use_compile_cache(compile_cache)
        compile_cache = False if in_use is None else str(in_use)
    groups = experiments.groups(list(names))
    timings = Path(out) / "timings.csv"
    known = recorded_seconds(timings if timings.exists() else COMMITTED, smoke)
    groups.sort(key=lambda g: -sum(known.get(n, math.inf) for n in g))  # stable: ties keep their order
    jobs = min(jobs, len(groups))
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    loaded: dict[str, int] = {}
    errors: list[BaseException] = []

    def record(done):
        for name, s, n in done:
            seconds[name], loaded[name] = s, n
            record_time(timings, name, s, smoke, jobs, loaded=n)

    if jobs == 1:
        for group in groups:
            try:
                record(_run_group(group, smoke, seeds, str(out), True))
            except BaseException as err:  # Ctrl-C too: what finished is recorded
                record(getattr(err, "completed", []))
                errors.append(err)
                break
    else:  # spawn: a forked child would inherit this process's JAX runtime threads
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = [pool.submit(_worker, g, smoke, seeds, str(out), compile_cache) for g in groups]
            for future in as_completed(futures):
                try:
                    record(future.result())
                except Exception as err:  # the other groups go on; raised below
                    record(getattr(err, "completed", []))
                    errors.append(err)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    full = set(experiments.available()) <= set(seconds)
    total = time.perf_counter() - start if full else None
    record_time(timings, "all", total, smoke, jobs, loaded=sum(loaded.values()))
    if errors:
        raise errors[0]
    return seconds


def _worker(names, smoke, seeds, out, compile_cache=None) -> list[tuple[str, float, int]]:
    """:func:`_run_group` in a worker process: figures to files only, no progress lines (they would interleave)."""
    import matplotlib

    matplotlib.use("Agg")
    if compile_cache is not None:
        use_compile_cache(compile_cache)
    return _run_group(names, smoke, seeds, out, False)


def _run_group(names, smoke, seeds, out, progress) -> list[tuple[str, float, int]]:
    """Reproduce ``names`` in order (one worker's share); ``(name, seconds, programs loaded from the compilation
    cache)`` each, a line printed as each ends.

    If one fails, the exception carries those triples for the ones before it as ``completed`` (it survives
    pickling back from a worker), so their times are still recorded."""
    done = []
    for name in names:
        start, loaded = time.perf_counter(), _LOADED[0]
        try:
            csv = reproduce(name, smoke=smoke, seeds=seeds, out=out, progress=progress)
        except BaseException as err:
            try:
                err.completed = list(done)
            except AttributeError:  # an exception type that takes no attributes: only its times are lost
                pass
            raise
        seconds = time.perf_counter() - start
        print(f"{name}: {csv} and {csv.with_suffix('.png')} in {seconds:.1f}s", flush=True)
        done.append((name, seconds, _LOADED[0] - loaded))
    return done


if __name__ == "__main__":
    raise SystemExit(main())

"""The reproductions: one module per figure or table of arXiv:2406.01462 (SPEC §5).

Each module defines ``SETTINGS`` (the full-size sweep: a list of dicts), ``SMOKE`` (a tiny one, run as a
test), ``run(setting, key) -> pandas.DataFrame`` with tidy rows (``algorithm``, ``seed``, ``step``,
``metric``, ``value``, plus any columns of its own) and ``plot(df) -> matplotlib Figure``, drawn from the
CSV alone. ``coverage_lab.cli`` runs them.

A module's ``KEYS`` maps each setting key its ``run`` reads to the check of its value, ``REQUIRED`` names those
without a default, and an optional ``cross_check(setting)`` checks values against each other; ``run`` starts
with :func:`check_setting`, so a bad or misspelt setting is a ``ValueError`` naming it, before any work.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from types import ModuleType

import numpy as np

from coverage_lab import _validate as V

NAMES = (
    "lower_bound",
    "separation_map",
    "rates",
    "extrapolation",
    "ood_without_fa",
    "reverse_kl",
    "kl_estimators",
    "transformer_reverse_kl",
    "transformer_table",
)

# Experiments that must run in one process: transformer_table's ``small`` row is transformer_reverse_kl's run,
# remembered in the process (``transformer_reverse_kl.run_algorithms``).
SAME_PROCESS = (("transformer_reverse_kl", "transformer_table"),)


def available() -> list[str]:
    """The experiments whose module exists in this checkout, in the order of ``NAMES``."""
    return [n for n in NAMES if importlib.util.find_spec(f"experiments.{n}") is not None]


def get(name: str) -> ModuleType:
    """The experiment module called ``name``; ``ValueError`` for an unknown one."""
    if name not in available():
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(available())}")
    return importlib.import_module(f"experiments.{name}")


def groups(names: list[str]) -> list[list[str]]:
    """``names`` in groups that run in one process each (:data:`SAME_PROCESS`), in order of first appearance;
    ``ValueError`` for an unknown name, or for one name not in a list (a string is not a list of its letters)."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"names must be a list of experiment names, got {names!r}")
    for n in names:
        get(n)
    out: list[list[str]] = []
    where: dict[str, list[str]] = {}
    for n in dict.fromkeys(names):
        partner = next((g for g in SAME_PROCESS if n in g), ())
        group = next((where[m] for m in partner if m in where), None)
        if group is None:
            group = []
            out.append(group)
        group.append(n)
        where[n] = group
    return out


# ----------------------------------------------------------------------------------------------
# Settings: what ``run(setting, key)`` is given


def check_setting(module: ModuleType | str, setting, key) -> None:
    """Checks ``run(setting, key)``'s arguments before any work; ``ValueError`` naming the bad one.

    ``key``: one JAX PRNG key. ``setting``: a dict whose keys are among the module's ``KEYS`` (a misspelt key is
    refused, not ignored), holding each of its ``REQUIRED``, every value passing its ``KEYS`` check, then the
    module's ``cross_check(setting)`` if it has one. ``module``: the experiment module, its name or ``__name__``.
    """
    module = get(module.removeprefix("experiments.")) if isinstance(module, str) else module
    name = module.__name__.removeprefix("experiments.")
    V.key("key", key)
    if not isinstance(setting, Mapping):
        raise ValueError(f"setting must be a dict of {name}'s settings, got {setting!r}")
    for k in setting:
        if k not in module.KEYS:
            raise ValueError(f"setting[{k!r}] is not a setting of {name}; its settings: {', '.join(module.KEYS)}")
    for k in module.REQUIRED:
        if k not in setting:
            raise ValueError(f"setting[{k!r}] is required by {name} (it has no default)")
    for k, v in setting.items():
        module.KEYS[k](f"setting[{k!r}]", v)
    if hasattr(module, "cross_check"):
        module.cross_check(setting)


def check_frame(df, columns) -> None:
    """Checks that ``df`` is a non-empty DataFrame with ``columns``: a module's ``plot`` (and ``transformer_table``'s
    ``report``) read the tidy frame its ``run`` wrote, usually from its CSV."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame (an experiment's tidy rows), got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks the columns {missing}: pass the tidy rows of the experiment's run (its CSV)")
    if df.empty:
        raise ValueError("df has no rows")


# The checks of a value, ``check(name, value)``, beyond those of coverage_lab._validate (V.positive, V.number, ...).
Check = Callable[[str, object], object]


def integer(minimum: int) -> Check:
    """An integer ``>= minimum``."""
    return functools.partial(V.integer, minimum=minimum)


def between(lo: float, hi: float, *, open_: bool = False) -> Check:
    """A finite number in ``[lo, hi]`` (``(lo, hi)`` if ``open_``)."""

    def check(name, v):
        f = V.number(name, v)
        if not (lo < f < hi if open_ else lo <= f <= hi):
            raise ValueError(f"{name} must be in {'(' if open_ else '['}{lo:g}, {hi:g}{')' if open_ else ']'}, got {f}")

    return check


def one_of(*options: str) -> Check:
    """One of the strings ``options``."""

    def check(name, v):
        if not isinstance(v, str) or v not in options:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {v!r}")

    return check


def each(check: Check, *, unique: bool = False) -> Check:
    """A non-empty list (tuple, 1-D array) whose every entry passes ``check``; with ``unique``, no entry twice."""

    def check_all(name, v):
        if not isinstance(v, (list, tuple, np.ndarray)) or np.ndim(v) != 1 or len(v) == 0:
            raise ValueError(f"{name} must be a non-empty list, got {v!r}")
        for i, item in enumerate(v):
            check(f"{name}[{i}]", item)
        if unique and len(set(v)) != len(v):
            raise ValueError(f"{name} must not repeat a value, got {v!r}")

    return check_all


def seed_ids(name: str, v) -> None:
    """A number of seeds ``>= 1`` or a non-empty list of seed ids ``>= 0`` (``V.seed_ids``)."""
    try:
        V.seed_ids(v)
    except ValueError:
        raise ValueError(f"{name} must be a count >= 1 or a non-empty list of ids >= 0, got {v!r}") from None


def logged_steps(minimum: int) -> Check:
    """A number of steps ``>= minimum`` that its logging interval ``max(steps // 20, 1)`` divides (``simulation.run``'s
    default interval; extrapolation and reverse_kl set ``steps // 20``, hence their minimum of 20)."""

    def check(name, v):
        V.integer(name, v, minimum=minimum)
        every = max(v // 20, 1)
        if v % every:
            raise ValueError(
                f"{name} must be a multiple of {name} // 20 = {every} (the logging interval), "
                f"e.g. {v - v % every}, got {v}"
            )

    return check

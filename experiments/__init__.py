"""The reproductions: one module per figure or table of arXiv:2406.01462 (SPEC §5).

Each module defines ``SETTINGS`` (the full-size sweep: a list of dicts), ``SMOKE`` (a tiny one, run as a
test), ``run(setting, key) -> pandas.DataFrame`` with tidy rows (``algorithm``, ``seed``, ``step``,
``metric``, ``value``, plus any columns of its own) and ``plot(df) -> matplotlib Figure``, drawn from the
CSV alone. ``coverage_lab.cli`` runs them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
    ``ValueError`` for an unknown name."""
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

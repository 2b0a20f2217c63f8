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
# Experiments whose settings share no compiled programs (Table 1's model sizes): with several processes, a setting
# no partner shares may run in a process of its own (:func:`units`), and the experiment is assembled from them.
SPLIT = ("transformer_table",)


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


def settings(name: str, smoke: bool = False, seeds: int | None = None) -> list[dict]:
    """Experiment ``name``'s settings (``SMOKE`` or ``SETTINGS``, copied), with ``seeds`` in each if given."""
    module = get(name)
    out = [dict(s) for s in (module.SMOKE if smoke else module.SETTINGS)]
    for s in out if seeds is not None else ():
        s["seeds"] = seeds
    return out


def units(names: list[str], smoke: bool = False, seeds: int | None = None) -> list[list[tuple]]:
    """:func:`groups` as units of work ``(name, None)`` (the whole experiment) or ``(name, indices)`` (those of its
    settings): the settings of a :data:`SPLIT` experiment that no partner in its group shares (equal setting ids)
    move to groups of their own, one setting each."""
    from coverage_lab.sweep import setting_id

    out = []
    for group in groups(names):
        items, alone = [], []
        for name in group:
            own = [setting_id(s) for s in settings(name, smoke, seeds)]
            shared = {setting_id(s) for m in group if m != name for s in settings(m, smoke, seeds)}
            keep = tuple(i for i, sid in enumerate(own) if sid in shared)
            if name not in SPLIT or len(own) == 1 or len(keep) == len(own):
                items.append((name, None))
                continue
            items += [(name, keep)] if keep else []
            alone += [[(name, (i,))] for i in range(len(own)) if i not in keep]
        out += ([items] if items else []) + alone
    return out

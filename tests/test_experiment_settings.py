"""An experiment's ``run(setting, key)`` refuses a bad setting with a ValueError naming the key, before any work
(``experiments.check_setting``); every committed setting passes."""

import re

import jax
import pytest

import experiments
from experiments import _counts, separation_map

KEY = jax.random.key(0)


def run(name: str, setting: dict | None = None, *, smoke: int = 0, drop: tuple = (), key=KEY, **change):
    """``name``'s run on ``setting`` (default: its ``SMOKE[smoke]`` with ``change``, less the keys ``drop``)."""
    module = experiments.get(name)
    if setting is None:
        setting = {k: v for k, v in {**module.SMOKE[smoke], **change}.items() if k not in drop}
    return module.run(setting, key)


TRANSFORMERS = ("transformer_reverse_kl", "transformer_table")
CASES = [
    # 1. an unknown or misspelt key is refused, not ignored
    *[
        (f"misspelt step ({n})", lambda n=n: run(n, {"size": "toy", "step": 20}), "setting['step']")
        for n in TRANSFORMERS
    ],
    ("misspelt n_grid", lambda: run("rates", n_grids=(100,)), "setting['n_grids']"),
    ("misspelt lams", lambda: run("reverse_kl", lam=[0.1]), "setting['lam']"),
    ("unknown key (lower_bound)", lambda: run("lower_bound", eps=0.1), "setting['eps']"),
    ("misspelt knobs", lambda: run("separation_map", knob=("uniform",)), "setting['knob']"),
    ("misspelt seeds", lambda: run("extrapolation", seed=2), "setting['seed']"),
    ("misspelt tilt", lambda: run("ood_without_fa", {"tilts": 1.0}), "setting['tilts']"),
    ("the other part's key", lambda: run("kl_estimators", ks=[2]), "setting['ks']"),
    # 2. values that silently gave something else
    ("family 'Tabular'", lambda: run("separation_map", family="Tabular"), "setting['family']"),
    ("unknown knob", lambda: run("separation_map", knobs=("unifrom",)), "setting['knobs'][0]"),
    ("unknown method (separation_map)", lambda: run("separation_map", methods=("DPO",)), "setting['methods'][0]"),
    ("no methods", lambda: run("separation_map", methods=()), "setting['methods']"),
    ("n_pairs 0", lambda: run("separation_map", n_pairs=0), "setting['n_pairs']"),
    ("algorithms ['DPO']", lambda: run("reverse_kl", algorithms=["DPO"]), "setting['algorithms'][0]"),
    ("algorithms a string", lambda: run("reverse_kl", algorithms="dpo"), "setting['algorithms']"),
    ("negative lam", lambda: run("reverse_kl", lams=[-1.0]), "setting['lams'][0]"),
    ("n_grid (2.5,)", lambda: run("rates", n_grid=(2.5,)), "setting['n_grid'][0]"),
    ("n_grid (0,)", lambda: run("rates", n_grid=(0,)), "setting['n_grid'][0]"),
    ("mix 2", lambda: run("rates", mix=2.0), "setting['mix']"),
    ("n_samples 1 (sd NaN)", lambda: run("kl_estimators", n_samples=1), "setting['n_samples']"),
    ("n_samples 0", lambda: run("kl_estimators", n_samples=0), "setting['n_samples']"),
    ("n_samples 10.5", lambda: run("kl_estimators", n_samples=10.5), "setting['n_samples']"),
    ("tilt NaN", lambda: run("ood_without_fa", tilt=float("nan")), "setting['tilt']"),
    ("tilt a string", lambda: run("ood_without_fa", tilt="a"), "setting['tilt']"),
    ("tilt 50 (pi_ref underflows)", lambda: run("ood_without_fa", tilt=50.0), "setting['tilt']"),
    ("HyPO's lam 0 (ood_without_fa)", lambda: run("ood_without_fa", lam=0.0), "setting['lam']"),
    ("hypo_steps 45", lambda: run("ood_without_fa", hypo_steps=45), "setting['hypo_steps']"),
    # 3. errors that named something the user never set, or nothing
    ("no beta", lambda: run("lower_bound", drop=("beta",)), "setting['beta']"),
    ("no beta (rates)", lambda: run("rates", drop=("beta",)), "setting['beta']"),
    *[(f"no size ({n})", lambda n=n: run(n, {"seeds": 1}), "setting['size']") for n in TRANSFORMERS],
    *[(f"unknown size ({n})", lambda n=n: run(n, {"size": "nope"}), "setting['size']") for n in TRANSFORMERS],
    ("no part", lambda: run("kl_estimators", {"seeds": 2, "n_samples": 10}), "setting['part']"),
    ("unknown part", lambda: run("kl_estimators", {"part": "bogus"}), "setting['part']"),
    ("estimators without n_samples", lambda: run("kl_estimators", drop=("n_samples",)), "setting['n_samples']"),
    ("rloo without ks", lambda: run("kl_estimators", smoke=1, drop=("ks",)), "setting['ks']"),
    ("unknown method (rates)", lambda: run("rates", methods=["bogus"]), "setting['methods'][0]"),
    ("the old key method (rates)", lambda: run("rates", method="dpo"), "setting['method']"),
    ("a method twice (rates)", lambda: run("rates", methods=["dpo", "dpo"]), "setting['methods']"),
    ("no methods (rates)", lambda: run("rates", drop=("methods",)), "setting['methods']"),
    ("no family", lambda: run("separation_map", drop=("family",)), "setting['family']"),
    ("no instance", lambda: run("extrapolation", drop=("instance",)), "setting['instance']"),
    ("unknown instance", lambda: run("extrapolation", instance="bogus"), "setting['instance']"),
    *[
        (f"seeds 0 ({n})", lambda n=n: run(n, seeds=0), "setting['seeds']")
        for n in experiments.NAMES
        if n != "lower_bound"
    ],
    ("seeds 2.0", lambda: run("ood_without_fa", seeds=2.0), "setting['seeds']"),
    ("seeds a list where a count is read", lambda: run("rates", seeds=[0, 1]), "setting['seeds']"),
    ("steps 10 (extrapolation)", lambda: run("extrapolation", steps=10), "setting['steps']"),
    ("steps 10 (reverse_kl)", lambda: run("reverse_kl", steps=10), "setting['steps']"),
    ("steps 45 (reverse_kl)", lambda: run("reverse_kl", steps=45), "setting['steps']"),
    ("steps 45 (ood_without_fa)", lambda: run("ood_without_fa", steps=45), "setting['steps']"),
    ("steps 45 (lower_bound)", lambda: run("lower_bound", steps=45), "setting['steps']"),
    ("steps 45 (rates, hypo)", lambda: run("rates", smoke=1, steps=45), "setting['steps']"),
    ("steps 0 (rates)", lambda: run("rates", steps=0), "setting['steps']"),
    *[(f"steps 15 ({n})", lambda n=n: run(n, steps=15), "setting['steps']") for n in TRANSFORMERS],
    ("transformer lam 0", lambda: run("transformer_reverse_kl", lams=[0.0]), "setting['lams'][0]"),
    ("transformer lams repeated", lambda: run("transformer_reverse_kl", lams=[0.1, 0.1]), "setting['lams']"),
    ("a lam sweep in the table", lambda: run("transformer_table", lams=[0.1]), "setting['lams']"),
    ("rare_min 0", lambda: run("rates", rare_min=0.0), "setting['rare_min']"),
    ("rare_max 0.6", lambda: run("rates", rare_max=0.6), "setting['rare_max']"),
    ("n_eps 0", lambda: run("lower_bound", n_eps=0), "setting['n_eps']"),
    ("n_eps 2.5", lambda: run("lower_bound", n_eps=2.5), "setting['n_eps']"),
    ("negative beta", lambda: run("lower_bound", beta=-1.0), "setting['beta']"),
    ("replicates 1", lambda: run("kl_estimators", smoke=1, replicates=1), "setting['replicates']"),
    ("ks [1]", lambda: run("kl_estimators", smoke=1, ks=[1]), "setting['ks'][0]"),
    ("ks []", lambda: run("kl_estimators", smoke=1, ks=[]), "setting['ks']"),
    ("make_algorithm unknown method", lambda: _counts.make_algorithm("bogus", 1.0), "method"),
    # 4. a single name is not a list of its letters
    ("groups of a string", lambda: experiments.groups("rates"), "names"),
    # 5. a key that is not a JAX key; a setting that is not a dict
    *[(f"key 0 ({n})", lambda n=n: run(n, key=0), "key") for n in experiments.NAMES],
    ("setting a list", lambda: run("kl_estimators", [("part", "estimators")]), "setting"),
]


@pytest.mark.parametrize("call, param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_setting_raises_value_error_naming_the_key(call, param):
    with pytest.raises(ValueError, match=re.escape(param)):
        call()


@pytest.mark.parametrize("name", experiments.NAMES)
def test_every_committed_setting_passes_the_check(name):
    module = experiments.get(name)
    for setting in module.SETTINGS + module.SMOKE:
        experiments.check_setting(name, setting, KEY)
        experiments.check_setting(module, {**setting, "seeds": 2}, jax.random.PRNGKey(0))  # the CLI's --seeds


def test_separation_map_knob_names_are_those_it_builds():
    env = separation_map.make_instance("tabular", 0, 1.0)
    assert tuple(separation_map.knobs(env)) == separation_map.KNOBS


def test_groups_takes_a_list_or_a_tuple_of_names():
    assert experiments.groups(("rates",)) == experiments.groups(["rates"]) == [["rates"]]


@pytest.mark.parametrize("name", experiments.NAMES)
def test_plot_refuses_a_frame_without_the_columns_it_reads(name):
    """``plot`` names what it lacks (``experiments.check_frame``), not a KeyError from deep inside pandas."""
    import pandas as pd

    module = experiments.get(name)
    with pytest.raises(ValueError, match="df lacks the columns"):
        module.plot(pd.DataFrame())
    with pytest.raises(ValueError, match="df must be a pandas DataFrame"):
        module.plot(None)
    full = pd.DataFrame({c: [0.0] for c in module.PLOT_COLUMNS})
    with pytest.raises(ValueError, match=re.escape(f"['{module.PLOT_COLUMNS[-1]}']")):
        module.plot(full.drop(columns=[module.PLOT_COLUMNS[-1]]))
    with pytest.raises(ValueError, match="no rows"):
        module.plot(full.iloc[:0])

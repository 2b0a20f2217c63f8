"""Tabular DPO: mass on out-of-distribution responses rises when pi_ref prefers the losers, falls otherwise.

The appendix figure of arXiv:2406.01462 without function approximation (SPEC §4.6, §5). Parameterisation:
a tabular softmax (one free logit per ``(x, y)``, started at ``log pi_ref``) trained by *plain gradient
descent* (``optax.sgd``, no momentum, no Adam: Adam's per-coordinate scaling would break the invariant below)
on the exact population DPO loss. DPO's gradient on the logits of a pair is ``∝ e_w - e_l``, so a response
``mu`` never shows keeps its logit and the sum of the covered logits of each prompt is conserved. The mass
on the unseen responses, ``1 / (1 + sum_covered exp(z) / sum_unseen exp(z))``, then moves against the spread
of the covered logits: by convexity of ``exp`` it falls when DPO widens the margins in the direction
``pi_ref`` already prefers, and rises when ``pi_ref`` prefers the losers, so that DPO first has to narrow them.

Instances: as ``bandits.random_tabular`` (8 prompts, 12 responses, ``r* in [0, 1]``) with its reference policy
replaced by ``coverage.reward_softmax(r*, tilt / beta)``: ``pi_ref ∝ exp(tilt r*/beta)`` prefers the winners
for ``tilt > 0``, the losers for ``tilt < 0``; ``mu = coverage.restrict(pi_ref, mask)`` hides 4 random
responses per prompt. DPO's population optimum is ``pi_ref exp(r*/beta)`` on the covered responses, so at
``tilt = -1`` its target flattens them (most mass to the unseen), at ``tilt = +1`` it doubles their spread.
In general the covered logits go from ``tilt r*/beta`` to ``(1 + tilt) r*/beta`` (plus the constant that
conserves their sum), so the unseen mass ends higher when their spread shrinks, ``|1 + tilt| < |tilt|``:
``tilt < -1/2``, up to the asymmetry of ``r*`` within a prompt (at ``-1/2`` it rises and comes back).
Each setting is one ``tilt``; its seeds are ``seeds`` random instances drawn from the numpy seeds ``0, 1, ...`` (the
same instances for every tilt). Logged per step: ``ood_mass`` (``E_x pi(y: mu(y|x) = 0 | x)``),
``logp_chosen``, ``logp_rejected`` and the DPO ``loss``.
"""

from __future__ import annotations

import numpy as np
import optax
import pandas as pd

from coverage_lab import _validate as V
from coverage_lab import algorithms as A
from coverage_lab import bandits, plotting
from coverage_lab import coverage as C
from coverage_lab.simulation import simulate
from experiments import check_setting, integer, logged_steps

TILTS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
SETTINGS = [{"tilt": t, "seeds": 10} for t in TILTS]
SMOKE = [{"tilt": -1.0, "seeds": 2, "steps": 100}, {"tilt": 1.0, "seeds": 2, "steps": 100}]
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "tilt": V.number,
    "seeds": integer(1),  # default 10
    "steps": logged_steps(1),  # default STEPS
}
REQUIRED = ("tilt",)

BETA = 0.25
N_PROMPTS, N_RESPONSES, N_UNSEEN = 8, 12, 4
STEPS = 600
OPTIMIZER = optax.sgd(100.0)  # plain gradient descent; one instance, so every run shares one compiled program
SHOWN = {-1.0: "π_ref prefers the losers (tilt −1)", 1.0: "π_ref prefers the winners (tilt +1)"}


def instance(seed: int, tilt: float) -> tuple[bandits.TabularBandit, np.ndarray]:
    """``(env, mu)``: a random tabular bandit with ``pi_ref ∝ exp(tilt r*/beta)`` and ``N_UNSEEN`` hidden responses.

    As ``bandits.random_tabular`` (Dirichlet ``rho``, uniform ``r*``), drawn with numpy: JAX's Dirichlet
    sampler costs seconds of compilation, more than the whole training here.
    """
    rng = np.random.default_rng(seed)
    rho = rng.dirichlet(np.ones(N_PROMPTS))
    reward = rng.uniform(size=(N_PROMPTS, N_RESPONSES))
    pi_ref = C.reward_softmax(reward, tilt / BETA)
    hidden = np.argsort(rng.uniform(size=reward.shape), -1)[:, :N_UNSEEN]
    mask = np.ones(reward.shape, bool)
    np.put_along_axis(mask, hidden, False, -1)
    return bandits.TabularBandit(rho, pi_ref, reward), C.restrict(pi_ref, mask)


def run(setting: dict, key) -> pd.DataFrame:
    """Exact tabular DPO by gradient descent on ``seeds`` instances at one ``tilt``; tidy rows."""
    check_setting(__name__, setting, key)
    tilt = float(setting["tilt"])
    frames = []
    for i in range(setting.get("seeds", 10)):
        env, mu = instance(i, tilt)
        df = simulate(
            env,
            A.dpo(BETA),
            mu=mu,
            n_pairs=None,
            steps=setting.get("steps", STEPS),
            seeds=1,
            key=key,
            optimizer=OPTIMIZER,
            metrics=("ood_mass", "logp_chosen", "logp_rejected", "loss"),
        )
        frames.append(df.assign(seed=i))
    return pd.concat(frames, ignore_index=True)[["algorithm", "seed", "step", "metric", "value"]]


def plot(df: pd.DataFrame):
    """(a) ood mass over training at tilt ±1; (b) its change over training against the tilt."""
    fig, (ax, ax2) = plotting.figure(2, width=4.2, height=3.0)
    ood = df[df["metric"] == "ood_mass"]
    for tilt, label in SHOWN.items():
        d = ood[np.isclose(ood["tilt"], tilt)]
        if len(d):
            c = plotting.color("dpo") if tilt < 0 else plotting.color("rlhf")
            plotting.band(ax, d.assign(regime=label), by="regime", color=c)
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel("mass on responses μ never shows")
    ax.set_title("(a) exact DPO loss, plain gradient descent", loc="left")
    ax.legend(fontsize=8)

    last, first = ood["step"].max(), ood["step"].min()
    change = (
        ood[ood["step"] == last].set_index(["tilt", "seed"])["value"]
        - ood[ood["step"] == first].set_index(["tilt", "seed"])["value"]
    ).groupby("tilt")
    stats = change.agg(["median", "min", "max"])
    ax2.axhline(0.0, color=plotting.color("reference"), lw=1)
    ax2.axvline(-0.5, color=plotting.color("reference"), lw=1, ls=":", label="theory: rises for tilt < −1/2")
    ax2.plot(stats.index, stats["median"], "o-", color=plotting.color("dpo"), lw=1.6, label="median")
    ax2.fill_between(stats.index, stats["min"], stats["max"], color=plotting.color("dpo"), alpha=0.2, lw=0)
    ax2.set_xlabel("tilt: π_ref ∝ exp(tilt · r*/β)")
    ax2.set_ylabel(f"change in OOD mass, step {first} → {last}")
    ax2.set_title("(b) change of OOD mass against the tilt", loc="left")
    ax2.legend(fontsize=8)
    fig.suptitle(
        f"Out-of-distribution mass under tabular DPO (no function approximation), median and min–max over "
        f"{df['seed'].nunique()} random instances",
        fontsize=9,
    )
    return fig

"""Tabular DPO: mass on unseen responses rises when pi_ref prefers the losers, falls otherwise; HyPO's always rises.

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

HyPO on the same instances, by the same gradient descent (``hypo_steps`` steps, ``lam`` the transformer's
``LAM``): its KL term is the only force on an unseen logit, ``lam rho(x) pi(y|x) [log(pi/pi_ref)(y) - KL_x]``,
so at a stationary point every unseen response has ``pi = pi_ref exp(KL_x)`` and HyPO's unseen mass is
``E_x pi_ref(U_x) exp(KL_x) >= pi_ref``'s, whichever way ``pi_ref`` leans (``exact.hypo_unseen_mass``, logged as
``ood_mass_stationary`` beside its ``ood_mass`` and ``kl``). The KL penalty does not keep mass off what the data
never shows: it pulls the unseen responses up with the policy's KL. This is the tabular form of the transformer
track's finding that HyPO puts more mass than DPO on responses ``mu`` never shows (``transformer_reverse_kl``).
"""

from __future__ import annotations

import numpy as np
import optax
import pandas as pd

from coverage_lab import _validate as V
from coverage_lab import algorithms as A
from coverage_lab import bandits, exact, plotting
from coverage_lab import coverage as C
from coverage_lab import simulation as S
from experiments import between, check_frame, check_setting, integer, logged_steps

TILTS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
SETTINGS = [{"tilt": t, "seeds": 10} for t in TILTS]
SMOKE = [{"tilt": t, "seeds": 2, "steps": 100, "hypo_steps": 1000} for t in (-1.0, 1.0)]
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "tilt": between(-10.0, 10.0),  # pi_ref ∝ exp(tilt r*/beta): ratios to e^40 (near |tilt| 22 it underflows float32)
    "seeds": integer(1),  # default 10
    "steps": logged_steps(1),  # default STEPS
    "lam": V.positive,  # HyPO's; default LAM
    "hypo_steps": logged_steps(1),  # default HYPO_STEPS
}
REQUIRED = ("tilt",)

BETA = 0.25
N_PROMPTS, N_RESPONSES, N_UNSEEN = 8, 12, 4
STEPS = 600
LAM = 0.01  # HyPO's KL weight: the transformer track's
HYPO_STEPS = 3000  # the KL term moves an unseen logit at a rate ~ lam pi(y): HyPO needs longer to settle
OPTIMIZER = optax.sgd(100.0)  # plain gradient descent; one instance, so every run shares one compiled program
SHOWN = {-1.0: "π_ref prefers the losers (tilt −1)", 1.0: "π_ref prefers the winners (tilt +1)"}


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = ("algorithm", "seed", "step", "metric", "value", "tilt", "lam")


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
    """Exact tabular DPO and HyPO by gradient descent on ``seeds`` instances at one ``tilt``; tidy rows."""
    check_setting(__name__, setting, key)
    tilt = float(setting["tilt"])
    hypo = A.hypo(BETA, setting.get("lam", LAM))
    names = ("ood_mass", "kl", "logp_chosen", "logp_rejected", "loss")
    frames = []
    for i in range(setting.get("seeds", 10)):
        env, mu = instance(i, tilt)
        for alg, steps in ((A.dpo(BETA), setting.get("steps", STEPS)), (hypo, setting.get("hypo_steps", HYPO_STEPS))):
            opts = dict(mu=mu, n_pairs=None, steps=steps, seeds=1, key=key, optimizer=OPTIMIZER)
            r = S.run(env, alg, **opts)
            df = S.tidy(r, env, alg, mu=mu, beta=BETA, n_pairs=None, metrics=names)
            if alg.name == "hypo":
                df = pd.concat([df, _stationary(r, env, mu, hypo.hparams["lam"])], ignore_index=True)
            frames.append(df.assign(seed=i))
    return pd.concat(frames, ignore_index=True)[["algorithm", "seed", "step", "metric", "value", "lam"]]


def _stationary(r: S.Run, env, mu, lam: float) -> pd.DataFrame:
    """``ood_mass_stationary``: HyPO's unseen mass at a stationary point with the KL of each snapshot."""
    pi_LxXxY = np.exp(np.asarray(r.logs["eval"][0], np.float64))
    pi_LxXxY /= pi_LxXxY.sum(-1, keepdims=True)  # float32 tables, renormalised in float64
    unseen = np.asarray(mu) == 0
    value = [exact.hypo_unseen_mass(pi, env.pi_ref_XxY, unseen, env.rho_X) for pi in pi_LxXxY]
    step = np.asarray(r.logs["step"])[0]
    rows = {"algorithm": "hypo", "step": step, "metric": "ood_mass_stationary", "value": value, "lam": lam}
    return pd.DataFrame(rows)


def _change(ood: pd.DataFrame) -> pd.DataFrame:
    """Median, min and max over seeds of each run's change in ``value`` from its first to its last log point,
    per tilt."""
    ends = ood.sort_values("step").groupby(["tilt", "seed"])["value"]
    return (ends.last() - ends.first()).groupby("tilt").agg(["median", "min", "max"])


def plot(df: pd.DataFrame):
    """(a) DPO's ood mass over training at tilt ±1; (b) its change over training against the tilt; (c) HyPO's at
    tilt ±1, with its stationary value ``E_x pi_ref(U_x) exp(KL_x)``; (d) HyPO's change against the tilt."""
    check_frame(df, PLOT_COLUMNS)
    algs = [a for a in ("dpo", "hypo") if (df["algorithm"] == a).any()]
    fig, axes = plotting.figure(2, len(algs), width=4.2, height=3.0)
    for row, alg in enumerate(algs):
        ax, ax2 = axes[2 * row : 2 * row + 2]
        runs = df[df["algorithm"] == alg]
        ood = runs[runs["metric"] == "ood_mass"]
        for tilt, label in SHOWN.items():
            c = plotting.color("dpo") if tilt < 0 else plotting.color("rlhf")
            d = ood[np.isclose(ood["tilt"], tilt)]
            if len(d):
                plotting.band(ax, d.assign(regime=label), by="regime", color=c)
            stationary = runs[(runs["metric"] == "ood_mass_stationary") & np.isclose(runs["tilt"], tilt)]
            if len(stationary):
                median = stationary.groupby("step")["value"].median()
                ax.plot(median.index, median.values, color=c, ls="--", lw=1.1, label="π_ref(U) e^KL, median")
        ax.set_xlabel("gradient-descent step")
        ax.set_ylabel("mass on responses μ never shows")
        name = "DPO" if alg == "dpo" else f"HyPO (λ={runs['lam'].iloc[0]:g})"
        ax.set_title(f"({'ac'[row]}) {name}, exact loss, plain gradient descent", loc="left", fontsize=9)
        ax.legend(fontsize=7)

        stats = _change(ood)
        ax2.axhline(0.0, color=plotting.color("reference"), lw=1)
        if alg == "dpo":
            ax2.axvline(-0.5, color=plotting.color("reference"), lw=1, ls=":", label="theory: rises for tilt < −1/2")
        else:
            pred = _change(runs[runs["metric"] == "ood_mass_stationary"])
            if "dpo" in algs:
                ref = _change(df[(df["algorithm"] == "dpo") & (df["metric"] == "ood_mass")])
                ax2.plot(ref.index, ref["median"], color=plotting.color("dpo"), lw=1, ls=":", label="DPO, median")
            # the stationary value's change from pi_ref's unseen mass (its value at step 0, where KL = 0)
            ax2.plot(pred.index, pred["median"], "x", color="k", ms=5, label="π_ref(U)(e^KL − 1), median")
        c = plotting.color(alg)
        ax2.plot(stats.index, stats["median"], "o-", color=c, lw=1.6, label="median")
        ax2.fill_between(stats.index, stats["min"], stats["max"], color=c, alpha=0.2, lw=0)
        ax2.set_xlabel("tilt: π_ref ∝ exp(tilt · r*/β)")
        first, last = ood["step"].min(), ood["step"].max()
        ax2.set_ylabel(f"change in OOD mass, step {first} → {last}")
        ax2.set_title(f"({'bd'[row]}) {name}: change against the tilt", loc="left", fontsize=9)
        ax2.legend(fontsize=7)
    fig.suptitle(
        f"Mass on unseen responses, tabular DPO and HyPO (no function approximation): median and min–max over "
        f"{df['seed'].nunique()} random instances",
        fontsize=9,
    )
    return fig

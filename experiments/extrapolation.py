"""Extrapolation with linear features: log pi of the unseen response rises, the seen preferred ones fall.

The appendix figure of arXiv:2406.01462 on function approximation (SPEC §4.6, §5). A log-linear policy
``pi_theta(y) ∝ exp(phi(y) . theta)`` trained on pairs that never show one response still moves that
response's probability, through the shared parameters. Three instances, each with DPO and online RLHF
(bounded Bradley–Terry reward model, then RLOO policy gradient), sampled pairs, ``seeds`` seeds each:

- ``covered``: ``bandits.linear_extrapolation(covered=True)``: ``phi(y1)=(1,0)``, ``phi(y2)=(0,1)``,
  ``phi(y3)=(2,-1)``, ``theta*=(1,0)``, pairs only on ``(y1, y2)``. Every feature difference is parallel to
  the covered ``(1,-1)``, so the unseen ``y3`` is the best response and both methods move mass to it, while
  ``log pi`` of the seen chosen responses falls.
- ``uncovered``: ``covered=False``: ``y3`` has a third feature the data never sees and is the worst response
  (``theta*=(1,0,-3)``); the same extrapolation now lowers the value (harmful). RLHF's reward model sees the
  same covered direction, rates ``y3`` highest too, and is harmed about as much: its KL ball
  (``R_MAX / beta``) is no constraint with three responses and a uniform ``pi_ref``.
- ``random``: as ``bandits.random_linear`` (4 prompts, 30 responses, 5 features); ``mu`` is ``pi_ref`` with the
  best response of every prompt zeroed (``coverage.deficient``), so the best is never in the data, yet it
  lies in the covered feature span (the relative condition number of ``pi*`` to ``mu`` is finite).

The pairs are ``mu ⊗ mu`` without ties (``y = y'`` pairs carry no signal), Bradley–Terry labels. Logged:
``logp_chosen``/``logp_rejected`` (data-weighted mean of ``log pi`` of the pairs' responses), ``logp_unseen``
(``E_x log pi(y never shown by mu | x)``; one such response per prompt here), ``logp_best``, ``value`` ``J``,
and per instance ``value_optimal`` ``J(pi*)``, ``feature_coverage`` (of ``pi*`` relative to ``mu``) and
``unseen_gap`` (``max r* - r*(unseen)``, 0 when the unseen response is the best).
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from coverage_lab import algorithms as A
from coverage_lab import bandits, plotting
from coverage_lab import coverage as C
from coverage_lab import exact as E
from coverage_lab import metrics as M
from coverage_lab.simulation import run as run_compiled
from experiments import check_frame, check_setting, logged_steps, one_of, seed_ids

INSTANCES = ("covered", "uncovered", "random")
SETTINGS = [{"instance": name, "seeds": 10} for name in INSTANCES]
SMOKE = [{"instance": name, "seeds": 3, "steps": 100} for name in ("covered", "uncovered")]
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "instance": one_of(*INSTANCES),
    "seeds": seed_ids,  # default 10
    "steps": logged_steps(20),  # default STEPS; logged every steps // 20
}
REQUIRED = ("instance",)

BETA = 0.25  # KL weight of J, DPO's beta and RLHF's beta
R_MAX = 4.0  # bound of RLHF's reward model, r_hat in [0, R_MAX]: wide enough for every instance's reward range
K = 4  # on-policy samples per prompt for RLHF's RLOO
STEPS = 400
LEARNING_RATE = 0.05
N_PAIRS = {"covered": 64, "uncovered": 64, "random": 128}


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = ("algorithm", "seed", "step", "metric", "value", "instance")


def random_linear(key, n_prompts: int, n_responses: int, dim: int, *, ref_scale: float) -> bandits.LinearBandit:
    """``bandits.random_linear``'s recipe (Dirichlet ``rho``, Gaussian features, unit-norm ``theta*``, ``theta_ref``
    of norm ``ref_scale``) drawn with numpy from ``key``'s bits: JAX's Dirichlet and normal samplers cost seconds
    of compilation per process, more than a whole run here."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    theta_star, theta_ref = rng.normal(size=dim), rng.normal(size=dim)
    return bandits.LinearBandit(
        rng.dirichlet(np.ones(n_prompts)),
        rng.normal(size=(n_prompts, n_responses, dim)),
        theta_star / np.linalg.norm(theta_star),
        ref_scale * theta_ref / np.linalg.norm(theta_ref),
    )


def instance(name: str, key) -> tuple[bandits.LinearBandit, np.ndarray]:
    """``(env, mu)`` of the named instance (``random`` is drawn from ``key``)."""
    if name in ("covered", "uncovered"):
        return bandits.linear_extrapolation(covered=name == "covered")
    if name == "random":
        env = random_linear(key, 4, 30, 5, ref_scale=0.5)
        return env, C.deficient(np.asarray(env.pi_ref_XxY), 1, np.asarray(env.reward_XxY))
    raise ValueError(f"instance must be one of {INSTANCES}, got {name!r}")


def _pairs_without_ties(mu_XxY) -> np.ndarray:
    pair = C.pair_table(mu_XxY)
    pair[:, np.arange(pair.shape[1]), np.arange(pair.shape[1])] = 0.0
    return pair / pair.sum((1, 2), keepdims=True)


def run(setting: dict, key) -> pd.DataFrame:
    """DPO and RLHF on one instance; tidy rows (algorithm, seed, step, metric, value)."""
    check_setting(__name__, setting, key)
    name = setting["instance"]
    k_env, k_run = jax.random.split(key)
    env, mu = instance(name, k_env)
    rho, pi_ref, reward = (np.asarray(a, np.float64) for a in (env.rho_X, env.pi_ref_XxY, env.reward_XxY))
    unseen = mu == 0
    pi_star = E.optimal_policy(reward, pi_ref, BETA)
    constants = {
        "value_optimal": E.optimal_value(reward, pi_ref, rho, BETA),
        "feature_coverage": C.feature_coverage(env.phi_XxYxD, pi_star, mu, rho),
        "unseen_gap": float(rho @ (reward.max(-1) - np.where(unseen, reward, -np.inf).max(-1))),
    }
    frames = []
    for alg in (A.dpo(BETA), A.rlhf(BETA, r_max=R_MAX, k=K)):
        steps = setting.get("steps", STEPS)
        r = run_compiled(
            env,
            alg,
            mu=mu,
            pair_XxYxY=_pairs_without_ties(mu),
            n_pairs=N_PAIRS[name],
            steps=steps,
            seeds=setting.get("seeds", 10),
            key=k_run,
            log_every=steps // 20,
            learning_rate=LEARNING_RATE,
        )
        step = np.asarray(r.logs["step"][0])
        for i, seed in enumerate(r.seed_ids):
            logp = np.asarray(r.logs["eval"][i], np.float64)  # (L, X, Y)
            data = jax.tree.map(lambda a, i=i: np.asarray(a[i]), r.data)
            pi = np.exp(logp)
            values = {
                **{m: v for m, v in M.policy_metrics(logp, env, beta=BETA).items() if m in ("value", "logp_best")},
                **{m: v for m, v in M.data_metrics(logp, data, *pi_ref.shape).items() if m.startswith("logp")},
                "logp_unseen": np.log((pi * unseen).sum(-1)) @ rho,
                **{m: np.full(len(step), v) for m, v in constants.items()},
            }
            for m, v in values.items():
                row = {"algorithm": alg.name, "seed": seed, "step": step, "metric": m, "value": v}
                frames.append(pd.DataFrame(row))
    return pd.concat(frames, ignore_index=True)


PANELS = (
    ("logp_chosen", "log π of seen chosen responses"),
    ("logp_unseen", "log π of the unseen response"),
    ("value", "value J(π)"),
)


def plot(df: pd.DataFrame):
    """Rows: instances; columns: log pi of chosen, log pi of the unseen response, value (median, min–max)."""
    check_frame(df, PLOT_COLUMNS)
    names = [n for n in INSTANCES if n in set(df["instance"])]
    fig, axes = plotting.figure(len(PANELS), len(names), width=3.4, height=2.5)
    for row, name in enumerate(names):
        d = df[df["instance"] == name]
        const = d[d["step"] == 0].groupby("metric")["value"].first()
        gap = const["unseen_gap"]
        what = "best" if gap <= 1e-12 else f"r* {gap:.2f} below best"
        for col, (metric, label) in enumerate(PANELS):
            ax = axes[row * len(PANELS) + col]
            plotting.band(ax, d[d["metric"] == metric])
            if metric == "value":
                ax.axhline(const["value_optimal"], color=plotting.color("reference"), ls="--", lw=1, label="J(π*)")
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
            if col == 0:
                ax.set_title(f"{name} (unseen: {what})", loc="left", fontsize=8)
            elif col == 1:
                ax.set_title(f"feature coverage of π* by μ: {const['feature_coverage']:.3g}", loc="left", fontsize=8)
            if row == 0 and col == len(PANELS) - 1:
                ax.legend()
    fig.suptitle(
        f"Log-linear policy, pairs never show one response: DPO vs RLHF, median and min–max over "
        f"{df['seed'].nunique()} seeds",
        fontsize=9,
    )
    return fig

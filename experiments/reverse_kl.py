"""Figure 1 in a linear bandit: DPO's reverse KL keeps climbing over training, HyPO's stays far lower.

arXiv:2406.01462, Figure 1 (SPEC §5), in miniature. Instance: as ``bandits.random_linear``, with 8 prompts,
50 responses, 16 features; ``mu`` is ``pi_ref`` with the 10 highest-reward responses of every prompt zeroed
(``coverage.deficient``), and each seed draws only ``N_PAIRS = 32`` labelled pairs from ``mu ⊗ mu``
(Bradley–Terry labels), fewer than twice the feature dimension. A log-linear policy, constant-step Adam
(``OPTIMIZER``; no decay, so a flattening curve is the method's, not the schedule's).

- DPO: its implicit reward ``beta log(pi/pi_ref)`` is unbounded, and 32 pairs in 16 dimensions are often
  separable by a linear reward; then its training loss reaches its floor only as the margins go to infinity,
  the policy runs out towards a vertex of the feature hull and the reverse KL keeps climbing. Seeds whose
  pairs are not separable level off, at a KL still well above ``KL(pi* || pi_ref)``.
- HyPO (Algorithm 1): the same DPO term plus ``lam * KL(pi || pi_ref)`` estimated by RLOO on ``K = 4``
  unlabelled samples per prompt from the current policy.
- Online RLHF: a reward model bounded in ``[0, R_MAX]`` fitted on the same pairs, then RLOO with the KL in the
  reward; its KL is at most ``R_MAX / beta`` whatever the data (SPEC §4.3).

Choosing ``lam``: HyPO is run for every ``lam`` in ``LAMS`` (traced, one compiled program) and the figure's
curve is the ``lam`` with the lowest *held-out DPO loss* at the end of training: the DPO loss on ``N_VAL`` (32)
labelled pairs of ``mu ⊗ mu`` held out from training (a second draw as large as the training set, the data a
researcher would set aside). The rule is applied on selection seeds of their own (``split = "select"`` in the
CSV: seed ids ``SELECT_OFFSET + s``, other datasets), and the figure reports the chosen ``lam`` on the reported
seeds (``split = "report"``), so the choice is not fitted to the runs it is judged on. That rule uses neither
the true reward off the data nor the KL, so it does not pick ``lam`` for the property the figure shows; the last
panels show the whole sweep, so the choice can be checked. Beside it panel (c) draws the population DPO loss
(``val_loss``, an infinitely large held-out split, which no researcher has): where it is flat over several
``lam`` (Bradley–Terry label noise dominates it), 32 held-out pairs cannot tell those apart either, and the rule
may land on a strongly regularised HyPO that barely leaves ``pi_ref``; panel (d) and the CSV give the KL and
value of every other ``lam``.

Metrics: ``kl`` is the exact reverse KL ``E_x KL(pi(.|x) || pi_ref(.|x))`` over all prompts (the bandit's
"validation" KL); ``value`` is ``J`` at the same ``beta``; ``heldout_loss`` the DPO loss on the run's held-out
pairs (the rule's); ``val_loss`` the population DPO loss on ``mu``'s pairs; ``loss`` the training objective.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pandas as pd

from coverage_lab import _validate as V
from coverage_lab import algorithms as A
from coverage_lab import bandits, plotting
from coverage_lab import coverage as C
from coverage_lab import data as D
from coverage_lab import exact as E
from coverage_lab import metrics as M
from coverage_lab.simulation import run as run_compiled
from experiments import check_frame, check_setting, each, logged_steps, one_of, seed_ids
from experiments.extrapolation import random_linear

SETTINGS = [{"seeds": 5}]
SMOKE = [{"seeds": 3, "steps": 200, "lams": [0.3], "algorithms": ["dpo", "rlhf", "hypo"]}]

BETA = 0.5  # pi* stays near pi_ref (KL(pi*||pi_ref) about 1.4 here): a KL far above that is overfitting
LAMS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
R_MAX = 4.0
K = 4
N_PAIRS = 32
N_PROMPTS, N_RESPONSES, DIM, N_DEFICIENT = 8, 50, 16, 10
STEPS = 1000
OPTIMIZER = optax.adam(0.02)  # one instance: every run shares the compiled program of its algorithm
SELECT_OFFSET = 1000  # HyPO's selection seeds are SELECT_OFFSET + s for each reported seed s
N_VAL = N_PAIRS  # held-out labelled pairs per run (a second draw as large as the training set), for lam's rule
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "seeds": seed_ids,  # default 5
    "steps": logged_steps(20),  # default STEPS; logged every steps // 20
    "lams": each(V.nonnegative),  # HyPO's, default LAMS
    "algorithms": each(one_of("dpo", "rlhf", "hypo")),  # default all three
}
REQUIRED = ()


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = ("algorithm", "seed", "step", "metric", "value", "lam", "split", "beta", "n_pairs")


def cross_check(setting: dict) -> None:
    """Reported seed ids stay below ``SELECT_OFFSET``, where the selection seeds start."""
    ids = V.seed_ids(setting.get("seeds", 5))
    if max(ids) >= SELECT_OFFSET:
        raise ValueError(f"setting['seeds'] ids must be below {SELECT_OFFSET} (the selection seeds), got {max(ids)}")


def instance(key) -> tuple[bandits.LinearBandit, np.ndarray]:
    """``(env, mu)``: the random linear bandit and ``pi_ref`` without its ``N_DEFICIENT`` best responses."""
    env = random_linear(key, N_PROMPTS, N_RESPONSES, DIM, ref_scale=1.0)
    return env, C.deficient(np.asarray(env.pi_ref_XxY), N_DEFICIENT, np.asarray(env.reward_XxY))


def validation_loss(logp_NxXxY, env, mu_XxY, beta) -> np.ndarray:
    """Population DPO loss on ``mu ⊗ mu`` pairs with Bradley–Terry labels, per policy: (N,). Pairs ``mu`` never
    draws count for nothing, whatever mass the policy gives them (``-inf`` log-probabilities included)."""
    rho, pi_ref, reward = (np.asarray(a, np.float64) for a in (env.rho_X, env.pi_ref_XxY, env.reward_XxY))
    d = _log_ratios(logp_NxXxY, pi_ref, beta)
    with np.errstate(invalid="ignore"):
        margin = beta * (d[..., :, None] - d[..., None, :])  # (N, X, Y, Y): a over b
    w = rho[:, None, None] * C.pair_table(mu_XxY) * bandits.preference_table(reward)  # drawn (a, b), a wins
    drawn = np.broadcast_to(w > 0, margin.shape)
    if np.isnan(margin[drawn]).any():
        raise ValueError("logp_NxXxY gives no mass to both responses of a pair mu draws: its DPO loss is undefined")
    with np.errstate(invalid="ignore"):  # NaN margins of undrawn pairs are dropped by the where
        per_pair = np.where(drawn, np.logaddexp(0.0, -margin), 0.0)
    return 2.0 * np.einsum("xab,nxab->n", w, per_pair)


def _log_ratios(logp_NxXxY, pi_ref, beta):
    """``log pi - log pi_ref`` per policy, after checking the tables and ``beta``."""
    V.positive("beta", beta)
    logp = V.log_prob_table("logp_NxXxY", logp_NxXxY)
    if logp.ndim != 3 or logp.shape[1:] != pi_ref.shape:
        raise ValueError(f"logp_NxXxY must have shape (N, {pi_ref.shape[0]}, {pi_ref.shape[1]}), got {logp.shape}")
    with np.errstate(divide="ignore"):
        return logp - np.log(pi_ref)


def heldout_pairs(env, mu_XxY, key) -> D.Batch:
    """``N_VAL`` labelled pairs ``(y, y') ~ mu ⊗ mu`` (Bradley–Terry labels on the true reward) drawn with ``key``."""
    pref = bandits.preference_table(np.asarray(env.reward_XxY))
    return D.sample_pairs(key, np.asarray(env.rho_X), C.pair_table(mu_XxY), pref, N_VAL)


def heldout_loss(logp_NxXxY, env, pairs: D.Batch, beta) -> np.ndarray:
    """The DPO loss on held-out labelled pairs, ``sum_i w_i softplus(-beta (d(y_w) - d(y_l)))`` with
    ``d = log pi - log pi_ref``, per policy: (N,). Its expectation over the draw is :func:`validation_loss`."""
    x, y_w, y_l, w = (np.asarray(a) for a in (pairs.x_B, pairs.y_w_B, pairs.y_l_B, pairs.weight_B))
    d = _log_ratios(logp_NxXxY, np.asarray(env.pi_ref_XxY, np.float64), beta)
    return np.logaddexp(0.0, -beta * (d[:, x, y_w] - d[:, x, y_l])) @ w.astype(np.float64)


def run(setting: dict, key) -> pd.DataFrame:
    """DPO, RLHF and HyPO over ``lams``; tidy rows with ``lam`` (NaN for DPO and RLHF), ``beta``, ``n_pairs``."""
    check_setting(__name__, setting, key)
    k_env, k_run, k_val = jax.random.split(key, 3)  # k_env and k_run as split(key) gives them: the same runs
    env, mu = instance(k_env)
    rho, pi_ref, reward = (np.asarray(a, np.float64) for a in (env.rho_X, env.pi_ref_XxY, env.reward_XxY))
    steps = setting.get("steps", STEPS)
    which = setting.get("algorithms", ("dpo", "rlhf", "hypo"))
    algs = [A.dpo(BETA)] if "dpo" in which else []
    algs += [A.rlhf(BETA, r_max=R_MAX, k=K)] if "rlhf" in which else []
    algs += [A.hypo(BETA, lam=lam, k=K) for lam in setting.get("lams", LAMS)] if "hypo" in which else []
    report = V.seed_ids(setting.get("seeds", 5))
    select = [SELECT_OFFSET + s for s in report]
    heldout = {s: heldout_pairs(env, mu, jax.random.fold_in(k_val, s)) for s in report + select}
    frames = []
    for alg in algs:
        r = run_compiled(
            env,
            alg,
            mu=mu,
            n_pairs=N_PAIRS,
            steps=steps,
            seeds=report + select if alg.name == "hypo" else report,
            key=k_run,
            log_every=steps // 20,
            optimizer=OPTIMIZER,
        )
        step = np.asarray(r.logs["step"][0])
        for i, seed in enumerate(r.seed_ids):
            split = "select" if seed >= SELECT_OFFSET else "report"
            logp = np.asarray(r.logs["eval"][i], np.float64)  # (L, X, Y)
            pm = M.policy_metrics(logp, env, beta=BETA)
            values = {
                "kl": pm["kl"],
                "value": pm["value"],
                "heldout_loss": heldout_loss(logp, env, heldout[seed], BETA),
                "val_loss": validation_loss(logp, env, mu, BETA),
                "loss": np.asarray(r.logs["metrics"]["loss"][i], np.float64),
            }
            for m, v in values.items():
                row = {"algorithm": alg.name, "seed": seed, "step": step, "metric": m, "value": v}
                frames.append(pd.DataFrame(row).assign(lam=alg.hparams.get("lam", np.nan), split=split))
    consts = {
        "kl_optimal": E.reverse_kl(E.optimal_policy(reward, pi_ref, BETA), pi_ref, rho),
        "value_optimal": E.optimal_value(reward, pi_ref, rho, BETA),
    }
    ref = [
        {"algorithm": "optimal", "seed": 0, "step": 0, "metric": m, "value": v, "lam": np.nan, "split": "report"}
        for m, v in consts.items()
    ]
    out = pd.concat([*frames, pd.DataFrame(ref)], ignore_index=True)
    return out.assign(beta=BETA, n_pairs=N_PAIRS)


def selected_lam(df: pd.DataFrame) -> float:
    """The ``lam`` whose HyPO run has the lowest final held-out DPO loss (median over the selection seeds)."""
    check_frame(df, ("algorithm", "metric", "split", "step", "lam", "value"))
    h = df[(df["algorithm"] == "hypo") & (df["metric"] == "heldout_loss") & (df["split"] == "select")]
    if h.empty:
        raise ValueError("df has no held-out loss of HyPO on the selection seeds: nothing to select lam from")
    final = h[h["step"] == h["step"].max()].groupby("lam")["value"].median()
    return float(final.idxmin())


def plot(df: pd.DataFrame):
    """(a) reverse KL and (b) value over training for DPO, RLHF and the selected HyPO; (c, d) the lam sweep."""
    check_frame(df, PLOT_COLUMNS)
    lam = selected_lam(df)
    opt = df[df["algorithm"] == "optimal"].set_index("metric")["value"]
    selection = df[df["split"] == "select"]
    df = df[df["split"] == "report"]
    runs = df[(df["algorithm"] != "optimal") & ((df["algorithm"] != "hypo") | np.isclose(df["lam"], lam))]
    runs = runs.assign(label=runs["algorithm"].where(runs["algorithm"] != "hypo", f"hypo (λ={lam:g})"))
    fig, axes = plotting.figure(2, 2, width=4.0, height=2.9)
    n_seeds = runs["seed"].nunique()
    for ax, metric, ylabel, ref, ref_label in (
        (axes[0], "kl", "reverse KL(π‖π_ref)", "kl_optimal", "KL(π*‖π_ref)"),
        (axes[1], "value", "value J(π)", "value_optimal", "J(π*)"),
    ):
        d = runs[runs["metric"] == metric]
        for name, g in d.groupby("label", sort=False):
            plotting.band(ax, g, color=plotting.color(str(name).split()[0]), label_fmt=name)
        ax.axhline(opt[ref], color=plotting.color("reference"), ls="--", lw=1, label=ref_label)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[0].set_title(f"(a) validation reverse KL, median and min–max over {n_seeds} seeds", loc="left", fontsize=8)
    axes[1].set_title("(b) value J at the same β", loc="left", fontsize=8)

    last = df["step"].max()
    final = df[df["step"] == last]
    picked = selection[selection["step"] == last]
    for ax, metric, ylabel, title, rows in (
        (
            axes[2],
            "heldout_loss",
            f"DPO loss on {N_VAL} held-out μ pairs",
            "(c) the rule that picks λ: lowest held-out loss, on selection seeds",
            picked,
        ),
        (axes[3], "kl", "reverse KL at the end", "(d) final KL over the λ sweep, reported seeds", final),
    ):
        hypo = rows[rows["algorithm"] == "hypo"]
        s = hypo[hypo["metric"] == metric].groupby("lam")["value"].agg(["median", "min", "max"])
        c = plotting.color("hypo")
        ax.plot(s.index, s["median"], "o-", color=c, lw=1.6, label="hypo")
        ax.fill_between(s.index, s["min"], s["max"], color=c, alpha=0.2, lw=0)
        if metric == "heldout_loss":  # what an infinite held-out split would say, for comparison
            pop = hypo[hypo["metric"] == "val_loss"].groupby("lam")["value"].median()
            ax.plot(pop.index, pop, "s:", color=c, lw=1, ms=3, label="hypo, population loss (no rule)")
        for name in ("dpo", "rlhf"):
            v = final[(final["algorithm"] == name) & (final["metric"] == metric)]["value"].median()
            ax.axhline(v, color=plotting.color(name), ls="--", lw=1, label=f"{name} (median, reported seeds)")
        ax.axvline(lam, color=plotting.color("reference"), ls=":", lw=1, label=f"selected λ={lam:g}")
        ax.set_xscale("log")
        ax.set_xlabel("HyPO's λ")
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Linear bandit, {df['n_pairs'].iloc[0]:g} offline pairs, top responses never in the data: "
        f"DPO vs HyPO vs RLHF (β={df['beta'].iloc[0]:g})",
        fontsize=9,
    )
    return fig

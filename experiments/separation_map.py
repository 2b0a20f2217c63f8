"""Separation map: final suboptimality and KL of DPO, IPO, RLHF and HyPO against C_glo and C_kl over coverage knobs.

SPEC §2 and §4 (arXiv:2406.01462) on random tabular (``bandits.random_tabular``, 3 prompts, 8 responses) and
random linear (``bandits.random_linear``, the same sizes, 4 features; ``theta*`` rescaled so the reward spans
``R_max``) instances. The offline ``mu`` is built from ``pi_ref`` by the knobs of :mod:`coverage_lab.coverage`:
uniform (``mixture`` with weight 1), ``pi_ref`` itself, ``tail_mass`` of 0.1/0.01/0.001 on the two best responses,
``temper`` at 0.5/0.25, and ``deficient`` with the 1/2/4 best responses removed. Each point is one
(instance, knob): x is its global coverage ``C_glo`` (tabular: ``global_coverage``; linear: over the log-linear
class, ``global_coverage_loglinear``) or its KL-ball coverage ``C_kl`` (``kl_ball_coefficient``, radius
``2 R_max/beta``); ``inf`` sits at the right edge. y is the mean over seeds of the final ``J(pi*) - J(pi)`` and
``KL(pi||pi_ref)`` after training on ``N`` sampled pairs (``experiments._counts.sample_counts``, drawn once for every
method, then ``train_on_counts``: full-batch Adam, exact on-policy expectations).

What makes the picture honest:

- Tabular softmax gradient descent never moves the logit of a response the data never shows (SPEC §4.1; the
  DPO and IPO runs freeze those logits against float32 round-off, ``experiments._counts.train_on_counts``), so
  the trained tabular points say nothing about the unseen responses: at ``C_glo = inf`` their harm comes from
  the responses the data shows rarely. What the DPO and IPO losses *allow* on the unseen ones is shown
  separately: crosses are the exact worst case over their population minimiser sets (``minimisers.minimiser_set``),
  bad exactly when ``C_glo = inf``; otherwise the set is one policy, ``pi*`` for DPO (drawn on the bottom row)
  and IPO's own solution.
- At finite ``C_glo`` the harm of poor coverage is statistical: a rare response seen once or twice, always
  winning, has its empirical DPO minimiser at infinity, and the trained policy moves mass there (it depends on
  the step budget; IPO's squared loss keeps such moves bounded). RLHF's reward is bounded and HyPO's KL term
  holds such responses near ``pi_ref``.
- With shared features (linear instances) unseen responses do move, through the features. Random features
  cover every reward direction and the reward is realisable, so DPO extrapolates correctly and per-response
  coverage barely matters there: the squares stay low even at ``C_glo = inf``. Coverage in feature space is
  what counts for that class (SPEC §4.6).
- On these instances ``C_kl`` is close to ``C_glo``: the paper's radius ``2 R_max/beta``, spent on one prompt,
  lets the ball reach every response; the separation shows as the gap between algorithms at the same
  coefficient, not as a shift along x. RLHF's bounded reward model ``R_max sigmoid(phi . w)`` is misspecified for
  a linear reward, and IPO (``tau = beta/4``) and HyPO (fixed ``lam``) have their own population biases.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from coverage_lab import _validate as V
from coverage_lab import bandits, coverage, exact, metrics, minimisers, plotting
from experiments import check_frame, check_setting, each, integer, one_of
from experiments._counts import make_algorithm, sample_counts, train_on_counts
from experiments.rates import SHAPE

FAMILIES = ("tabular", "linear")

METHODS = ("dpo", "ipo", "rlhf", "hypo")
_COMMON = {"beta": 1.0, "r_max": 1.0, "lam": 0.01, "n_pairs": 1000, "steps": 2000, "seeds": 8, "n_instances": 3}
SETTINGS = [{**_COMMON, "family": "tabular"}, {**_COMMON, "family": "linear"}]
_SMOKE = {**_COMMON, "steps": 500, "seeds": 4, "n_instances": 1, "knobs": ("uniform", "tail_0.001", "deficient_2")}
SMOKE = [{**_SMOKE, "family": "tabular"}, {**_SMOKE, "family": "linear", "methods": ("dpo", "rlhf")}]
DIM = 4  # features of the linear instances
TAILS, TEMPERATURES, DEFICIENT = (0.1, 0.01, 0.001), (0.5, 0.25), (1, 2, 4)  # the knobs' parameters
KNOBS = (  # the names of knobs(env), in its order
    "uniform",
    "pi_ref",
    *(f"tail_{t:g}" for t in TAILS),
    *(f"temper_{t:g}" for t in TEMPERATURES),
    *(f"deficient_{n}" for n in DEFICIENT),
)
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "family": one_of(*FAMILIES),
    "beta": V.positive,
    "r_max": V.positive,
    "lam": V.nonnegative,
    "n_pairs": integer(1),
    "steps": integer(1),
    "seeds": integer(1),
    "n_instances": integer(1),
    "knobs": each(one_of(*KNOBS)),  # default: all of KNOBS
    "methods": each(one_of(*METHODS)),  # default: METHODS
}
REQUIRED = ("family", "beta", "r_max", "lam", "n_pairs", "steps", "seeds", "n_instances")


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = (
    "family",
    "algorithm",
    "metric",
    "value",
    "instance",
    "knob",
    "kind",
    "c_glo",
    "c_kl",
    "beta",
    "n_pairs",
)


def make_instance(family: str, i: int, r_max: float):
    """Instance ``i`` of a family: a random tabular bandit, or a random linear one with reward range ``r_max``."""
    one_of(*FAMILIES)("family", family)
    V.positive("r_max", r_max)
    key = jax.random.key(1000 + V.integer("i", i, minimum=0))
    if family == "tabular":
        return bandits.random_tabular(key, *SHAPE, r_max=r_max)
    env = bandits.random_linear(key, *SHAPE, DIM)
    r = np.asarray(env.reward_XxY)
    return dataclasses.replace(env, theta_star_D=env.theta_star_D * r_max / (r.max() - r.min()))


def knobs(env) -> dict[str, np.ndarray]:
    """The offline distributions ``mu`` of the sweep, each built by a :mod:`coverage_lab.coverage` knob."""
    pi_ref, reward = np.asarray(env.pi_ref_XxY), np.asarray(env.reward_XxY)
    best2 = np.argsort(np.argsort(-reward, axis=-1), axis=-1) < 2
    out = {"uniform": coverage.mixture(np.full_like(pi_ref, 1 / pi_ref.shape[-1]), pi_ref, 1.0), "pi_ref": pi_ref}
    for t in TAILS:
        out[f"tail_{t:g}"] = coverage.tail_mass(pi_ref, best2, t)
    for temperature in TEMPERATURES:
        out[f"temper_{temperature:g}"] = coverage.temper(pi_ref, temperature)
    for n in DEFICIENT:
        out[f"deficient_{n}"] = coverage.deficient(pi_ref, n, reward)
    return out


def coefficients(env, mu, beta: float, r_max: float) -> dict[str, float]:
    rho, pi_ref = np.asarray(env.rho_X), np.asarray(env.pi_ref_XxY)
    if isinstance(env, bandits.LinearBandit):
        c_glo = coverage.global_coverage_loglinear(mu, env.phi_XxYxD, rho)
    else:
        c_glo = coverage.global_coverage(mu, rho)
    return {"c_glo": c_glo, "c_kl": coverage.kl_ball_coefficient(pi_ref, mu, rho, coverage.kl_radius(r_max, beta))}


def run(setting: dict, key) -> pd.DataFrame:
    check_setting(__name__, setting, key)
    beta, r_max, seeds, n = setting["beta"], setting["r_max"], setting["seeds"], setting["n_pairs"]
    family = setting["family"]
    frames = []
    for i in range(setting["n_instances"]):
        env = make_instance(family, i, r_max)
        rho, pi_ref, reward = np.asarray(env.rho_X), np.asarray(env.pi_ref_XxY), np.asarray(env.reward_XxY)
        mus = knobs(env)
        names = [k for k in mus if k in setting.get("knobs", mus)]
        coefs = {k: coefficients(env, mus[k], beta, r_max) for k in names}
        runs = [(k, s) for k in names for s in range(seeds)]
        keys = [jax.random.fold_in(jax.random.fold_in(key, i), j) for j in range(len(runs))]
        j_star = exact.optimal_value(reward, pi_ref, rho, beta)
        n_before = len(frames)
        counts = sample_counts(env, [mus[k] for k, _ in runs], [n] * len(runs), keys)  # every method's data
        for method in setting.get("methods", METHODS):
            alg = make_algorithm(method, beta, r_max, setting["lam"])
            logp = train_on_counts(env, alg, counts, keys, steps=setting["steps"])
            m = metrics.policy_metrics(logp, env, beta=beta)
            for metric in ("suboptimality", "kl"):
                frames.append(
                    pd.DataFrame(
                        {
                            "algorithm": alg.name,
                            "seed": [s for _, s in runs],
                            "step": setting["steps"],
                            "metric": metric,
                            "value": m[metric],
                            "instance": i,
                            "knob": [k for k, _ in runs],
                            "kind": "trained",
                        }
                    )
                )
            if family == "tabular" and method in ("dpo", "ipo"):  # what the loss allows: worst minimiser, exact
                pref = bandits.preference_table(reward)
                extra = {"loss": "ipo", "tau": alg.hparams["tau"]} if method == "ipo" else {}
                rows = []
                for k in names:
                    ms = minimisers.minimiser_set(pi_ref, coverage.pair_table(mus[k]), pref, rho, reward, beta, **extra)
                    sub = max(j_star - ms.worst_value, 0.0)
                    rows += [(k, "suboptimality", sub), (k, "kl", ms.max_kl)]
                frames.append(
                    pd.DataFrame(
                        {
                            "algorithm": alg.name,
                            "seed": 0,
                            "step": 0,
                            "metric": [r[1] for r in rows],
                            "value": [r[2] for r in rows],
                            "instance": i,
                            "knob": [r[0] for r in rows],
                            "kind": "worst_minimiser",
                        }
                    )
                )
        for f in frames[n_before:]:
            for name in ("c_glo", "c_kl"):
                f[name] = [coefs[k][name] for k in f["knob"]]
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "family", family)
    return df


# ----------------------------------------------------------------------------------------------
# The figure


FLOOR = 1e-3  # values below this (e.g. a minimiser set that is the single point pi*) are drawn on the floor


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (family, instance, knob, algorithm, kind, metric), with the coefficients."""
    check_frame(df, ("family", "instance", "knob", "algorithm", "kind", "metric", "value", "c_glo", "c_kl"))
    keys = ["family", "instance", "knob", "algorithm", "kind", "metric"]
    agg = {"value": ("value", "mean"), "c_glo": ("c_glo", "first"), "c_kl": ("c_kl", "first")}
    return df.groupby(keys, as_index=False).agg(**agg)


def plot(df: pd.DataFrame):
    check_frame(df, PLOT_COLUMNS)
    s = summary(df)
    fig, axes = plotting.figure(2, 2, width=4.8, height=3.6)
    markers = {("tabular", "trained"): "o", ("linear", "trained"): "s", ("tabular", "worst_minimiser"): "X"}
    finite = s[["c_glo", "c_kl"]].replace(np.inf, np.nan)
    edge = 10 ** (np.ceil(np.log10(np.nanmax(finite.values))) + 1.5)  # where C = inf is drawn
    algs = [a for a in METHODS if a in set(s["algorithm"])]
    panels = [
        (metric, ylabel, coef, xlabel)
        for metric, ylabel in (("suboptimality", "J(pi*) - J(pi)"), ("kl", "KL(pi || pi_ref)"))
        for coef, xlabel in (
            ("c_glo", "global coverage C_glo"),
            ("c_kl", "KL-ball coverage C_kl (radius 2 R_max/beta)"),
        )
    ]
    for ax, (metric, ylabel, coef, xlabel) in zip(axes, panels, strict=True):
        d = s[s["metric"] == metric]
        floor = FLOOR if metric == "suboptimality" else 0.0
        for (family, alg, kind), g in d.groupby(["family", "algorithm", "kind"]):
            c = plotting.color(alg)
            jitter = 1.7 ** (algs.index(alg) - (len(algs) - 1) / 2)  # spread the inf column by algorithm
            x = np.where(np.isfinite(g[coef].values), g[coef].values, edge * jitter)
            ax.scatter(
                x,
                np.maximum(g["value"].values, floor),
                marker=markers[(family, kind)],
                s=30 if kind == "trained" else 48,
                facecolors=c if family == "tabular" else "none",
                edgecolors=c,
                alpha=0.7,
                lw=1.0,
            )
        # tabular, trained: geometric mean per decade of finite coverage, per algorithm
        t = d[(d["family"] == "tabular") & (d["kind"] == "trained") & np.isfinite(d[coef])]
        for alg, g in t.groupby("algorithm"):
            decade = np.floor(np.log10(g[coef]))
            trend = np.exp(np.log(g["value"].clip(lower=max(floor, 1e-12))).groupby(decade).mean())
            ax.plot(10 ** (trend.index + 0.5), trend.values, color=plotting.color(alg), lw=1.2, alpha=0.9)
        ax.axvline(edge / 5, color="k", lw=0.6, ls=":")
        top = 2.0 * d["value"].max()
        if floor:
            ax.axhline(floor * 1.25, color="k", lw=0.4, ls=":")
            ax.set_ylim(floor / 1.6, top)
        else:
            ax.set_ylim(d["value"].clip(lower=1e-12).min() / 2, top)
        ax.set_xscale("log")
        ax.set_yscale("log")
        lo = 10 ** np.floor(np.log10(np.nanmin(finite[coef])))
        ticks = [10.0**k for k in range(int(np.log10(lo)), int(np.log10(edge / 5)) + 1, 2)]
        ax.set_xticks(ticks + [edge])
        ax.set_xticklabels([f"$10^{{{int(np.log10(t))}}}$" for t in ticks] + ["inf"])
        ax.set_xlim(lo / 2, edge * 3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{ylabel}  (bottom row: < {floor:g})" if floor else ylabel)
    handles = [Line2D([], [], color=plotting.color(a), marker="o", ls="", label=_NAMES[a]) for a in algs]
    handles += [
        Line2D([], [], color="k", marker="o", ls="", label="tabular, trained on N pairs"),
        Line2D([], [], color="k", marker="s", mfc="none", ls="", label="linear, trained on N pairs"),
        Line2D([], [], color="k", marker="X", ls="", label="tabular, worst population minimiser (exact)"),
        Line2D([], [], color="k", lw=1.2, label="tabular trained, geometric mean per decade"),
    ]
    axes[3].legend(handles=handles, fontsize=6.5, loc="lower center", bbox_to_anchor=(0.45, 0.0), ncol=2)
    n, beta = int(df["n_pairs"].iloc[0]), df["beta"].iloc[0]
    fig.suptitle(
        f"Separation map (arXiv:2406.01462): final suboptimality and KL against coverage, N={n} pairs, beta={beta:g}\n"
        "each point: mean over seeds for one (instance, knob); DPO/IPO degrade with C_glo, RLHF/HyPO barely move"
    )
    return fig


_NAMES = {"dpo": "DPO", "ipo": "IPO", "rlhf": "RLHF", "hypo": "HyPO"}

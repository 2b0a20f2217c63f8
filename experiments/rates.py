"""Rates: suboptimality against N pairs, DPO over coverage levels and IPO/RLHF/HyPO under partial coverage.

SPEC §4.5 (arXiv:2406.01462): with global coverage DPO converges and its constant grows with ``C_glo``; with only
partial coverage (``C(pi*)`` small, ``C_glo`` huge) RLHF and HyPO still converge while DPO loses its guarantee.

Instance: ``bandits.random_tabular(key(instance), 3, 8)`` with ``beta = 1``, ``R_max = 1``, whose reference is
given a ladder of rare responses: the two least likely responses of each prompt get probabilities from 1e-2
down to 1e-7 (:func:`instance`). Offline data ``mu = coverage.mixture(uniform, pi_ref, mix)``: ``mix = 1`` is
uniform (``C_glo = Y``), a smaller ``mix`` gives the rare responses less data (``C_glo ~ Y/mix``), and ``mix = 0``
is ``mu = pi_ref``, the paper's default, which covers ``pi*`` (``C(pi*) < 2``) but not the rare responses
(``C_glo = 1e7``). Every coefficient in the legend is computed by :mod:`coverage_lab.coverage`; the KL-ball one
(radius ``2 R_max/beta``, the whole budget on one prompt) is as large as ``C_glo`` here, so the legend shows
``C(pi*)``, the partial coverage that RLHF and HyPO actually use on this instance.

Why DPO can fail here: a tabular response the data never shows keeps its logit, but a rare response seen once or
twice, always winning, has its empirical DPO minimiser at infinity and gradient descent pushes its mass up
until the step budget runs out. With rare responses at every scale, at every N some response can be in that
regime, so DPO's *expected* suboptimality need not converge although its median does. On the committed seeds
its mean does converge, above RLHF's on every dataset (README, Reproductions): what the expectation adds is a
heavy tail over datasets, which 8 seeds sample only rarely. RLHF's reward is bounded
(``pi/pi_ref <= e^{R_max/beta}``) and HyPO's KL term holds such a response near ``pi_ref``. Curves are means over
seeds (the expectation the bounds are about) with 10–90% quantile bands; slopes are fitted to the means.
Under partial coverage (``mix = 0``) DPO, RLHF and HyPO are trained on the same datasets, seed for seed (one
setting, ``methods``), so their curves differ by the method alone.

The sampled version, with the optimisation error removed as far as possible:

- The losses of ``N`` labelled pairs are sums over distinct ``(x, y_w, y_l)`` triples, so a dataset is handed
  to the training loop as its sufficient statistics, an exact batch of the empirical pair and win frequencies
  (``data.empirical_batch``: the same loss as the N-row batch, and one compiled program for every N). The counts
  are drawn as the multinomial they are (``experiments._counts``; a test checks them against
  ``data.sample_pairs``). Training is full-batch Adam for ``steps`` steps (``train.fit``); at N = 1e5 the trained
  DPO's suboptimality is within 10% of that of the exact minimiser of its empirical loss (``minimisers.minimiser_set``;
  a test), so the optimisation error is below the statistical error.
- On-policy expectations (RLHF's policy step, HyPO's KL term) are enumerated exactly (``Context(exact=True)``):
  online samples are free in the theory, so only the offline data is finite. ``simulate`` ties exact on-policy
  expectations to exact offline data (``n_pairs=None``), hence the small runners of
  ``experiments._counts``.
- HyPO uses a fixed ``lam``; its population solution (``simulate(..., n_pairs=None)``) is biased away from
  ``pi*``, and that bias is drawn as a dotted floor. So is IPO's (``tau = beta/4``), from its closed form
  (``exact.ipo_solution``). IPO trains on the partial-coverage datasets beside DPO: its squared loss holds a rare
  response seen only winning at a finite margin, where DPO's empirical minimiser is at infinity.

What is measured: ``J(pi*) - J(pi) = beta E_x KL(pi || pi*)`` (the KL-regularised suboptimality) and the
unregularised reward gap ``|E_pi r* - E_pi* r*|``. The paper's bound is ``O(C/sqrt(N))`` for the former; because
the regularised objective is strongly concave in the log-ratio, the former is quadratic in the estimation
error and falls like ``1/N`` once DPO's estimates are accurate (cf. Zhao et al., arXiv:2411.04625), while the
first-order reward gap shows the ``1/sqrt(N)`` rate. Slopes are fitted to the per-N means, their 95% intervals
by a bootstrap over seeds (``plotting.loglog_fit_seeds``). Runs whose empirical DPO minimiser is at infinity
depend on ``steps``.
"""

from __future__ import annotations

import jax
import matplotlib
import numpy as np
import pandas as pd

from coverage_lab import _validate as V
from coverage_lab import bandits, coverage, exact, metrics, plotting
from coverage_lab.simulation import simulate
from experiments import between, check_frame, check_setting, each, integer, logged_steps, one_of
from experiments._counts import make_algorithm, sample_counts, train_on_counts

SHAPE = (3, 8)  # prompts, responses; separation_map uses the same shape, so the compiled programs are shared
N_GRID = (100, 300, 1000, 3000, 10_000, 30_000, 100_000)
_COMMON = {
    "instance": 0,
    "beta": 1.0,
    "r_max": 1.0,
    "lam": 0.01,
    "rare_max": 1e-2,
    "rare_min": 1e-7,
    "steps": 2000,
    "seeds": 8,
}
# One setting per coverage level; the methods of a setting train on the same datasets (a paired comparison).
SETTINGS = [
    {**_COMMON, "mix": 1.0, "methods": ["dpo"]},
    {**_COMMON, "mix": 0.1, "methods": ["dpo"]},
    {**_COMMON, "mix": 0.01, "methods": ["dpo"]},
    {**_COMMON, "mix": 0.0, "methods": ["dpo", "ipo", "rlhf", "hypo"]},
]
_SMOKE = {**_COMMON, "seeds": 8, "n_grid": (300, 1000, 3000, 10_000, 30_000, 100_000)}
SMOKE = [{**_SMOKE, "mix": 1.0, "methods": ["dpo"]}, {**_SMOKE, "mix": 0.0, "methods": ["dpo", "ipo", "rlhf", "hypo"]}]
METHODS = ("dpo", "ipo", "rlhf", "hypo")  # make_algorithm's names
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "methods": each(one_of(*METHODS), unique=True),  # trained on the same datasets
    "mix": between(0.0, 1.0),
    "instance": integer(0),
    "beta": V.positive,
    "r_max": V.positive,
    "lam": V.nonnegative,
    "rare_max": between(0.0, 0.5, open_=True),  # two rare responses per prompt: their mass stays below 1
    "rare_min": between(0.0, 0.5, open_=True),
    "steps": integer(1),
    "seeds": integer(1),
    "n_grid": each(integer(1)),  # default: N_GRID
}
REQUIRED = tuple(k for k in KEYS if k != "n_grid")


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = ("algorithm", "metric", "value", "n_pairs", "c_glo", "c_pistar", "beta", "lam", "mix")


def cross_check(setting: dict) -> None:
    """HyPO's population run (``simulate``) logs every ``steps // 20`` steps, which must divide ``steps``."""
    if "hypo" in setting["methods"]:
        logged_steps(1)("setting['steps']", setting["steps"])


def instance(setting: dict) -> bandits.TabularBandit:
    """The setting's random tabular bandit with a ladder of rare responses.

    The two least likely responses of each prompt get reference probabilities spaced evenly in log from
    ``rare_max`` down to ``rare_min`` (prompt by prompt); the other responses keep their ratios.
    """
    env = bandits.random_tabular(jax.random.key(setting["instance"]), *SHAPE)
    pi_ref = np.asarray(env.pi_ref_XxY)
    rare = np.argsort(np.argsort(pi_ref, axis=-1), axis=-1) < 2
    ladder = np.logspace(np.log10(setting["rare_max"]), np.log10(setting["rare_min"]), int(rare.sum()))
    rare_mass = np.zeros_like(pi_ref)
    rare_mass[rare] = ladder
    common = np.where(rare, 0.0, pi_ref)
    common *= ((1 - rare_mass.sum(-1)) / common.sum(-1))[:, None]
    return bandits.TabularBandit(env.rho_X, rare_mass + common, env.reward_XxY)


def offline_mu(env, mix: float) -> np.ndarray:
    uniform = np.full(env.pi_ref_XxY.shape, 1.0 / env.n_responses)
    return coverage.mixture(uniform, env.pi_ref_XxY, mix)


def run(setting: dict, key) -> pd.DataFrame:
    """Each of ``setting["methods"]`` trained on the same datasets: ``seeds`` draws of ``N`` labelled pairs from
    ``mu`` for every ``N`` (a draw depends on ``key``, ``N`` and the seed, not on the method)."""
    check_setting(__name__, setting, key)
    beta, r_max, steps, seeds = setting["beta"], setting["r_max"], setting["steps"], setting["seeds"]
    env = instance(setting)
    mu = offline_mu(env, setting["mix"])
    rho, pi_ref, reward = env.rho_X, env.pi_ref_XxY, env.reward_XxY
    pi_star = exact.optimal_policy(reward, pi_ref, beta)
    reward_star = float(rho @ (pi_star * reward).sum(-1))
    n_grid = list(setting.get("n_grid", N_GRID))
    ns = [n for n in n_grid for _ in range(seeds)]
    seed_ids = [s for _ in n_grid for s in range(seeds)]
    keys = [jax.random.fold_in(jax.random.fold_in(key, n), s) for n, s in zip(ns, seed_ids, strict=True)]
    counts = sample_counts(env, mu, ns, keys)  # every method's data
    frames = []
    for method in setting["methods"]:
        alg = make_algorithm(method, beta, r_max, setting["lam"])
        logp = train_on_counts(env, alg, counts, keys, steps=steps)
        m = metrics.policy_metrics(logp, env, beta=beta, mu_XxY=mu)
        values = {"suboptimality": m["suboptimality"], "reward_gap": np.abs(m["reward"] - reward_star), "kl": m["kl"]}
        frames += [
            pd.DataFrame(
                {"algorithm": alg.name, "seed": seed_ids, "step": steps, "metric": name, "value": v, "n_pairs": ns}
            )
            for name, v in values.items()
        ]
        if alg.name == "hypo":  # the fixed-lam bias: HyPO's population solution (trained on exact data)
            frames.append(_population(env, alg, mu, steps, key, reward_star))
        if alg.name == "ipo":  # IPO's population solution is not pi* either: its closed form
            pi_ipo = exact.ipo_solution(pi_ref, mu, bandits.preference_table(reward), alg.hparams["tau"])
            pm = metrics.policy_metrics(np.log(pi_ipo)[None], env, beta=beta)
            frames.append(
                _population_rows(alg.name, steps, pm["suboptimality"][0], pm["reward"][0], reward_star, pm["kl"][0])
            )
    df = pd.concat(frames, ignore_index=True)
    radius = coverage.kl_radius(r_max, beta)
    df["c_glo"] = coverage.global_coverage(mu, rho)
    df["c_kl"] = coverage.kl_ball_coefficient(pi_ref, mu, rho, radius)
    df["c_pistar"] = coverage.single_policy_coverage(pi_star, mu, rho)
    return df


def _population(env, alg, mu, steps, key, reward_star) -> pd.DataFrame:
    """``alg``'s population solution (exact data and expectations): rows ``<metric>_population``."""
    pop = simulate(
        env, alg, mu=mu, n_pairs=None, steps=steps, seeds=1, key=key, metrics=("suboptimality", "reward", "kl")
    )
    last = pop[pop["step"] == steps].set_index("metric")["value"]
    return _population_rows(alg.name, steps, last["suboptimality"], last["reward"], reward_star, last["kl"])


def _population_rows(name, steps, suboptimality, reward, reward_star, kl) -> pd.DataFrame:
    values = {"suboptimality": suboptimality, "reward_gap": abs(reward - reward_star), "kl": kl}
    return pd.DataFrame(
        {
            "algorithm": name,
            "seed": 0,
            "step": steps,
            "metric": [f"{k}_population" for k in values],
            "value": [float(v) for v in values.values()],
            "n_pairs": np.nan,
        }
    )


# ----------------------------------------------------------------------------------------------
# The figure


def curves(df: pd.DataFrame):
    """``(label key, algorithm, mix, frame)`` per curve, in plotting order (DPO by coverage, then RLHF, HyPO)."""
    check_frame(df, ("algorithm", "mix"))
    order = {"dpo": 0, "ipo": 1, "rlhf": 2, "hypo": 3}
    groups = [(alg, mix, g) for (alg, mix), g in df.groupby(["algorithm", "mix"])]
    return sorted(groups, key=lambda t: (order.get(t[0], 9), -t[1]))


def slopes(df: pd.DataFrame, metric: str = "suboptimality") -> dict:
    """Fitted log-log slope ``(slope, lo, hi)`` of the seed mean of ``metric`` against N, per ``(algorithm, mix)``;
    the 95% interval is a bootstrap over seeds (``plotting.loglog_fit_seeds``), or with one seed per N the
    regression's interval on the means (``plotting.loglog_fit``)."""
    check_frame(df, ("algorithm", "mix", "metric", "n_pairs", "value"))
    out = {}
    for alg, mix, g in curves(df):
        runs = g[(g["metric"] == metric) & g["n_pairs"].notna()]
        if runs.groupby("n_pairs").size().min() < 2:  # one seed (``--seeds 1``): the regression's own interval
            mean = runs.groupby("n_pairs")["value"].mean()
            out[(alg, mix)] = plotting.loglog_fit(mean.index, mean.values)
        else:
            out[(alg, mix)] = plotting.loglog_fit_seeds(runs["n_pairs"].to_numpy(), runs["value"].to_numpy())
    return out


NAMES = {"dpo": "DPO", "ipo": "IPO", "rlhf": "RLHF", "hypo": "HyPO"}  # the legend's names of the methods


def _label(alg: str, g: pd.DataFrame) -> str:
    c_glo, c_pi = g["c_glo"].iloc[0], g["c_pistar"].iloc[0]
    return f"{NAMES.get(alg, alg)}, C_glo={c_glo:.3g}, C(pi*)={c_pi:.2g}"


def _colors(groups) -> dict:
    """DPO under global coverage in reds (darker = larger C_glo), DPO under partial coverage darkest."""
    dpo_global = [mix for alg, mix, _ in groups if alg == "dpo" and mix > 0]
    reds = matplotlib.colormaps["Reds"](np.linspace(0.35, 0.75, max(len(dpo_global), 1)))
    out = {("dpo", mix): reds[i] for i, mix in enumerate(dpo_global)}
    for alg, mix, _ in groups:
        out.setdefault((alg, mix), "#67000d" if alg == "dpo" else plotting.color(alg))
    return out


def plot(df: pd.DataFrame):
    check_frame(df, PLOT_COLUMNS)
    fig, axes = plotting.figure(2, width=5.0, height=4.2)
    groups = curves(df)
    colors = _colors(groups)
    panels = (
        ("suboptimality", "J(pi*) - J(pi)   (KL-regularised)", -1.0),
        ("reward_gap", "|E_pi r* - E_pi* r*|   (unregularised)", -0.5),
    )
    for ax, (metric, ylabel, ref_slope) in zip(axes, panels, strict=True):
        fits = slopes(df, metric)
        for alg, mix, g in groups:
            c, partial = colors[(alg, mix)], alg == "dpo" and mix == 0
            s = g[(g["metric"] == metric) & g["n_pairs"].notna()]
            stats = s.groupby("n_pairs")["value"].quantile([0.1, 0.9]).unstack()
            mean = s.groupby("n_pairs")["value"].mean()
            slope, lo, hi = fits[(alg, mix)]
            label = f"{_label(alg, s)}: slope {slope:.2f} [{lo:.2f}, {hi:.2f}]"
            ax.plot(mean.index, mean.values, "--" if partial else "-", marker="o", ms=3, color=c, lw=1.5, label=label)
            ax.fill_between(stats.index, stats[0.1], stats[0.9], color=c, alpha=0.15, lw=0)
            pop = g[g["metric"] == f"{metric}_population"]
            if len(pop):
                bias = f"{NAMES[alg]} population bias" + (f" (lam={g['lam'].iloc[0]:g})" if alg == "hypo" else "")
                ax.axhline(pop["value"].iloc[0], color=c, ls=":", lw=1.2, label=bias)
        n = np.array(sorted(df["n_pairs"].dropna().unique()))
        anchor = df[(df["metric"] == metric) & df["n_pairs"].notna()].groupby("n_pairs")["value"].mean()
        ref = 2 * anchor.loc[n[0]] * (n / n[0]) ** ref_slope
        ax.plot(n, ref, color="k", lw=0.9, ls=(0, (1, 2)), label=f"slope {ref_slope:g} (reference)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of offline pairs N")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6.5, loc="lower left")
    beta = df["beta"].iloc[0]
    axes[0].set_title(
        f"Regularised suboptimality vs N (beta={beta:g})\n"
        "mean over seeds, 10-90% band; slopes of the means, 95% seed bootstrap"
    )
    axes[1].set_title("Unregularised reward gap vs N\n(first order in the error: the paper's N^-1/2)")
    fig.suptitle("Rates (arXiv:2406.01462): suboptimality against N under global and partial coverage")
    return fig

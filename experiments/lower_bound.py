"""Lower bound: DPO's loss is flat where the data is silent, so its minimisers reach any KL; RLHF stays in R_max/beta.

The out-of-support construction of arXiv:2406.01462 (SPEC §4.2–4.4), computed exactly for
``eps = pi_ref(y0)`` from 1e-1 to 1e-8 with ``bandits.counterexample(eps)``: one prompt, ``pi_ref =
((1-eps)/2, (1-eps)/2, eps)``, ``r* = (R_max, 0, 0)``, offline pairs only on ``{y1, y2}``.

- The family ``pi_delta = minimisers.move_mass(pi_dpo, y0, delta)`` moves mass ``delta`` onto the unseen ``y0``
  keeping the covered ratios. Its DPO population loss (``losses.dpo`` on ``data.exact_batch``) is the same for
  every ``delta``, while its reverse KL grows to ``log(1/eps)`` and its ``J`` falls to ``beta log eps``.
- ``minimisers.minimiser_set`` gives the exact worst case over all DPO population minimisers: ``max_kl`` and
  ``worst_value`` (a point mass on ``y0``), which degrade like ``log(1/eps)``.
- RLHF: for any reward in ``[0, R_max]``, ``KL(pi_r || pi_ref) <= R_max/beta``. We report the KL and ``J`` of
  ``exact.rlhf_policy`` over the population MLE set (``r_hat = r*`` on the covered responses, which Bradley–Terry
  identifies, and ``r_hat(y0)`` anywhere in ``[0, R_max]``), the largest KL over every reward in ``[0, R_max]``
  (``exact.rlhf_max_kl``: exact, at a vertex of the box), and the fitted RLHF of ``simulate(..., n_pairs=None)``
  (reward model, then policy).
- HyPO's exact solution (``simulate(..., n_pairs=None)`` with ``algorithms.hypo``): DPO is flat along the family,
  so the KL term chooses the member; stationarity in the ``y0`` logit gives ``pi(y0) = eps exp(KL)``, which
  vanishes with ``eps`` while the KL stays bounded.

Rows (``algorithm``, ``seed`` 0, ``step``: 0 for closed forms, the last training step for simulated ones,
``metric``, ``value``) carry ``eps`` and, along the family, ``delta``.
"""

from __future__ import annotations

import jax.numpy as jnp
import matplotlib
import numpy as np
import pandas as pd

from coverage_lab import _validate as V
from coverage_lab import algorithms, bandits, data, exact, losses, minimisers, plotting
from coverage_lab.coverage import pair_table
from coverage_lab.simulation import simulate
from experiments import check_frame, check_setting, integer, logged_steps

Y0 = 2  # the response the data never shows

SETTINGS = [
    {"beta": 0.1, "r_max": 1.0, "lam": 0.01, "n_eps": 15, "steps": 3000},
    {"beta": 1.0, "r_max": 1.0, "lam": 0.01, "n_eps": 15, "steps": 3000},
]
SMOKE = [{"beta": 0.1, "r_max": 1.0, "lam": 0.01, "n_eps": 4, "steps": 500}]
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "beta": V.positive,
    "r_max": V.positive,
    "lam": V.nonnegative,
    "n_eps": integer(1),
    "steps": logged_steps(1),
    "seeds": integer(1),  # only for the CLI's --seeds, which sets it everywhere: the runs here are exact, one seed
}
REQUIRED = ("beta", "r_max", "lam", "n_eps", "steps")

FAMILY_EPS = (1e-2, 1e-5, 1e-8)  # the eps values whose delta-family is written out
DELTAS = np.concatenate([[0.0], np.logspace(-6, 0, 25)])


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = ("algorithm", "metric", "value", "eps", "delta", "beta", "r_max")


def _rows(algorithm: str, metric: str, value, step: int = 0, **cols) -> dict:
    return {"algorithm": algorithm, "seed": 0, "step": step, "metric": metric, "value": float(value), **cols}


def dpo_population_loss(logp_XxY, batch: data.Batch, ref_logp_XxY, beta: float) -> float:
    """The DPO population loss of a policy table: ``sum_i w_i * losses.dpo(...)`` over an exact batch."""
    data.check_weights(batch, "batch")
    shape = V.log_prob_table("logp_XxY", logp_XxY).shape
    V.log_prob_table("ref_logp_XxY", ref_logp_XxY)
    V.same_shape(logp_XxY=logp_XxY, ref_logp_XxY=ref_logp_XxY)
    x, w, l = data.pair_indices(batch, *shape, name="batch")
    lp, ref = jnp.asarray(logp_XxY, jnp.float32), jnp.asarray(ref_logp_XxY, jnp.float32)
    per_pair = losses.dpo(lp[x, w], lp[x, l], ref[x, w], ref[x, l], beta)
    return float(jnp.sum(batch.weight_B * per_pair))


def _log(p):
    with np.errstate(divide="ignore"):
        return np.log(p)


def run(setting: dict, key) -> pd.DataFrame:
    check_setting(__name__, setting, key)
    beta, r_max, lam, steps = setting["beta"], setting["r_max"], setting["lam"], setting["steps"]
    eps_grid = np.logspace(-1, -8, setting["n_eps"])
    family_eps = {eps_grid[np.argmin(np.abs(np.log(eps_grid / e)))] for e in FAMILY_EPS}
    rows = []
    for eps in eps_grid:
        env, mu = bandits.counterexample(eps, r_max=r_max)
        pi_ref, reward, rho = env.pi_ref_XxY, env.reward_XxY, env.rho_X
        pref = bandits.preference_table(reward)
        pair = pair_table(mu)
        common = {"eps": eps, "delta": np.nan}

        # DPO: the exact set of population minimisers, and the family that moves mass onto y0.
        ms = minimisers.minimiser_set(pi_ref, pair, pref, rho, reward, beta)
        rows += [
            _rows("dpo", "max_kl", ms.max_kl, **common),
            _rows("dpo", "worst_value", ms.worst_value, **common),
            _rows("optimal", "value", exact.optimal_value(reward, pi_ref, rho, beta), **common),
        ]
        if eps in family_eps:
            batch = data.exact_batch(rho, pair, pref)
            pi_dpo = ms.component_policy(0, 0)[None]  # the DPO minimiser with no mass on y0
            for delta in DELTAS:
                pi = minimisers.move_mass(pi_dpo, Y0, delta)
                at = {"eps": eps, "delta": delta}
                if delta < 1:  # delta = 1 (a point mass on y0) is a limit of minimisers; its loss is undefined
                    loss = dpo_population_loss(_log(pi), batch, _log(pi_ref), beta)
                    rows.append(_rows("dpo", "family_loss", loss, **at))
                rows += [
                    _rows("dpo", "family_kl", exact.reverse_kl(pi, pi_ref, rho), **at),
                    _rows("dpo", "family_value", exact.value(pi, reward, pi_ref, rho, beta), **at),
                ]

        # RLHF: the population MLE set (r_hat(y0) unidentified), and the largest KL over every bounded reward.
        mle = [np.where(mu > 0, reward, c) for c in np.linspace(0.0, r_max, 11)]
        pis = [exact.rlhf_policy(r, pi_ref, beta, r_max=r_max) for r in mle]
        rows += [
            _rows("rlhf", "max_kl_mle", max(exact.reverse_kl(p, pi_ref, rho) for p in pis), **common),
            _rows("rlhf", "worst_value_mle", min(exact.value(p, reward, pi_ref, rho, beta) for p in pis), **common),
            _rows("rlhf", "max_kl_bounded", exact.rlhf_max_kl(pi_ref, rho, beta, r_max), **common),
            _rows("rlhf", "kl_bound", r_max / beta, **common),
        ]

        # Fitted RLHF and HyPO, exact population versions (one compiled program each for every eps).
        for alg in (algorithms.rlhf(beta, r_max), algorithms.hypo(beta, lam)):
            df = simulate(
                env, alg, mu=mu, n_pairs=None, steps=steps, seeds=1, key=key, metrics=("kl", "value", "ood_mass")
            )
            last = df[df["step"] == df["step"].max()]
            for metric, value in zip(last["metric"], last["value"], strict=True):
                rows.append(_rows(alg.name, metric, value, step=steps, **common))
    return pd.DataFrame(rows)


def _per_eps(df: pd.DataFrame, algorithm: str, metric: str) -> pd.Series:
    g = df[(df["algorithm"] == algorithm) & (df["metric"] == metric) & df["delta"].isna()]
    return g.groupby("eps")["value"].mean().sort_index()


def log_slope(series: pd.Series) -> float:
    """Slope of a per-eps series against ``log(1/eps)`` (least squares)."""
    s = series[np.isfinite(series.values)]
    return float(np.polyfit(np.log(1.0 / s.index.values), s.values, 1)[0])


def plot(df: pd.DataFrame):
    check_frame(df, PLOT_COLUMNS)
    betas = sorted(df["beta"].unique())
    ratios = [1.0] * len(betas) + [0.22]
    fig, axes = plotting.figure(3, len(betas) + 1, width=3.9, height=2.9, gridspec_kw={"height_ratios": ratios})
    styles = {  # (algorithm, metric) -> (matplotlib format, legend label)
        ("dpo", "max_kl"): ("o-", "DPO: worst of its minimisers (exact)"),
        ("dpo", "worst_value"): ("o-", "DPO: worst of its minimisers (exact)"),
        ("rlhf", "max_kl_bounded"): ("-", "RLHF: largest over all rewards in [0, R_max]"),
        ("rlhf", "max_kl_mle"): (":", "RLHF: worst reward in its MLE set (exact)"),
        ("rlhf", "worst_value_mle"): (":", "RLHF: worst reward in its MLE set (exact)"),
        ("rlhf", "kl"): ("s", "RLHF: fitted by simulate (population)"),
        ("rlhf", "value"): ("s", "RLHF: fitted by simulate (population)"),
        ("hypo", "kl"): ("^-", "HyPO: simulate (population)"),
        ("hypo", "value"): ("^-", "HyPO: simulate (population)"),
        ("optimal", "value"): ("k--", "J(pi*)"),
    }
    handles = {}

    def draw(ax, alg, metric, d):
        s = _per_eps(d, alg, metric)
        fmt, label = styles[(alg, metric)]
        kw = {} if alg == "optimal" else {"color": plotting.color(alg)}
        (h,) = ax.plot(s.index, s.values, fmt, ms=3, lw=1.4, **kw)
        handles.setdefault(label, h)
        return s

    for row, beta in enumerate(betas):
        d = df[df["beta"] == beta]
        r_max = float(d["r_max"].iloc[0])
        ax_f, ax_kl, ax_j = axes[3 * row : 3 * row + 3]

        # (a) along the family: DPO loss flat, KL rising.
        fam = d[d["delta"].notna() & (d["delta"] > 0)]
        shades = matplotlib.colormaps["Reds"](np.linspace(0.45, 0.95, max(fam["eps"].nunique(), 1)))
        for c, (eps, g) in zip(shades, fam.groupby("eps", sort=False), strict=False):
            k = g[g["metric"] == "family_kl"].sort_values("delta")
            ax_f.plot(k["delta"], k["value"], color=c, lw=1.6, label=f"KL, eps={eps:.0e}")
        ax_f.set_xscale("log")
        ax_f.set_xlabel("mass delta moved onto the unseen y0")
        ax_f.set_ylabel("KL(pi_delta || pi_ref)")
        twin = ax_f.twinx()
        loss = fam[fam["metric"] == "family_loss"]
        for _, g in loss.groupby("eps"):
            g = g.sort_values("delta")
            twin.plot(g["delta"], g["value"], color="k", ls="--", lw=1.0)
        spread = loss.groupby("eps")["value"].agg(lambda v: v.max() - v.min()).max()
        lo, hi = loss["value"].min(), loss["value"].max()
        twin.set_ylim(lo - 0.5 * max(hi - lo, 0.05), hi + 0.5 * max(hi - lo, 0.05))
        twin.set_ylabel("DPO population loss (dashed)")
        twin.grid(False)
        twin.spines["right"].set_visible(True)
        ax_f.set_title(f"beta={beta:g}: along the family, DPO loss\nis flat (spread {spread:.1e}) while KL grows")
        ax_f.legend(loc="upper left", fontsize=7)

        # (b) KL against eps.
        worst_kl = draw(ax_kl, "dpo", "max_kl", d)
        for metric in ("max_kl_bounded", "max_kl_mle", "kl"):
            draw(ax_kl, "rlhf", metric, d)
        draw(ax_kl, "hypo", "kl", d)
        ax_kl.axhline(r_max / beta, color="k", ls="--", lw=1.0)
        ax_kl.annotate(
            f"R_max/beta = {r_max / beta:g}",
            (0.02, r_max / beta),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            fontsize=7,
        )
        ax_kl.set_xscale("log")
        ax_kl.set_yscale("log")
        ax_kl.invert_xaxis()
        ax_kl.set_xlabel("eps = pi_ref(y0)")
        ax_kl.set_ylabel("reverse KL(pi || pi_ref)")
        ax_kl.set_title(f"beta={beta:g}: KL; DPO's worst\n= {log_slope(worst_kl):.2f} log(1/eps) + c")

        # (c) J against eps.
        worst = draw(ax_j, "dpo", "worst_value", d)
        draw(ax_j, "rlhf", "worst_value_mle", d)
        draw(ax_j, "rlhf", "value", d)
        draw(ax_j, "hypo", "value", d)
        draw(ax_j, "optimal", "value", d)
        ax_j.set_xscale("log")
        ax_j.invert_xaxis()
        ax_j.set_xlabel("eps = pi_ref(y0)")
        ax_j.set_ylabel("J(pi)")
        ax_j.set_title(f"beta={beta:g}: value J; DPO's worst\n= {-log_slope(worst):.3g} log(eps) + c")
    grid = axes[-1].get_gridspec()
    for ax in axes[-3:]:
        ax.remove()
    legend_ax = fig.add_subplot(grid[-1, :])
    legend_ax.axis("off")
    legend_ax.legend(handles.values(), handles.keys(), loc="center", ncol=3, fontsize=7.5)
    fig.suptitle("Out-of-support lower bound (arXiv:2406.01462): DPO's minimisers leave every KL ball, RLHF's cannot")
    return fig

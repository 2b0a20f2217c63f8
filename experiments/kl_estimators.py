"""KL estimators k1/k2/k3 against the exact reverse KL, and the RLOO KL gradient against the exact one.

The checks of SPEC §3/§5 behind HyPO's online KL term (arXiv:2406.01462, Algorithm 1). One prompt,
``N_RESPONSES`` responses, ``pi_ref ~ Dirichlet(1)`` and a score ``r ~ N(0, 1)``; policies tilted from the
reference, ``pi_s ∝ pi_ref exp(s r)``, with ``s`` found by root-finding so that the exact ``KL(pi_s || pi_ref)``
runs over a geometric grid up to 80% of its supremum ``log 1/pi_ref(argmax r)``.

- ``estimators``: for each tilt and seed, ``n_samples`` draws ``y ~ pi_s``, ``t = log pi_s(y) - log pi_ref(y)``,
  and the sample means of ``losses.kl_k1`` (``t``), ``kl_k2`` (``t^2/2``) and ``kl_k3`` (``exp(-t) - 1 + t``).
  Rows: ``estimate`` (the mean), ``sd`` (the samples' standard deviation), ``mean_exact`` and ``sd_exact`` (the
  estimator's exact expectation and standard deviation, every response enumerated: the z-scores use the latter)
  and ``kl_exact``. k1 and k3 are unbiased (``mean_exact`` is the KL); k2's bias is ``mean_exact - kl_exact``,
  upward at a large KL on most instances but not on all (its sign depends on how ``t`` is spread).
- ``rloo``: the gradient in the logits of ``KL(pi || pi_ref)`` at one tilt, estimated by
  ``algorithms.on_policy`` (RLOO with ``k`` samples, the log-ratio as the stop-gradient reward, i.e.
  ``losses.rloo``), ``replicates`` independent draws per seed, against the exact gradient
  ``pi(y) [log(pi(y)/pi_ref(y)) - KL]``. Rows per ``k``: ``bias`` (``|mean - exact|``, Euclidean),
  ``stderr`` (the Euclidean norm of the per-coordinate standard errors of that mean), ``z_max`` (the largest
  per-coordinate ``|mean - exact| / stderr`` over responses drawn at least ``MIN_EXPECTED_DRAWS`` times in
  expectation: a response never drawn gets an estimate of float32 round-off with a standard error to match),
  ``z_proj`` (the z-score of the mean component along the exact gradient, 1 if unbiased), ``spread`` (RMS
  error of one estimate), ``grad_norm`` (``|exact|``) and ``formula_error`` (max gap between the formula and
  autodiff of the enumerated KL through ``on_policy``'s exact path).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from coverage_lab import algorithms as A
from coverage_lab import jit, losses, plotting
from coverage_lab.data import Batch
from coverage_lab.policies import from_table
from experiments import check_frame, check_setting, each, integer, one_of
from experiments._tilts import kl, kl_limit, tilt_for
from experiments._tilts import tilt as tilt  # re-exported, with kl, kl_limit and tilt_for

N_RESPONSES = 20
N_TILTS = 8
RLOO_KL = 0.5  # the exact KL of the policy at which the RLOO gradient is checked
KS = (2, 4, 8, 16, 32, 64)
MIN_EXPECTED_DRAWS = 30  # z_max skips responses drawn fewer times than this in expectation (float32 round-off)
SETTINGS = [
    {"part": "estimators", "seeds": 10, "n_samples": 2000},
    {"part": "rloo", "seeds": 10, "replicates": 400, "ks": list(KS)},
]
SMOKE = [
    {"part": "estimators", "seeds": 5, "n_samples": 1000},
    {"part": "rloo", "seeds": 4, "replicates": 300, "ks": [2, 8]},
]
ESTIMATORS = {"k1": losses.kl_k1, "k2": losses.kl_k2, "k3": losses.kl_k3}
PARTS = {"estimators": ("n_samples",), "rloo": ("replicates", "ks")}  # each part's own keys, all required
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "part": one_of(*PARTS),
    "seeds": integer(1),  # default 10
    "n_samples": integer(2),  # a standard deviation needs two samples
    "replicates": integer(2),
    "ks": each(integer(2)),  # RLOO leaves one sample out
}
REQUIRED = ("part",)


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = ("algorithm", "seed", "step", "metric", "value", "part", "n_samples")


def cross_check(setting: dict) -> None:
    """The keys of the setting's part are there; those of the other part are not (they would be ignored)."""
    part = setting["part"]
    for other, keys in PARTS.items():
        for k in keys:
            if other == part and k not in setting:
                raise ValueError(f"setting[{k!r}] is required by part {part!r}")
            if other != part and k in setting:
                raise ValueError(f"setting[{k!r}] is a setting of part {other!r}, not of part {part!r}")


def problem(key) -> tuple[np.ndarray, np.ndarray]:
    """``(pi_ref_Y, r_Y)``: a Dirichlet(1) reference policy and a Gaussian score, from ``key``'s bits."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    return rng.dirichlet(np.ones(N_RESPONSES)), rng.normal(size=N_RESPONSES)


def _rows(algorithm, seed, step, values: dict) -> list[dict]:
    base = {"algorithm": algorithm, "seed": seed, "step": step}
    return [{**base, "metric": m, "value": float(v)} for m, v in values.items()]


def run_estimators(setting: dict, key) -> pd.DataFrame:
    """Bias and spread of k1/k2/k3 over a grid of exact KLs; ``step`` indexes the tilt."""
    k_problem, k_sample = jax.random.split(key)
    pi_ref, r = problem(k_problem)
    targets = np.geomspace(0.01, 0.8 * kl_limit(pi_ref, r), N_TILTS)
    n, seeds = setting["n_samples"], setting.get("seeds", 10)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_sample)))
    rows = []
    for i, target in enumerate(targets):
        pi = tilt_for(pi_ref, r, target)
        y_SxN = rng.choice(N_RESPONSES, size=(seeds, n), p=pi)
        logp, ref_logp = jnp.asarray(np.log(pi)[y_SxN]), jnp.asarray(np.log(pi_ref)[y_SxN])
        samples = {name: np.asarray(fn(logp, ref_logp), np.float64) for name, fn in ESTIMATORS.items()}
        moments = {name: _exact_moments(name, pi, pi_ref) for name in ESTIMATORS}
        kl_exact = kl(pi, pi_ref)
        for seed in range(seeds):
            rows += _rows("exact", seed, i, {"kl_exact": kl_exact})
            for name, v in samples.items():
                rows += _rows(name, seed, i, {"estimate": v[seed].mean(), "sd": v[seed].std(ddof=1), **moments[name]})
    return pd.DataFrame(rows)


# The estimators' per-sample values in float64 numpy (``losses.kl_k*`` compute them in float32, where
# ``exp(-t)`` overflows on responses pi barely reaches); a test checks that the two agree.
EXACT_FORMS = {"k1": lambda t: t, "k2": lambda t: 0.5 * t * t, "k3": lambda t: np.expm1(-t) + t}


def _exact_moments(name: str, pi_Y, pi_ref_Y) -> dict:
    """The exact mean and standard deviation of one sample of estimator ``name`` under ``y ~ pi``: every response
    with ``pi(y) > 0`` enumerated, in float64."""
    seen = pi_Y > 0
    p, f = pi_Y[seen], EXACT_FORMS[name](np.log(pi_Y[seen]) - np.log(pi_ref_Y[seen]))
    mean = np.sum(p * f)
    return {"mean_exact": float(mean), "sd_exact": float(np.sqrt(np.sum(p * (f - mean) ** 2)))}


def _batch() -> Batch:
    """One prompt with weight 1 for the on-policy samples (the pair fields are unused by ``on_policy``)."""
    z = jnp.zeros(1, jnp.int32)
    w = jnp.ones(1, jnp.float32)
    return Batch(z, z, z, w, w, w, z, w)


@jit(static_argnames="k")
def _rloo_grads(keys_R, logits_1xY, ref_logits_1xY, k: int):
    """RLOO estimates of ``grad_logits KL(pi || pi_ref)``, one per key: (R, Y)."""
    policy = from_table(lambda key: logits_1xY, lambda z: jax.nn.log_softmax(z, axis=-1))
    ctx = A.Context(policy, ref_logits_1xY, exact=False)

    def one(key):
        return jax.grad(lambda z: A.on_policy(ctx, z, _batch(), key, k, lambda x, y, t: t)[0])(logits_1xY)[0]

    return jax.vmap(one)(keys_R)


def _exact_grad_autodiff(logits_1xY, ref_logits_1xY):
    """``grad_logits`` of the enumerated KL through ``on_policy``'s exact path."""
    policy = from_table(lambda key: logits_1xY, lambda z: jax.nn.log_softmax(z, axis=-1))
    ctx = A.Context(policy, ref_logits_1xY, exact=True)
    key = jax.random.key(0)
    return jax.grad(lambda z: A.on_policy(ctx, z, _batch(), key, 2, lambda x, y, t: t)[0])(logits_1xY)[0]


def run_rloo(setting: dict, key) -> pd.DataFrame:
    """Bias and spread of the RLOO KL gradient against the exact gradient; ``step`` is ``k``."""
    k_problem, k_sample = jax.random.split(key)
    pi_ref, r = problem(k_problem)
    pi = tilt_for(pi_ref, r, RLOO_KL)
    kl_pi = kl(pi, pi_ref)
    exact = pi * (np.log(pi) - np.log(pi_ref) - kl_pi)  # the exact gradient in the logits
    logits, ref_logits = jnp.asarray(np.log(pi)[None], jnp.float32), jnp.asarray(np.log(pi_ref)[None], jnp.float32)
    formula_error = float(np.abs(np.asarray(_exact_grad_autodiff(logits, ref_logits)) - exact).max())
    n_rep, seeds = setting["replicates"], setting.get("seeds", 10)
    rows = []
    for k in setting["ks"]:
        for seed in range(seeds):
            keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(k_sample, k), seed), n_rep)
            g = np.asarray(_rloo_grads(keys, logits, ref_logits, k), np.float64)  # (R, Y)
            err = g.mean(0) - exact
            se = g.std(0, ddof=1) / np.sqrt(n_rep)
            well_sampled = k * n_rep * pi >= MIN_EXPECTED_DRAWS
            proj = g @ exact / (exact @ exact)  # the component along the exact gradient: mean 1 if unbiased
            values = {
                "bias": np.linalg.norm(err),
                "stderr": np.linalg.norm(se),
                "z_max": np.max(np.abs(err[well_sampled]) / se[well_sampled]),
                "z_proj": (proj.mean() - 1.0) / (proj.std(ddof=1) / np.sqrt(n_rep)),
                "spread": np.sqrt(np.mean(np.sum((g - exact) ** 2, -1))),
                "grad_norm": np.linalg.norm(exact),
                "formula_error": formula_error,
                "kl_exact": kl_pi,
            }
            rows += _rows("rloo", seed, k, values)
    return pd.DataFrame(rows)


def run(setting: dict, key) -> pd.DataFrame:
    """Dispatch on ``setting["part"]``: ``estimators`` or ``rloo``."""
    check_setting(__name__, setting, key)
    parts = {"estimators": run_estimators, "rloo": run_rloo}
    return parts[setting["part"]](setting, key)


COLORS = {"k1": "#1f77b4", "k2": "#d62728", "k3": "#2ca02c"}


def _pooled_z(est: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per estimator and tilt: the z-score of the mean over all seeds' samples against the exact KL (``z``) and
    against the estimator's own exact expectation (``z_own``), with the exact standard error
    (``sd_exact``, enumerated). Not the samples' own: k3's ``exp(-t)`` is heavy-tailed at a large KL, so a
    sample of a few thousand usually misses the rare draws that carry its variance, and its sample standard
    deviation is then far too small (z of -30 to -60 at KL 1.4-3.2 on most seeds)."""
    kl_exact = est[est["metric"] == "kl_exact"].groupby("step")["value"].first()
    wide = est[est["metric"].isin(("estimate", "sd_exact", "mean_exact"))].pivot_table(
        index=["algorithm", "step"], columns="metric", values="value", aggfunc=list
    )
    out = []
    for (name, step), row in wide.iterrows():
        m, sd = np.mean(row["estimate"]), row["sd_exact"][0]
        se = sd / np.sqrt(n * len(row["estimate"]))
        z_own = (m - row["mean_exact"][0]) / se
        out.append({"algorithm": name, "x": kl_exact[step], "z": (m - kl_exact[step]) / se, "z_own": z_own})
    return pd.DataFrame(out)


def plot(df: pd.DataFrame):
    """(a) bias of k1/k2/k3 against exact KL; (b) its z-score; (c) per-sample spread; (d) the RLOO gradient vs k."""
    check_frame(df, PLOT_COLUMNS)
    fig, axes = plotting.figure(2, 2, width=4.0, height=2.9)
    est = df[df["part"] == "estimators"]
    if len(est):
        kl_exact = est[est["metric"] == "kl_exact"].groupby("step")["value"].first()
        e = est[est["metric"] == "estimate"].assign(x=lambda d: d["step"].map(kl_exact))
        e["value"] = e["value"] - e["x"]
        sd = est[est["metric"] == "sd"].assign(x=lambda d: d["step"].map(kl_exact))
        n = int(est["n_samples"].iloc[0])
        z = _pooled_z(est, n)
        for name in ESTIMATORS:
            for ax, d in ((axes[0], e), (axes[2], sd)):
                plotting.band(ax, d[d["algorithm"] == name], x="x", color=COLORS[name])
            zz = z[z["algorithm"] == name].sort_values("x")
            axes[1].plot(zz["x"], zz["z"], "o-", color=COLORS[name], lw=1.4, ms=3, label=name)
        axes[0].axhline(0.0, color="#333333", lw=0.8)
        axes[0].set_yscale("symlog", linthresh=1e-2)
        axes[0].set_ylabel(f"mean of {n} samples − exact KL")
        axes[0].set_title(f"(a) bias, median and min–max over {est['seed'].nunique()} seeds", loc="left", fontsize=8)
        axes[1].axhspan(-3, 3, color="#999999", alpha=0.2, lw=0, label="|z| < 3")
        axes[1].set_yscale("symlog", linthresh=3)
        axes[1].set_ylabel("z-score of the pooled mean")
        axes[1].set_title(
            f"(b) bias / exact standard error, all {est['seed'].nunique() * n} samples", loc="left", fontsize=8
        )
        axes[2].set_yscale("log")
        axes[2].set_ylabel("per-sample standard deviation")
        axes[2].set_title("(c) spread of one sample", loc="left", fontsize=8)
        for ax in axes[:3]:
            ax.set_xscale("log")
            ax.set_xlabel("exact KL(π‖π_ref)")
            ax.legend(fontsize=7)
    rl = df[df["part"] == "rloo"]
    if len(rl):
        ax = axes[3]
        for metric, c, label in (("spread", "#9467bd", "RMS error of one estimate"), ("bias", "#333333", "|bias|")):
            plotting.band(ax, rl[rl["metric"] == metric].assign(m=label), by="m", color=c)
        se = rl[rl["metric"] == "stderr"].groupby("step")["value"].median()
        ax.plot(se.index, se.values, ":", color="#333333", lw=1, label="standard error of the mean")
        spread = rl[rl["metric"] == "spread"].groupby("step")["value"].median()
        slope, lo, hi = plotting.loglog_fit(spread.index, spread.values) if len(spread) > 2 else (np.nan,) * 3
        grad_norm = rl[rl["metric"] == "grad_norm"]["value"].iloc[0]
        kl_at = rl[rl["metric"] == "kl_exact"]["value"].iloc[0]
        z_proj = rl[rl["metric"] == "z_proj"]["value"].abs().max()
        z_max = rl[rl["metric"] == "z_max"]["value"].max()
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("k (samples per prompt)")
        ax.set_ylabel("error of the RLOO gradient (Euclidean)")
        ax.set_title(
            f"(d) RLOO KL gradient at KL={kl_at:.2f}, |∇|={grad_norm:.2f}\n"
            f"spread ∝ k^{slope:.2f} [{lo:.2f}, {hi:.2f}]; bias max|z| {z_proj:.1f} (on ∇), {z_max:.1f}",
            loc="left",
            fontsize=7.5,
        )
        ax.legend(fontsize=7)
    fig.suptitle("Monte Carlo estimates on y ~ π against exact values: KL (k1, k2, k3), its RLOO gradient", fontsize=9)
    return fig

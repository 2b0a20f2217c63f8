"""The theory experiments (lower_bound, separation_map, rates): their SMOKE runs through the CLI path, their CSVs
are tidy, and the claims each one is about hold on the numbers it computed (arXiv:2406.01462, SPEC §4–5)."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

from coverage_lab import algorithms, bandits, coverage, exact, losses, metrics, minimisers, plotting
from coverage_lab import data as D
from coverage_lab.cli import reproduce
from experiments import _counts, rates

TIDY = {"experiment", "algorithm", "seed", "step", "metric", "value"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run each experiment's SMOKE once (CSV then PNG, as ``coverage-lab reproduce --smoke``)."""
    out = tmp_path_factory.mktemp("smoke")
    cache = {}

    def get(name: str) -> pd.DataFrame:
        if name not in cache:
            csv = reproduce(name, smoke=True, out=out)
            assert csv.with_suffix(".png").stat().st_size > 0
            cache[name] = pd.read_csv(csv)
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["lower_bound", "separation_map", "rates"])
def test_smoke_is_tidy(smoke, name):
    df = smoke(name)
    assert TIDY <= set(df.columns)
    assert (df["experiment"] == name).all()
    assert len(df) > 0
    assert df["metric"].notna().all() and df["algorithm"].notna().all()
    assert not df["value"].isna().any()


# ----------------------------------------------------------------------------------------------
# lower_bound: SPEC §4.2–4.4


def _per_eps(df, algorithm, metric):
    g = df[(df["algorithm"] == algorithm) & (df["metric"] == metric) & df["delta"].isna()]
    return g.groupby("eps")["value"].mean().sort_index()


def test_lower_bound_dpo_loss_flat_while_kl_grows(smoke):
    df = smoke("lower_bound")
    fam = df[df["delta"].notna()]
    for eps, g in fam.groupby("eps"):
        loss = g[g["metric"] == "family_loss"]["value"]
        kl = g[g["metric"] == "family_kl"].sort_values("delta")
        value = g[g["metric"] == "family_value"].sort_values("delta")
        assert loss.max() - loss.min() < 1e-6  # every member of the family is a DPO minimiser
        assert kl["value"].iloc[-1] == pytest.approx(np.log(1 / eps), rel=1e-6)  # delta = 1: point mass on y0
        assert kl["value"].iloc[-1] > 2 * kl["value"].iloc[0]
        assert value["value"].iloc[-1] < value["value"].iloc[0] - 0.1


def test_lower_bound_dpo_worst_case_degrades_like_log(smoke):
    df = smoke("lower_bound")
    beta = df["beta"].iloc[0]
    kl, worst = _per_eps(df, "dpo", "max_kl"), _per_eps(df, "dpo", "worst_value")
    log_inv = np.log(1 / kl.index.values)
    assert np.polyfit(log_inv, kl.values, 1)[0] == pytest.approx(1.0, abs=0.02)
    assert np.all(np.diff(worst.values) > 0)  # J of the worst minimiser falls as eps falls
    assert np.polyfit(log_inv, worst.values, 1)[0] == pytest.approx(-beta, rel=0.02)
    assert kl.max() > df["r_max"].iloc[0] / beta  # DPO leaves RLHF's ball


def test_lower_bound_rlhf_inside_kl_ball_and_hypo_repairs(smoke):
    df = smoke("lower_bound")
    bound = df["r_max"].iloc[0] / df["beta"].iloc[0]
    for metric in ("max_kl_bounded", "max_kl_mle", "kl"):
        assert (_per_eps(df, "rlhf", metric) <= bound + 1e-9).all(), metric
    kl, mass = _per_eps(df, "hypo", "kl"), _per_eps(df, "hypo", "ood_mass")
    assert kl.max() - kl.min() < 0.5  # bounded, where DPO's worst case grows by log(1e7) ≈ 16
    # Stationarity in y0's logit: DPO's gradient there is exactly zero and lam * KL's is
    # lam pi(y0) (log(pi(y0)/eps) - KL), so HyPO ends at pi(y0) = eps * exp(KL) > eps; DPO alone (HyPO without
    # its KL term) ends below eps, its covered logits spreading around y0's fixed one. Never above (5%: the
    # decayed Adam run ends within float32 of it); reached where that gradient, of order lam * eps, is far above
    # Adam's epsilon (1e-8): lam * eps >= 1e-6. Tinier eps are still on their way (pi(y0) first falls with the
    # normaliser, then climbs back at an Adam step throttled by that epsilon).
    ratio = mass / (mass.index.values * np.exp(kl.values))
    assert (ratio <= 1.05).all(), ratio
    settled = ratio[df["lam"].iloc[0] * ratio.index.values >= 1e-6]
    assert len(settled) > 0 and (settled >= 0.95).all(), ratio
    assert mass.iloc[0] < 1e-7


# ----------------------------------------------------------------------------------------------
# separation_map


def test_separation_map_claims(smoke):
    from experiments.separation_map import summary

    s = summary(smoke("separation_map")).set_index(["family", "knob", "algorithm", "kind", "metric"])["value"]
    tab = s.loc["tabular"]
    for alg in ("dpo", "ipo"):  # what the loss allows: pi* when covered, arbitrarily bad when not
        assert tab.loc[("uniform", alg, "worst_minimiser", "suboptimality")] < 1e-3
        assert tab.loc[("deficient_2", alg, "worst_minimiser", "suboptimality")] > 1.0
    # finite but poor global coverage: trained DPO degrades, RLHF and HyPO do not (means over 4 seeds; over 8
    # shifted keys the smallest ratios were 8.6x DPO's own under uniform data, 4.8x HyPO's)
    dpo_poor = tab.loc[("tail_0.001", "dpo", "trained", "suboptimality")]
    assert dpo_poor > 5 * tab.loc[("uniform", "dpo", "trained", "suboptimality")]
    for alg in ("rlhf", "hypo"):
        assert dpo_poor > 3 * tab.loc[("tail_0.001", alg, "trained", "suboptimality")]
    assert tab.loc[("tail_0.001", "rlhf", "trained", "kl")] < 1.0  # R_max / beta
    # shared features: the linear DPO extrapolates correctly even at C_glo = inf
    assert s.loc[("linear", "deficient_2", "dpo", "trained", "suboptimality")] < 0.1


# ----------------------------------------------------------------------------------------------
# rates: SPEC §4.5


def test_rates_claims(smoke):
    df = smoke("rates")
    fit = rates.slopes(df)
    gap = rates.slopes(df, "reward_gap")
    slope, lo, hi = fit[("dpo", 1.0)]
    # KL-regularised suboptimality: quadratic in the error, so ~1/N; at least the paper's N^-1/2
    assert -1.4 < slope < -0.7 and hi < -0.5
    assert -0.85 < gap[("dpo", 1.0)][0] < -0.3  # the first-order reward gap: N^-1/2
    assert fit[("rlhf", 0.0)][0] < -0.6 and fit[("hypo", 0.0)][0] < -0.6
    # IPO's margins are bounded (1/(2 tau)): a rare response seen only winning does not run off to infinity as under
    # DPO, so on this instance IPO converges under partial coverage too, towards its closed-form population solution
    assert fit[("ipo", 0.0)][2] < -0.6
    ipo = df[df["algorithm"] == "ipo"]
    floor = ipo[ipo["metric"] == "suboptimality_population"]["value"]
    assert len(floor) == 1 and 0 < floor.iloc[0] < ipo[ipo["metric"] == "suboptimality"]["value"].min()
    sub = df[(df["metric"] == "suboptimality") & df["n_pairs"].notna()]
    mean = sub.groupby(["algorithm", "mix", "n_pairs"])["value"].mean()
    # partial coverage, the same datasets for the three methods: across N, DPO's expected suboptimality is far
    # above RLHF's and HyPO's (the median over N of the ratio of means; a heavy tail over seeds)
    assert (mean.loc[("dpo", 0.0)] / mean.loc[("rlhf", 0.0)]).median() > 10
    assert (mean.loc[("dpo", 0.0)] / mean.loc[("hypo", 0.0)]).median() > 5
    paired = sub[sub["mix"] == 0.0].pivot_table(index=["n_pairs", "seed"], columns="algorithm", values="value")
    assert (paired["dpo"] > paired["rlhf"]).mean() >= 0.9  # dataset by dataset
    assert (df["c_glo"][df["mix"] == 0.0] > 1e6).all() and (df["c_pistar"][df["mix"] == 0.0] < 3).all()


def test_rates_methods_of_a_setting_train_on_the_same_data():
    """A method's runs do not depend on which other methods share its setting: every method of a setting trains
    on the datasets drawn for the setting (a paired comparison)."""
    setting = {**rates.SMOKE[1], "n_grid": (100, 1000, 10_000), "seeds": 2, "steps": 100}
    key = jax.random.key(3)
    alone = rates.run({**setting, "methods": ["dpo"]}, key)
    both = rates.run({**setting, "methods": ["rlhf", "dpo"]}, key)
    pd.testing.assert_frame_equal(alone, both[both["algorithm"] == "dpo"].reset_index(drop=True))
    assert not np.allclose(alone["value"], both[both["algorithm"] == "rlhf"]["value"])


def test_seed_bootstrap_slope_carries_the_spread_between_seeds():
    rng = np.random.default_rng(0)
    n = np.repeat([100.0, 1e3, 1e4, 1e5], 8)
    same = plotting.loglog_fit_seeds(n, 3.0 / n)  # identical seeds: no spread, the exact slope
    np.testing.assert_allclose(same, (-1.0, -1.0, -1.0), rtol=1e-9)
    noisy = 3.0 / n * np.exp(0.5 * rng.standard_normal(n.size))
    slope, lo, hi = plotting.loglog_fit_seeds(n, noisy)
    assert lo < slope < hi and lo < -1.0 < hi and hi - lo < 0.5
    # one seed far off at the largest N (a heavy tail): the slope of the means flattens and the interval widens
    tail = noisy.copy()
    tail[-1] = 1e3 * tail[-1]
    t_slope, t_lo, t_hi = plotting.loglog_fit_seeds(n, tail)
    assert t_slope > slope + 0.2 and t_hi - t_lo > 2 * (hi - lo)
    # the interval is the spread of the fit over resampled seeds, not the regression's residual interval
    mean = pd.Series(noisy).groupby(n).mean()
    assert plotting.loglog_fit(mean.index, mean.values)[0] == pytest.approx(slope, rel=1e-9)


def test_empirical_batch_is_the_sampled_loss():
    env = bandits.random_tabular(jax.random.key(7), 3, 8)
    mu = np.asarray(env.pi_ref_XxY)
    pair, pref = coverage.pair_table(mu), bandits.preference_table(env.reward_XxY)
    sampled = D.sample_pairs(jax.random.key(1), env.rho_X, pair, pref, 500)
    compressed = D.empirical_batch(D.pair_counts(sampled, 3, 8))
    logp = jax.nn.log_softmax(jax.random.normal(jax.random.key(2), (3, 8)))
    ref = np.log(mu)

    def loss(b):
        per = losses.dpo(logp[b.x_B, b.y_w_B], logp[b.x_B, b.y_l_B], ref[b.x_B, b.y_w_B], ref[b.x_B, b.y_l_B], 0.5)
        return float((b.weight_B * per).sum())

    assert loss(compressed) == pytest.approx(loss(sampled), rel=1e-5)


def test_multinomial_counts_match_sample_pairs():
    env = rates.instance(rates.SETTINGS[0])
    mu = rates.offline_mu(env, 1.0)
    n = 100_000
    p = _counts.labelled_pair_probs(env, mu)
    sampled = D.sample_pairs(
        jax.random.key(3), env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY), n
    )
    c_rows = D.pair_counts(sampled, env.n_prompts, env.n_responses)
    c_multi = _counts.sample_counts(env, mu, [n], [jax.random.key(4)])[0]
    for c in (c_rows, c_multi):
        assert c.sum() == n
        assert np.all(np.abs(c - n * p) < 5 * np.sqrt(n * p) + 2)


@pytest.mark.parametrize("method", ["dpo", "ipo"])
def test_offline_runs_on_counts_leave_the_unseen_logits_where_they_were(method):
    """SPEC §4.1: DPO's and IPO's gradient on a response the data never shows is zero, so a tabular run leaves the
    differences between such responses' logits at pi_ref's. Unfrozen, Adam turned float32 round-off there into
    moves of several nats (6.2 for IPO at the first prompt of this dataset, 2026-12-01)."""
    from experiments import separation_map

    env = separation_map.make_instance("tabular", 0, 1.0)
    mu = separation_map.knobs(env)["deficient_2"]  # two responses per prompt never shown
    keys = [jax.random.key(0)]
    counts = _counts.sample_counts(env, mu, [1000], keys)
    logp = _counts.train_on_counts(env, _counts.make_algorithm(method, 1.0), counts, keys, steps=2000)[0]
    ref = np.log(np.asarray(env.pi_ref_XxY, np.float64))
    for x in range(env.n_prompts):
        u = np.flatnonzero(np.asarray(mu)[x] == 0)
        assert len(u) == 2 and abs((logp[x, u[0]] - logp[x, u[1]]) - (ref[x, u[0]] - ref[x, u[1]])) < 1e-5
    assert np.abs(logp - ref).max() > 0.1  # the seen responses' logits did move


def test_trained_dpo_reaches_the_empirical_minimiser():
    """At large N the optimisation error is below the statistical error: the trained DPO equals the exact
    minimiser of its own empirical loss (``minimisers.minimiser_set`` on the empirical pair and win tables)."""
    setting = rates.SETTINGS[0]
    env = rates.instance(setting)
    beta = setting["beta"]
    keys = [jax.random.key(5), jax.random.key(6)]
    counts = _counts.sample_counts(env, rates.offline_mu(env, 1.0), [100_000] * 2, keys)
    logp = _counts.train_on_counts(env, algorithms.dpo(beta), counts, keys, steps=setting["steps"])
    trained = metrics.policy_metrics(logp, env, beta=beta)["suboptimality"]
    j_star = exact.optimal_value(env.reward_XxY, env.pi_ref_XxY, env.rho_X, beta)
    for c, sub in zip(counts, trained, strict=True):
        m = c + c.transpose(0, 2, 1)
        pref = np.divide(c, m, out=np.full(c.shape, 0.5), where=m > 0)
        ms = minimisers.minimiser_set(env.pi_ref_XxY, m, pref, env.rho_X, env.reward_XxY, beta)
        assert ms.n_components_X.tolist() == [1, 1, 1]  # a unique minimiser
        assert sub == pytest.approx(j_star - ms.best_value, rel=0.1)

"""The sampled track: estimators, exact-vs-sampled agreement, seeds as a batch axis, no recompilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import coverage_lab as cl
from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage, data, exact, losses, policies
from coverage_lab.simulation import _run


def final_policies(r):
    logp = np.asarray(r.logs["eval"][:, -1], np.float64)
    pi = np.exp(logp - logp.max(-1, keepdims=True))
    return pi / pi.sum(-1, keepdims=True)


def test_sample_pairs_match_the_pair_and_preference_tables():
    """Chi-square goodness of fit of the (x, y_w, y_l) counts; failure probability 1e-4 under the null."""
    env = bandits.random_tabular(jax.random.key(0), 2, 3, concentration=2.0)
    pair = coverage.pair_table(env.pi_ref_XxY)
    pref = bandits.preference_table(env.reward_XxY)
    n = 40_000
    d = data.sample_pairs(jax.random.key(1), env.rho_X, pair, pref, n)
    counts = np.zeros((2, 3, 3))
    np.add.at(counts, (np.asarray(d.x_B), np.asarray(d.y_w_B), np.asarray(d.y_l_B)), 1)
    expected = np.asarray(data.exact_batch(env.rho_X, pair, pref).weight_B)
    exact_batch = data.exact_batch(env.rho_X, pair, pref)
    e = np.zeros((2, 3, 3))
    e[np.asarray(exact_batch.x_B), np.asarray(exact_batch.y_w_B), np.asarray(exact_batch.y_l_B)] = expected
    # ties (y, y) are labelled either way; fold the diagonal the way sampling does
    mask = e > 0
    chi2 = ((counts[mask] - n * e[mask]) ** 2 / (n * e[mask])).sum()
    assert counts[~mask].sum() == 0
    assert chi2 < stats.chi2.ppf(1 - 1e-4, mask.sum() - 1)
    np.testing.assert_allclose(np.asarray(d.mu_w_B), env.pi_ref_XxY[np.asarray(d.x_B), np.asarray(d.y_w_B)], rtol=1e-5)


def test_kl_estimators_k1_k3_unbiased_k2_biased():
    """Means of 200k draws against the exact KL, 5 standard errors (failure probability < 1e-6 per check)."""
    pi_ref = jnp.asarray([0.6, 0.3, 0.08, 0.02])
    pi = jnp.asarray([0.1, 0.2, 0.3, 0.4])
    kl = float(exact.kl_per_prompt(np.asarray(pi)[None], np.asarray(pi_ref)[None])[0])
    y = jax.random.categorical(jax.random.key(0), jnp.log(pi), shape=(200_000,))
    lp, ref = jnp.log(pi)[y], jnp.log(pi_ref)[y]
    for est, unbiased in ((losses.kl_k1, True), (losses.kl_k3, True), (losses.kl_k2, False)):
        v = np.asarray(est(lp, ref), np.float64)
        z = abs(v.mean() - kl) / (v.std() / np.sqrt(v.size))
        assert (z < 5) == unbiased, (est.__name__, v.mean(), kl, z)


def test_rloo_kl_gradient_is_unbiased():
    """The sampled HyPO KL surrogate's gradient (RLOO, k = 4) against the exact pi(y)[log(pi/pi_ref)(y) - KL]."""
    env = bandits.random_tabular(jax.random.key(3), 2, 4, concentration=2.0)
    policy = policies.tabular_softmax(env)
    ref = policy.init(None)
    logits = ref + jax.random.normal(jax.random.key(4), ref.shape)
    batch = data.exact_batch(env.rho_X, coverage.pair_table(env.pi_ref_XxY), bandits.preference_table(env.reward_XxY))
    pi = np.asarray(jax.nn.softmax(logits), np.float64)
    t = np.log(pi) - np.log(np.asarray(env.pi_ref_XxY))
    kl_x = (pi * t).sum(-1, keepdims=True)
    exact_grad = env.rho_X[:, None] * pi * (t - kl_x)
    # exact path (enumerated) reproduces the formula
    ctx_exact = A.Context(policy, ref, exact=True)
    g_exact = jax.grad(lambda p: A.on_policy(ctx_exact, p, batch, None, 4, A._kl_cost)[0])(logits)
    np.testing.assert_allclose(g_exact, exact_grad, atol=1e-5)
    # sampled path: prompts weighted by rho, many independent keys
    sampled = batch._replace(prompt_x_P=jnp.arange(2), prompt_w_P=jnp.asarray(env.rho_X, jnp.float32))
    ctx = A.Context(policy, ref, exact=False)
    grad = jax.jit(jax.vmap(jax.grad(lambda p, k: A.on_policy(ctx, p, sampled, k, 4, A._kl_cost)[0]), (None, 0)))
    g = np.asarray(grad(logits, jax.random.split(jax.random.key(5), 20_000)), np.float64)
    z = np.abs(g.mean(0) - exact_grad) / (g.std(0) / np.sqrt(len(g)) + 1e-12)
    assert z.max() < 5, z  # 8 coordinates at 5 sigma: failure probability < 5e-6


def test_sampled_dpo_approaches_the_exact_solution_at_rate_n_to_the_minus_half():
    """TV error of the empirical DPO solution over 8 seeds at N = 64..4096: the fitted log-log slope's 99.9%
    interval contains -1/2 (failure probability 1e-3 if the error is ~ C N^-1/2 with log-normal noise)."""
    env = bandits.random_tabular(jax.random.key(7), 2, 3, concentration=2.0)
    beta = 1.0
    pi_star = exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, beta)
    ns, errs = [], []
    for n in (64, 256, 1024, 4096):
        r = cl.run(
            env, A.dpo(beta), mu=env.pi_ref_XxY, n_pairs=n, steps=1500, seeds=8, key=jax.random.key(n), batch_size=n
        )
        err = 0.5 * np.abs(final_policies(r) - pi_star).sum(-1).max(-1)
        ns += [n] * len(err)
        errs += list(err)
    res = stats.linregress(np.log(ns), np.log(errs))
    half = stats.t.ppf(1 - 5e-4, len(ns) - 2) * res.stderr
    assert res.slope - half < -0.5 < res.slope + half, (res.slope, half)
    assert np.mean(errs[-8:]) < np.mean(errs[:8]) / 3


@pytest.mark.parametrize("steps, every", [(41, 1), (45, 1), (60, 3), (130, 5), (10, 1)])
def test_the_default_log_interval_divides_any_step_count(steps, every):
    env, mu = bandits.counterexample(1e-2)
    r = cl.run(env, A.dpo(0.1), mu=mu, n_pairs=None, steps=steps, seeds=1, key=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(r.logs["step"])[0], np.arange(0, steps + 1, every))


def test_vmapped_seeds_equal_seeds_run_one_at_a_time():
    env, mu = bandits.counterexample(1e-2)
    kw = dict(mu=mu, n_pairs=32, steps=40, key=jax.random.key(0), batch_size=8)
    together = cl.run(env, A.hypo(0.1, 0.1), seeds=[0, 1, 2], **kw)
    for i, s in enumerate([0, 1, 2]):
        alone = cl.run(env, A.hypo(0.1, 0.1), seeds=[s], **kw)
        np.testing.assert_allclose(together.logs["eval"][i], alone.logs["eval"][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(together.data.y_w_B[i], alone.data.y_w_B[0])


def test_new_sweep_values_do_not_recompile():
    env = bandits.random_tabular(jax.random.key(0), 2, 5)
    kw = dict(n_pairs=16, steps=10, seeds=2, key=jax.random.key(0))
    cl.run(env, A.hypo(beta=0.1, lam=0.1), mu=env.pi_ref_XxY, **kw)
    size = _run._cache_size()
    tail = np.zeros((2, 5), bool)
    tail[:, -1] = True
    for beta, lam, eps in ((0.5, 0.01, 0.1), (2.0, 1.0, 0.01)):
        mu = coverage.tail_mass(env.pi_ref_XxY, tail, eps)
        other = bandits.random_tabular(jax.random.key(int(1 / eps)), 2, 5)
        cl.run(other, A.hypo(beta=beta, lam=lam), mu=mu, **kw)
    assert _run._cache_size() == size


def test_a_sweep_is_one_compiled_call_equal_to_its_runs_one_by_one():
    """A list of one algorithm at several values runs every (value, seed) in one call, each value on the same
    seeds' data, with the numbers of separate runs; then more values of the same length reuse the program."""
    env, mu = bandits.counterexample(1e-2)
    kw = dict(mu=mu, n_pairs=32, steps=40, key=jax.random.key(0), batch_size=8, seeds=[0, 3])
    lams = (0.01, 0.3, 3.0)
    before = _run._cache_size()
    swept = cl.run(env, [A.hypo(0.1, lam) for lam in lams], **kw)
    assert _run._cache_size() == before + 1 and len(swept) == len(lams)
    for lam, r in zip(lams, swept, strict=True):
        alone = cl.run(env, A.hypo(0.1, lam), **kw)
        np.testing.assert_allclose(r.logs["eval"], alone.logs["eval"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(r.data.y_w_B, swept[0].data.y_w_B)
    cl.run(env, [A.hypo(0.5, lam) for lam in (1.0, 2.0, 4.0)], **kw)
    assert _run._cache_size() == before + 2  # + the single-value program above, no more
    df = cl.simulate(env, [A.hypo(0.1, lam) for lam in lams[:2]], **kw)
    assert sorted(df["lam"].unique()) == [0.01, 0.3] and set(df["seed"]) == {0, 3}
    last = df[(df.metric == "kl") & (df.step == df.step.max())].groupby("lam")["value"].mean()
    assert last[0.3] < last[0.01]  # the larger KL weight keeps the policy closer to pi_ref


def test_sweep_validation():
    env, mu = bandits.counterexample(1e-2)
    kw = dict(mu=mu, n_pairs=8, steps=2, key=jax.random.key(0), seeds=1)
    for bad in ([], [A.dpo(0.1), A.hypo(0.1)], [A.hypo(0.1), A.hypo(0.1, kl_budget=1.0)], [A.hypo(0.1), "dpo"]):
        with pytest.raises(ValueError, match="algorithm"):
            cl.run(env, bad, **kw)


def test_constrained_hypo_starts_dual_ascent_at_its_own_lam_when_the_program_is_reused():
    env, mu = bandits.counterexample(1e-2)
    kw = dict(mu=mu, n_pairs=16, steps=4, log_every=2, key=jax.random.key(0), seeds=1, batch_size=8)
    for lam in (0.5, 2.0):  # the second call reuses the first one's compiled program
        r = cl.run(env, A.hypo(0.1, lam=lam, kl_budget=0.1), **kw)
        assert float(r.logs["metrics"]["lam"][0, 0]) == pytest.approx(lam)


def final_metric(df, metric):
    last = df[(df.metric == metric) & (df.step == df.step.max())]
    return last.set_index("seed")["value"]


@pytest.mark.parametrize("instance", ["counterexample", "linear"])
def test_sampled_hypo_keeps_reverse_kl_below_dpo_and_rlhf_inside_its_ball(instance):
    if instance == "counterexample":
        env, mu = bandits.counterexample(1e-3)
    else:
        env = bandits.random_linear(jax.random.key(11), 3, 20, 4)
        mu = coverage.deficient(env.pi_ref_XxY, 5, env.reward_XxY)
    kw = dict(mu=mu, n_pairs=128, steps=400, seeds=5, key=jax.random.key(1), metrics=["kl"])
    kl_dpo = final_metric(cl.simulate(env, A.dpo(0.1), **kw), "kl")
    kl_hypo = final_metric(cl.simulate(env, A.hypo(0.1, lam=0.05), **kw), "kl")
    kl_rlhf = final_metric(cl.simulate(env, A.rlhf(0.1, r_max=0.2), **kw), "kl")
    assert (kl_hypo < kl_dpo).all(), (kl_hypo, kl_dpo)
    assert (kl_rlhf <= 0.2 / 0.1).all()

"""Objectives, the training loop and metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import coverage_lab as cl
from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage, data, exact, metrics, policies, train


def setup(eps=0.05):
    env, mu = bandits.counterexample(eps)
    batch = data.exact_batch(env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))
    pol = policies.tabular_softmax(env)
    return env, mu, batch, pol, A.Context(pol, pol.init(None), exact=True)


def objective(alg, ctx):
    return alg.make(alg, ctx, {k: jnp.float32(v) for k, v in alg.hparams.items()})


def test_hypo_is_dpo_plus_lam_times_the_exact_kl():
    env, _, batch, pol, ctx = setup()
    logits = ctx.ref_params + jnp.asarray([[0.3, -0.2, 0.5]])
    dpo_loss, _ = objective(A.dpo(0.2), ctx)(logits, batch, None)
    hypo_loss, m = objective(A.hypo(0.2, lam=0.7), ctx)(logits, batch, None)
    pi = np.asarray(jax.nn.softmax(logits), np.float64)
    kl = exact.reverse_kl(pi, env.pi_ref_XxY, env.rho_X)
    np.testing.assert_allclose(float(m["kl_penalty"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(hypo_loss), float(dpo_loss) + 0.7 * kl, rtol=1e-5)


def test_online_dpo_with_no_online_fraction_is_offline_dpo():
    _, _, batch, _, ctx = setup()
    logits = ctx.ref_params + 0.1
    a, _ = objective(A.dpo(0.3), ctx)(logits, batch, None)
    b, _ = objective(A.online_dpo(0.3, online_fraction=0.0), ctx._replace(pref_XxYxY=jnp.full((1, 3, 3), 0.5)))(
        logits, batch, None
    )
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_exact_online_dpo_is_the_mean_of_sampled_online_dpo():
    env, _, batch, pol, ctx = setup()
    pref = jnp.asarray(bandits.preference_table(env.reward_XxY), jnp.float32)
    logits = ctx.ref_params + jnp.asarray([[0.4, -0.3, 0.9]])
    alg = A.online_dpo(0.5, online_fraction=1.0)
    exact_loss, _ = objective(alg, ctx._replace(pref_XxYxY=pref))(logits, batch, None)
    sampled = batch._replace(prompt_x_P=jnp.zeros(256, jnp.int32), prompt_w_P=jnp.full(256, 1 / 256, jnp.float32))
    obj = objective(alg, ctx._replace(pref_XxYxY=pref, exact=False))
    vals = np.asarray(jax.vmap(lambda k: obj(logits, sampled, k)[0])(jax.random.split(jax.random.key(0), 400)))
    assert abs(vals.mean() - float(exact_loss)) < 5 * vals.std() / np.sqrt(len(vals))


def test_constrained_hypo_meets_its_kl_budget():
    env = bandits.random_tabular(jax.random.key(2), 2, 4)
    budget = 0.05
    df = cl.simulate(
        env,
        A.hypo(0.05, lam=1.0, kl_budget=budget),
        mu=env.pi_ref_XxY,
        n_pairs=None,
        steps=1500,
        seeds=1,
        key=jax.random.key(0),
        metrics=["kl"],
        learning_rate=0.05,
    )
    kl = df[df.step == df.step.max()]["value"].item()
    unconstrained = cl.simulate(
        env, A.dpo(0.05), mu=env.pi_ref_XxY, n_pairs=None, steps=1500, seeds=1, key=jax.random.key(0), metrics=["kl"]
    )
    assert unconstrained[unconstrained.step == 1500]["value"].item() > 2 * budget  # the constraint binds
    assert abs(kl - budget) < 0.2 * budget


def test_fit_minimises_a_quadratic_and_logs_on_schedule():
    target = jnp.asarray([1.0, -2.0])

    def obj(params, batch, key):
        loss = jnp.sum((params - target) ** 2)
        return loss, {"loss": loss}

    dummy = data.exact_batch(np.ones(1), np.full((1, 2, 2), 0.25), np.full((1, 2, 2), 0.5))
    params, logs = train.fit(
        obj,
        jnp.zeros(2),
        dummy,
        jax.random.key(0),
        steps=300,
        optimizer=optax.sgd(0.1),
        log_every=100,
        evaluate=lambda p: p,
    )
    np.testing.assert_allclose(params, target, atol=1e-5)
    np.testing.assert_array_equal(logs["step"], [0, 100, 200, 300])
    assert logs["eval"].shape == (4, 2) and float(logs["metrics"]["loss"][0]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="log_every"):
        train.fit(obj, jnp.zeros(2), dummy, jax.random.key(0), steps=10, optimizer=optax.sgd(0.1), log_every=3)


def test_metrics_of_pi_star_and_hand_computed_ood_mass():
    env, mu = bandits.counterexample(0.1)
    beta = 0.5
    pi_star = exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, beta)
    m = metrics.policy_metrics(np.log(pi_star)[None], env, beta=beta, mu_XxY=mu)
    np.testing.assert_allclose(m["suboptimality"], 0.0, atol=1e-12)
    np.testing.assert_allclose(m["value"], exact.optimal_value(env.reward_XxY, env.pi_ref_XxY, env.rho_X, beta))
    np.testing.assert_allclose(m["ood_mass"], pi_star[0, 2])
    np.testing.assert_allclose(m["logp_best"], np.log(pi_star[0, 0]))
    d = data.Batch(
        *(jnp.asarray(v) for v in ([0, 0], [0, 1], [1, 0], [0.25, 0.75], [0.5, 0.5], [0.5, 0.5], [0, 0], [0.5, 0.5]))
    )
    dm = metrics.data_metrics(np.log(pi_star)[None], d, 1, 3)
    np.testing.assert_allclose(dm["logp_chosen"], 0.25 * np.log(pi_star[0, 0]) + 0.75 * np.log(pi_star[0, 1]))
    np.testing.assert_allclose(dm["ood_mass_empirical"], pi_star[0, 2])
    est = metrics.sampled_kl(jax.random.key(0), np.log(pi_star)[None], env.pi_ref_XxY, env.rho_X, 20_000)
    kl = exact.reverse_kl(pi_star, env.pi_ref_XxY, env.rho_X)
    np.testing.assert_allclose(est["kl_k1"], kl, rtol=0.05)
    np.testing.assert_allclose(est["kl_k3"], kl, rtol=0.05)


def test_simulate_returns_a_tidy_table():
    env, mu = bandits.counterexample(0.1)
    df = cl.simulate(
        env, A.hypo(0.1, lam=0.2), mu=mu, n_pairs=64, steps=20, seeds=2, key=jax.random.key(0), log_every=10
    )
    assert list(df.columns[:5]) == ["algorithm", "seed", "step", "metric", "value"]
    assert {"n_pairs", "beta", "lam"} <= set(df.columns)
    assert set(df.metric) == set(metrics.NAMES)
    assert len(df) == 2 * 3 * len(metrics.NAMES) and set(df.step) == {0, 10, 20}
    assert df["value"].notna().all()


def test_rlhf_with_ppo_clip_has_the_rloo_gradient_on_policy_and_converges_like_it():
    env, mu, batch, pol, ctx = setup()
    rm_table = jnp.asarray([[0.9, 0.1, 0.5]])
    ctx = ctx._replace(exact=False, reward_fn=lambda x, y: rm_table[x, y])
    sampled = batch._replace(prompt_x_P=jnp.zeros(64, jnp.int32), prompt_w_P=jnp.full(64, 1 / 64, jnp.float32))
    logits = ctx.ref_params + jnp.asarray([[0.2, -0.1, 0.3]])
    plain, ppo = A.rlhf(0.5, k=4), A.rlhf(0.5, k=4, ppo_clip=0.2, refresh_every=3)
    g_plain = jax.grad(lambda p: objective(plain, ctx)(p, sampled, jax.random.key(3))[0])(logits)
    g_ppo = jax.grad(lambda p: objective(ppo, ctx)(ppo.init(p), sampled, jax.random.key(3))[0].sum())(logits)
    np.testing.assert_allclose(g_ppo, g_plain, rtol=1e-5, atol=1e-7)
    kls = []
    for alg in (plain, ppo):
        df = cl.simulate(env, alg, mu=mu, n_pairs=64, steps=600, seeds=2, key=jax.random.key(0), metrics=["kl"])
        kls.append(df[df.step == 600]["value"].to_numpy())
    np.testing.assert_allclose(kls[1], kls[0], rtol=0.1)
    assert (kls[1] <= 1.0 / 0.5).all()


def test_with_reference_fills_the_reference_terms_and_the_objectives_read_them():
    """pi_ref's log-probabilities of the pairs, computed once (at once, or in chunks of ``batch_size`` with the last
    one padded) are the table's; minibatches carry them; DPO's loss and gradient are the same, bit for bit."""
    env = bandits.random_tabular(jax.random.key(0), 3, 5)
    pref = bandits.preference_table(env.reward_XxY)
    d = data.sample_pairs(jax.random.key(1), env.rho_X, coverage.pair_table(env.pi_ref_XxY), pref, 10)
    pol = policies.tabular_softmax(env)
    ctx = A.Context(pol, pol.init(None), exact=False)
    table = pol.table(ctx.ref_params)
    for batch_size in (None, 3, 4, 10, 32):
        filled = A.with_reference(ctx, d, batch_size)
        np.testing.assert_array_equal(filled.ref_w_B, table[d.x_B, d.y_w_B])
        np.testing.assert_array_equal(filled.ref_l_B, table[d.x_B, d.y_l_B])
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            A.with_reference(ctx, d, bad)
    with pytest.raises(ValueError, match="data"):
        A.with_reference(ctx, tuple(d), 4)
    with pytest.raises(ValueError, match="batches"):
        A.joint_log_probs(pol, ctx.ref_params)
    rows = jnp.array([3, 1, 7])
    np.testing.assert_array_equal(data.take(filled, rows).ref_l_B, filled.ref_l_B[rows])
    assert data.take(d, rows).ref_w_B is None
    logits = ctx.ref_params + 0.3 * jax.random.normal(jax.random.key(2), table.shape)
    for alg in (A.dpo(0.3), A.hypo(0.3, lam=0.5)):
        loss = lambda p, b, alg=alg: objective(alg, ctx)(p, b, jax.random.key(3))[0]  # noqa: E731
        (a, g_a), (b, g_b) = (jax.value_and_grad(loss)(logits, batch) for batch in (d, filled))
        assert float(a) == float(b)
        np.testing.assert_array_equal(g_a, g_b)

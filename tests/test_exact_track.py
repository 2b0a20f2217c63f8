"""The exact (population) track through the one training loop against the closed forms (issue: foundation)."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coverage_lab as cl
from coverage_lab import algorithms as A
from coverage_lab import bandits, data, exact, losses, minimisers, policies, train


def final_policy(env, algorithm, mu, steps=3000, **kw):
    r = cl.run(env, algorithm, mu=mu, n_pairs=None, steps=steps, seeds=1, key=jax.random.key(0), **kw)
    logp = np.asarray(r.logs["eval"][0, -1], np.float64)
    pi = np.exp(logp - logp.max(-1, keepdims=True))
    return pi / pi.sum(-1, keepdims=True)


def tv(p, q):
    return 0.5 * np.abs(p - q).sum(-1).max()


@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.2, 2.0))
@settings(max_examples=8)
def test_exact_dpo_recovers_optimal_policy_with_full_coverage(seed, beta):
    env = bandits.random_tabular(jax.random.key(seed), 3, 4, concentration=2.0)
    pi = final_policy(env, A.dpo(beta), env.pi_ref_XxY)
    assert tv(pi, exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, beta)) < 1e-5


def test_exact_dpo_recovers_optimal_policy_on_a_realisable_linear_instance():
    env = bandits.random_linear(jax.random.key(3), 2, 6, 3)
    beta = 0.5
    pi = final_policy(env, A.dpo(beta), env.pi_ref_XxY, steps=4000, learning_rate=0.02)
    assert tv(pi, exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, beta)) < 1e-5


def test_exact_ipo_matches_its_closed_form():
    env = bandits.random_tabular(jax.random.key(1), 2, 4, concentration=2.0)
    mu = np.asarray(env.pi_ref_XxY)
    tau = 0.5
    pi = final_policy(env, A.ipo(tau), mu, learning_rate=0.02)
    closed = exact.ipo_solution(env.pi_ref_XxY, mu, bandits.preference_table(env.reward_XxY), tau)
    assert tv(pi, closed) < 1e-5


def test_exact_rlhf_through_fit_reaches_the_closed_form_of_its_reward_model():
    env, mu = bandits.counterexample(0.05)
    pi = final_policy(env, A.rlhf(beta=0.5, r_max=2.0), mu)
    # The bounded BT fit on pairs (y1, y2) with P = sigmoid(1) needs r_hat(y1) - r_hat(y2) = 1; started at
    # r_max/2 = 1 everywhere, gradient descent moves the two symmetrically and never touches the unseen y0.
    pi_closed = exact.rlhf_policy(np.array([[1.5, 0.5, 1.0]]), env.pi_ref_XxY, 0.5, r_max=2.0)
    assert tv(pi, pi_closed) < 1e-4
    assert exact.reverse_kl(pi, env.pi_ref_XxY, env.rho_X) <= 2.0 / 0.5


@given(seed=st.integers(0, 2**31 - 1), r_max=st.floats(0.1, 5.0), beta=st.floats(0.05, 2.0))
def test_rlhf_policy_stays_in_the_kl_ball(seed, r_max, beta):
    rng = np.random.default_rng(seed)
    pi_ref = rng.dirichlet(np.ones(5), size=3)
    pi_ref[0, 0] = 0.0  # zero reference mass stays zero, whatever the reward
    pi_ref /= pi_ref.sum(-1, keepdims=True)
    r_hat = rng.uniform(0, r_max, size=(3, 5))
    r_hat[:, 0] = rng.choice([0.0, r_max], size=3)  # the bounds themselves
    pi = exact.rlhf_policy(r_hat, pi_ref, beta, r_max=r_max)
    assert exact.reverse_kl(pi, pi_ref, np.ones(3) / 3) <= r_max / beta + 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pi_ref > 0, pi / pi_ref, 0.0)
    assert ratio.max() <= np.exp(r_max / beta) * (1 + 1e-9)
    assert pi[0, 0] == 0.0


def population_dpo_loss(pi_XxY, pi_ref_XxY, batch, beta):
    with np.errstate(divide="ignore"):
        logp, ref = np.log(pi_XxY), np.log(pi_ref_XxY)
    x, w, l = (np.asarray(v) for v in (batch.x_B, batch.y_w_B, batch.y_l_B))
    out = losses.dpo(logp[x, w], logp[x, l], ref[x, w], ref[x, l], beta)
    return float(np.sum(np.asarray(batch.weight_B, np.float64) * np.asarray(out, np.float64)))


def test_dpo_loss_is_blind_to_mass_on_the_unseen_response_while_kl_grows():
    eps, beta = 1e-3, 0.1
    env, mu = bandits.counterexample(eps)
    pref = bandits.preference_table(env.reward_XxY)
    batch = data.exact_batch(env.rho_X, cl.coverage.pair_table(mu), pref)
    pi = exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, beta)
    base = population_dpo_loss(pi, env.pi_ref_XxY, batch, beta)
    kls = []
    for delta in (0.0, 0.1, 0.5, 0.9, 0.99):
        moved = minimisers.move_mass(pi, 2, delta)
        np.testing.assert_allclose(population_dpo_loss(moved, env.pi_ref_XxY, batch, beta), base, rtol=1e-5)
        kls.append(exact.reverse_kl(moved, env.pi_ref_XxY, env.rho_X))
    assert np.all(np.diff(kls[1:]) > 0) and kls[-1] > 0.9 * np.log(1 / eps)


def fit_from(env, mu, algorithm, pi_start, steps=2000):
    """The tabular policy ``algorithm`` reaches from ``pi_start``: constant-step Adam on its exact population
    objective, pairs ``mu ⊗ mu``."""
    batch = data.exact_batch(env.rho_X, cl.coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))
    policy = policies.tabular_softmax(env)
    ctx = A.Context(policy, policy.init(None), exact=True)
    hp = {k: np.float32(v) for k, v in algorithm.hparams.items()}
    params, _ = train.fit(
        algorithm.make(algorithm, ctx, hp),
        np.log(pi_start).astype(np.float32),
        batch,
        jax.random.key(0),
        steps=steps,
        optimizer=cl.train.optax.adam(0.05),
    )
    pi = np.asarray(jax.nn.softmax(params), np.float64)
    return pi / pi.sum(-1, keepdims=True)


def test_hypo_puts_no_mass_where_pi_ref_is_zero():
    """SPEC §4.4. DPO's gradient on the unseen y0's logit is exactly zero and ``lam * KL``'s is
    ``lam pi(y0) (log(pi(y0)/eps) - KL)``, so HyPO's stationary points have ``pi(y0) = eps exp(KL(pi||pi_ref))``,
    which vanishes with ``eps = pi_ref(y0)``: trained at ``eps = 1e-2`` from a DPO minimiser with 30% on y0, HyPO
    ends there. At ``eps = 0``, where any mass on y0 makes its objective infinite (test_claims), HyPO trained from
    ``pi_ref`` keeps exactly none."""
    beta, lam, eps = 0.5, 0.5, 1e-2
    env, mu = bandits.counterexample(eps)
    start = minimisers.move_mass(exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, beta), 2, 0.3)
    pi = fit_from(env, mu, A.hypo(beta, lam=lam), start)
    kl = exact.reverse_kl(pi, env.pi_ref_XxY, env.rho_X)
    assert pi[0, 2] == pytest.approx(eps * np.exp(kl), rel=1e-3)  # converged float32 Adam: far inside 1e-3

    env, mu = bandits.counterexample(0.0)
    pi = final_policy(env, A.hypo(beta=0.1, lam=0.05), mu, steps=1000)
    assert pi[0, 2] == 0.0


def test_hypo_removes_mass_on_the_unseen_response_that_dpo_keeps():
    """Start both from a DPO minimiser with 30% on the unseen response: DPO's gradient there is exactly zero,
    HyPO's KL term drives the mass back toward pi_ref's (here 1e-4)."""
    env, mu = bandits.counterexample(1e-4)
    beta = 0.5
    start = minimisers.move_mass(exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, beta), 2, 0.3)
    out = {alg.name: fit_from(env, mu, alg, start)[0, 2] for alg in (A.dpo(beta), A.hypo(beta, lam=0.5))}
    assert out["dpo"] > 0.29
    assert out["hypo"] < 0.01

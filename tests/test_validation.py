"""Bad inputs get a ValueError that names the parameter — never a NaN three calls later."""

import jax
import numpy as np
import pytest

import coverage_lab as cl
from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage, data, exact, losses

GOOD_REF = np.array([[0.5, 0.3, 0.2]])
GOOD_R = np.array([[1.0, 0.0, 0.5]])
ONE = np.ones(1)
env, mu = bandits.counterexample(0.1)
z = np.zeros(1)
PAIRS = data.exact_batch(env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))

CASES = [
    ("unnormalised rho", lambda: bandits.TabularBandit(np.array([0.7]), GOOD_REF, GOOD_R), "rho_X"),
    ("negative pi_ref", lambda: bandits.TabularBandit(ONE, np.array([[1.2, -0.2, 0.0]]), GOOD_R), "pi_ref_XxY"),
    ("unnormalised pi_ref", lambda: bandits.TabularBandit(ONE, np.array([[0.5, 0.3, 0.1]]), GOOD_R), "pi_ref_XxY"),
    ("reward shape", lambda: bandits.TabularBandit(ONE, GOOD_REF, np.zeros((1, 4))), "reward_XxY"),
    ("NaN reward", lambda: bandits.TabularBandit(ONE, GOOD_REF, np.array([[np.nan, 0, 0]])), "reward_XxY"),
    ("theta shape", lambda: bandits.LinearBandit(ONE, np.zeros((1, 3, 2)), np.zeros(3), np.zeros(2)), "theta_star_D"),
    ("eps >= 1", lambda: bandits.counterexample(1.0), "eps"),
    ("one response", lambda: bandits.random_tabular(jax.random.key(0), 2, 1), "n_responses"),
    ("not a key", lambda: bandits.random_tabular(0, 2, 3), "key"),
    ("negative beta (loss)", lambda: losses.dpo(z, z, z, z, -0.1), "beta"),
    ("zero beta (factory)", lambda: A.dpo(beta=0.0), "beta"),
    ("negative lam", lambda: A.hypo(beta=0.1, lam=-1.0), "lam"),
    ("k < 2", lambda: A.hypo(beta=0.1, lam=0.1, k=1), "k"),
    ("online fraction > 1", lambda: A.online_dpo(online_fraction=1.5), "online_fraction"),
    ("negative beta (exact)", lambda: exact.optimal_policy(GOOD_R, GOOD_REF, -1.0), "beta"),
    ("pi shape (exact)", lambda: exact.reverse_kl(np.ones((1, 2)) / 2, GOOD_REF, ONE), "pi_XxY"),
    ("tail mass eps", lambda: coverage.tail_mass(GOOD_REF, np.array([[0, 0, 1]], bool), 1.5), "eps"),
    ("negative radius", lambda: coverage.kl_ball_coefficient(GOOD_REF, GOOD_REF, ONE, -1.0), "radius"),
    (
        "pair table not a distribution",
        lambda: data.exact_batch(ONE, np.ones((1, 3, 3)), np.full((1, 3, 3), 0.5)),
        "pair_XxYxY",
    ),
    (
        "n_pairs <= 0",
        lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=0, steps=2, seeds=1, key=jax.random.key(0)),
        "n_pairs",
    ),
    (
        "mu not a distribution",
        lambda: cl.simulate(env, A.dpo(), mu=mu * 2, n_pairs=8, steps=2, seeds=1, key=jax.random.key(0)),
        "mu",
    ),
    ("key not a key", lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=8, steps=2, seeds=1, key=0), "key"),
    (
        "unknown metric",
        lambda: cl.simulate(
            env, A.dpo(), mu=mu, n_pairs=8, steps=2, seeds=1, key=jax.random.key(0), metrics=["kl", "nope"]
        ),
        "metrics",
    ),
    (
        "log_every not dividing",
        lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=8, steps=10, seeds=1, key=jax.random.key(0), log_every=3),
        "log_every",
    ),
    (
        "algorithm k < 2",
        lambda: cl.simulate(
            env,
            A.Algorithm("hypo", A._make_hypo, {"beta": 0.1, "lam": 0.1}, k=1),
            mu=mu,
            n_pairs=8,
            steps=2,
            seeds=1,
            key=jax.random.key(0),
        ),
        "k",
    ),
    (
        "bool seed ids",
        lambda: cl.run(env, A.dpo(), mu=mu, n_pairs=8, steps=2, seeds=[True], key=jax.random.key(0)),
        "seeds",
    ),
    ("pair counts shape", lambda: data.empirical_batch(np.ones((1, 3, 2))), "counts_XxYxY"),
    ("pair weights shape", lambda: data.sample_counts(jax.random.key(0), np.ones((3, 3)) / 9, 4), "weights_XxYxY"),
    ("count table size", lambda: data.pair_counts(PAIRS, 0, 3), "n_prompts"),
    ("pairs outside the table", lambda: data.pair_counts(PAIRS, 1, 1), "n_responses"),
    (
        "hp lacks a hyper-parameter",
        lambda: cl.simulation.train_policy(
            cl.policies.tabular_softmax(env),
            A.dpo(),
            PAIRS,
            {},
            jax.random.key(0),
            exact=False,
            steps=1,
            optimizer=cl.simulation.default_optimizer(0.1, 1),
        ),
        "hp",
    ),  # fmt: skip
    (
        "train on data: not a bandit",
        lambda: cl.simulation.train_on_data(
            "env",
            A.dpo(),
            PAIRS,
            {"beta": 0.1},
            key=jax.random.key(0),
            rm_key=jax.random.key(0),
            exact=False,
            steps=1,
            reward_steps=1,
            learning_rate=0.1,
        ),
        "env",
    ),  # fmt: skip
]


@pytest.mark.parametrize("call, param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_value_error_naming_the_parameter(call, param):
    with pytest.raises(ValueError, match=param):
        call()


def test_infinite_kl_is_inf_not_nan():
    pi = np.array([[0.5, 0.5, 0.0]])
    pi_ref = np.array([[1.0, 0.0, 0.0]])
    assert exact.reverse_kl(pi, pi_ref, ONE) == np.inf
    assert exact.value(pi, np.zeros((1, 3)), pi_ref, ONE, 0.1) == -np.inf

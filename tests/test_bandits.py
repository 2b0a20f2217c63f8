"""Environments are validated, frozen pytrees; the named instances are what the paper describes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coverage_lab import LinearBandit, TabularBandit, bandits, coverage


def test_environments_are_frozen_pytrees_usable_under_jit():
    env = bandits.random_tabular(jax.random.key(0), 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.rho_X = np.ones(2) / 2
    expected_reward = float(np.sum(env.rho_X[:, None] * env.pi_ref_XxY * env.reward_XxY))
    got = jax.jit(lambda e: jnp.sum(e.rho_X[:, None] * e.pi_ref_XxY * e.reward_XxY))(env)
    np.testing.assert_allclose(got, expected_reward, rtol=1e-6)
    lin = bandits.random_linear(jax.random.key(1), 2, 4, 3)
    np.testing.assert_allclose(jax.jit(lambda e: e.pi_ref_XxY)(lin), lin.pi_ref_XxY, rtol=1e-5)
    assert len(jax.tree.leaves(lin)) == 4


def test_replace_validates_again():
    env = bandits.random_tabular(jax.random.key(0), 2, 3)
    with pytest.raises(ValueError, match="rho_X"):
        dataclasses.replace(env, rho_X=np.array([0.9, 0.3]))


def test_counterexample():
    env, mu = bandits.counterexample(0.01)
    np.testing.assert_allclose(env.pi_ref_XxY, [[0.495, 0.495, 0.01]])
    assert mu[0, 2] == 0 and coverage.global_coverage(mu, env.rho_X) == np.inf
    assert bandits.counterexample(0.0)[0].pi_ref_XxY[0, 2] == 0.0


def test_linear_extrapolation_feature_coverage():
    for covered, finite in ((True, True), (False, False)):
        env, mu = bandits.linear_extrapolation(covered)
        assert isinstance(env, LinearBandit) and mu[0, 2] == 0
        best = env.reward_XxY.argmax(-1)[0]
        assert best == (2 if covered else 0)  # the unseen y3 is the best only in the covered instance
        pi_star = np.exp(env.reward_XxY / 0.1) / np.exp(env.reward_XxY / 0.1).sum(-1, keepdims=True)
        assert np.isfinite(coverage.feature_coverage(env.phi_XxYxD, pi_star, mu, env.rho_X)) == finite


def test_random_generators_are_pure_in_their_key():
    a = bandits.random_tabular(jax.random.key(5), 3, 4)
    b = bandits.random_tabular(jax.random.key(5), 3, 4)
    c = bandits.random_tabular(jax.random.key(6), 3, 4)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    assert not np.array_equal(a.reward_XxY, c.reward_XxY)
    lin = bandits.random_linear(jax.random.key(5), 3, 4, 2, ref_scale=0.5)
    np.testing.assert_allclose(np.linalg.norm(lin.theta_star_D), 1.0)
    np.testing.assert_allclose(np.linalg.norm(lin.theta_ref_D), 0.5)


def test_gaussian_bump_peak_is_far_from_the_reference_mode():
    env = bandits.gaussian_bump()
    assert env.n_responses == 100
    assert env.reward_XxY.argmax() == 80 and env.pi_ref_XxY.argmax() == 20
    assert env.pi_ref_XxY[0, 80] < 1e-6


def test_preference_table_hand_computed():
    r = np.array([[1.0, 0.0, 1.0]])
    p = bandits.preference_table(r)
    np.testing.assert_allclose(p[0, 0, 1], 1 / (1 + np.exp(-1.0)))
    np.testing.assert_allclose(p + p.transpose(0, 2, 1), 1.0)
    np.testing.assert_allclose(bandits.preference_table(r, temperature=0.5)[0, 0, 1], 1 / (1 + np.exp(-2.0)))
    d = bandits.preference_table(r, deterministic=True)
    assert d[0, 0, 1] == 1.0 and d[0, 1, 0] == 0.0 and d[0, 0, 2] == 0.5
    with pytest.raises(ValueError, match="temperature"):
        bandits.preference_table(r, temperature=0.0)


def test_tabular_bandit_from_linear():
    lin = bandits.random_linear(jax.random.key(2), 2, 5, 3)
    tab = lin.to_tabular()
    assert isinstance(tab, TabularBandit)
    np.testing.assert_allclose(tab.reward_XxY, lin.phi_XxYxD @ lin.theta_star_D)

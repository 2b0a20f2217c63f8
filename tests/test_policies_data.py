"""Policies, reward models, batches and minibatches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from coverage_lab import bandits, coverage, data, policies


def test_tabular_softmax_starts_at_pi_ref_with_exact_zeros():
    env, _ = bandits.counterexample(0.0)
    pol = policies.tabular_softmax(env)
    table = np.asarray(pol.table(pol.init(None)))
    np.testing.assert_allclose(np.exp(table), env.pi_ref_XxY, atol=1e-7)
    assert table[0, 2] == -np.inf
    np.testing.assert_allclose(pol.log_probs(pol.init(None), jnp.array([0, 0]), jnp.array([1, 0])), np.log([0.5, 0.5]))


def test_log_linear_policy_and_sampler_frequencies():
    """Chi-square test of 50k samples against the table; failure probability 1e-4 under the null."""
    env = bandits.random_linear(jax.random.key(0), 2, 5, 3, ref_scale=1.0)
    pol = policies.log_linear(env)
    theta = pol.init(None)
    np.testing.assert_allclose(np.exp(pol.table(theta)), env.pi_ref_XxY, rtol=1e-5)
    y = np.asarray(pol.sample(theta, jax.random.key(1), jnp.array([1]), 50_000))[0]
    counts = np.bincount(y, minlength=5)
    expected = 50_000 * np.asarray(env.pi_ref_XxY[1])
    assert ((counts - expected) ** 2 / expected).sum() < stats.chi2.ppf(1 - 1e-4, 4)
    with pytest.raises(ValueError, match="env"):
        policies.log_linear(bandits.random_tabular(jax.random.key(0), 2, 3))


@pytest.mark.parametrize("linear", [False, True])
def test_reward_models_are_bounded(linear):
    env = (
        bandits.random_linear(jax.random.key(0), 2, 4, 3) if linear else bandits.random_tabular(jax.random.key(0), 2, 4)
    )
    rm = policies.bounded_reward_model(env, 2.5)
    w = rm.init(None)
    np.testing.assert_allclose(rm.table(w), 1.25)
    big = jax.tree.map(lambda a: a + 1e3, w)
    r = np.asarray(rm.table(big))
    assert (r >= 0).all() and (r <= 2.5).all()


def test_exact_batch_hand_computed():
    # one prompt, two responses, mu = (0.25, 0.75), P(0 > 1) = 0.8
    pair = coverage.pair_table(np.array([[0.25, 0.75]]))
    pref = np.array([[[0.5, 0.8], [0.2, 0.5]]])
    b = data.exact_batch(np.ones(1), pair, pref)
    got = {(int(w), int(l)): float(v) for w, l, v in zip(b.y_w_B, b.y_l_B, b.weight_B, strict=True)}
    assert got == pytest.approx(
        {(0, 0): 0.0625, (0, 1): 2 * 0.1875 * 0.8, (1, 0): 2 * 0.1875 * 0.2, (1, 1): 0.5625}, rel=1e-6
    )
    padded = data.exact_batch(np.ones(1), pair, pref, size=7)
    assert padded.size == 7 and float(padded.weight_B[4:].sum()) == 0.0
    np.testing.assert_allclose(float(padded.weight_B.sum()), 1.0, rtol=1e-6)


def test_exact_batch_drops_pairs_never_shown():
    env, mu = bandits.counterexample(0.0)
    b = data.exact_batch(env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))
    assert 2 not in np.asarray(b.y_w_B) and 2 not in np.asarray(b.y_l_B)


def test_minibatches_cover_each_epoch_once():
    env = bandits.random_tabular(jax.random.key(0), 2, 3)
    d = data.sample_pairs(
        jax.random.key(0), env.rho_X, coverage.pair_table(env.pi_ref_XxY), bandits.preference_table(env.reward_XxY), 12
    )
    idx = np.asarray(data.minibatch_indices(jax.random.key(1), 12, 4, 7))
    assert idx.shape == (7, 4)
    assert sorted(idx[:3].ravel().tolist()) == list(range(12))  # each epoch sees every pair once
    assert sorted(idx[3:6].ravel().tolist()) == list(range(12))
    assert not np.array_equal(idx[:3], idx[3:6])  # a fresh permutation next epoch
    b = data.take(d, jnp.asarray(idx[0]))
    np.testing.assert_array_equal(b.x_B, np.asarray(d.x_B)[idx[0]])
    np.testing.assert_allclose(float(b.weight_B.sum()), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(b.prompt_x_P, b.x_B)

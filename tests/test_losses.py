"""Every loss on raw arrays against hand-computed values, at extreme inputs, and its invariants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coverage_lab import losses

floats = st.floats(-50, 50, allow_nan=False)


def a(*v):
    return jnp.asarray(v, jnp.float32)


def test_dpo_hand_computed():
    # margin = (-1 - -1.5) - (-2 - -1.5) = 1, beta = 0.5: -log sigmoid(0.5) = log(1 + e^-0.5)
    out = losses.dpo(a(-1.0), a(-2.0), a(-1.5), a(-1.5), 0.5)
    np.testing.assert_allclose(out, [math.log1p(math.exp(-0.5))], rtol=1e-6)


def test_dpo_is_ln2_at_the_reference():
    lp = a(-0.3, -2.0, -7.5)
    np.testing.assert_allclose(losses.dpo(lp, lp[::-1], lp, lp[::-1], 0.1), [math.log(2)] * 3, rtol=1e-6)


@given(floats, floats, floats, floats, st.floats(0.01, 10))
def test_dpo_swap_identity(lw, ll, rw, rl, beta):
    margin = (lw - rw) - (ll - rl)
    d = losses.dpo(a(lw), a(ll), a(rw), a(rl), beta) - losses.dpo(a(ll), a(lw), a(rl), a(rw), beta)
    np.testing.assert_allclose(d, [-beta * margin], atol=1e-3, rtol=1e-4)


def test_ipo_bt_and_estimators_hand_computed():
    # IPO: d_w - d_l = 1, 1/(2 tau) = 2.5 -> (1 - 2.5)^2
    np.testing.assert_allclose(losses.ipo(a(-1.0), a(-2.0), a(-1.5), a(-1.5), 0.2), [2.25], rtol=1e-6)
    np.testing.assert_allclose(losses.bt(a(2.0), a(0.5)), [math.log1p(math.exp(-1.5))], rtol=1e-6)
    t = 0.7
    np.testing.assert_allclose(losses.kl_k1(a(-1.0), a(-1.7)), [t], rtol=1e-6)
    np.testing.assert_allclose(losses.kl_k2(a(-1.0), a(-1.7)), [t * t / 2], rtol=1e-6)
    np.testing.assert_allclose(losses.kl_k3(a(-1.0), a(-1.7)), [math.exp(-t) - 1 + t], rtol=1e-5)
    assert float(losses.kl_k3(a(-3.0), a(-3.0))[0]) == 0.0


def test_k1_and_k3_expectations_exact_when_pi_keeps_pi_refs_support():
    # E_{y~pi} of each estimator, every response enumerated: k1's is the KL; k3's is the KL less pi_ref's mass
    # where pi has none (losses.kl_k3's docstring)
    pi_ref = np.array([0.2, 0.3, 0.5])
    for pi, lost in ((np.array([0.6, 0.3, 0.1]), 0.0), (np.array([0.4, 0.6, 0.0]), 0.5)):
        seen = pi > 0
        kl = float(np.sum(pi[seen] * np.log(pi[seen] / pi_ref[seen])))
        lp, rp = jnp.asarray(np.log(pi[seen]), jnp.float32), jnp.asarray(np.log(pi_ref[seen]), jnp.float32)
        np.testing.assert_allclose(np.dot(pi[seen], losses.kl_k1(lp, rp)), kl, rtol=1e-5)
        np.testing.assert_allclose(np.dot(pi[seen], losses.kl_k3(lp, rp)), kl - lost, rtol=1e-5)


def test_rloo_hand_computed_value_and_gradient():
    # a = (1, 2, 3): baselines (2.5, 2, 1.5), advantages (-1.5, 0, 1.5)
    lp = a(-1.0, -2.0, -3.0)[None]
    rewards = a(1.0, 2.0, 3.0)[None]
    np.testing.assert_allclose(losses.rloo(lp, rewards), [(1.5 * -1.0 * -1 + 1.5 * -3.0) / 3], rtol=1e-6)
    g_lp, g_r = jax.grad(lambda l, r: losses.rloo(l, r).sum(), argnums=(0, 1))(lp, rewards)
    np.testing.assert_allclose(g_lp, [[-0.5, 0.0, 0.5]], atol=1e-7)
    np.testing.assert_array_equal(g_r, 0.0)  # rewards are stop-gradient


@pytest.mark.parametrize("big", [1e3, -1e3])
def test_losses_finite_at_extreme_inputs(big):
    x, z = a(big, -big), a(0.0, 0.0)
    for out in (
        losses.dpo(x, -x, z, z, 10.0),
        losses.ipo(x, -x, z, z, 0.01),
        losses.bt(x, -x),
        losses.kl_k1(-abs(x), z),  # log-probabilities are <= 0
        losses.kl_k2(-abs(x), z),
        losses.rloo(x[None], x[None]),
    ):
        assert np.isfinite(np.asarray(out)).all()
    # the large-margin DPO loss is the margin itself, not inf
    np.testing.assert_allclose(losses.dpo(a(-big), a(big), a(0.0), a(0.0), 1.0), [max(0.0, 2 * big)], rtol=1e-6)
    np.testing.assert_allclose(losses.kl_k3(a(-20.0), a(0.0)), [math.exp(20) - 21], rtol=1e-5)


def test_gradients_finite_at_extreme_inputs():
    g = jax.grad(lambda lw: losses.dpo(lw, a(1e3), a(0.0), a(0.0), 5.0).sum())(a(-1e3))
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize(
    "call, param",
    [
        (lambda: losses.dpo(a(0.0), a(0.0), a(0.0), a(0.0), -1.0), "beta"),
        (lambda: losses.dpo(a(0.0), a(0.0), a(0.0), a(0.0), 0.0), "beta"),
        (lambda: losses.ipo(a(0.0), a(0.0), a(0.0), a(0.0), 0.0), "tau"),
        (lambda: losses.dpo(a(0.0, 1.0), a(0.0), a(0.0), a(0.0), 1.0), "logp_l_B"),
        (lambda: losses.bt(a(0.0, 1.0), a(0.0)), "r_l_B"),
        (lambda: losses.kl_k3(a(0.0), a(0.0, 1.0)), "ref_logp_B"),
        (lambda: losses.rloo(a(0.0)[None], a(0.0)[None]), "k >= 2"),
    ],
)
def test_bad_inputs_name_the_parameter(call, param):
    with pytest.raises(ValueError, match=param):
        call()


def test_ppo_clip_hand_computed_and_reinforce_gradient_at_ratio_one():
    # ratios (e^0.5, e^-0.5), advantages (1, 1), clip 0.2: min(1.6487, 1.2) = 1.2; min(0.6065, 0.8) = 0.6065
    lp, blp, adv = a(-0.5, -1.5)[None], a(-1.0, -1.0)[None], a(1.0, 1.0)[None]
    np.testing.assert_allclose(losses.ppo_clip(lp, blp, adv, 0.2), [-(1.2 + math.exp(-0.5)) / 2], rtol=1e-6)
    g = jax.grad(lambda l: losses.ppo_clip(l, l, a(2.0, -1.0)[None], 0.2).sum())(a(-1.0, -2.0)[None])
    np.testing.assert_allclose(g, [[-1.0, 0.5]], rtol=1e-6)  # -(1/k) A_j at pi = pi_behaviour
    adv_loo = losses.loo_advantage(a(1.0, 2.0, 3.0)[None])
    np.testing.assert_allclose(adv_loo, [[-1.5, 0.0, 1.5]])
    with pytest.raises(ValueError, match="clip"):
        losses.ppo_clip(lp, blp, adv, 0.0)

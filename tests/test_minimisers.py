"""Tests for coverage_lab.minimisers: SPEC §4.2's moving-mass family and the set of DPO/IPO population
minimisers, against the population losses written out independently (``_pop_loss``)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import log_softmax
from test_exact import _random_tables, seeds

from coverage_lab import bandits, exact, minimisers


def _product(mu_XxY):
    return mu_XxY[:, :, None] * mu_XxY[:, None, :]


def _random_pref(rng, X, Y):
    """A complementary but generally non-Bradley–Terry (intransitive) preference table."""
    u = rng.uniform(0.05, 0.95, (X, Y, Y))
    upper = np.triu(np.ones((Y, Y), bool), 1)
    return np.where(upper, u, np.where(upper.T, 1 - np.swapaxes(u, 1, 2), 0.5))


def _pop_loss(logits_XxY, pi_ref, pair, pref, rho, beta, tau=None):
    """Population DPO (tau None) or IPO loss, written out independently of exact.py and minimisers.py."""
    weight = rho[:, None, None] * pair
    with np.errstate(divide="ignore", invalid="ignore"):
        d = log_softmax(logits_XxY, axis=-1) - np.log(pi_ref)
        h = np.where(weight > 0, d[:, :, None] - d[:, None, :], 0.0)  # pair (a, b); a wins w.p. pref[x, a, b]
    if tau is None:
        per = pref * np.logaddexp(0, -beta * h) + (1 - pref) * np.logaddexp(0, beta * h)
    else:
        per = pref * (h - 0.5 / tau) ** 2 + (1 - pref) * (-h - 0.5 / tau) ** 2
    return np.sum(weight * per)


def _fd_grad(f, z, step=1e-6):
    g = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[i] = step
        g[i] = (f(z + e) - f(z - e)) / (2 * step)
    return g


@pytest.mark.parametrize("eps", [1e-1, 1e-3, 1e-8])
@pytest.mark.parametrize("delta", [0.0, 0.3, 1.0])
def test_move_mass_kl_formula(eps, delta):
    env, _ = bandits.counterexample(eps)
    pi = np.array([[0.7, 0.2, 0.1]])
    moved = minimisers.move_mass(pi, 2, delta)
    np.testing.assert_allclose(moved.sum(1), 1.0)
    np.testing.assert_allclose(moved[0, :2], (1 - delta) * pi[0, :2] / pi[0, :2].sum(), rtol=1e-12)
    q, p = pi[0, :2] / pi[0, :2].sum(), env.pi_ref_XxY[0, :2] / env.pi_ref_XxY[0, :2].sum()
    xlogx = lambda a, b: 0.0 if a == 0 else a * np.log(a / b)  # noqa: E731
    expected = (1 - delta) * np.sum(q * np.log(q / p)) + xlogx(1 - delta, 1 - eps) + xlogx(delta, eps)
    np.testing.assert_allclose(exact.reverse_kl(moved, env.pi_ref_XxY, env.rho_X), expected, rtol=1e-10)


def test_move_mass_keeps_the_dpo_loss_and_blows_up_kl_at_eps_zero():
    env, mu = bandits.counterexample(0.0)
    pref = bandits.preference_table(env.reward_XxY)
    args = (env.pi_ref_XxY, _product(mu), pref, env.rho_X, 0.1)
    pi = minimisers.minimiser_set(*args[:4], env.reward_XxY, 0.1).tilted_XxY
    moved = minimisers.move_mass(pi, 2, 0.5)
    with np.errstate(divide="ignore"):
        logits, moved_logits = np.log(pi), np.log(moved)
    np.testing.assert_allclose(_pop_loss(moved_logits, *args), _pop_loss(logits, *args), rtol=1e-12)
    assert exact.reverse_kl(moved, env.pi_ref_XxY, env.rho_X) == np.inf
    assert exact.value(moved, env.reward_XxY, env.pi_ref_XxY, env.rho_X, 0.1) == -np.inf


def test_counterexample_worst_value_falls_like_beta_log_eps():
    beta = 0.1
    worst, max_kl = [], []
    for eps in [0.0, 1e-2, 1e-4, 1e-6, 1e-8]:
        env, mu = bandits.counterexample(eps)
        pref = bandits.preference_table(env.reward_XxY)
        m = minimisers.minimiser_set(env.pi_ref_XxY, _product(mu), pref, env.rho_X, env.reward_XxY, beta)
        np.testing.assert_array_equal(m.uncovered_XxY, [[False, False, True]])
        worst.append(m.worst_value)
        max_kl.append(m.max_kl)
        assert m.best_value <= exact.optimal_value(env.reward_XxY, env.pi_ref_XxY, env.rho_X, beta) + 1e-12
    assert worst[0] == -np.inf and max_kl[0] == np.inf
    assert np.isfinite(worst[1:]).all() and np.isfinite(max_kl[1:]).all()
    log_eps = np.log([1e-2, 1e-4, 1e-6, 1e-8])
    offset = np.array(worst[1:]) - beta * log_eps
    assert np.ptp(offset) < 1e-6 * beta * abs(log_eps).max()
    np.testing.assert_allclose(np.array(max_kl[1:]) + log_eps, (max_kl[1] + log_eps[0]), atol=1e-2)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_full_support_dpo_minimiser_is_the_tempered_optimal_policy(temperature):
    _, rho, pi_ref, _, reward = _random_tables(3)
    mu = np.random.default_rng(4).dirichlet(np.ones(4), 3)
    beta = 0.3
    pref = bandits.preference_table(reward, temperature=temperature)
    m = minimisers.minimiser_set(pi_ref, _product(mu), pref, rho, reward, beta)
    target = exact.optimal_policy(reward / temperature, pi_ref, beta)
    np.testing.assert_array_equal(m.n_components_X, [1, 1, 1])
    assert not m.uncovered_XxY.any()
    for table in (m.tilted_XxY, m.worst_policy_XxY, m.best_policy_XxY, [m.component_policy(x, 0) for x in range(3)]):
        np.testing.assert_allclose(table, target, rtol=1e-9)
    j = exact.value(target, reward, pi_ref, rho, beta)
    np.testing.assert_allclose([m.worst_value, m.best_value], [j, j], rtol=1e-9)
    np.testing.assert_allclose(m.max_kl, exact.reverse_kl(target, pi_ref, rho), rtol=1e-9)


def test_ipo_solution_is_stationary_and_matches_minimiser_set():
    _, rho, pi_ref, _, reward = _random_tables(5)
    rng = np.random.default_rng(6)
    mu = rng.dirichlet(np.ones(4), 3)
    tau = 0.4
    for pref in (bandits.preference_table(reward, temperature=0.7), _random_pref(rng, 3, 4)):
        pi = exact.ipo_solution(pi_ref, mu, pref, tau)
        np.testing.assert_allclose(pi.sum(1), 1.0)
        grad = _fd_grad(lambda z: _pop_loss(z, pi_ref, _product(mu), pref, rho, 1.0, tau), np.log(pi))  # noqa: B023
        assert np.abs(grad).max() < 1e-6
        m = minimisers.minimiser_set(pi_ref, _product(mu), pref, rho, reward, 1.0, loss="ipo", tau=tau)
        np.testing.assert_allclose(m.tilted_XxY, pi, rtol=1e-9)


@given(seeds, st.sampled_from(["dpo", "ipo"]))
def test_minimiser_set_on_sparse_pairs(seed, loss):
    """Random sparse pair tables, non-BT preferences: the best mixture is stationary for the population loss,
    and every mixture of the vertices has worst_value <= J <= best_value <= J(pi*)."""
    rng, rho, pi_ref, _, reward = _random_tables(seed, X=3, Y=5)
    pair = rng.uniform(size=(3, 5, 5)) * (rng.uniform(size=(3, 5, 5)) < 0.25)
    pref, beta, tau = _random_pref(rng, 3, 5), 0.5, (0.3 if loss == "ipo" else None)
    m = minimisers.minimiser_set(pi_ref, pair, pref, rho, reward, beta, loss=loss, tau=tau)
    grad = _fd_grad(lambda z: _pop_loss(z, pi_ref, pair, pref, rho, beta, tau), np.log(m.best_policy_XxY))
    assert np.abs(grad).max() < 1e-6
    for x in range(3):
        comps = [m.component_policy(x, j) for j in range(m.n_components_X[x])]
        assert np.isclose(np.sum(comps), m.n_components_X[x]) and (m.component_XxY[x] < m.n_components_X[x]).all()
    mix = _random_mixture(rng, m)
    j = exact.value(mix, reward, pi_ref, rho, beta)
    assert m.worst_value - 1e-9 <= j <= m.best_value + 1e-9
    np.testing.assert_allclose(exact.value(m.best_policy_XxY, reward, pi_ref, rho, beta), m.best_value, rtol=1e-9)
    np.testing.assert_allclose(exact.value(m.worst_policy_XxY, reward, pi_ref, rho, beta), m.worst_value, rtol=1e-9)
    assert exact.reverse_kl(mix, pi_ref, rho) <= m.max_kl + 1e-9
    assert m.best_value <= exact.optimal_value(reward, pi_ref, rho, beta) + 1e-9


def _random_mixture(rng, m):
    pi = np.zeros_like(m.tilted_XxY)
    for x in range(pi.shape[0]):
        n = m.n_components_X[x] + m.uncovered_XxY[x].sum()
        w = rng.dirichlet(np.ones(n))
        pi[x] = sum(w[j] * m.component_policy(x, j) for j in range(m.n_components_X[x]))
        pi[x, m.uncovered_XxY[x]] = w[m.n_components_X[x] :]
    return pi


def test_minimiser_set_ignores_unseen_prompts():
    _, _, pi_ref, _, reward = _random_tables(7, X=2, Y=3)
    rho, pref = np.array([1.0, 0.0]), bandits.preference_table(reward)
    m = minimisers.minimiser_set(pi_ref, _product(pi_ref), pref, rho, reward, 0.5)
    np.testing.assert_array_equal(m.n_components_X, [1, 0])
    assert m.uncovered_XxY[1].all() and not m.uncovered_XxY[0].any()
    np.testing.assert_allclose(m.best_policy_XxY[1], exact.optimal_policy(reward, pi_ref, 0.5)[1], rtol=1e-12)
    np.testing.assert_allclose(m.worst_value, m.worst_value_X[0])


def test_bad_inputs_name_the_parameter():
    env, mu = bandits.counterexample(1e-2)
    pi_ref, reward, rho = env.pi_ref_XxY, env.reward_XxY, env.rho_X
    pref, pair = bandits.preference_table(reward), _product(mu)
    cases = [
        ("pref_XxYxY", lambda: minimisers.minimiser_set(pi_ref, pair, 2 * pref, rho, reward, 1.0)),
        ("pref_XxYxY", lambda: minimisers.minimiser_set(pi_ref, pair, pref.T, rho, reward, 1.0)),
        (
            "pref_XxYxY",
            lambda: minimisers.minimiser_set(
                pi_ref, pair, bandits.preference_table(reward, deterministic=True), rho, reward, 1.0
            ),
        ),  # noqa: E501
        ("pair_XxYxY", lambda: minimisers.minimiser_set(pi_ref, -pair, pref, rho, reward, 1.0)),
        ("tau", lambda: minimisers.minimiser_set(pi_ref, pair, pref, rho, reward, 1.0, loss="ipo")),
        ("tau", lambda: minimisers.minimiser_set(pi_ref, pair, pref, rho, reward, 1.0, tau=1.0)),
        ("loss", lambda: minimisers.minimiser_set(pi_ref, pair, pref, rho, reward, 1.0, loss="kto")),
        ("y0", lambda: minimisers.move_mass(pi_ref, 3, 0.5)),
        ("y0", lambda: minimisers.move_mass(pi_ref, -1, 0.5)),
        ("delta", lambda: minimisers.move_mass(pi_ref, 2, 1.5)),
        ("delta", lambda: minimisers.move_mass(pi_ref, 2, -0.1)),
        ("pi_XxY", lambda: minimisers.move_mass(np.array([[0.0, 0.0, 1.0]]), 2, 0.5)),
        (
            "pi_ref_XxY",
            lambda: minimisers.minimiser_set(np.array([[0.5, 0.5, 0.0]]), _product(pi_ref), pref, rho, reward, 1.0),
        ),  # noqa: E501
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()
    # IPO is fine with deterministic preferences (its minimiser exists)
    det = bandits.preference_table(reward, deterministic=True)
    m = minimisers.minimiser_set(pi_ref, pair, det, rho, reward, 1.0, loss="ipo", tau=1.0)
    assert np.isfinite(m.worst_value)

"""Tests for coverage_lab.exact: closed forms against brute force and invariants."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import optimize
from scipy.special import log_softmax

from coverage_lab import bandits, exact

seeds = st.integers(0, 2**32 - 1)


def _random_tables(seed, X=3, Y=4, zeros=False):
    rng = np.random.default_rng(seed)
    pi_ref = rng.dirichlet(np.ones(Y), X)
    pi = rng.dirichlet(np.ones(Y), X)
    if zeros:
        pi_ref[0, 0] = 0.0
        pi[:, 1] = 0.0
        pi_ref, pi = pi_ref / pi_ref.sum(1, keepdims=True), pi / pi.sum(1, keepdims=True)
    return rng, rng.dirichlet(np.ones(X)), pi_ref, pi, rng.uniform(-2, 2, (X, Y))


# ----------------------------------------------------------------------------------------------
# Closed forms


def test_optimal_policy_matches_brute_force_and_optimal_value():
    _, rho, pi_ref, _, reward = _random_tables(0, X=2, Y=3)
    beta = 0.7
    pi_star = exact.optimal_policy(reward, pi_ref, beta)
    np.testing.assert_allclose(pi_star.sum(1), 1.0)

    def neg_j(z):
        return -exact.value(np.exp(log_softmax(z.reshape(2, 3), axis=-1)), reward, pi_ref, rho, beta)

    res = optimize.minimize(neg_j, np.zeros(6), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(np.exp(log_softmax(res.x.reshape(2, 3), axis=-1)), pi_star, atol=1e-5)
    j_star = exact.value(pi_star, reward, pi_ref, rho, beta)
    np.testing.assert_allclose(j_star, exact.optimal_value(reward, pi_ref, rho, beta), rtol=1e-12)
    assert -res.fun <= j_star + 1e-12


def test_optimal_policy_is_stable_and_respects_support():
    pi_ref = np.array([[0.5, 0.3, 0.2, 0.0]])
    reward = np.array([[1e3, 999.0, -1e3, 5e3]])
    pi = exact.optimal_policy(reward, pi_ref, 1e-3)
    assert np.isfinite(pi).all() and pi[0, 3] == 0.0
    np.testing.assert_allclose(pi, [[1.0, 0.0, 0.0, 0.0]], atol=1e-300)
    v = exact.optimal_value(reward, pi_ref, np.ones(1), 1e-3)
    np.testing.assert_allclose(v, 1e3 + 1e-3 * np.log(0.5), rtol=1e-12)


@given(seeds, st.floats(0.01, 10.0), st.floats(0.1, 5.0))
def test_rlhf_policy_stays_in_the_kl_ball(seed, beta, r_max):
    _, rho, pi_ref, _, _ = _random_tables(seed)
    r_hat = np.random.default_rng(seed + 1).uniform(0, r_max, pi_ref.shape)
    pi = exact.rlhf_policy(r_hat, pi_ref, beta, r_max=r_max)
    np.testing.assert_allclose(pi, exact.optimal_policy(r_hat, pi_ref, beta))
    assert (pi / pi_ref <= np.exp(r_max / beta) * (1 + 1e-9)).all()
    assert (exact.kl_per_prompt(pi, pi_ref) <= r_max / beta + 1e-9).all()


@given(seeds, st.floats(0.05, 5.0), st.floats(0.1, 5.0), st.booleans())
def test_rlhf_max_kl_is_the_largest_over_every_bounded_reward(seed, beta, r_max, zeros):
    """Exact: equal to the brute-force maximum over the vertices {0, r_max}^Y, above the KL of any reward in the box
    (random interior points and a coordinate search from them), and inside the ball KL <= r_max / beta."""
    _, rho, pi_ref, _, _ = _random_tables(seed, X=2, Y=4, zeros=zeros)
    top = exact.rlhf_max_kl(pi_ref, rho, beta, r_max)

    def kl(r):
        return exact.reverse_kl(exact.rlhf_policy(r, pi_ref, beta, r_max=r_max), pi_ref, rho)

    per_prompt = [
        max(exact.kl_per_prompt(exact.rlhf_policy(np.array([v]), pi_ref[[x]], beta), pi_ref[[x]])[0] for v in verts)
        for x, verts in enumerate([list(itertools.product([0.0, r_max], repeat=4))] * 2)
    ]
    assert top == pytest.approx(float(rho @ np.array(per_prompt)), rel=1e-9, abs=1e-12)
    assert top <= r_max / beta * (1 + 1e-12)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        r = rng.uniform(0, r_max, pi_ref.shape)
        assert kl(r) <= top + 1e-9
        for x, y in itertools.product(range(2), range(4)):  # a coordinate search: the best of 5 levels
            levels = np.linspace(0, r_max, 5)
            r[x, y] = levels[
                np.argmax([kl(np.where((np.arange(2)[:, None] == x) & (np.arange(4) == y), v, r)) for v in levels])
            ]
        assert kl(r) <= top + 1e-9


def test_rlhf_max_kl_on_the_counterexample_and_its_checks():
    env, _ = bandits.counterexample(1e-3)
    pi_ref, rho = np.asarray(env.pi_ref_XxY), np.asarray(env.rho_X)
    # no reward on a grid of 11 levels per response does better than the best vertex
    levels = np.linspace(0.0, 1.0, 11)
    grid = max(
        exact.reverse_kl(exact.rlhf_policy(np.array([r]), pi_ref, 0.5, r_max=1.0), pi_ref, rho)
        for r in itertools.product(levels, repeat=3)
    )
    assert exact.rlhf_max_kl(pi_ref, rho, 0.5, 1.0) == pytest.approx(grid, rel=1e-12)
    # r_max/beta large: all mass on the least likely response, KL -log(min pi_ref), without cancellation
    for beta in (1e-3, 1e-16, 1e-300):
        assert exact.rlhf_max_kl(pi_ref, rho, beta, 1.0) == pytest.approx(-np.log(1e-3), rel=1e-12)
    for call, name in (
        (lambda: exact.rlhf_max_kl(pi_ref, rho, 1e-300, 1e10), "r_max/beta"),
        (lambda: exact.rlhf_max_kl(pi_ref, rho, -1.0, 1.0), "beta"),
        (lambda: exact.rlhf_max_kl(pi_ref, rho, 1.0, 0.0), "r_max"),
        (lambda: exact.rlhf_max_kl(pi_ref, rho[:0], 1.0, 1.0), "rho_X"),
        (lambda: exact.rlhf_max_kl(pi_ref * 2, rho, 1.0, 1.0), "pi_ref_XxY"),
        (lambda: exact.rlhf_max_kl(np.full((1, 21), 1 / 21), [1.0], 1.0, 1.0), "pi_ref_XxY"),
    ):
        with pytest.raises(ValueError, match=name):
            call()


@given(seeds, st.floats(1e-3, 10.0), st.booleans())
def test_suboptimality_is_nonnegative_and_is_the_value_gap(seed, beta, zeros):
    _, rho, pi_ref, pi, reward = _random_tables(seed, zeros=zeros)
    gap = exact.suboptimality(pi, reward, pi_ref, rho, beta)
    assert gap >= 0
    j = exact.value(pi, reward, pi_ref, rho, beta)
    if zeros:  # pi puts mass where pi_ref is zero at prompt 0
        assert gap == np.inf and j == -np.inf
    else:
        j_star = exact.optimal_value(reward, pi_ref, rho, beta)
        np.testing.assert_allclose(gap, j_star - j, rtol=1e-7, atol=1e-9 * (1 + abs(j_star)))
    pi_star = exact.optimal_policy(reward, pi_ref, beta)
    assert exact.suboptimality(pi_star, reward, pi_ref, rho, beta) < 1e-12


def test_reverse_kl_edge_cases():
    pi_ref = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    bad = np.array([[0.4, 0.4, 0.2], [0.2, 0.3, 0.5]])
    rho = np.array([0.5, 0.5])
    assert exact.reverse_kl(bad, pi_ref, rho) == np.inf
    np.testing.assert_array_equal(exact.kl_per_prompt(bad, pi_ref), [np.inf, 0.0])
    assert exact.reverse_kl(pi_ref, pi_ref, rho) == 0.0
    assert exact.reverse_kl(bad, pi_ref, np.array([0.0, 1.0])) == 0.0  # prompt 0 unseen
    assert exact.value(bad, np.zeros((2, 3)), pi_ref, rho, 1.0) == -np.inf
    assert exact.value(bad, np.ones((2, 3)), pi_ref, np.array([0.0, 1.0]), 1.0) == 1.0
    point = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(exact.kl_per_prompt(point, pi_ref), [np.log(2), np.log(2)])


def test_hypo_unseen_mass_by_hand_and_at_the_edges():
    pi_ref = np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]])
    rho = np.array([0.5, 0.5])
    unseen = np.array([[False, False, True], [False, False, True]])
    # at pi_ref (KL 0) it is pi_ref's unseen mass; prompt 1's unseen response has none
    np.testing.assert_allclose(exact.hypo_unseen_mass(pi_ref, pi_ref, unseen, rho), 0.5 * 0.25)
    pi = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])  # KL log 2 at prompt 0
    np.testing.assert_allclose(exact.hypo_unseen_mass(pi, pi_ref, unseen, rho), 0.5 * 0.25 * 2.0)
    # an infinite KL: inf where pi_ref has unseen mass, 0 (not NaN) where it has none
    off_support = np.array([[0.5, 0.25, 0.25], [0.5, 0.0, 0.5]])
    assert exact.hypo_unseen_mass(off_support, pi_ref, unseen, rho) == 0.5 * 0.25
    assert exact.hypo_unseen_mass(off_support, pi_ref, np.ones_like(unseen), rho) == np.inf
    assert exact.hypo_unseen_mass(pi, pi_ref, unseen.astype(float), rho) == 0.25  # 0/1 values as a mask


# ----------------------------------------------------------------------------------------------
# Bad inputs


def test_bad_inputs_name_the_parameter():
    env, mu = bandits.counterexample(1e-2)
    pi_ref, reward, rho = env.pi_ref_XxY, env.reward_XxY, env.rho_X
    pref = bandits.preference_table(reward)
    cases = [
        ("pi_XxY", lambda: exact.reverse_kl(np.array([[0.5, 0.6, 0.0]]), pi_ref, rho)),
        ("beta", lambda: exact.optimal_policy(reward, pi_ref, -1.0)),
        ("beta", lambda: exact.value(pi_ref, reward, pi_ref, rho, 0.0)),
        ("reward_XxY", lambda: exact.optimal_value(reward[:, :2], pi_ref, rho, 1.0)),
        ("reward_XxY", lambda: exact.optimal_policy(np.array([[np.nan, 0.0, 0.0]]), pi_ref, 1.0)),
        ("rho_X", lambda: exact.reverse_kl(pi_ref, pi_ref, np.ones(2) / 2)),
        ("reward_hat_XxY", lambda: exact.rlhf_policy(reward + 0.5, pi_ref, 1.0, r_max=1.0)),
        ("mu_XxY", lambda: exact.ipo_solution(pi_ref, mu, pref, 1.0)),
        ("tau", lambda: exact.ipo_solution(pi_ref, pi_ref, pref, -1.0)),
        ("pi_XxY", lambda: exact.kl_per_prompt(pi_ref[:, :2], pi_ref)),
        ("unseen_XxY", lambda: exact.hypo_unseen_mass(pi_ref, pi_ref, np.ones((1, 2), bool), rho)),
        ("unseen_XxY", lambda: exact.hypo_unseen_mass(pi_ref, pi_ref, np.full(pi_ref.shape, 0.5), rho)),
        ("pi_XxY", lambda: exact.hypo_unseen_mass(2 * pi_ref, pi_ref, pi_ref == 0, rho)),
        ("rho_X", lambda: exact.hypo_unseen_mass(pi_ref, pi_ref, pi_ref == 0, np.ones(2))),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()

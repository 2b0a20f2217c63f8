"""Tests for coverage_lab.exact: closed forms against brute force, invariants, and SPEC §4.2's solution set."""

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


def _product(mu_XxY):
    return mu_XxY[:, :, None] * mu_XxY[:, None, :]


def _random_pref(rng, X, Y):
    """A complementary but generally non-Bradley–Terry (intransitive) preference table."""
    u = rng.uniform(0.05, 0.95, (X, Y, Y))
    upper = np.triu(np.ones((Y, Y), bool), 1)
    return np.where(upper, u, np.where(upper.T, 1 - np.swapaxes(u, 1, 2), 0.5))


def _pop_loss(logits_XxY, pi_ref, pair, pref, rho, beta, tau=None):
    """Population DPO (tau None) or IPO loss, written out independently of exact.py."""
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
# SPEC §4.2: the moving-mass family and the minimiser set


@pytest.mark.parametrize("eps", [1e-1, 1e-3, 1e-8])
@pytest.mark.parametrize("delta", [0.0, 0.3, 1.0])
def test_move_mass_kl_formula(eps, delta):
    env, _ = bandits.counterexample(eps)
    pi = np.array([[0.7, 0.2, 0.1]])
    moved = exact.move_mass(pi, 2, delta)
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
    pi = exact.minimiser_set(*args[:4], env.reward_XxY, 0.1).tilted_XxY
    moved = exact.move_mass(pi, 2, 0.5)
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
        m = exact.minimiser_set(env.pi_ref_XxY, _product(mu), pref, env.rho_X, env.reward_XxY, beta)
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
    m = exact.minimiser_set(pi_ref, _product(mu), pref, rho, reward, beta)
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
        m = exact.minimiser_set(pi_ref, _product(mu), pref, rho, reward, 1.0, loss="ipo", tau=tau)
        np.testing.assert_allclose(m.tilted_XxY, pi, rtol=1e-9)


@given(seeds, st.sampled_from(["dpo", "ipo"]))
def test_minimiser_set_on_sparse_pairs(seed, loss):
    """Random sparse pair tables, non-BT preferences: the best mixture is stationary for the population loss,
    and every mixture of the vertices has worst_value <= J <= best_value <= J(pi*)."""
    rng, rho, pi_ref, _, reward = _random_tables(seed, X=3, Y=5)
    pair = rng.uniform(size=(3, 5, 5)) * (rng.uniform(size=(3, 5, 5)) < 0.25)
    pref, beta, tau = _random_pref(rng, 3, 5), 0.5, (0.3 if loss == "ipo" else None)
    m = exact.minimiser_set(pi_ref, pair, pref, rho, reward, beta, loss=loss, tau=tau)
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
    m = exact.minimiser_set(pi_ref, _product(pi_ref), pref, rho, reward, 0.5)
    np.testing.assert_array_equal(m.n_components_X, [1, 0])
    assert m.uncovered_XxY[1].all() and not m.uncovered_XxY[0].any()
    np.testing.assert_allclose(m.best_policy_XxY[1], exact.optimal_policy(reward, pi_ref, 0.5)[1], rtol=1e-12)
    np.testing.assert_allclose(m.worst_value, m.worst_value_X[0])


# ----------------------------------------------------------------------------------------------
# Bad inputs


def test_bad_inputs_name_the_parameter():
    env, mu = bandits.counterexample(1e-2)
    pi_ref, reward, rho = env.pi_ref_XxY, env.reward_XxY, env.rho_X
    pref, pair = bandits.preference_table(reward), _product(mu)
    cases = [
        ("pi_XxY", lambda: exact.reverse_kl(np.array([[0.5, 0.6, 0.0]]), pi_ref, rho)),
        ("beta", lambda: exact.optimal_policy(reward, pi_ref, -1.0)),
        ("beta", lambda: exact.value(pi_ref, reward, pi_ref, rho, 0.0)),
        ("reward_XxY", lambda: exact.optimal_value(reward[:, :2], pi_ref, rho, 1.0)),
        ("reward_XxY", lambda: exact.optimal_policy(np.array([[np.nan, 0.0, 0.0]]), pi_ref, 1.0)),
        ("rho_X", lambda: exact.reverse_kl(pi_ref, pi_ref, np.ones(2) / 2)),
        ("reward_hat_XxY", lambda: exact.rlhf_policy(reward + 0.5, pi_ref, 1.0, r_max=1.0)),
        ("pref_XxYxY", lambda: exact.minimiser_set(pi_ref, pair, 2 * pref, rho, reward, 1.0)),
        ("pref_XxYxY", lambda: exact.minimiser_set(pi_ref, pair, pref.T, rho, reward, 1.0)),
        (
            "pref_XxYxY",
            lambda: exact.minimiser_set(
                pi_ref, pair, bandits.preference_table(reward, deterministic=True), rho, reward, 1.0
            ),
        ),  # noqa: E501
        ("pair_XxYxY", lambda: exact.minimiser_set(pi_ref, -pair, pref, rho, reward, 1.0)),
        ("tau", lambda: exact.minimiser_set(pi_ref, pair, pref, rho, reward, 1.0, loss="ipo")),
        ("tau", lambda: exact.minimiser_set(pi_ref, pair, pref, rho, reward, 1.0, tau=1.0)),
        ("loss", lambda: exact.minimiser_set(pi_ref, pair, pref, rho, reward, 1.0, loss="kto")),
        ("mu_XxY", lambda: exact.ipo_solution(pi_ref, mu, pref, 1.0)),
        ("tau", lambda: exact.ipo_solution(pi_ref, pi_ref, pref, -1.0)),
        ("y0", lambda: exact.move_mass(pi_ref, 3, 0.5)),
        ("y0", lambda: exact.move_mass(pi_ref, -1, 0.5)),
        ("delta", lambda: exact.move_mass(pi_ref, 2, 1.5)),
        ("delta", lambda: exact.move_mass(pi_ref, 2, -0.1)),
        ("pi_XxY", lambda: exact.move_mass(np.array([[0.0, 0.0, 1.0]]), 2, 0.5)),
        ("pi_XxY", lambda: exact.kl_per_prompt(pi_ref[:, :2], pi_ref)),
        ("unseen_XxY", lambda: exact.hypo_unseen_mass(pi_ref, pi_ref, np.ones((1, 2), bool), rho)),
        ("unseen_XxY", lambda: exact.hypo_unseen_mass(pi_ref, pi_ref, np.full(pi_ref.shape, 0.5), rho)),
        ("pi_XxY", lambda: exact.hypo_unseen_mass(2 * pi_ref, pi_ref, pi_ref == 0, rho)),
        ("rho_X", lambda: exact.hypo_unseen_mass(pi_ref, pi_ref, pi_ref == 0, np.ones(2))),
        (
            "pi_ref_XxY",
            lambda: exact.minimiser_set(np.array([[0.5, 0.5, 0.0]]), _product(pi_ref), pref, rho, reward, 1.0),
        ),  # noqa: E501
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()
    # IPO is fine with deterministic preferences (its minimiser exists)
    det = bandits.preference_table(reward, deterministic=True)
    m = exact.minimiser_set(pi_ref, pair, det, rho, reward, 1.0, loss="ipo", tau=1.0)
    assert np.isfinite(m.worst_value)

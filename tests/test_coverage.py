"""Tests for coverage_lab.coverage: hand-computed knobs and coefficients, a brute-force check of the exact
KL-ball coefficient, invariants with hypothesis, and argument validation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import optimize, special
from scipy.special import xlogy

from coverage_lab import bandits
from coverage_lab import coverage as C

INF = float("inf")


@st.composite
def tables(draw, n_prompts=None, n_responses=None, sparse=True):
    """A probability table (X, Y) with float64 entries, some of them exactly zero when ``sparse``."""
    x = draw(st.integers(1, 3)) if n_prompts is None else n_prompts
    y = draw(st.integers(2, 5)) if n_responses is None else n_responses
    entry = st.one_of(st.just(0.0), st.floats(0.01, 1.0)) if sparse else st.floats(0.01, 1.0)
    w = np.array(draw(st.lists(st.lists(entry, min_size=y, max_size=y), min_size=x, max_size=x)))
    w[w.sum(-1) == 0, 0] = 1.0
    return w / w.sum(-1, keepdims=True)


@st.composite
def instances(draw, sparse=True):
    """``(pi_ref_XxY, mu_XxY, rho_X)`` of matching shapes; ``rho`` may have zeros."""
    pi_ref = draw(tables(sparse=sparse))
    mu = draw(tables(*pi_ref.shape, sparse=sparse))
    rho = draw(tables(1, pi_ref.shape[0], sparse=sparse))[0]
    return pi_ref, mu, rho


def assert_table(p, shape):
    assert p.shape == shape and p.dtype == np.float64
    assert (p >= 0).all()
    assert_allclose(p.sum(-1), 1.0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Knobs


PI = np.array([[0.2, 0.3, 0.5], [0.5, 0.25, 0.25]])


def test_restrict_hand_computed():
    mask = np.array([[True, True, False], [False, True, True]])
    assert_allclose(C.restrict(PI, mask), [[0.4, 0.6, 0.0], [0.0, 0.5, 0.5]])
    assert_allclose(C.restrict(PI, mask.astype(int)), C.restrict(PI, mask))
    with pytest.raises(ValueError, match="support_XxY"):
        C.restrict([[0.5, 0.5, 0.0]], [[False, False, True]])


def test_tail_mass_hand_computed():
    assert_allclose(C.tail_mass(PI[:1], [[0, 0, 1]], 0.1), [[0.36, 0.54, 0.1]])
    # pi is zero on the tail: the tail's mass is spread uniformly over it
    assert_allclose(C.tail_mass([[0.5, 0.5, 0.0, 0.0]], [[0, 0, 1, 1]], 0.2), [[0.4, 0.4, 0.1, 0.1]])
    # pi is zero off the tail: the rest is spread uniformly too
    assert_allclose(C.tail_mass([[0.0, 0.0, 1.0]], [[0, 0, 1]], 0.5), [[0.25, 0.25, 0.5]])
    assert_allclose(C.tail_mass(PI, np.zeros((2, 3), bool), 0.0), PI)
    assert_allclose(C.tail_mass(PI, np.ones((2, 3), bool), 1.0), PI)
    with pytest.raises(ValueError, match="tail_XxY"):
        C.tail_mass(PI, [[0, 0, 1], [0, 0, 0]], 0.1)
    with pytest.raises(ValueError, match="tail_XxY"):
        C.tail_mass(PI, [[0, 0, 1], [1, 1, 1]], 0.1)


def test_mixture_hand_computed():
    q = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert_allclose(C.mixture(PI, q, 0.25), [[0.8, 0.075, 0.125], [0.125, 0.0625, 0.8125]])
    assert_allclose(C.mixture(PI, q, 1.0), PI)
    assert_allclose(C.mixture(PI, q, 0.0), q)


def test_temper_hand_computed():
    pi = np.array([[0.5, 0.25, 0.25, 0.0]])
    assert_allclose(C.temper(pi, 0.5), [[2 / 3, 1 / 6, 1 / 6, 0.0]])
    assert_allclose(C.temper(pi, 1.0), pi)
    assert_allclose(C.temper(pi, 1e6), [[1 / 3, 1 / 3, 1 / 3, 0.0]], atol=1e-6)
    assert_allclose(C.temper(pi, 1e-300), [[1.0, 0.0, 0.0, 0.0]])  # no overflow to NaN


def test_reward_softmax_hand_computed():
    r = np.array([[0.0, np.log(2.0), np.log(3.0)]])
    assert_allclose(C.reward_softmax(r, 1.0), [[1 / 6, 2 / 6, 3 / 6]])
    assert_allclose(C.reward_softmax(r, -1.0), np.array([[6, 3, 2]]) / 11)
    assert_allclose(C.reward_softmax(r, 0.0, PI[:1]), PI[:1])
    assert_allclose(C.reward_softmax([[0.0, np.log(3.0), 5.0]], 1.0, [[0.5, 0.5, 0.0]]), [[0.25, 0.75, 0.0]])
    assert_allclose(C.reward_softmax(r, 1e4), [[0.0, 0.0, 1.0]])
    assert_allclose(C.reward_softmax(r, -1e4), [[1.0, 0.0, 0.0]])


def test_deficient_hand_computed():
    pi = np.full((1, 4), 0.25)
    score = [[1.0, 3.0, 3.0, 0.0]]
    assert_allclose(C.deficient(pi, 1, score), [[1 / 3, 0.0, 1 / 3, 1 / 3]])  # tie: lower index first
    assert_allclose(C.deficient(pi, 2, score), [[0.5, 0.0, 0.0, 0.5]])
    assert_allclose(C.deficient(pi, 0, score), pi)
    env, _ = bandits.counterexample(0.1)
    assert_allclose(C.deficient(env.pi_ref_XxY, 1, env.reward_XxY), [[0.0, 0.45 / 0.55, 0.1 / 0.55]])
    with pytest.raises(ValueError, match="n_deficient"):
        C.deficient([[0.0, 0.0, 1.0]], 1, [[0.0, 0.0, 1.0]])


def test_pair_table_hand_computed():
    mu = np.array([[0.25, 0.75]])
    assert_allclose(C.pair_table(mu), [[[0.0625, 0.1875], [0.1875, 0.5625]]])
    assert_allclose(C.pair_table(mu, [[1.0, 0.0]]), [[[0.25, 0.0], [0.75, 0.0]]])
    assert C.pair_table(PI).shape == (2, 3, 3)
    assert_allclose(C.pair_table(PI).sum((-1, -2)), 1.0)


@given(tables(), st.data())
def test_knobs_return_tables_and_compose(pi, data):
    shape = pi.shape
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=pi.size, max_size=pi.size))).reshape(shape)
    mask |= pi == pi.max(-1, keepdims=True)  # keep mass in every row
    mu = C.restrict(pi, mask)
    assert_table(mu, shape)
    assert (mu[~mask] == 0).all()
    col = np.arange(shape[1])
    tail = (~mask | (col == shape[1] - 1)) & (col > 0)  # never empty, never everything
    mu = C.tail_mass(mu, tail, data.draw(st.floats(0.0, 1.0)))
    assert_table(mu, shape)
    mu = C.temper(C.mixture(mu, pi, data.draw(st.floats(0.0, 1.0))), data.draw(st.floats(0.1, 10.0)))
    assert_table(mu, shape)
    reward = data.draw(tables(*shape, sparse=False))
    mu = C.reward_softmax(reward, data.draw(st.floats(-20.0, 20.0)), mu)
    assert_table(mu, shape)
    assert_table(C.reward_softmax(reward, data.draw(st.floats(-20.0, 20.0))), shape)
    uniform = np.full(shape, 1.0 / shape[1])
    assert_table(C.deficient(uniform, data.draw(st.integers(0, shape[1] - 1)), reward), shape)
    assert_allclose(C.pair_table(mu, pi).sum((-1, -2)), 1.0)


# ----------------------------------------------------------------------------------------------
# Coverage coefficients


def test_single_policy_coverage_hand_computed():
    pi = [[0.5, 0.5], [0.9, 0.1]]
    mu = [[0.25, 0.75], [0.5, 0.5]]
    assert C.single_policy_coverage(pi, mu, [0.5, 0.5]) == pytest.approx(2.0)
    assert C.single_policy_coverage(pi, mu, [0.0, 1.0]) == pytest.approx(1.8)
    assert C.single_policy_coverage([[0.5, 0.5]], [[1.0, 0.0]], [1.0]) == INF
    assert C.single_policy_coverage([[1.0, 0.0]], [[1.0, 0.0]], [1.0]) == 1.0  # 0/0 = 0
    # an uncovered prompt with rho = 0 does not count
    assert C.single_policy_coverage([[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [1.0, 0.0]], [1.0, 0.0]) == 1.0


def test_global_coverage_hand_computed():
    assert C.global_coverage([[0.25, 0.75], [0.5, 0.5]], [0.5, 0.5]) == pytest.approx(4.0)
    assert C.global_coverage([[0.25, 0.75], [0.5, 0.5]], [0.0, 1.0]) == pytest.approx(2.0)
    env, mu = bandits.counterexample()
    assert C.global_coverage(mu, env.rho_X) == INF


def test_global_coverage_loglinear():
    square = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    phi = np.array([square + [[0.5, 0.5]]])
    # the corners can be concentrated on (mass -> 1); the centre gets at most 1/5 (at theta = 0: uniform has the
    # largest entropy of all and its mean is the centre)
    assert C.global_coverage_loglinear([[0.2] * 5], phi, [1.0]) == pytest.approx(5.0)
    assert C.global_coverage_loglinear([[0.24, 0.24, 0.24, 0.24, 0.04]], phi, [1.0]) == pytest.approx(5.0)
    assert C.global_coverage_loglinear([[0.245, 0.245, 0.245, 0.245, 0.02]], phi, [1.0]) == pytest.approx(10.0)
    # every log-linear policy gives every response mass: mu = 0 anywhere, vertex or not, is uncovered
    assert C.global_coverage_loglinear([[0.25, 0.25, 0.25, 0.25, 0.0]], phi, [1.0]) == INF
    assert C.global_coverage_loglinear([[0.0, 1 / 3, 1 / 3, 1 / 3, 0.0]], phi, [1.0]) == INF
    assert C.global_coverage_loglinear([[0.5, 0.0, 0.5]], [[[0.0], [1.0], [2.0]]], [1.0]) == INF
    # the middle of three collinear points gets at most 1/3; so does the middle of a square's edge (its face)
    assert C.global_coverage_loglinear([[0.45, 0.1, 0.45]], [[[0.0], [1.0], [2.0]]], [1.0]) == pytest.approx(10 / 3)
    assert C._loglinear_max_mass(np.array(square + [[0.5, 0.0]]), 4) == pytest.approx(1 / 3)
    # two responses share a vertex: each can get at most 1/2
    assert C.global_coverage_loglinear([[0.5, 0.1, 0.4]], [[[0.0], [1.0], [1.0]]], [1.0]) == pytest.approx(5.0)
    # all features equal: every log-linear policy is uniform
    assert C.global_coverage_loglinear([[0.5, 0.25, 0.25]], np.ones((1, 3, 2)), [1.0]) == pytest.approx(4 / 3)
    # prompts with rho = 0 are ignored, even unseen ones
    phi2 = np.concatenate([phi, phi[:, :, ::-1]])
    mu2 = np.array([[0.2] * 5, [0.6, 0.1, 0.1, 0.1, 0.1]])
    assert C.global_coverage_loglinear(mu2, phi2, [1.0, 0.0]) == pytest.approx(5.0)
    assert C.global_coverage_loglinear(mu2, phi2, [0.5, 0.5]) == pytest.approx(10.0)
    assert C.global_coverage_loglinear([[0.2] * 5, [0.0] * 5], phi2, [1.0, 0.0]) == pytest.approx(5.0)


def test_loglinear_max_mass_is_the_max_entropy_dual_and_is_reached():
    # sup_theta pi_theta(y) = exp(-H*), H* the largest entropy of a distribution over the responses with mean
    # feature phi(y): computed here independently (SLSQP on the distribution), and a theta reaching it
    rng = np.random.default_rng(3)
    phi = rng.normal(size=(7, 2)).round(1)

    def neg_entropy(p):
        return float(np.sum(p * np.log(np.maximum(p, 1e-300))))

    for y in range(7):
        s = C._loglinear_max_mass(phi, y)
        mean = {"type": "eq", "fun": lambda p, y=y: p @ phi - phi[y]}
        total = {"type": "eq", "fun": lambda p: p.sum() - 1.0}
        res = optimize.minimize(neg_entropy, np.full(7, 1 / 7), constraints=[mean, total], bounds=[(0, 1)] * 7,
                                method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})  # fmt: skip
        assert np.abs(res.x @ phi - phi[y]).max() < 1e-6  # feasible (at a vertex SLSQP hits its iteration limit
        assert s == pytest.approx(np.exp(res.fun), rel=1e-4)  # near p log p's infinite slope, at the optimum)
        # reached: on the large side of a direction making y the argmax, or at the optimum inside the hull
        best = 0.0
        for theta in rng.normal(size=(4000, 2)) * np.geomspace(0.01, 200, 4000)[:, None]:
            z = phi @ theta
            best = max(best, float(np.exp(z[y] - special.logsumexp(z))))
        assert best <= s * (1 + 1e-9) and best >= s * 0.98


def brute_force_kl_ball(pi_ref_XxY, mu_XxY, rho_X, radius, n_grid=600):
    """sup over a grid of policies on the 3-simplex (per prompt) with E_rho KL <= radius of max pi/mu.

    Searches jointly over both prompts' policies (no assumption on how the budget is split).
    """
    i, j = np.meshgrid(np.arange(n_grid + 1), np.arange(n_grid + 1), indexing="ij")
    keep = i + j <= n_grid
    grid = np.stack([i[keep], j[keep], n_grid - i[keep] - j[keep]], -1) / n_grid  # (G, 3)
    best = []  # per prompt: (sorted KLs, running max of the ratio)
    for x in range(len(rho_X)):
        with np.errstate(divide="ignore"):
            kl = np.where(grid > 0, xlogy(grid, grid) - xlogy(grid, pi_ref_XxY[x]), 0.0).sum(-1)
            ratio = np.where(grid > 0, grid / mu_XxY[x], 0.0).max(-1)
        kl[np.isnan(kl)] = np.inf
        order = np.argsort(kl)
        best.append((kl[order], np.maximum.accumulate(ratio[order])))
    if len(rho_X) == 1:
        kl, ratio = best[0]
        return ratio[np.searchsorted(kl, radius / rho_X[0], side="right") - 1]
    (kl0, r0), (kl1, r1) = best
    budget0 = (radius - rho_X[1] * kl1) / rho_X[0]  # KL left for prompt 0 for each prompt-1 policy
    idx = np.searchsorted(kl0, budget0, side="right") - 1
    ok = idx >= 0
    return np.maximum(r0[idx[ok]], r1[ok]).max()


@pytest.mark.parametrize(
    "pi_ref, mu, rho, radius",
    [
        ([[0.6, 0.3, 0.1]], [[1 / 3, 1 / 3, 1 / 3]], [1.0], 0.2),
        ([[0.6, 0.3, 0.1]], [[0.5, 0.3, 0.2]], [1.0], 0.05),
        ([[0.2, 0.5, 0.3]], [[0.2, 0.5, 0.3]], [1.0], 1.0),
        ([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], [[0.4, 0.4, 0.2], [0.3, 0.3, 0.4]], [0.3, 0.7], 0.1),
        ([[0.5, 0.45, 0.05], [0.2, 0.2, 0.6]], [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], [0.8, 0.2], 0.3),
    ],
)
def test_kl_ball_matches_brute_force(pi_ref, mu, rho, radius):
    pi_ref, mu, rho = np.array(pi_ref), np.array(mu), np.array(rho)
    exact = C.kl_ball_coefficient(pi_ref, mu, rho, radius)
    brute = brute_force_kl_ball(pi_ref, mu, rho, radius)
    assert brute <= exact * (1 + 1e-9)
    assert brute == pytest.approx(exact, rel=5e-3)


def test_kl_ball_hand_computed():
    # one prompt, q = 1/2: the radius at which p = 0.8 is reachable gives ratio 0.8 / 0.5
    radius = 0.8 * np.log(1.6) + 0.2 * np.log(0.4)
    assert C.kl_ball_coefficient([[0.5, 0.5]], [[0.5, 0.5]], [1.0], radius) == pytest.approx(1.6, rel=1e-10)
    # the whole budget goes to the prompt with small rho: radius/rho = log 2 reaches p = 1 there
    pi_ref = [[0.5, 0.5], [0.5, 0.5]]
    assert C.kl_ball_coefficient(pi_ref, pi_ref, [0.25, 0.75], 0.25 * np.log(2)) == pytest.approx(2.0)
    # pi_ref(y) = 0 keeps p = 0 whatever the radius, so mu = 0 there is fine
    assert C.kl_ball_coefficient([[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]], [1.0], 50.0) == pytest.approx(2.0)
    # the counterexample: mu misses y0, which pi_ref reaches with any eps > 0
    env, mu = bandits.counterexample(1e-3)
    assert C.kl_ball_coefficient(env.pi_ref_XxY, mu, env.rho_X, 0.0) == INF
    env, mu = bandits.counterexample(0.0)
    assert C.kl_ball_coefficient(env.pi_ref_XxY, mu, env.rho_X, 10.0) == pytest.approx(2.0)


def test_kl_radius():
    assert C.kl_radius(1.0, 0.1) == pytest.approx(20.0)
    assert C.kl_radius(0.0, 2.0) == 0.0


@given(instances(), st.floats(0.0, 5.0), st.floats(0.0, 5.0))
def test_kl_ball_invariants(inst, r1, r2):
    pi_ref, mu, rho = inst
    lo, hi = sorted((r1, r2))
    c0 = C.kl_ball_coefficient(pi_ref, mu, rho, 0.0)
    c_lo, c_hi = C.kl_ball_coefficient(pi_ref, mu, rho, lo), C.kl_ball_coefficient(pi_ref, mu, rho, hi)
    assert c0 == pytest.approx(C.single_policy_coverage(pi_ref, mu, rho), rel=1e-12)
    assert c0 <= c_lo * (1 + 1e-12) and c_lo <= c_hi * (1 + 1e-12)
    assert c_hi <= C.global_coverage(mu, rho)
    huge = C.kl_ball_coefficient(pi_ref, mu, rho, 1e3)  # every reachable response gets p = 1
    assert huge == pytest.approx(C._max_ratio((pi_ref > 0).astype(float), mu, rho))


@given(instances(), tables(), st.data())
def test_coefficients_never_nan(inst, other, data):
    pi_ref, mu, rho = inst
    pi = data.draw(tables(*pi_ref.shape))
    phi = np.array(data.draw(st.lists(st.floats(-2, 2), min_size=pi.size * 2, max_size=pi.size * 2)))
    phi = phi.reshape(pi.shape + (2,)).round(1)  # rounding makes repeated and collinear features likely
    values = [
        C.single_policy_coverage(pi, mu, rho),
        C.global_coverage(mu, rho),
        C.global_coverage_loglinear(mu, phi, rho),
        C.kl_ball_coefficient(pi_ref, mu, rho, data.draw(st.floats(0.0, 3.0))),
        C.feature_coverage(phi, pi, mu, rho),
    ]
    assert all(isinstance(v, float) and not np.isnan(v) and v >= 0 for v in values)
    assert values[2] <= values[1]  # a smaller policy class needs less coverage


def test_pair_covariance_matches_materialised():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(3, 4, 2))
    p, q = rng.dirichlet(np.ones(4), 3), rng.dirichlet(np.ones(4), 3)
    rho = np.array([0.2, 0.0, 0.8])
    diff = phi[:, :, None, :] - phi[:, None, :, :]  # (X, Y, Y, D)
    expected = np.einsum("x,xa,xb,xabd,xabe->de", rho, p, q, diff, diff)
    assert_allclose(C.pair_covariance(phi, p, rho, q), expected, atol=1e-12)
    expected = np.einsum("x,xa,xb,xabd,xabe->de", rho, p, p, diff, diff)
    assert_allclose(C.pair_covariance(phi, p, rho), expected, atol=1e-12)
    # 1-D features: S = 2 Var
    assert_allclose(C.pair_covariance([[[0.0], [1.0], [2.0]]], [[0.5, 0.5, 0.0]], [1.0]), [[0.5]])


def test_feature_coverage_hand_computed():
    phi = [[[0.0], [1.0], [2.0]]]
    mu = [[0.5, 0.5, 0.0]]
    assert C.feature_coverage(phi, [[1 / 3, 1 / 3, 1 / 3]], mu, [1.0]) == pytest.approx(8 / 3)  # 2*(2/3) / 0.5
    assert C.feature_coverage(phi, mu, mu, [1.0]) == pytest.approx(1.0)
    assert C.feature_coverage(phi, [[0.0, 0.0, 1.0]], mu, [1.0]) == 0.0  # S_pi = 0
    assert C.feature_coverage(phi, mu, [[0.0, 0.0, 1.0]], [1.0]) == INF  # S_mu = 0
    # 2-D: mu only sees the first coordinate, pi moves along the second
    phi2 = [[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]
    assert C.feature_coverage(phi2, [[0.5, 0.0, 0.5]], mu, [1.0]) == INF
    assert C.feature_coverage(phi2, [[0.25, 0.75, 0.0]], mu, [1.0]) == pytest.approx(0.75)


@pytest.mark.parametrize("covered, finite", [(True, True), (False, False)])
def test_feature_coverage_linear_extrapolation(covered, finite):
    env, mu = bandits.linear_extrapolation(covered=covered)
    logits = env.phi_XxYxD @ env.theta_star_D
    pi_star = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    value = C.feature_coverage(env.phi_XxYxD, pi_star, mu, env.rho_X)
    assert np.isfinite(value) == finite and value > 0
    # mu never shows y3, so tabular coverage fails in both cases
    assert C.single_policy_coverage(pi_star, mu, env.rho_X) == INF


# ----------------------------------------------------------------------------------------------
# Empirical coverage


def test_empirical_support_and_mu():
    x, y_w, y_l = np.array([0, 0, 1]), np.array([0, 1, 2]), np.array([1, 1, 0])
    support = C.empirical_support(x, y_w, y_l, 3, 3)
    assert support.dtype == bool
    assert (support == [[True, True, False], [True, False, True], [False, False, False]]).all()
    mu = C.empirical_mu(x, y_w, y_l, 3, 3)
    assert_allclose(mu, [[0.25, 0.75, 0.0], [0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])
    uniform = np.full((3, 3), 1 / 3)
    assert C.single_policy_coverage(uniform, mu, [0.5, 0.5, 0.0]) == INF  # (0, 2) never seen
    assert C.global_coverage(mu, np.ones(3) / 3) == INF  # prompt 2 never seen
    pi = C.restrict(uniform[:2], support[:2])
    assert C.single_policy_coverage(pi, mu[:2], [0.5, 0.5]) == pytest.approx(2.0)
    assert not C.empirical_support([], [], [], 2, 2).any()
    assert (C.empirical_mu([], [], [], 2, 2) == 0).all()


def test_empirical_mu_converges_to_population():
    rng = np.random.default_rng(1)
    mu = np.array([[0.7, 0.2, 0.1, 0.0]])
    n = 20000
    y = rng.choice(4, size=(2, n), p=mu[0])
    assert_allclose(C.empirical_mu(np.zeros(n, int), y[0], y[1], 1, 4), mu, atol=0.01)


# ----------------------------------------------------------------------------------------------
# Argument validation

P2 = [[0.5, 0.5]]
M2 = [[True, False]]
PHI = [[[0.0], [1.0]]]
IDX = [0]

BAD_INPUTS = [
    (C.restrict, ([[0.5, 0.6]], M2), "pi_XxY"),
    (C.restrict, (P2, [[True, False, True]]), "support_XxY"),
    (C.restrict, (P2, [[0.5, 1.0]]), "support_XxY"),
    (C.tail_mass, (P2, M2, 1.5), "eps"),
    (C.tail_mass, (P2, M2, -0.1), "eps"),
    (C.tail_mass, ([0.5, 0.5], M2, 0.1), "pi_XxY"),
    (C.mixture, (P2, [[0.2, 0.3, 0.5]], 0.5), "q_XxY"),
    (C.mixture, (P2, P2, 2.0), "alpha"),
    (C.mixture, ([[-0.5, 1.5]], P2, 0.5), "p_XxY"),
    (C.temper, (P2, 0.0), "temperature"),
    (C.temper, (P2, np.nan), "temperature"),
    (C.reward_softmax, ([[0.0, np.inf]], 1.0), "reward_XxY"),
    (C.reward_softmax, ([[0.0, 1.0]], np.inf), "beta_b"),
    (C.reward_softmax, ([[0.0, 1.0]], [1.0, 2.0]), "beta_b"),
    (C.reward_softmax, ([[0.0, 10.0]], 1e308, None), "beta_b"),
    (C.reward_softmax, ([[0.0, 10.0]], -1e308, None), "beta_b"),
    (C.reward_softmax, ([[0.0, 1.0]], 1.0, [[1.0, 0.0, 0.0]]), "base_XxY"),
    (C.deficient, (P2, 2, [[0.0, 1.0]]), "n_deficient"),
    (C.deficient, (P2, -1, [[0.0, 1.0]]), "n_deficient"),
    (C.deficient, (P2, 1.0, [[0.0, 1.0]]), "n_deficient"),
    (C.deficient, (P2, 1, [[0.0, 1.0, 2.0]]), "score_XxY"),
    (C.pair_table, (P2, [[1.0]]), "nu_XxY"),
    (C.pair_table, ([[0.5, 0.4]],), "mu_XxY"),
    (C.single_policy_coverage, (P2, [[0.2, 0.3]], [1.0]), "mu_XxY"),
    (C.single_policy_coverage, (P2, P2, [0.5, 0.5]), "rho_X"),
    (C.single_policy_coverage, ([[np.nan, 1.0]], P2, [1.0]), "pi_XxY"),
    (C.global_coverage, ([[-0.5, 1.5]], [1.0]), "mu_XxY"),
    (C.global_coverage, (P2, [0.5]), "rho_X"),
    (C.global_coverage_loglinear, (P2, [[0.0, 1.0]], [1.0]), "phi_XxYxD"),
    (C.global_coverage_loglinear, ([[0.2, 0.3, 0.5]], PHI, [1.0]), "mu_XxY"),
    (C.kl_ball_coefficient, (P2, P2, [1.0], -1.0), "radius"),
    (C.kl_ball_coefficient, (P2, [[0.5, 0.5, 0.0]], [1.0], 1.0), "mu_XxY"),
    (C.kl_ball_coefficient, ([[0.3, 0.3]], P2, [1.0], 1.0), "pi_ref_XxY"),
    (C.kl_ball_coefficient, (P2, P2, [[1.0]], 1.0), "rho_X"),
    (C.kl_radius, (1.0, 0.0), "beta"),
    (C.kl_radius, (-1.0, 1.0), "r_max"),
    (C.pair_covariance, (PHI, [[0.5, 0.5, 0.0]], [1.0]), "p_XxY"),
    (C.pair_covariance, (PHI, P2, [1.0], [[0.2, 0.2]]), "q_XxY"),
    (C.pair_covariance, ([[[0.0, np.inf], [1.0, 0.0]]], P2, [1.0]), "phi_XxYxD"),
    (C.feature_coverage, (PHI, [[0.5, 0.6]], P2, [1.0]), "pi_XxY"),
    (C.feature_coverage, (PHI, P2, [[0.5, 0.6]], [1.0]), "mu_XxY"),
    (C.empirical_mu, ([0, 1], IDX, IDX, 2, 2), "y_w_N"),
    (C.empirical_mu, ([2], IDX, IDX, 2, 2), "x_N"),
    (C.empirical_mu, (IDX, [-1], IDX, 2, 2), "y_w_N"),
    (C.empirical_mu, (IDX, IDX, [0.5], 2, 2), "y_l_N"),
    (C.empirical_mu, (IDX, IDX, [[0]], 2, 2), "y_l_N"),
    (C.empirical_support, (IDX, IDX, IDX, 0, 2), "n_prompts"),
    (C.empirical_support, (IDX, IDX, IDX, 1, 1.5), "n_responses"),
    (C.empirical_support, (IDX, IDX, [3], 1, 2), "y_l_N"),
]


@pytest.mark.parametrize("fn, args, name", BAD_INPUTS, ids=[f"{f.__name__}-{n}" for f, _, n in BAD_INPUTS])
def test_bad_inputs_name_the_parameter(fn, args, name):
    with pytest.raises(ValueError, match=name):
        fn(*args)


def test_the_coverage_namespace_lists_every_public_name():
    """``coverage.__all__`` (what ``help`` and ``import *`` show) is every public name of ``coverage`` and of the
    ``knobs`` it re-exports, and each resolves."""
    from coverage_lab import knobs

    def public(module):
        own = {n for n, v in vars(module).items() if getattr(v, "__module__", None) == module.__name__}
        return {n for n in own if not n.startswith("_")}

    assert set(C.__all__) == public(C) | public(knobs) | {"EIG_RTOL"}
    assert all(hasattr(C, n) for n in C.__all__)

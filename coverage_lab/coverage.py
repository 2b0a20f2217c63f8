"""The coverage coefficients of SPEC §2, and (re-exported from :mod:`coverage_lab.knobs`) the knobs that build the
offline distribution ``mu``: one namespace for coverage, ``coverage.restrict(...)`` beside
``coverage.global_coverage(...)``.

Pure numpy/scipy float64 functions on probability tables ``p_XxY[x, y] = p(y|x)``. Coefficients take ratios only
where ``rho(x) > 0``, with ``0/0 = 0`` and ``positive/0 = inf`` (never NaN). Coverage is a number swept in
experiments, never a branch inside an algorithm.

References:
  Song, Swamy, Singh, Bagnell, Sun. The Importance of Online Data: Understanding Preference
  Fine-tuning via Coverage. arXiv:2406.01462.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from coverage_lab import _validate as V
from coverage_lab.knobs import deficient, mixture, pair_table, restrict, reward_softmax, tail_mass, temper

__all__ = [  # the coefficients, and the knobs re-exported: coverage.restrict(...) beside coverage.global_coverage(...)
    "EIG_RTOL", "empirical_mu", "empirical_support", "feature_coverage", "global_coverage",
    "global_coverage_loglinear", "kl_ball_coefficient", "kl_radius", "pair_covariance", "single_policy_coverage",
    "deficient", "mixture", "pair_table", "restrict", "reward_softmax", "tail_mass", "temper",
]  # fmt: skip

EIG_RTOL = 1e-9  # relative tolerance on eigenvalues in feature_coverage

# ----------------------------------------------------------------------------------------------
# Argument checks


def _rho(rho_X, n_prompts: int) -> np.ndarray:
    rho = V.prob_table("rho_X", rho_X, ndim=1)
    V.shape("rho_X", rho, (n_prompts,))
    return rho


def _features(phi_XxYxD) -> np.ndarray:
    phi = V.array("phi_XxYxD", phi_XxYxD, ndim=3)
    if 0 in phi.shape:
        raise ValueError(f"phi_XxYxD needs at least one prompt, response and feature, got shape {phi.shape}")
    return phi


# ----------------------------------------------------------------------------------------------
# Coverage coefficients


def _max_ratio(num_XxY, den_XxY, rho_X) -> float:
    """``max_{x: rho(x)>0, y} num/den`` with ``0/0 = 0`` and ``positive/0 = inf``."""
    num, den = num_XxY[rho_X > 0], den_XxY[rho_X > 0]
    ratio = np.divide(num, den, out=np.where(num > 0, np.inf, 0.0), where=den > 0)
    return float(ratio.max())


def single_policy_coverage(pi_XxY, mu_XxY, rho_X) -> float:
    """Single-policy coverage ``C(pi) = max_{x: rho(x)>0, y} pi(y|x)/mu(y|x)``. Tables (X, Y), ``rho_X`` (X,).

    A prompt with an all-zero ``mu`` row (unseen, see ``empirical_mu``) is uncovered: the ratio is ``inf``.
    Reference: arXiv:2406.01462, partial coverage.
    """
    pi = V.prob_rows("pi_XxY", pi_XxY)
    mu = V.prob_rows("mu_XxY", mu_XxY, pi.shape, unseen_ok=True)
    return _max_ratio(pi, mu, _rho(rho_X, pi.shape[0]))


def global_coverage(mu_XxY, rho_X) -> float:
    """Global coverage over the tabular class (all policies): ``C_glo = max_{x: rho(x)>0, y} 1/mu(y|x)``.

    ``mu_XxY`` (X, Y), ``rho_X`` (X,). Reference: arXiv:2406.01462, global coverage.
    """
    mu = V.prob_rows("mu_XxY", mu_XxY, unseen_ok=True)
    return _max_ratio(np.ones_like(mu), mu, _rho(rho_X, mu.shape[0]))


def _face(u_YxD) -> np.ndarray:
    """The responses of the smallest face of the hull ``conv{phi}`` that contains ``phi(y)``, from the differences
    ``u = phi - phi(y)``: those some convex combination equal to ``phi(y)`` uses. One LP: ``max sum min(lam, 1)``
    over ``lam >= 0`` with ``u^T lam = 0``, a cone, so a single ``lam`` uses every such response."""
    n, d = u_YxD.shape
    u = u_YxD / max(1.0, np.abs(u_YxD).max())
    res = optimize.linprog(
        np.concatenate([np.zeros(n), -np.ones(n)]),  # variables (lam, t): maximise sum t, t <= lam, t <= 1
        A_ub=np.hstack([-np.eye(n), np.eye(n)]),
        b_ub=np.zeros(n),
        A_eq=np.hstack([u.T, np.zeros((d, n))]),
        b_eq=np.zeros(d),
        bounds=[(0, None)] * n + [(0, 1)] * n,
        method="highs",
    )
    if res.status != 0:  # feasible (lam = t = 0) and bounded (t <= 1): a failure is the solver's
        raise RuntimeError(f"the face LP failed: {res.message}")
    return res.x[n:] > 0.5


def _loglinear_max_mass(phi_YxD, y: int) -> float:
    """``sup_theta pi_theta(y)`` over ``pi_theta ∝ exp(phi . theta)``: ``exp(-min_theta log sum_y' exp((phi(y') -
    phi(y)) . theta))``, the sum over the face of :func:`_face` (the other responses' mass vanishes along its
    outer normal, and the minimum is attained inside the face; BFGS on a smooth convex function)."""
    u = phi_YxD - phi_YxD[y]
    u = u[_face(u)]

    def f(theta):
        z = u @ theta
        lse = special.logsumexp(z)
        return lse, u.T @ np.exp(z - lse)

    res = optimize.minimize(f, np.zeros(u.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-12})
    return float(np.exp(-res.fun))


def global_coverage_loglinear(mu_XxY, phi_XxYxD, rho_X) -> float:
    """Global coverage over the log-linear class ``pi_theta(y|x) ∝ exp(phi(x, y) . theta)``:
    ``C_glo = sup_theta max_{x: rho(x)>0, y} pi_theta(y|x) / mu(y|x)``.

    Every ``pi_theta`` gives every response mass, so a response with ``mu = 0`` makes it ``inf``. Otherwise the
    most mass the class gives ``y`` is ``exp(-H)``, ``H`` the largest entropy of a distribution over the
    responses whose mean feature is ``phi(x, y)`` (convex duality with ``log sum exp``): ``1/m`` at a vertex of
    ``conv{phi(x, .)}`` shared by ``m`` responses (reached as ``|theta| -> inf``: the concentration SPEC §2
    describes), less inside the hull (``1/3`` for the middle one of three collinear points, at ``theta = 0``).
    The vertex-only value SPEC §2 suggests would ignore interior responses, whose ratio can be the largest
    (or ``inf``). (X, Y), (X, Y, D), (X,). Ref. arXiv:2406.01462.
    """
    phi = _features(phi_XxYxD)
    mu = V.prob_rows("mu_XxY", mu_XxY, phi.shape[:2], unseen_ok=True)
    rho = _rho(rho_X, phi.shape[0])
    if (mu[rho > 0] == 0).any():
        return float("inf")
    num = np.zeros_like(mu)
    for x in np.flatnonzero(rho > 0):
        num[x] = [_loglinear_max_mass(phi[x], y) for y in range(phi.shape[1])]
    return _max_ratio(num, mu, rho)


def _bernoulli_kl(p, q) -> float:
    """``p log(p/q) + (1-p) log((1-p)/(1-q))`` for ``q`` in (0, 1)."""
    return special.xlogy(p, p / q) + special.xlogy(1 - p, (1 - p) / (1 - q))


def _max_mass(q: float, radius: float) -> float:
    """Largest ``p`` in [q, 1] with ``KL(Bernoulli(p) || Bernoulli(q)) <= radius``; 0 when ``q = 0``."""
    if q <= 0:
        return 0.0
    if -np.log(q) <= radius:
        return 1.0
    if _bernoulli_kl(q, q) >= radius:  # radius 0, or below round-off
        return q
    return optimize.brentq(lambda p: _bernoulli_kl(p, q) - radius, q, 1.0, xtol=1e-15)


def kl_ball_coefficient(pi_ref_XxY, mu_XxY, rho_X, radius) -> float:
    """Exact KL-ball coverage ``C_kl(eps) = sup{max_{x,y} pi(y|x)/mu(y|x) : E_rho KL(pi(.|x)||pi_ref(.|x)) <= eps}``.

    The budget goes to one prompt (radius ``eps/rho(x)``); for fixed ``(x, y)`` the best ``pi`` puts ``p`` on
    ``y``, ``1-p`` elsewhere in proportion to ``pi_ref``: ``KL = p log(p/q) + (1-p) log((1-p)/(1-q))``,
    ``q = pi_ref(y|x)``; ``p`` is the largest within the radius (brentq), 1 if ``log(1/q) <= eps/rho(x)``, 0 if
    ``q = 0``. Then ``max p/mu``. ``eps = radius >= 0``. (X, Y), (X, Y), (X,). Ref. arXiv:2406.01462.
    """
    pi_ref = V.prob_rows("pi_ref_XxY", pi_ref_XxY)
    mu = V.prob_rows("mu_XxY", mu_XxY, pi_ref.shape, unseen_ok=True)
    rho = _rho(rho_X, pi_ref.shape[0])
    radius = V.in_range("radius", radius, lo=0.0)
    p = np.zeros_like(pi_ref)
    for x in np.flatnonzero(rho > 0):
        p[x] = [_max_mass(q, radius / rho[x]) for q in pi_ref[x]]
    return _max_ratio(p, mu, rho)


def kl_radius(r_max, beta) -> float:
    """The paper's KL radius for rewards in ``[0, R_max]``: ``eps = 2 R_max / beta``. Reference: arXiv:2406.01462."""
    return 2.0 * V.in_range("r_max", r_max, lo=0.0) / V.in_range("beta", beta, lo=0.0, lo_open=True)


def pair_covariance(phi_XxYxD, p_XxY, rho_X, q_XxY=None) -> np.ndarray:
    """Pairwise-difference covariance ``S = E_rho E_{y~p, y'~q}[(phi(x,y) - phi(x,y'))(phi(x,y) - phi(x,y'))^T]``.

    Computed from per-prompt masses, means and second moments, ``S_x = |q| M_p + |p| M_q - m_p m_q^T - m_q m_p^T``,
    never materialising (X, Y, Y, D). ``q`` defaults to ``p``. Shapes: (X, Y, D), (X, Y), (X,) -> (D, D).
    Reference: arXiv:2406.01462, linear feature coverage.
    """
    phi = _features(phi_XxYxD)
    p = V.prob_rows("p_XxY", p_XxY, phi.shape[:2], unseen_ok=True)
    q = p if q_XxY is None else V.prob_rows("q_XxY", q_XxY, phi.shape[:2], unseen_ok=True)
    rho = _rho(rho_X, phi.shape[0])
    m_p, m_q = np.einsum("xy,xyd->xd", p, phi), np.einsum("xy,xyd->xd", q, phi)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, by name
        s_p, s_q = np.einsum("xy,xyd,xye->xde", p, phi, phi), np.einsum("xy,xyd,xye->xde", q, phi, phi)
        cross = m_p[:, :, None] * m_q[:, None, :]
        s_x = q.sum(-1)[:, None, None] * s_p + p.sum(-1)[:, None, None] * s_q - cross - cross.transpose(0, 2, 1)
        s = np.einsum("x,xde->de", rho, s_x)
    if not np.isfinite(s).all():
        raise ValueError("phi_XxYxD is too large: its pairwise covariance overflows float64")
    return 0.5 * (s + s.T)


def feature_coverage(phi_XxYxD, pi_XxY, mu_XxY, rho_X) -> float:
    """Linear feature coverage: the relative condition number ``sup_v (v' S_pi v) / (v' S_mu v)``.

    ``S_pi``, ``S_mu`` from ``pair_covariance``. Solved as a generalised eigenvalue on the range of ``S_mu``
    (eigendecompose, project, whiten); ``inf`` when ``S_pi`` has a direction outside that range, 0 when
    ``S_pi = 0``. Eigenvalues below ``EIG_RTOL`` times the largest are treated as zero.
    Shapes: (X, Y, D), (X, Y), (X, Y), (X,). Reference: arXiv:2406.01462, linear feature coverage.
    """
    phi = _features(phi_XxYxD)
    pi = V.prob_rows("pi_XxY", pi_XxY, phi.shape[:2])
    mu = V.prob_rows("mu_XxY", mu_XxY, phi.shape[:2], unseen_ok=True)
    phi = np.ldexp(phi, -np.frexp(np.abs(phi).max())[1])  # the ratio is scale-free: |phi| < 1, scaled exactly
    s_pi, s_mu = pair_covariance(phi, pi, rho_X), pair_covariance(phi, mu, rho_X)
    floor = 1e-13 * (np.abs(phi).max() ** 2 + 1e-300)  # round-off level of the covariances
    w, u = np.linalg.eigh(s_mu)
    top_pi = np.linalg.eigvalsh(s_pi).max()
    if top_pi <= floor:
        return 0.0
    keep = w > max(EIG_RTOL * w.max(), floor)
    u_null = u[:, ~keep]
    if u_null.size and np.linalg.eigvalsh(u_null.T @ s_pi @ u_null).max() > max(EIG_RTOL * top_pi, floor):
        return float("inf")
    whiten = u[:, keep] / np.sqrt(w[keep])
    return float(max(np.linalg.eigvalsh(whiten.T @ s_pi @ whiten).max(), 0.0))


# ----------------------------------------------------------------------------------------------
# Empirical coverage of a sampled dataset


def _indices(x_N, y_w_N, y_l_N, n_prompts, n_responses):
    shape = V.integer("n_prompts", n_prompts, minimum=1), V.integer("n_responses", n_responses, minimum=1)
    out = {"x_N": np.asarray(x_N), "y_w_N": np.asarray(y_w_N), "y_l_N": np.asarray(y_l_N)}
    for (name, a), hi in zip(out.items(), (shape[0], shape[1], shape[1]), strict=True):
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise ValueError(f"{name} must be a 1-D array of integer indices, got {a.dtype} of shape {a.shape}")
        V.indices(name, a, hi)
    V.same_shape(**out)
    return [a.astype(np.int64) for a in out.values()], shape


def empirical_support(x_N, y_w_N, y_l_N, n_prompts, n_responses) -> np.ndarray:
    """Which responses a dataset of pairs ``(x, y_w, y_l)`` shows with each prompt: bool (X, Y).

    A response never seen with prompt ``x`` is uncovered for that dataset (SPEC §2). Indices are int (N,).
    """
    (x, y_w, y_l), shape = _indices(x_N, y_w_N, y_l_N, n_prompts, n_responses)
    seen = np.zeros(shape, bool)
    seen[x, y_w] = True
    seen[x, y_l] = True
    return seen


def empirical_mu(x_N, y_w_N, y_l_N, n_prompts, n_responses) -> np.ndarray:
    """Empirical response frequency per prompt, both responses of each pair counted: (X, Y).

    ``mu_hat(y|x) = #{y in pair i : x_i = x} / (2 #{i : x_i = x})``. A prompt never seen gets an all-zero row;
    the coefficients accept such rows and, where ``rho(x) > 0``, treat the prompt as uncovered
    (``mu = 0`` gives ratio ``inf``). The knobs reject them. Indices are int (N,).
    """
    (x, y_w, y_l), shape = _indices(x_N, y_w_N, y_l_N, n_prompts, n_responses)
    counts = np.zeros(shape)
    np.add.at(counts, (x, y_w), 1.0)
    np.add.at(counts, (x, y_l), 1.0)
    n = counts.sum(-1, keepdims=True)
    return np.divide(counts, n, out=np.zeros_like(counts), where=n > 0)

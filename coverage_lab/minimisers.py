"""The set of DPO/IPO population minimisers (SPEC §4.2), exact in float64 numpy.

Under partial coverage the population DPO or IPO loss does not pin a policy down: per prompt, the compared
responses split into connected components on which ``log(pi/pi_ref)`` is fixed up to a constant, and the mass
on responses no pair compares is free. :func:`minimiser_set` computes that set and the best and worst value
and the largest KL over it; :func:`move_mass` is SPEC §4.2's one-parameter family inside it. Tables as in
:mod:`coverage_lab.exact`.

References:
  Song, Swamy, Singh, Bagnell, Sun. The Importance of Online Data: Understanding Preference
  Fine-tuning via Coverage. arXiv:2406.01462.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize, sparse
from scipy.sparse import csgraph
from scipy.special import expit, logit, logsumexp

from coverage_lab import _validate as V
from coverage_lab.exact import _expect, _like, _log, _pi_ref, _pref, _rho


def move_mass(pi_XxY, y0, delta) -> np.ndarray:
    """SPEC §4.2's family: mass ``delta`` on response ``y0`` at every prompt, the ratios among the rest kept.

    ``pi'(y0) = delta``, ``pi'(y) = pi(y) (1 - delta)/(1 - pi(y0))`` otherwise, so every DPO/IPO loss term on a
    pair not involving ``y0`` is unchanged. Shapes: (X, Y) in and out. References: arXiv:2406.01462
    """
    pi = V.prob_table("pi_XxY", pi_XxY, ndim=2)
    y0 = V.integer("y0", y0, minimum=0)
    if y0 >= pi.shape[1]:
        raise ValueError(f"y0 must be < the number of responses {pi.shape[1]}, got {y0}")
    delta = V.nonnegative("delta", delta)
    if delta > 1:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    rest = 1.0 - pi[:, y0]
    if (rest <= 0).any():
        raise ValueError(f"pi_XxY puts all its mass on y0={y0} at some prompt; there are no ratios to keep")
    out = pi * ((1.0 - delta) / rest)[:, None]
    out[:, y0] = delta
    return out


@dataclasses.dataclass(frozen=True)
class MinimiserSet:
    """The closure of the set of DPO/IPO population minimisers, and J and KL over it.

    Per prompt the set is ``{ sum_j w_j q_j + any sub-distribution on uncovered responses }`` (total mass 1),
    the convex hull of its vertices: each component's tilted policy ``q_j`` and point masses on uncovered
    responses. Values are sums over prompts weighted by ``rho``.

    Attributes:
      component_XxY: int, the covered component of ``y`` at ``x`` (0, 1, ...), ``-1`` when uncovered.
      n_components_X: int (X,), number of covered components per prompt.
      uncovered_XxY: bool, responses in no compared pair (free: any mass there leaves the loss unchanged).
      tilted_XxY: ``q_j(y)`` for ``y`` in component ``j``, 0 on uncovered; each component's part sums to 1.
      worst_value, worst_value_X: ``inf J`` over the set (exact: attained at a vertex since J is concave).
      max_kl, max_kl_X: ``sup KL(pi||pi_ref)`` over the set (attained at a vertex since KL is convex).
      best_value, best_value_X: ``max J`` over the set: ``beta log sum_k exp(v_k/beta)`` over the vertex
        values ``v_k`` (the vertices have disjoint supports, so the best weights are ``softmax(v/beta)``).
      worst_policy_XxY: a vertex attaining ``worst_value`` at each prompt.
      best_policy_XxY: the mixture attaining ``best_value``.
    """

    component_XxY: np.ndarray
    n_components_X: np.ndarray
    uncovered_XxY: np.ndarray
    tilted_XxY: np.ndarray
    worst_value: float
    max_kl: float
    best_value: float
    worst_value_X: np.ndarray
    max_kl_X: np.ndarray
    best_value_X: np.ndarray
    worst_policy_XxY: np.ndarray
    best_policy_XxY: np.ndarray

    def component_policy(self, x: int, j: int) -> np.ndarray:
        """The tilted policy ``q_j`` of component ``j`` at prompt ``x``, shape (Y,)."""
        return np.where(self.component_XxY[x] == j, self.tilted_XxY[x], 0.0)


def _dpo_refine(W: np.ndarray, P: np.ndarray, beta: float, d: np.ndarray) -> np.ndarray:
    """Exact DPO population minimiser on one component when the edge equations are inconsistent (non-BT)."""
    a, b = np.nonzero(np.triu(W) > 0)
    w, p, n = W[a, b], P[a, b], len(d)

    def h_of(z):
        dd = np.concatenate([[0.0], z])
        return beta * (dd[a] - dd[b])

    def fun(z):
        h = h_of(z)
        g = w * beta * (expit(h) - p)
        grad = np.bincount(a, g, n) - np.bincount(b, g, n)
        return np.sum(w * (p * np.logaddexp(0, -h) + (1 - p) * np.logaddexp(0, h))), grad[1:]

    def hess(z):
        s = expit(h_of(z))
        C = np.zeros((n, n))
        C[a, b] = C[b, a] = w * beta**2 * s * (1 - s)
        return (np.diag(C.sum(1)) - C)[1:, 1:]

    res = optimize.minimize(fun, d[1:] - d[0], jac=True, hess=hess, method="trust-exact", options={"gtol": 1e-11})
    return np.concatenate([[0.0], res.x])


def _component_log_ratio(W: np.ndarray, P: np.ndarray, beta: float, tau: float | None) -> np.ndarray:
    """``d = log(pi/pi_ref)`` on one component, up to a constant: the weighted least-squares solution of
    ``d_a - d_b = G_ab`` on the edges (``G = logit(P)/beta`` for DPO, ``(P - 1/2)/tau`` for IPO)."""
    edges = W > 0
    with np.errstate(divide="ignore", over="ignore"):
        G = np.where(edges, logit(P) / beta if tau is None else (P - 0.5) / tau, 0.0)
    if not np.isfinite(G[edges]).all():
        name, value = ("beta", beta) if tau is None else ("tau", tau)
        raise ValueError(f"{name} ({value:g}) is too small for the preferences: the log-ratios overflow float64")
    L = np.diag(W.sum(1)) - W
    d = np.linalg.lstsq(L, (W * G).sum(1), rcond=None)[0]
    diff = (d[:, None] - d[None, :])[edges]
    if tau is None and not np.allclose(diff, G[edges], rtol=1e-8, atol=1e-8 * (1 + np.abs(G).max())):
        d = _dpo_refine(W, P, beta, d)
    return d


def minimiser_set(pi_ref_XxY, pair_XxYxY, pref_XxYxY, rho_X, reward_XxY, beta, *, loss="dpo", tau=None):
    """The set of DPO (``loss="dpo"``) or IPO (``loss="ipo"``, with ``tau``) population minimisers.

    Per prompt, responses ``a != b`` are joined when ``rho(x) (pair(a,b) + pair(b,a)) > 0``; components with
    >= 2 responses are covered, the rest uncovered. On a component the population loss fixes
    ``d = log(pi/pi_ref)`` up to a constant: DPO ``beta (d_a - d_b) = logit P(a ≻ b)`` (exact under BT;
    otherwise the convex DPO loss is minimised), IPO the weighted least squares
    ``sum_{a<b} w_ab (d_a - d_b - (P(a ≻ b) - 1/2)/tau)^2``, ``w_ab = pair(a,b) + pair(b,a)``. The tilted policy
    is ``q_j ∝ pi_ref exp(d)`` on component ``j``. Minimisers give every component positive weight, so the
    vertices (a single ``q_j``, a point mass on an uncovered ``y`` with ``J = r(y) + beta log pi_ref(y)``) lie
    in the closure: limits of minimisers with the same loss. The infimum of ``J`` and the supremum of KL over
    the minimisers themselves equal their values at the worst vertex. ``reward_XxY`` is the ground truth used
    for ``J``; the minimiser depends on ``pref`` only. Shapes: (X, Y) tables, ``pair_XxYxY`` and
    ``pref_XxYxY`` (X, Y, Y) (``pair`` need not be normalised; only its support and relative weights matter),
    ``rho_X`` (X,). DPO needs ``0 < P < 1`` on compared pairs: with deterministic preferences no minimiser
    exists. Returns a :class:`MinimiserSet`. References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    pair = V.array("pair_XxYxY", pair_XxYxY, ndim=3)
    V.shape("pair_XxYxY", pair, pi_ref.shape + pi_ref.shape[-1:])
    if (pair < 0).any():
        raise ValueError("pair_XxYxY must be >= 0")
    if pair.max() > 1.0:  # counts, say: only relative weights matter, and pair + pair^T must stay finite
        pair = pair / pair.max()
    pref = _pref(pref_XxYxY, pi_ref)
    rho = _rho(rho_X, pi_ref)
    reward = _like("reward_XxY", reward_XxY, pi_ref)
    beta = V.positive("beta", beta)
    if loss == "ipo":
        tau = V.positive("tau", tau)
    elif loss == "dpo":
        if tau is not None:
            raise ValueError("tau is only used with loss='ipo'")
    else:
        raise ValueError(f"loss must be 'dpo' or 'ipo', got {loss!r}")

    X, Y = pi_ref.shape
    log_ref = _log(pi_ref)
    component = np.full((X, Y), -1)
    tilted = np.zeros((X, Y))
    worst_v, max_kl, best_v = np.empty(X), np.empty(X), np.empty(X)
    worst_pi, best_pi = np.zeros((X, Y)), np.zeros((X, Y))
    for x in range(X):
        W = (pair[x] + pair[x].T) * (rho[x] > 0)
        np.fill_diagonal(W, 0.0)
        _, labels = csgraph.connected_components(sparse.csr_matrix(W > 0), directed=False)
        vertices, vals, kls = [], [], []
        for lab in np.flatnonzero(np.bincount(labels) >= 2):
            idx = np.flatnonzero(labels == lab)
            Wc, Pc = W[np.ix_(idx, idx)], pref[x][np.ix_(idx, idx)]
            if (pi_ref[x, idx] == 0).any():
                raise ValueError(f"pair_XxYxY compares responses with pi_ref_XxY = 0 at prompt {x}")
            if loss == "dpo" and ((Pc[Wc > 0] <= 0) | (Pc[Wc > 0] >= 1)).any():
                raise ValueError(
                    f"pref_XxYxY is deterministic (0 or 1) on a compared pair at prompt {x}: the DPO population "
                    "minimiser does not exist; use a Bradley–Terry temperature or loss='ipo'"
                )
            with np.errstate(over="ignore", invalid="ignore"):
                log_q = log_ref[x, idx] + _component_log_ratio(Wc, Pc, beta, tau if loss == "ipo" else None)
            if not np.isfinite(log_q).all():
                name = "tau" if loss == "ipo" else "beta"
                raise ValueError(f"{name} is too small for these preferences: the log-ratios overflow float64")
            log_q -= logsumexp(log_q)
            component[x, idx] = len(vertices)
            tilted[x, idx] = np.exp(log_q)
            kl = max(float(tilted[x, idx] @ (log_q - log_ref[x, idx])), 0.0)
            vertices.append(tilted[x] * (component[x] == len(vertices)))
            vals.append(float(tilted[x, idx] @ reward[x, idx]) - beta * kl)
            kls.append(kl)
        for y in np.flatnonzero(component[x] < 0):
            vertices.append(np.eye(Y)[y])
            kls.append(-log_ref[x, y])
            vals.append(reward[x, y] - beta * kls[-1])
        vals, kls, vertices = np.array(vals), np.array(kls), np.array(vertices)
        k = int(np.argmin(vals))
        worst_v[x], worst_pi[x], max_kl[x] = vals[k], vertices[k], kls.max()
        with np.errstate(over="ignore"):
            scaled = vals / beta  # -inf for a vertex pi_ref never produces
        if np.isnan(scaled).any() or np.isinf(scaled[np.isfinite(vals)]).any():
            raise ValueError(f"beta ({beta:g}) is too small for the reward's scale: J/beta overflows float64")
        best_v[x] = beta * logsumexp(scaled)
        best_pi[x] = np.exp(scaled - logsumexp(scaled)) @ vertices
    totals = (_expect(rho, worst_v), _expect(rho, max_kl), _expect(rho, best_v))
    n_components = component.max(axis=1) + 1
    return MinimiserSet(
        component, n_components, component < 0, tilted, *totals, worst_v, max_kl, best_v, worst_pi, best_pi
    )

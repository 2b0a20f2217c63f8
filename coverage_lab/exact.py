"""Closed forms and the DPO/IPO solution-set analysis, exact in float64 numpy.

Functions take tables, not environments: ``pi_ref_XxY``, ``reward_XxY``, ``rho_X`` as in
:mod:`coverage_lab.bandits`, and ``pref_XxYxY[x, a, b] = P(a ≻ b | x)`` from ``bandits.preference_table``.
Expectations over prompts skip prompts with ``rho(x) = 0``; an infinite KL is ``inf`` (a value ``-inf``),
never NaN.

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

# ----------------------------------------------------------------------------------------------
# Validation helpers


def _pi_ref(pi_ref_XxY) -> np.ndarray:
    return V.prob_table("pi_ref_XxY", pi_ref_XxY, ndim=2)


def _like(name: str, a, pi_ref: np.ndarray, *, prob: bool = False) -> np.ndarray:
    a = V.prob_table(name, a, ndim=2) if prob else V.array(name, a, ndim=2)
    V.shape(name, a, pi_ref.shape)
    return a


def _rho(rho_X, pi_ref: np.ndarray) -> np.ndarray:
    rho = V.prob_table("rho_X", rho_X, ndim=1)
    V.shape("rho_X", rho, pi_ref.shape[:1])
    return rho


def _pref(pref_XxYxY, pi_ref: np.ndarray) -> np.ndarray:
    p = V.array("pref_XxYxY", pref_XxYxY, ndim=3)
    V.shape("pref_XxYxY", p, pi_ref.shape + pi_ref.shape[-1:])
    if (p < 0).any() or (p > 1).any():
        raise ValueError("pref_XxYxY must hold probabilities in [0, 1]")
    if not np.allclose(p + np.swapaxes(p, -1, -2), 1.0, rtol=0, atol=1e-9):
        raise ValueError("pref_XxYxY must satisfy P(a ≻ b | x) + P(b ≻ a | x) = 1 (1/2 on the diagonal)")
    return p


def _expect(rho: np.ndarray, v_X: np.ndarray) -> float:
    """``sum_x rho(x) v(x)`` over prompts with ``rho(x) > 0`` (an inf at an unseen prompt is ignored)."""
    seen = rho > 0
    return float(np.sum(rho[seen] * v_X[seen]))


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def _scaled(reward: np.ndarray, beta: float, name: str = "beta") -> np.ndarray:
    """``reward / beta``, refusing a ``beta`` (or ``tau``) so small that it overflows float64."""
    with np.errstate(over="ignore"):
        scaled = reward / beta
    if not np.isfinite(scaled).all():
        raise ValueError(f"{name} ({beta:g}) is too small for the reward's scale: r/{name} overflows float64")
    return scaled


def _log_tilt(log_base: np.ndarray, reward: np.ndarray, beta: float, name: str = "beta") -> np.ndarray:
    logits = log_base + _scaled(reward, beta, name)
    return logits - logsumexp(logits, axis=-1, keepdims=True)


def _kl_rows(pi: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """``sum_y pi (log pi - log q)`` per row; ``0 log 0 = 0``; ``inf`` where ``pi > 0 = q``."""
    pos = pi > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pos, pi * (_log(pi) - log_q), 0.0)
    return np.maximum(terms.sum(axis=-1), 0.0)


# ----------------------------------------------------------------------------------------------
# Closed forms


def optimal_policy(reward_XxY, pi_ref_XxY, beta) -> np.ndarray:
    """The maximiser of ``J``: ``pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x)``, zero where ``pi_ref`` is.

    Computed with logsumexp. Shapes: (X, Y) tables in, (X, Y) out. References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    reward = _like("reward_XxY", reward_XxY, pi_ref)
    return np.exp(_log_tilt(_log(pi_ref), reward, V.positive("beta", beta)))


def rlhf_policy(reward_hat_XxY, pi_ref_XxY, beta, r_max=None) -> np.ndarray:
    """RLHF's policy for a learned reward: ``pi ∝ pi_ref exp(r_hat/beta)``.

    With ``r_max`` given, ``r_hat`` must lie in ``[0, r_max]``; then ``pi/pi_ref <= exp(r_max/beta)`` and
    ``KL(pi||pi_ref) <= r_max/beta`` (SPEC §4.3). Shapes: (X, Y) in and out. References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    r_hat = _like("reward_hat_XxY", reward_hat_XxY, pi_ref)
    if r_max is not None:
        r_max = V.positive("r_max", r_max)
        if r_hat.min() < 0 or r_hat.max() > r_max:
            raise ValueError(
                f"reward_hat_XxY must lie in [0, r_max={r_max}], got [{r_hat.min():.6g}, {r_hat.max():.6g}]"
            )
    return np.exp(_log_tilt(_log(pi_ref), r_hat, V.positive("beta", beta)))


MAX_KL_RESPONSES = 20  # rlhf_max_kl enumerates 2^Y subsets of a prompt's responses


def rlhf_max_kl(pi_ref_XxY, rho_X, beta, r_max) -> float:
    """The largest reverse KL of RLHF's policy over every reward in ``[0, r_max]``: ``max_r E_x KL(pi_r || pi_ref)``
    with ``pi_r`` = :func:`rlhf_policy` ``(r)``, exactly.

    Per prompt and response, with ``s = r(y)/beta``, ``dKL/ds = pi_r(y) (s - E_{pi_r} s)``; the centred value
    ``s - E_{pi_r} s`` increases through every zero (its derivative there is ``1 - pi_r(y) > 0``), so the KL falls
    then rises along each coordinate and is largest at an end: at a vertex ``r = r_max 1_S``, ``S`` a set of
    responses. There the KL depends only on ``q = pi_ref(S|x)``: ``p a - log(q e^a + 1 - q)``, ``a = r_max/beta``,
    ``p = q e^a / (q e^a + 1 - q)`` (a Bernoulli ``KL(p || q)``). The maximum is over the ``2^Y`` subset masses of
    each prompt (``Y <= MAX_KL_RESPONSES``), each prompt on its own, and is at most ``r_max/beta`` (SPEC §4.3).
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    rho = _rho(rho_X, pi_ref)
    a = V.positive("r_max", r_max) / V.positive("beta", beta)
    if not np.isfinite(a):
        raise ValueError(f"r_max/beta overflows float64 (r_max={r_max:g}, beta={beta:g})")
    if pi_ref.shape[1] > MAX_KL_RESPONSES:
        raise ValueError(
            f"pi_ref_XxY has {pi_ref.shape[1]} responses; rlhf_max_kl enumerates subsets of at most {MAX_KL_RESPONSES}"
        )
    best = np.empty(pi_ref.shape[0])
    for x, row in enumerate(pi_ref):
        q = np.zeros(1)
        for p in row[row > 0]:
            q = np.concatenate([q, q + p])
        q = np.clip(q, 0.0, 1.0)  # subset masses (float sums may pass 1)
        with np.errstate(divide="ignore"):  # log 0 = -inf: S empty, or every response in S
            log_q, log_1mq = np.log(q), np.log1p(-q)
        log_z = np.logaddexp(log_q + a, log_1mq)
        log_p, log_1mp = log_q + a - log_z, log_1mq - log_z
        # KL(p || q) term by term, not as p a - log_z, which cancels catastrophically for a large a (for a small a
        # the KL is O(a^2) from O(a) terms either way: absolute precision only)
        with np.errstate(invalid="ignore"):
            kl = np.where(q > 0, np.exp(log_p) * (log_p - log_q), 0.0)
            kl += np.where(q < 1, np.exp(log_1mp) * (log_1mp - log_1mq), 0.0)
        best[x] = max(float(np.max(kl)), 0.0)
    return _expect(rho, best)


def kl_per_prompt(pi_XxY, pi_ref_XxY) -> np.ndarray:
    """Per-prompt reverse KL ``KL(pi(.|x) || pi_ref(.|x)) = sum_y pi log(pi/pi_ref)``.

    ``0 log 0 = 0``; ``inf`` where ``pi > 0 = pi_ref``. Shapes: (X, Y) in, (X,) out. References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    return _kl_rows(_like("pi_XxY", pi_XxY, pi_ref, prob=True), _log(pi_ref))


def reverse_kl(pi_XxY, pi_ref_XxY, rho_X) -> float:
    """Expected reverse KL ``E_{x~rho} KL(pi(.|x) || pi_ref(.|x))``; prompts with ``rho = 0`` are skipped.

    Shapes: (X, Y) tables, ``rho_X`` (X,); returns a float (``inf`` possible). References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    return _expect(_rho(rho_X, pi_ref), kl_per_prompt(pi_XxY, pi_ref))


def value(pi_XxY, reward_XxY, pi_ref_XxY, rho_X, beta) -> float:
    """The KL-regularised objective ``J(pi) = E_x [ E_{y~pi} r(x,y) - beta KL(pi(.|x) || pi_ref(.|x)) ]``.

    ``-inf`` when the KL is infinite. Shapes: (X, Y) tables, ``rho_X`` (X,). References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    pi = _like("pi_XxY", pi_XxY, pi_ref, prob=True)
    reward = _like("reward_XxY", reward_XxY, pi_ref)
    beta = V.positive("beta", beta)
    return _expect(_rho(rho_X, pi_ref), (pi * reward).sum(-1) - beta * _kl_rows(pi, _log(pi_ref)))


def optimal_value(reward_XxY, pi_ref_XxY, rho_X, beta) -> float:
    """The optimal value ``J(pi*) = E_x [ beta log Z(x) ]``, ``Z(x) = sum_y pi_ref(y|x) exp(r(x,y)/beta)``.

    Computed with logsumexp. Shapes: (X, Y) tables, ``rho_X`` (X,). References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    reward = _like("reward_XxY", reward_XxY, pi_ref)
    beta = V.positive("beta", beta)
    return _expect(_rho(rho_X, pi_ref), beta * logsumexp(_scaled(reward, beta), b=pi_ref, axis=-1))


def suboptimality(pi_XxY, reward_XxY, pi_ref_XxY, rho_X, beta) -> float:
    """The suboptimality ``J(pi*) - J(pi)``, computed as the identity ``beta E_x KL(pi(.|x) || pi*(.|x)) >= 0``.

    ``inf`` when ``KL(pi||pi_ref)`` is. Shapes: (X, Y) tables, ``rho_X`` (X,). References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    pi = _like("pi_XxY", pi_XxY, pi_ref, prob=True)
    reward = _like("reward_XxY", reward_XxY, pi_ref)
    beta = V.positive("beta", beta)
    return beta * _expect(_rho(rho_X, pi_ref), _kl_rows(pi, _log_tilt(_log(pi_ref), reward, beta)))


def hypo_unseen_mass(pi_XxY, pi_ref_XxY, unseen_XxY, rho_X) -> float:
    """The mass tabular HyPO holds on responses the data never shows at a stationary point with ``pi``'s KL:
    ``E_x pi_ref(U_x|x) exp(KL(pi(.|x) || pi_ref(.|x)))``, ``U_x`` the ``unseen`` responses of prompt ``x``.

    In a tabular softmax the DPO term has no gradient on an unseen response's logit (SPEC §4.1), and the exact
    KL term's gradient there is ``lam rho(x) pi(y|x) [log(pi/pi_ref)(y) - KL_x]``, so descent raises the logit
    while its log-ratio is below ``KL_x``. At a stationary point every
    unseen ``y`` with ``pi(y|x) > 0`` therefore has ``pi(y|x) = pi_ref(y|x) exp(KL_x)``: the KL penalty raises
    the mass the data never shows by the factor ``exp(KL_x) >= 1``, whatever ``lam > 0`` (SPEC §4.4's "zero
    mass" is the case ``pi_ref(U_x) = 0``). Evaluated at any ``pi`` it is the unseen mass a stationary point
    with ``pi``'s per-prompt KL would have; it equals ``pi``'s own at a stationary point. It may exceed 1 (no
    stationary point has that KL); ``inf`` for an infinite KL with ``pi_ref(U_x) > 0``, 0 where
    ``pi_ref(U_x) = 0``. Shapes: (X, Y) tables, ``unseen_XxY`` bool (X, Y), ``rho_X`` (X,). References:
    arXiv:2406.01462 (Algorithm 1)
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    kl = _kl_rows(_like("pi_XxY", pi_XxY, pi_ref, prob=True), _log(pi_ref))
    unseen = V.mask("unseen_XxY", unseen_XxY, pi_ref.shape)
    ref_unseen = (pi_ref * unseen).sum(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        per_prompt = np.where(ref_unseen > 0, ref_unseen * np.exp(kl), 0.0)
    return _expect(_rho(rho_X, pi_ref), per_prompt)


def ipo_solution(pi_ref_XxY, mu_XxY, pref_XxYxY, tau) -> np.ndarray:
    """IPO's population minimiser for product pairs ``mu ⊗ mu``, ``mu`` with the support of ``pi_ref``.

    ``log(pi/pi_ref)(y) = P(y ≻ mu)/tau + const`` with ``P(y ≻ mu) = sum_y' mu(y') P(y ≻ y')``: the IPO loss
    ``(d_w - d_l - 1/(2 tau))^2`` is stationary when ``d_a - E_mu d = (P(a ≻ mu) - 1/2)/tau``. Shapes:
    ``pi_ref_XxY``, ``mu_XxY`` (X, Y); ``pref_XxYxY`` (X, Y, Y); returns (X, Y). For partial coverage
    use :func:`minimiser_set`. References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    mu = _like("mu_XxY", mu_XxY, pi_ref, prob=True)
    if ((mu > 0) != (pi_ref > 0)).any():
        raise ValueError("mu_XxY must have the same support as pi_ref_XxY (use minimiser_set for partial coverage)")
    pref = _pref(pref_XxYxY, pi_ref)
    win_XxY = np.einsum("xab,xb->xa", pref, mu)
    return np.exp(_log_tilt(_log(pi_ref), win_XxY, V.positive("tau", tau), "tau"))


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


# ----------------------------------------------------------------------------------------------
# The set of population minimisers of DPO / IPO (SPEC §4.2)


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
            log_q = log_ref[x, idx] + _component_log_ratio(Wc, Pc, beta, tau if loss == "ipo" else None)
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
        best_v[x] = beta * logsumexp(vals / beta)
        best_pi[x] = np.exp(vals / beta - logsumexp(vals / beta)) @ vertices
    totals = (_expect(rho, worst_v), _expect(rho, max_kl), _expect(rho, best_v))
    n_components = component.max(axis=1) + 1
    return MinimiserSet(
        component, n_components, component < 0, tilted, *totals, worst_v, max_kl, best_v, worst_pi, best_pi
    )

"""Closed forms in float64 numpy: optimal and RLHF policies, values, KL, IPO's solution under full coverage.

Functions take tables, not environments: ``pi_ref_XxY``, ``reward_XxY``, ``rho_X`` as in
:mod:`coverage_lab.bandits`, and ``pref_XxYxY[x, a, b] = P(a ≻ b | x)`` from ``bandits.preference_table``.
Expectations over prompts skip prompts with ``rho(x) = 0``; an infinite KL is ``inf`` (a value ``-inf``),
never NaN. The set of DPO/IPO minimisers under partial coverage is :mod:`coverage_lab.minimisers`.

References:
  Song, Swamy, Singh, Bagnell, Sun. The Importance of Online Data: Understanding Preference
  Fine-tuning via Coverage. arXiv:2406.01462.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

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
    use :func:`coverage_lab.minimisers.minimiser_set`. References: arXiv:2406.01462
    """
    pi_ref = _pi_ref(pi_ref_XxY)
    mu = _like("mu_XxY", mu_XxY, pi_ref, prob=True)
    if ((mu > 0) != (pi_ref > 0)).any():
        raise ValueError(
            "mu_XxY must have the same support as pi_ref_XxY (use minimisers.minimiser_set for partial coverage)"
        )
    pref = _pref(pref_XxYxY, pi_ref)
    win_XxY = np.einsum("xab,xb->xa", pref, mu)
    return np.exp(_log_tilt(_log(pi_ref), win_XxY, V.positive("tau", tau), "tau"))

"""Knobs that build the offline distribution ``mu`` from probability tables (SPEC §2: coverage is a knob).

Pure numpy float64 functions on tables ``p_XxY[x, y] = p(y|x)``. Every knob returns a validated table of the same
shape, so knobs compose: ``temper(restrict(pi_ref_XxY, mask_XxY), 2.0)``. Callers reach them as
``coverage.restrict`` etc. (:mod:`coverage_lab.coverage` re-exports them beside the coefficients they are
measured by).
"""

from __future__ import annotations

import numpy as np

from coverage_lab import _validate as V


def _normalise(w_XxY, name) -> np.ndarray:
    s = w_XxY.sum(-1, keepdims=True)
    if (s <= 0).any():
        raise ValueError(f"{name} leaves prompt {int(np.flatnonzero(s[:, 0] <= 0)[0])} with no probability mass")
    return w_XxY / s


def _log(p):
    return np.log(p, out=np.full_like(p, -np.inf), where=p > 0)


def _softmax(logits_XxY, support_XxY) -> np.ndarray:
    z = np.where(support_XxY, logits_XxY, -np.inf)
    z = z - z.max(-1, keepdims=True)
    w = np.where(support_XxY, np.exp(z), 0.0)
    return w / w.sum(-1, keepdims=True)


def restrict(pi_XxY, support_XxY) -> np.ndarray:
    """``pi`` restricted to a support mask: ``mu(y|x) ∝ pi(y|x) 1[support(x, y)]``. Shapes (X, Y) -> (X, Y).

    Raises ValueError naming ``support_XxY`` when a prompt would be left with no mass.
    """
    pi = V.prob_rows("pi_XxY", pi_XxY)
    mask = V.mask("support_XxY", support_XxY, pi.shape)
    return _normalise(np.where(mask, pi, 0.0), "support_XxY")


def tail_mass(pi_XxY, tail_XxY, eps) -> np.ndarray:
    """Total mass ``eps`` on the tail set, ``1 - eps`` on the rest, each part in proportion to ``pi``.

    ``mu(y|x) = eps pi(y|x)/pi(T_x|x)`` on ``T_x``, ``(1-eps) pi(y|x)/pi(T_x^c|x)`` off it; a part on which ``pi``
    is zero is filled uniformly. ``eps`` in [0, 1]. Shapes (X, Y) -> (X, Y).
    """
    pi = V.prob_rows("pi_XxY", pi_XxY)
    tail = V.mask("tail_XxY", tail_XxY, pi.shape)
    eps = V.in_range("eps", eps, lo=0.0, hi=1.0)
    out = np.zeros_like(pi)
    for part, mass, what in ((tail, eps, "is empty for"), (~tail, 1.0 - eps, "covers every response of")):
        w = np.where(part, pi, 0.0)
        w = np.where(w.sum(-1, keepdims=True) > 0, w, part.astype(np.float64))  # uniform where pi gives none
        n = w.sum(-1, keepdims=True)
        if mass > 0 and (n == 0).any():
            raise ValueError(f"tail_XxY {what} prompt {int(np.flatnonzero(n[:, 0] == 0)[0])} (eps={eps})")
        out += mass * np.divide(w, n, out=np.zeros_like(w), where=n > 0)
    return out


def mixture(p_XxY, q_XxY, alpha) -> np.ndarray:
    """``alpha p + (1 - alpha) q``, ``alpha`` in [0, 1]. Shapes (X, Y) -> (X, Y)."""
    p, q = V.prob_rows("p_XxY", p_XxY), V.prob_rows("q_XxY", q_XxY)
    V.same_shape(p_XxY=p, q_XxY=q)
    alpha = V.in_range("alpha", alpha, lo=0.0, hi=1.0)
    return alpha * p + (1.0 - alpha) * q


def temper(pi_XxY, temperature) -> np.ndarray:
    """Tempered policy ``mu(y|x) ∝ pi(y|x)^(1/T)`` (zeros stay zero), ``T > 0``. Shapes (X, Y) -> (X, Y)."""
    pi = V.prob_rows("pi_XxY", pi_XxY)
    t = V.in_range("temperature", temperature, lo=0.0, lo_open=True)
    logp = _log(pi)
    return _softmax((logp - logp.max(-1, keepdims=True)) / t, pi > 0)


def reward_softmax(reward_XxY, beta_b, base_XxY=None) -> np.ndarray:
    """Reward-tilted policy ``mu(y|x) ∝ base(y|x) exp(beta_b r(x, y))``; ``base`` uniform if None.

    ``beta_b`` is any finite real (0 gives ``base``, < 0 favours low reward); Open Bandit Pipeline calls it
    ``beta``. Shapes (X, Y) -> (X, Y).
    """
    r = V.array("reward_XxY", reward_XxY, ndim=2)
    if r.shape[-1] == 0:
        raise ValueError("reward_XxY must have at least one response")
    beta_b = V.in_range("beta_b", beta_b)
    base = np.full_like(r, 1.0 / r.shape[-1]) if base_XxY is None else V.prob_rows("base_XxY", base_XxY, r.shape)
    r = r - (r.max(-1, keepdims=True) if beta_b >= 0 else r.min(-1, keepdims=True))
    with np.errstate(over="ignore", invalid="ignore"):
        logits = beta_b * r  # <= 0
    if not np.isfinite(logits).all():
        raise ValueError(f"beta_b={beta_b} times reward_XxY overflows")
    return _softmax(_log(base) + logits, base > 0)


def deficient(pi_XxY, n_deficient, score_XxY) -> np.ndarray:
    """Zero out, per prompt, the ``n_deficient`` highest-scoring responses and renormalise.

    Ties go to the lower index first. Pass the reward as ``score_XxY`` to hide the best responses.
    ``0 <= n_deficient < Y``. Shapes (X, Y) -> (X, Y).
    """
    pi = V.prob_rows("pi_XxY", pi_XxY)
    score = V.array("score_XxY", score_XxY, ndim=2)
    V.shape("score_XxY", score, pi.shape)
    n = V.integer("n_deficient", n_deficient, minimum=0)
    if n >= pi.shape[-1]:
        raise ValueError(f"n_deficient must be < the number of responses {pi.shape[-1]}, got {n}")
    keep = np.ones(pi.shape, bool)
    np.put_along_axis(keep, np.argsort(-score, axis=-1, kind="stable")[:, :n], False, axis=-1)
    return _normalise(np.where(keep, pi, 0.0), "n_deficient")


def pair_table(mu_XxY, nu_XxY=None) -> np.ndarray:
    """Pair distribution ``mu_pair[x, a, b] = mu(a|x) nu(b|x)`` (``nu`` defaults to ``mu``). (X, Y) -> (X, Y, Y)."""
    mu = V.prob_rows("mu_XxY", mu_XxY)
    nu = mu if nu_XxY is None else V.prob_rows("nu_XxY", nu_XxY, mu.shape)
    return mu[:, :, None] * nu[:, None, :]

"""Exponential tilts of a reference policy, ``pi_s ∝ pi_ref exp(s r)``, and their exact KL to it, in float64 numpy.

``kl_estimators``' policies (its module re-exports these names): :func:`tilt_for` finds the tilt at a given exact
``KL(pi_s || pi_ref)``, which rises from 0 at ``s = 0`` towards :func:`kl_limit` as ``s -> inf``. The public
functions check their inputs; the root-finder steps on the unchecked ``_tilt`` and ``_kl``.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from coverage_lab import _validate as V


def _problem(pi_ref_Y, r_Y):
    pi_ref = V.prob_table("pi_ref_Y", pi_ref_Y, ndim=1)
    if (pi_ref == 0).any():
        raise ValueError("pi_ref_Y must be > 0 everywhere (the tilts keep its support)")
    r = V.array("r_Y", r_Y, ndim=1)
    V.same_shape(pi_ref_Y=pi_ref, r_Y=r)
    return pi_ref, r


def _tilt(pi_ref, r, s):
    logits = np.log(pi_ref) + s * r
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _kl(p, q):
    seen = p > 0
    if (q[seen] == 0).any():
        return float("inf")
    return float(np.sum(p[seen] * (np.log(p[seen]) - np.log(q[seen]))))


def tilt(pi_ref_Y, r_Y, s: float) -> np.ndarray:
    """``pi_s ∝ pi_ref exp(s r)``."""
    return _tilt(*_problem(pi_ref_Y, r_Y), V.number("s", s))


def kl(p_Y, q_Y) -> float:
    """Exact ``KL(p || q)``, with ``0 log 0 = 0`` (a steep tilt underflows some of ``p`` to 0); ``inf`` where ``p``
    has mass and ``q`` none."""
    p, q = V.prob_table("p_Y", p_Y, ndim=1), V.prob_table("q_Y", q_Y, ndim=1)
    V.same_shape(p_Y=p, q_Y=q)
    return _kl(p, q)


def _kl_limit(pi_ref, r):
    return float(np.log(1.0 / pi_ref[r == r.max()].sum()))


def kl_limit(pi_ref_Y, r_Y) -> float:
    """The KL the tilts approach as ``s -> inf`` (all mass on the argmax of ``r``): ``-log pi_ref(argmax r)``, the
    supremum of what :func:`tilt_for` can reach (``0`` for a constant ``r``)."""
    return _kl_limit(*_problem(pi_ref_Y, r_Y))


def tilt_for(pi_ref_Y, r_Y, target: float) -> np.ndarray:
    """The tilted policy whose exact KL to ``pi_ref`` is ``target`` (brentq on ``s >= 0``); ``target`` must lie in
    ``[0, kl_limit(pi_ref_Y, r_Y))``. The inputs are checked once, not at every step of the root-finder."""
    pi_ref, r = _problem(pi_ref_Y, r_Y)
    limit = _kl_limit(pi_ref, r)
    if not 0 <= V.number("target", target) < limit:
        raise ValueError(f"target must be in [0, {limit:.6g}) (kl_limit: the KL of all mass on argmax r), got {target}")
    f = lambda s: _kl(_tilt(pi_ref, r, s), pi_ref) - target  # noqa: E731
    hi = 1.0
    while f(hi) < 0:  # ends: f increases to kl_limit - target > 0
        hi *= 2.0
    return _tilt(pi_ref, r, optimize.brentq(f, 0.0, hi, xtol=1e-12))

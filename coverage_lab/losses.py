"""Per-example losses and estimators on log-probabilities.

Every function here is pure, per example and unreduced (optax/rlax style): the caller supplies weights
and reduces. The bandit tracks and the transformer track call the very same functions; only how the
log-probabilities are computed differs. With ``d(y) = log pi(y|x) - log pi_ref(y|x)`` (for sequences,
summed over response tokens unless the caller length-normalises it first).

References:
  Song et al. The Importance of Online Data: Understanding Preference Fine-tuning via Coverage.
  arXiv:2406.01462.
  Rafailov et al. Direct Preference Optimization. arXiv:2305.18290.
  Azar et al. A General Theoretical Paradigm to Understand Learning from Human Preferences (IPO).
  arXiv:2310.12036.
  Ahmadian et al. Back to Basics: Revisiting REINFORCE Style Optimization for RLHF (RLOO). arXiv:2402.14740.
  Schulman. Approximating KL Divergence (k1, k2, k3). 2020.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import _validate as V


def _same_shape(**arrays):
    """The arrays as JAX arrays of one shape; real numbers, and (eager calls only) no NaN."""
    V.same_shape(**arrays)
    out = []
    for name, a in arrays.items():
        try:
            a = jnp.asarray(a)
        except TypeError as err:
            raise ValueError(f"{name} must be an array of numbers, got {type(a).__name__}") from err
        if not (jnp.issubdtype(a.dtype, jnp.integer) or jnp.issubdtype(a.dtype, jnp.floating)):
            raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
        if V.is_concrete(a) and np.isnan(jax.device_get(a)).any():
            raise ValueError(f"{name} contains NaN")
        out.append(a)
    return out


def _check_finite(name, a, *, allow=""):
    """Eager calls only: ``a`` has no infinite entry (``allow="-inf"``: minus infinity is allowed, no mass)."""
    if V.is_concrete(a):
        h = jax.device_get(a)
        bad = np.isposinf(h) if allow == "-inf" else ~np.isfinite(h)
        if bad.any():
            raise ValueError(f"{name} must be finite{' or -inf' if allow else ''}, got {h[bad].flat[0]}")


def _check_ref(ref_logp_w_B, ref_logp_l_B):
    """A pair's responses must have mass under ``pi_ref`` (eager calls only: inside a trace the values are staged):
    a ``-inf`` reference log-prob makes the log-ratio ``-inf - (-inf)`` = NaN."""
    for name, a in (("ref_logp_w_B", ref_logp_w_B), ("ref_logp_l_B", ref_logp_l_B)):
        if V.is_concrete(a) and not np.isfinite(jax.device_get(a)).all():
            raise ValueError(f"{name} must be finite (pi_ref gives a response of the pair no mass, or NaN)")


def _check_pair(logp_w_B, logp_l_B):
    """The policy may give one response of a pair no mass (``-inf``: an infinite margin), not both (eager only)."""
    _check_finite("logp_w_B", logp_w_B, allow="-inf")
    _check_finite("logp_l_B", logp_l_B, allow="-inf")
    if V.is_concrete(logp_w_B) and V.is_concrete(logp_l_B):
        both = np.isneginf(jax.device_get(logp_w_B)) & np.isneginf(jax.device_get(logp_l_B))
        if both.any():
            raise ValueError("logp_w_B and logp_l_B are both -inf at an example: the policy gives the pair no mass")


def dpo(logp_w_B, logp_l_B, ref_logp_w_B, ref_logp_l_B, beta):
    """DPO loss ``-log sigmoid(beta * ((logp_w - ref_logp_w) - (logp_l - ref_logp_l)))``, shape (B,).

    Written with ``log_sigmoid`` (finite for margins of any size). ``beta > 0``, finite and non-zero in float32.
    """
    V.float32_scale("beta", beta)
    lw, ll, rw, rl = _same_shape(
        logp_w_B=logp_w_B, logp_l_B=logp_l_B, ref_logp_w_B=ref_logp_w_B, ref_logp_l_B=ref_logp_l_B
    )
    _check_ref(rw, rl)
    _check_pair(lw, ll)
    return -jax.nn.log_sigmoid(beta * ((lw - rw) - (ll - rl)))


def ipo(logp_w_B, logp_l_B, ref_logp_w_B, ref_logp_l_B, tau):
    """IPO loss ``((logp_w - ref_logp_w) - (logp_l - ref_logp_l) - 1/(2 tau))^2``, shape (B,).

    ``d`` is whatever log-ratio the caller passes: summed over tokens by default, length-normalised if the
    caller divides the sequence log-probabilities by the response length first. ``tau >= V.IPO_TAU_MIN``
    (about 2.7e-20), so that the squared margin ``(1/(2 tau))^2`` is finite in float32.
    """
    V.ipo_tau("tau", V.temperature("tau", tau))
    lw, ll, rw, rl = _same_shape(
        logp_w_B=logp_w_B, logp_l_B=logp_l_B, ref_logp_w_B=ref_logp_w_B, ref_logp_l_B=ref_logp_l_B
    )
    _check_ref(rw, rl)
    _check_pair(lw, ll)
    return ((lw - rw) - (ll - rl) - 0.5 / tau) ** 2


def bt(r_w_B, r_l_B):
    """Bradley–Terry reward-model negative log-likelihood ``-log sigmoid(r_w - r_l)``, shape (B,)."""
    rw, rl = _same_shape(r_w_B=r_w_B, r_l_B=r_l_B)
    _check_finite("r_w_B", rw)
    _check_finite("r_l_B", rl)
    return -jax.nn.log_sigmoid(rw - rl)


def kl_k1(logp_B, ref_logp_B):
    """k1 estimator of ``KL(pi || pi_ref)`` on ``y ~ pi``: ``t = logp - ref_logp``. Unbiased, high variance.

    ``logp`` is finite (``y`` was drawn from ``pi``); ``ref_logp = -inf`` gives ``+inf`` (an infinite KL)."""
    lp, rp = _kl_inputs(logp_B, ref_logp_B)
    return lp - rp


def kl_k2(logp_B, ref_logp_B):
    """k2 estimator on ``y ~ pi``: ``t^2 / 2``. Biased (exact to second order), low variance, >= 0."""
    lp, rp = _kl_inputs(logp_B, ref_logp_B)
    return 0.5 * (lp - rp) ** 2


def kl_k3(logp_B, ref_logp_B):
    """k3 estimator on ``y ~ pi``: ``exp(-t) - 1 + t``, >= 0. Unbiased where ``pi`` has mass wherever ``pi_ref``
    has: its mean is ``KL(pi || pi_ref) - pi_ref(pi = 0)``, since ``E_pi exp(-t)`` sums ``pi_ref`` only where ``pi > 0``
    (so it reads low once a response's probability underflows to 0; k1 has no such term).

    Computed as ``expm1(-t) + t`` for accuracy near ``t = 0``.
    """
    lp, rp = _kl_inputs(logp_B, ref_logp_B)
    t = lp - rp
    return jnp.expm1(-t) + t


LOGP_SLACK = 1e-3  # a log-probability above 0 by more than float rounding is not one


def _kl_inputs(logp_B, ref_logp_B):
    lp, rp = _same_shape(logp_B=logp_B, ref_logp_B=ref_logp_B)
    _check_finite("logp_B", lp)
    _check_finite("ref_logp_B", rp, allow="-inf")
    for name, a in (("logp_B", lp), ("ref_logp_B", rp)):
        top = np.max(jax.device_get(a)) if V.is_concrete(a) and a.size else -np.inf
        if top > LOGP_SLACK:
            raise ValueError(f"{name} must hold log-probabilities (<= 0), got {top:.6g}")
    return lp, rp


def loo_advantage(reward_BxK):
    """Leave-one-out advantages ``a_j - mean_{m != j} a_m`` over the last axis (``k >= 2``), stop-gradient."""
    (a,) = _same_shape(reward_BxK=reward_BxK)
    _check_finite("reward_BxK", a)
    a = jax.lax.stop_gradient(a)
    if a.ndim < 1 or a.shape[-1] < 2:
        raise ValueError(f"reward_BxK needs k >= 2 samples on its last axis, got shape {a.shape}")
    k = a.shape[-1]
    return a - (a.sum(-1, keepdims=True) - a) / (k - 1)


def rloo(logp_BxK, reward_BxK):
    """REINFORCE surrogate with a leave-one-out baseline (RLOO), per prompt, shape (B,).

    For ``k`` samples ``y_1..y_k ~ pi(.|x)`` with stop-gradient rewards ``a_j`` and baselines
    ``b_j = mean_{m != j} a_m``: ``(1/k) sum_j (a_j - b_j) log pi(y_j|x)``. Its gradient is an unbiased
    estimate of ``grad E_pi[a]`` when ``a`` does not depend on the parameters; its value is not the objective.
    To *minimise* ``E_pi[a]`` (a cost, e.g. a KL penalty) minimise this surrogate; to maximise a reward,
    minimise its negation. Needs ``k >= 2``.
    """
    lp, a = _same_shape(logp_BxK=logp_BxK, reward_BxK=reward_BxK)
    _check_finite("logp_BxK", lp)
    if lp.ndim < 1 or lp.shape[-1] < 2:
        raise ValueError(f"logp_BxK needs k >= 2 samples on its last axis, got shape {lp.shape}")
    return (loo_advantage(a) * lp).mean(-1)


def ppo_clip(logp_BxK, behaviour_logp_BxK, advantage_BxK, clip):
    """PPO's clipped surrogate, negated to be minimised, per prompt, shape (B,).

    ``-(1/k) sum_j min(rho_j A_j, clip(rho_j, 1 - clip, 1 + clip) A_j)`` with the importance ratio
    ``rho_j = pi(y_j) / pi_behaviour(y_j)`` of samples ``y_j ~ pi_behaviour``. At ``pi = pi_behaviour`` its
    gradient is ``-(1/k) sum_j A_j grad log pi(y_j)`` (REINFORCE). ``clip > 0``. A sample with ``A_j = 0`` adds 0
    whatever its ratio; one with ``A_j < 0`` and a ratio past float32's range makes the loss ``+inf`` (its unclipped
    side), never NaN.

    References: Schulman et al. Proximal Policy Optimization Algorithms. arXiv:1707.06347.
    """
    V.positive("clip", clip)
    lp, blp, adv = _same_shape(logp_BxK=logp_BxK, behaviour_logp_BxK=behaviour_logp_BxK, advantage_BxK=advantage_BxK)
    if lp.ndim < 1:
        raise ValueError(f"logp_BxK needs a last axis of samples, got shape {lp.shape}")
    for name, a in (("logp_BxK", lp), ("behaviour_logp_BxK", blp), ("advantage_BxK", adv)):
        _check_finite(name, a)
    adv = jax.lax.stop_gradient(adv)
    # a sample without advantage contributes 0 even where its ratio overflows float32 (inf * 0 would be NaN)
    ratio = jnp.exp(jnp.where(adv == 0, 0.0, lp - jax.lax.stop_gradient(blp)))
    return -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv).mean(-1)

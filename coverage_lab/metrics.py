"""Metrics of policies as pure functions of tables: value, suboptimality, reward, reverse KL (exact and the
k1/k3 estimates), mass on uncovered responses, likelihood diagnostics.

Every function takes a stack of policies ``logp_NxXxY`` (any number ``N`` of training snapshots or seeds)
and returns arrays of shape (N,), computed in float64 with :mod:`coverage_lab.exact`.

References: arXiv:2406.01462 (§2 coverage, §4 the separation; the likelihood diagnostics of its appendix).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import _validate as V
from coverage_lab import exact, losses
from coverage_lab._compile import jit
from coverage_lab._sampling import categorical
from coverage_lab.bandits import LinearBandit, TabularBandit, check_bandit
from coverage_lab.data import Batch, pair_indices

NAMES = (
    "value",
    "suboptimality",
    "reward",
    "kl",
    "kl_k1",
    "kl_k3",
    "ood_mass",
    "ood_mass_empirical",
    "logp_chosen",
    "logp_rejected",
    "logp_best",
    "loss",
)


def check_names(metrics) -> tuple:
    """``metrics`` as a tuple of known metric names (None: all of :data:`NAMES`)."""
    if isinstance(metrics, str):
        raise ValueError(f"metrics must be a sequence of names, got the string {metrics!r} (write [{metrics!r}])")
    names = NAMES if metrics is None else tuple(metrics)
    if not names:
        raise ValueError("metrics must name at least one metric (None: all of metrics.NAMES)")
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"metrics has unknown names {unknown}; known: {list(NAMES)}")
    return names


def _policies(logp_NxXxY, n_prompts: int, n_responses: int) -> np.ndarray:
    try:
        logp = np.asarray(logp_NxXxY, np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"logp_NxXxY must be an array of numbers, got {type(logp_NxXxY).__name__}") from err
    if logp.ndim != 3 or logp.shape[1:] != (n_prompts, n_responses):
        raise ValueError(f"logp_NxXxY must have shape (N, {n_prompts}, {n_responses}), got {logp.shape}")
    if np.isnan(logp).any() or np.isposinf(logp).any():
        raise ValueError("logp_NxXxY contains NaN or +inf")
    if not np.isfinite(logp).any(-1).all():
        raise ValueError("logp_NxXxY has a row with no finite entry (a policy with no mass)")
    pi = np.exp(logp - logp.max(-1, keepdims=True))
    return pi / pi.sum(-1, keepdims=True)


def _per_prompt_mean(v_NxX, rho_X) -> np.ndarray:
    """``E_{x~rho} v`` per row, skipping prompts with ``rho = 0`` (so an inf there does not leak)."""
    return np.where(rho_X > 0, v_NxX, 0.0) @ rho_X


def policy_metrics(logp_NxXxY, env: TabularBandit | LinearBandit, *, beta, mu_XxY=None) -> dict[str, np.ndarray]:
    """Population metrics of a stack of policies ``pi = softmax(logp)``.

    Returns (N,) arrays: ``value`` J, ``suboptimality`` J(pi*) - J, ``reward`` E_pi r*, ``kl`` E_x KL(pi||pi_ref),
    ``logp_best`` E_x log pi(argmax_y r*(x, y)|x), and, given ``mu_XxY``, ``ood_mass`` = E_x pi(y: mu(y|x) = 0).
    """
    beta = V.positive("beta", beta)
    check_bandit(env)
    rho, pi_ref, reward = (np.asarray(a, np.float64) for a in (env.rho_X, env.pi_ref_XxY, env.reward_XxY))
    pi = _policies(logp_NxXxY, env.n_prompts, env.n_responses)
    n, x, y = pi.shape
    rows = pi.reshape(n * x, y)
    kl = exact.kl_per_prompt(rows, np.tile(pi_ref, (n, 1))).reshape(n, x)
    kl_star = exact.kl_per_prompt(rows, np.tile(exact.optimal_policy(reward, pi_ref, beta), (n, 1))).reshape(n, x)
    reward_NxX = (pi * reward).sum(-1)
    with np.errstate(divide="ignore"):
        logp_best = np.log(np.take_along_axis(pi, reward.argmax(-1)[None, :, None], -1)[..., 0])
    out = {
        "reward": _per_prompt_mean(reward_NxX, rho),
        "kl": _per_prompt_mean(kl, rho),
        "suboptimality": beta * _per_prompt_mean(kl_star, rho),
        "logp_best": _per_prompt_mean(logp_best, rho),
    }
    out["value"] = out["reward"] - beta * out["kl"]
    if mu_XxY is not None:
        mu = V.prob_table("mu_XxY", mu_XxY)
        V.shape("mu_XxY", mu, pi_ref.shape)
        out["ood_mass"] = _per_prompt_mean((pi * (mu == 0)).sum(-1), rho)
    return out


def data_metrics(logp_NxXxY, data: Batch, n_prompts: int, n_responses: int) -> dict[str, np.ndarray]:
    """Metrics against a dataset of pairs: weighted mean ``logp_chosen`` and ``logp_rejected``, and
    ``ood_mass_empirical``: the mass on responses never seen with their prompt in the data, averaged over the
    data's prompts weighted by how often they occur. ``logp_NxXxY``: normalised log-probabilities (each row's
    log-sum-exp is 0); ``data.weight_B`` sums to 1, and rows of zero weight (padding) count for nothing."""
    x, y_w, y_l = pair_indices(data, n_prompts, n_responses)
    pi = _policies(logp_NxXxY, n_prompts, n_responses)
    logp = V.log_prob_table("logp_NxXxY", logp_NxXxY)
    w = V.prob_table("data.weight_B", data.weight_B, ndim=1)
    chosen, rejected = (np.where(w > 0, logp[:, x, y], 0.0) for y in (y_w, y_l))  # 0 * -inf on padding rows: 0
    seen = np.zeros((n_prompts, n_responses), bool)
    seen[x[w > 0], y_w[w > 0]] = seen[x[w > 0], y_l[w > 0]] = True
    prompt_w = np.bincount(x, weights=w, minlength=n_prompts)
    return {
        "logp_chosen": chosen @ w,
        "logp_rejected": rejected @ w,
        "ood_mass_empirical": (pi * ~seen).sum(-1) @ (prompt_w / prompt_w.sum()),
    }


def sampled_kl(key, logp_NxXxY, pi_ref_XxY, rho_X, n_samples: int = 64) -> dict[str, np.ndarray]:
    """The k1 and k3 Monte Carlo estimates of ``E_x KL(pi||pi_ref)`` from ``n_samples`` draws ``y ~ pi(.|x)`` per
    prompt, averaged with weights ``rho`` (keys: ``kl_k1``, ``kl_k3``; shapes (N,)). k3 reads low by ``pi_ref``'s
    mass where ``pi`` has none (:func:`coverage_lab.losses.kl_k3`)."""
    V.key("key", key)
    n_samples = V.integer("n_samples", n_samples, minimum=1)
    pi_ref = V.prob_table("pi_ref_XxY", pi_ref_XxY, ndim=2)
    rho = V.prob_table("rho_X", rho_X, ndim=1)
    V.shape("rho_X", rho, pi_ref.shape[:1])
    _policies(logp_NxXxY, *pi_ref.shape)
    log_ref = None  # pi_ref's log in float64, where float32 would make a mass below its smallest normal log 0
    if V.vanishes_in_float32(pi_ref).any():
        with np.errstate(divide="ignore"):
            log_ref = jnp.asarray(np.log(pi_ref), jnp.float32)
    out = _sampled_kl(key, logp_NxXxY, pi_ref_XxY, rho_X, n_samples, log_ref)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


@jit(static_argnames="n_samples")
def _sampled_kl(key, logp_NxXxY, pi_ref_XxY, rho_X, n_samples, log_ref_XxY=None):
    logp = jnp.asarray(logp_NxXxY, jnp.float32)
    logp = logp - jax.nn.logsumexp(logp, -1, keepdims=True)
    n, x, y = logp.shape
    y_NxXxS = categorical(key, logp.reshape(n * x, y), n_samples).reshape(n, x, n_samples)
    lp = jnp.take_along_axis(logp, y_NxXxS, -1)
    ref = jnp.log(jnp.asarray(pi_ref_XxY, jnp.float32))
    if log_ref_XxY is not None:  # only the entries float32 turned into log 0 = -inf change
        ref = jnp.where(jnp.isneginf(ref), log_ref_XxY, ref)
    ref = ref[jnp.arange(x)[:, None], y_NxXxS]
    rho = jnp.asarray(rho_X, jnp.float32)
    kls = (("kl_k1", losses.kl_k1), ("kl_k3", losses.kl_k3))
    return {name: jnp.where(rho[None] > 0, fn(lp, ref).mean(-1), 0.0) @ rho for name, fn in kls}  # no inf * 0

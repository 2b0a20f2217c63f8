"""Metrics of a transformer policy on the token task, computed inside the compiled run at each log point.

Names follow :data:`coverage_lab.metrics.NAMES` where they apply; ``rho`` is uniform over the prompts.

Exact (enumerable tasks only, from ``policy.table``):
  ``kl``: ``E_x KL(pi || pi_ref)``; ``reward``: ``E_x E_pi r*``; ``ood_mass``: ``E_x pi(y: mu(y|x) = 0)``.
Monte Carlo, from ``n`` samples ``y ~ pi(.|x)`` per prompt (common random numbers across log points):
  ``kl_k1``, ``kl_k3``: the k1 (``t``) and k3 (``exp(-t) - 1 + t``) estimators of the reverse KL with
  ``t = log pi(y|x) - log pi_ref(y|x)`` (k1 unbiased; k3 >= 0, unbiased while ``pi`` keeps mass wherever
  ``pi_ref`` has, ``losses.kl_k3``); ``gold_reward``: mean ``r*``;
  ``win_rate``: ``P(r*(y) > r*(y')) + P(r*(y) = r*(y')) / 2`` against ``y' ~ pi_ref`` drawn alongside (a tie:
  the same token scores, ``task.gold_sign``, whatever float32 makes of the two rewards);
  ``rm_score``: mean reward-model score (when a reward model is given); ``ood_mass_mc``: the share of samples
  ``mu`` never shows; ``good_token_rate``, ``bad_token_rate``: the share of response tokens that are rare
  good / rare bad tokens (does extrapolation help or hurt?).
On the offline data (first ``n_data`` pairs): ``logp_chosen``, ``logp_rejected``: mean ``log pi`` of the
preferred and rejected responses.

References: arXiv:2406.01462 (Figure 1, Table 1); Schulman, Approximating KL Divergence (k1, k3), 2020.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import _validate as V
from coverage_lab import losses
from coverage_lab.data import Batch, check_batch
from coverage_lab.policies import Policy
from coverage_lab.transformer import task as T

EXACT = ("kl", "reward", "ood_mass")
SAMPLED = ("kl_k1", "kl_k3", "gold_reward", "win_rate", "ood_mass_mc", "good_token_rate", "bad_token_rate")
DATA = ("logp_chosen", "logp_rejected")


def names(task: T.Task, *, reward_model: bool) -> tuple[str, ...]:
    """The metric names :func:`make_evaluator` returns for ``task``."""
    if not isinstance(task, T.Task):
        raise ValueError(f"task must come from task.make_task, got {type(task).__name__}")
    reward_model = V.flag("reward_model", reward_model)
    return (EXACT if task.enumerable else ()) + SAMPLED + (("rm_score",) if reward_model else ()) + DATA


def exact_kl(logp_XxY, ref_logp_XxY):
    """``E_x KL(pi || pi_ref)`` from enumerated log-probability tables (X, Y), ``rho`` uniform: ``inf`` where
    ``pi`` has mass (``logp > -inf``, however small its float32 exponential) and ``pi_ref`` none. Concrete tables
    must be normalised log-probabilities (no NaN or ``+inf``)."""
    if jnp.ndim(logp_XxY) != 2 or jnp.shape(logp_XxY)[0] == 0:
        raise ValueError(f"logp_XxY must have shape (X, Y) with X >= 1, got {jnp.shape(logp_XxY)}")
    V.same_shape(logp_XxY=logp_XxY, ref_logp_XxY=ref_logp_XxY)
    for name, table in (("logp_XxY", logp_XxY), ("ref_logp_XxY", ref_logp_XxY)):
        if V.is_concrete(table):
            V.log_prob_table(name, table)
    logp, ref = jnp.asarray(logp_XxY), jnp.asarray(ref_logp_XxY)
    has_mass = ~jnp.isneginf(logp)
    term = jnp.where(jnp.isneginf(ref), jnp.inf, jnp.exp(logp) * (logp - ref))
    return jnp.sum(jnp.where(has_mass, term, 0.0), -1).mean()


def make_evaluator(
    task: T.Task,
    policy: Policy,
    ref_params,
    key,
    *,
    n_samples: int,
    mu_logp_XxV,
    data: Batch,
    n_data: int = 256,
    rewards=None,
):
    """``evaluate(params) -> {name: scalar}`` (see the module docstring); jit-able, pure in ``params``.

    ``policy`` must give summed (not length-normalised) sequence log-probabilities; ``rewards(x_B, y_BxL)``
    is a fitted reward model's score function or None. Reference samples and tables are computed once here.
    """
    if not isinstance(task, T.Task):
        raise ValueError(f"task must come from task.make_task, got {type(task).__name__}")
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a coverage_lab.policies.Policy (policy.sequence_policy), got {policy!r:.80}")
    V.integer("n_samples", n_samples, minimum=1)
    V.integer("n_data", n_data, minimum=1)
    V.key("key", key)
    check_batch(data)
    x_X = jnp.arange(task.n_prompts, dtype=jnp.int32)
    if T.check_token_logp(mu_logp_XxV).shape != (task.n_prompts, task.n_tokens):
        raise ValueError(f"mu_logp_XxV must have shape {(task.n_prompts, task.n_tokens)}, got {jnp.shape(mu_logp_XxV)}")
    x_flat = jnp.repeat(x_X, n_samples)
    k_pi, k_ref = jax.random.split(key)
    flat = lambda y: y.reshape(-1, task.response_len)  # noqa: E731
    y_ref = flat(policy.sample(ref_params, k_ref, x_X, n_samples))
    ref_table = policy.table(ref_params) if task.enumerable else None
    uncovered_XxY = None
    y_all = jnp.asarray(T.responses(task)) if task.enumerable else None
    if task.enumerable:
        uncovered_XxY = jax.vmap(lambda x: T.uncovered(mu_logp_XxV, jnp.full(y_all.shape[0], x), y_all))(x_X)
        reward_XxY = jax.vmap(lambda x: T.gold_reward(task, jnp.full(y_all.shape[0], x), y_all))(x_X)
    m = min(n_data, data.size)
    x_d, y_w, y_l = data.x_B[:m], data.y_w_B[:m], data.y_l_B[:m]
    good = jnp.asarray(task.good_V)
    bad = jnp.asarray(task.bad_V)

    # one forward pass of the policy over every sequence it is scored on (fewer programs to compile)
    x_eval = [x_flat, x_d, x_d]
    sizes = [x_flat.shape[0], m, m]
    if task.enumerable:
        x_eval.append(jnp.repeat(x_X, task.n_responses))
        sizes.append(task.n_prompts * task.n_responses)
    x_eval = jnp.concatenate(x_eval)
    splits = list(np.cumsum(sizes)[:-1])

    def evaluate(params):
        y = flat(policy.sample(params, k_pi, x_X, n_samples))
        y_eval = [y, y_w, y_l] + ([jnp.tile(y_all, (task.n_prompts, 1))] if task.enumerable else [])
        logp, lp_w, lp_l, *table = jnp.split(policy.log_probs(params, x_eval, jnp.concatenate(y_eval)), splits)
        ref_logp = policy.log_probs(ref_params, x_flat, y)
        gold = T.gold_reward(task, x_flat, y)
        out = {
            "kl_k1": losses.kl_k1(logp, ref_logp).mean(),
            "kl_k3": losses.kl_k3(logp, ref_logp).mean(),
            "gold_reward": gold.mean(),
            "win_rate": jnp.mean(0.5 * (1.0 + T.gold_sign(task, x_flat, y, y_ref))),  # ties: the same token scores
            "ood_mass_mc": T.uncovered(mu_logp_XxV, x_flat, y).mean(),
            "good_token_rate": good[y].mean(),
            "bad_token_rate": bad[y].mean(),
            "logp_chosen": lp_w.mean(),
            "logp_rejected": lp_l.mean(),
        }
        if rewards is not None:
            out["rm_score"] = rewards(x_flat, y).mean()
        if task.enumerable:
            table = table[0].reshape(task.n_prompts, task.n_responses)
            p = jnp.exp(table)
            out["kl"] = exact_kl(table, ref_table)
            out["reward"] = jnp.sum(p * reward_XxY, -1).mean()
            out["ood_mass"] = jnp.sum(jnp.where(uncovered_XxY, p, 0.0), -1).mean()
        return out

    return evaluate

"""What the objectives are built from: the :class:`Context` an objective is made against, the log-probabilities
of offline pairs beside the reference's (:func:`pair_logps`, :func:`with_reference`), and on-policy expectations,
enumerated or estimated from ``k`` samples by RLOO or PPO's clipped surrogate (:func:`on_policy`).

:mod:`coverage_lab.algorithms` assembles them with the losses of :mod:`coverage_lab.losses` into the objectives
of DPO, IPO, RLHF, HyPO and online DPO; it re-exports the public names here.

References:
  Song et al. The Importance of Online Data: Understanding Preference Fine-tuning via Coverage.
  arXiv:2406.01462 (SPEC §3: the RLOO gradient of the KL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import _validate as V
from coverage_lab import losses
from coverage_lab.data import Batch, check_batch
from coverage_lab.policies import Policy

sg = jax.lax.stop_gradient


class Context(NamedTuple):
    """What an objective is built against.

    policy: the policy's pure functions; ref_params: the reference policy's parameters;
    exact: enumerate on-policy expectations (needs ``policy.table``) instead of sampling;
    reward_fn: ``r_hat(x_B, y_B)`` of a fitted reward model, or None;
    pref_XxYxY: the Bradley–Terry oracle ``P(a ≻ b|x)`` for online pair labels, or None: a table, or anything
      indexed like one as ``pref_XxYxY[x_B, a_B, b_B]`` (the transformer track's ``GoldPreference`` on tokens).
    """

    policy: Policy
    ref_params: Any
    exact: bool
    reward_fn: Callable | None = None
    pref_XxYxY: Any = None


def weighted(loss_B, weight_B):
    """``sum_B weight_B loss_B``: an objective's loss from per-example losses and the batch's weights (they sum to
    1: ``1/n`` for sampled pairs, ``rho mu_pair P`` for the exact batch)."""
    V.same_shape(loss_B=loss_B, weight_B=weight_B)
    return jnp.sum(weight_B * loss_B)


def joint_log_probs(policy: Policy, params, *batches) -> list:
    """``policy.log_probs(params, x, y)`` for several ``(x_B, y_B)`` batches: in one call, split back, when the
    policy asks for it (``policy.one_pass``), else one call each.

    For a sequence model one call is one forward (and backward) pass instead of one per batch: fewer, larger
    kernels and a smaller program to trace and compile (measured on the transformer track, ``small``: the DPO
    training program went from 775 to 497 fusions and from 9.8 to 7.5 CPU-s of compile time). A table keeps one
    gather per batch: its gradient then sums in the same order as the objective's terms, so contributions that
    cancel in exact arithmetic (a pair's two responses on a response neither favours) cancel to exactly zero,
    as the exact track relies on (Adam would turn rounding noise into steps of the learning rate's size)."""
    if not batches:
        raise ValueError("batches must hold at least one (x_B, y_B) pair of arrays")
    if not policy.one_pass:
        return [policy.log_probs(params, x, y) for x, y in batches]
    x = jnp.concatenate([x for x, _ in batches])
    y = jnp.concatenate([y for _, y in batches])
    return jnp.split(policy.log_probs(params, x, y), np.cumsum([x.shape[0] for x, _ in batches])[:-1].tolist())


def _reference(ctx: Context, x_B, y_w_B, y_l_B) -> list:
    return [sg(r) for r in joint_log_probs(ctx.policy, ctx.ref_params, (x_B, y_w_B), (x_B, y_l_B))]


def contrastive(ctx: Context, logps) -> tuple:
    """The pair log-probabilities DPO's and IPO's ``d`` is built from: times ``policy.pair_scale``."""
    scale = ctx.policy.pair_scale
    return tuple(logps) if scale == 1.0 else tuple(scale * lp for lp in logps)


def pair_logps(ctx: Context, params, x_B, y_w_B, y_l_B):
    """``(logp_w, logp_l, ref_logp_w, ref_logp_l)`` for a batch of pairs, as DPO and IPO read them (times
    ``policy.pair_scale``); reference terms are constants."""
    logps = (*joint_log_probs(ctx.policy, params, (x_B, y_w_B), (x_B, y_l_B)), *_reference(ctx, x_B, y_w_B, y_l_B))
    return contrastive(ctx, logps)


def batch_reference(ctx: Context, batch: Batch):
    """``(ref_logp_w, ref_logp_l)`` of the batch's pairs (unscaled): those it carries (:func:`with_reference`),
    else computed."""
    if batch.ref_w_B is not None:
        return batch.ref_w_B, batch.ref_l_B
    return tuple(_reference(ctx, batch.x_B, batch.y_w_B, batch.y_l_B))


def batch_pair_logps(ctx: Context, params, batch: Batch):
    """:func:`pair_logps` of the batch's pairs, the reference terms from :func:`batch_reference`."""
    pairs = ((batch.x_B, batch.y_w_B), (batch.x_B, batch.y_l_B))
    return contrastive(ctx, (*joint_log_probs(ctx.policy, params, *pairs), *batch_reference(ctx, batch)))


def with_reference(ctx: Context, data: Batch, batch_size: int | None = None) -> Batch:
    """``data`` with its pairs' reference log-probabilities filled in (``ref_w_B``, ``ref_l_B``), ``batch_size``
    pairs at a time (default: all at once). They are constants of the data: computed once here, the offline
    objectives read them from each minibatch instead of running ``pi_ref`` at every step (the usual DPO
    practice; for a sequence model, one forward pass of the reference fewer per step)."""
    check_batch(data)
    if batch_size is not None:
        V.integer("batch_size", batch_size, minimum=1)
    n = data.size
    pairs = (data.x_B, data.y_w_B, data.y_l_B)

    def ref(chunk):
        return tuple(_reference(ctx, *chunk))

    if batch_size is None or batch_size >= n:
        ref_w, ref_l = ref(pairs)
    else:  # a loop over chunks of batch_size pairs (the last one padded): a training step's memory at most
        pad = -n % batch_size
        chunks = tuple(jnp.concatenate([v, v[:pad]]).reshape(-1, batch_size, *v.shape[1:]) for v in pairs)
        ref_w, ref_l = (r.reshape(-1)[:n] for r in jax.lax.map(ref, chunks))
    return data._replace(ref_w_B=ref_w, ref_l_B=ref_l)


def on_policy(ctx: Context, params, batch: Batch, key, k: int, cost_fn, *, behaviour=None, clip=None):
    """A surrogate whose gradient is ``grad E_x E_{y~pi} [cost]``, and the value of that expectation.

    ``cost_fn(x, y, t)`` gives the per-sample cost, ``t = log pi - log pi_ref`` (the KL integrand).
    Exact (``ctx.exact``): the expectation enumerated over every response, differentiated directly.
    Sampled: ``k`` samples per prompt with the cost as a stop-gradient reward and a leave-one-out baseline:
    RLOO (SPEC §3), or, with ``clip``, PPO's clipped surrogate on samples from the ``behaviour`` parameters
    (then ``t`` is the behaviour policy's, as when the rewards were computed at rollout time).
    """
    x_P, w_P = batch.prompt_x_P, batch.prompt_w_P
    if ctx.exact and ctx.policy.table is None:
        raise ValueError("ctx.exact needs a policy over an enumerable response set (policy.table is None)")
    if not ctx.exact:
        V.integer("k", k, minimum=2)  # a leave-one-out baseline needs another sample
    if ctx.exact:
        logp_PxY = ctx.policy.table(params)[x_P]
        ref_PxY = sg(ctx.policy.table(ctx.ref_params)[x_P])
        p_PxY = jnp.exp(logp_PxY)
        t_PxY = jnp.where(p_PxY > 0, logp_PxY - ref_PxY, 0.0)
        y_PxY = jnp.broadcast_to(jnp.arange(p_PxY.shape[-1]), p_PxY.shape)
        cost = jnp.where(p_PxY > 0, cost_fn(jnp.broadcast_to(x_P[:, None], p_PxY.shape), y_PxY, t_PxY), 0.0)
        value = weighted(jnp.sum(p_PxY * cost, -1), w_P)
        return value, value
    sampler = params if behaviour is None else behaviour
    x, y = draw(ctx, sampler, batch, key, k)
    logp = ctx.policy.log_probs(params, x, y)
    return sampled_surrogate(ctx, batch, x, y, logp, k, cost_fn, sampler=sampler, clip=clip)


def draw(ctx: Context, sampler, batch: Batch, key, k: int):
    """``k`` samples per on-policy prompt from the ``sampler`` parameters (no gradient), flattened: ``(x, y)``."""
    y_PxK = ctx.policy.sample(sg(sampler), key, batch.prompt_x_P, k)  # (P, k, ...): indices or token arrays
    return jnp.repeat(batch.prompt_x_P, k, axis=0), y_PxK.reshape((-1, *y_PxK.shape[2:]))


def sampled_surrogate(ctx: Context, batch: Batch, x, y, logp, k: int, cost_fn, *, sampler=None, clip=None):
    """:func:`on_policy`'s sampled estimate from the drawn ``(x, y)`` and the policy's ``logp`` of them."""
    logp = logp.reshape(-1, k)
    ref = sg(ctx.policy.log_probs(ctx.ref_params, x, y)).reshape(-1, k)
    if clip is None:
        cost = sg(cost_fn(x, y, (logp - ref).reshape(-1))).reshape(-1, k)
        surrogate = losses.rloo(logp, cost)
    else:
        sampler_logp = sg(ctx.policy.log_probs(sg(sampler), x, y)).reshape(-1, k)
        cost = sg(cost_fn(x, y, (sampler_logp - ref).reshape(-1))).reshape(-1, k)
        surrogate = losses.ppo_clip(logp, sampler_logp, -losses.loo_advantage(cost), clip)  # reward = -cost
    return weighted(surrogate, batch.prompt_w_P), weighted(cost.mean(-1), batch.prompt_w_P)

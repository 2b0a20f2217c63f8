"""Objective factories: offline DPO/IPO, online RLHF, HyPO, online DPO — each a small function.

A factory returns an :class:`~coverage_lab.objective.Algorithm`: its name, its sweepable hyper-parameters
(``hparams``, passed to the compiled program as arrays so a sweep does not recompile) and ``make(algorithm, ctx,
hparams) -> objective(params, batch, key) -> (loss, metrics)``. Every objective is built from the shared losses
in :mod:`coverage_lab.losses` and the terms of :mod:`coverage_lab.terms`. This module re-exports the names an
algorithm's user reaches for: ``Algorithm``, ``Augmented`` and ``check_hparams`` (from
:mod:`coverage_lab.objective`), ``Context``, ``with_reference``, ... (from :mod:`coverage_lab.terms`). Exact and
sampled versions differ only in the data (``ctx.exact`` says whether on-policy expectations are enumerated or
estimated with ``k`` samples by RLOO).

References:
  Song et al. The Importance of Online Data: Understanding Preference Fine-tuning via Coverage.
  arXiv:2406.01462 (HyPO: Algorithm 1; constrained form: §5).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from coverage_lab import _validate as V
from coverage_lab import losses
from coverage_lab.data import Batch
from coverage_lab.objective import Algorithm
from coverage_lab.objective import Augmented as Augmented  # re-exported
from coverage_lab.objective import check_hparams as check_hparams  # re-exported
from coverage_lab.terms import (
    Context,
    batch_pair_logps,
    batch_reference,
    contrastive,
    draw,
    joint_log_probs,
    on_policy,
    pair_logps,
    sampled_surrogate,
    sg,
    weighted,
)
from coverage_lab.terms import with_reference as with_reference  # re-exported, as Context and the rest are


def _numbers(**values) -> dict:
    """A factory's hyper-parameters, each a single finite number (their ranges: :func:`check_hparams`)."""
    return {name: V.number(name, v) for name, v in values.items()}


def _kl_cost(x, y, t):
    return t


# ----------------------------------------------------------------------------------------------
# Offline contrastive


def _make_dpo(alg: Algorithm, ctx: Context, hp):
    def objective(params, batch: Batch, key):
        loss = weighted(losses.dpo(*batch_pair_logps(ctx, params, batch), hp["beta"]), batch.weight_B)
        return loss, {"loss": loss}

    return objective


def dpo(beta: float = 0.1) -> Algorithm:
    """Offline DPO: minimise ``E_{(x,y_w,y_l)~D} -log sigmoid(beta (d(y_w) - d(y_l)))`` (arXiv:2305.18290)."""
    return Algorithm("dpo", _make_dpo, _numbers(beta=beta))


def _make_ipo(alg: Algorithm, ctx: Context, hp):
    def objective(params, batch: Batch, key):
        loss = weighted(losses.ipo(*batch_pair_logps(ctx, params, batch), hp["tau"]), batch.weight_B)
        return loss, {"loss": loss}

    return objective


def ipo(tau: float = 0.1) -> Algorithm:
    """Offline IPO: minimise ``E_D (d(y_w) - d(y_l) - 1/(2 tau))^2`` (arXiv:2310.12036)."""
    return Algorithm("ipo", _make_ipo, _numbers(tau=tau))


# ----------------------------------------------------------------------------------------------
# Online RLHF


def reward_model_objective(rewards: Callable):
    """Bradley–Terry maximum likelihood for a reward model ``rewards(params, x_B, y_B)`` on labelled pairs."""

    def objective(params, batch: Batch, key):
        r_w, r_l = rewards(params, batch.x_B, batch.y_w_B), rewards(params, batch.x_B, batch.y_l_B)
        loss = weighted(losses.bt(r_w, r_l), batch.weight_B)
        return loss, {"loss": loss}

    return objective


def _make_rlhf(alg: Algorithm, ctx: Context, hp):
    ppo = "ppo_clip" in hp

    def cost(x, y, t):
        return -(ctx.reward_fn(x, y) - hp["beta"] * t)

    def objective(params, batch: Batch, key):
        policy = alg.policy_params(params)
        behaviour, clip = (params.behaviour, hp["ppo_clip"]) if ppo else (None, None)
        surrogate, expected_cost = on_policy(ctx, policy, batch, key, alg.k, cost, behaviour=behaviour, clip=clip)
        return surrogate, {"loss": expected_cost}

    return objective


def rlhf(
    beta: float = 0.1, r_max: float = 1.0, k: int = 4, ppo_clip: float | None = None, refresh_every: int = 4
) -> Algorithm:
    """Online RLHF: fit ``r_hat in [0, r_max]`` by Bradley–Terry MLE on the offline pairs, then maximise
    ``E_pi[r_hat] - beta KL(pi || pi_ref)`` on policy (exact: enumerated, which converges to the closed form
    ``pi ∝ pi_ref exp(r_hat / beta)``; sampled: RLOO with ``k`` samples per prompt on the stop-gradient reward
    ``r_hat - beta (log pi - log pi_ref)``, the sequence-level KL in the reward). ``loss`` is ``-E_pi[r_hat - beta t]``.

    With ``ppo_clip`` (e.g. 0.2): PPO's clipped surrogate instead, on samples from a behaviour policy that is
    refreshed to the current one every ``refresh_every`` steps (so the importance ratios move away from 1 and
    the clipping acts); advantages are still leave-one-out over the ``k`` samples, no critic.
    """
    k = V.integer("k", k, minimum=2)
    hp = _numbers(beta=beta, r_max=r_max)
    if ppo_clip is None:
        return Algorithm("rlhf", _make_rlhf, hp, k=k, reward_model=True, offline_pairs=False)
    hp |= _numbers(ppo_clip=ppo_clip)
    every = V.integer("refresh_every", refresh_every, minimum=1)
    return Algorithm(
        "rlhf",
        _make_rlhf,
        hp,
        k=k,
        reward_model=True,
        offline_pairs=False,
        options=(("ppo_clip", True), ("refresh_every", every)),
    )


# ----------------------------------------------------------------------------------------------
# HyPO: DPO on the offline pairs plus a reverse-KL penalty on unlabelled on-policy samples


def _make_hypo(alg: Algorithm, ctx: Context, hp):
    constrained = dict(alg.options).get("constrained", False)

    def dpo_and_kl(params, batch: Batch, key):
        if ctx.exact:
            return batch_pair_logps(ctx, params, batch), on_policy(ctx, params, batch, key, alg.k, _kl_cost)
        # sampled: the policy scores the pairs and its own samples in one call (one pass of a sequence model)
        x, y = draw(ctx, params, batch, key, alg.k)
        pairs = ((batch.x_B, batch.y_w_B), (batch.x_B, batch.y_l_B))
        lp_w, lp_l, lp = joint_log_probs(ctx.policy, params, *pairs, (x, y))
        logps = contrastive(ctx, (lp_w, lp_l, *batch_reference(ctx, batch)))
        return logps, sampled_surrogate(ctx, batch, x, y, lp, alg.k, _kl_cost)

    def objective(params, batch: Batch, key):
        policy_params = alg.policy_params(params)
        logps, (kl_surrogate, kl) = dpo_and_kl(policy_params, batch, key)
        loss = weighted(losses.dpo(*logps, hp["beta"]), batch.weight_B)
        metrics = {"loss": loss}
        if not constrained:
            return loss + hp["lam"] * kl_surrogate, {**metrics, "kl_penalty": kl}
        # Lagrangian min_pi max_{lam >= 0} DPO + lam (KL - budget): descent on pi, ascent on log lam.
        lam = jnp.exp(params.log_lam)
        lagrangian = loss + sg(lam) * kl_surrogate - lam * sg(kl - hp["kl_budget"])
        return lagrangian, {**metrics, "kl_penalty": kl, "lam": lam}

    return objective


def hypo(beta: float = 0.1, lam: float = 1.0, k: int = 4, kl_budget: float | None = None) -> Algorithm:
    """HyPO (arXiv:2406.01462, Algorithm 1): DPO on the offline pairs plus ``lam * KL(pi || pi_ref)`` estimated on
    ``k`` unlabelled samples per prompt from the current policy (RLOO, the log-ratio as the stop-gradient
    reward; exact: the enumerated KL). No reward model, no critic.

    With ``kl_budget`` set: the constrained form the theory analyses, ``min DPO s.t. KL <= kl_budget``, by dual
    ascent on ``lam`` (started at ``lam``). At a fixed ``lam`` HyPO is biased away from ``pi*`` even with
    perfect data; the constrained form trades that for a hard KL budget.
    """
    k = V.integer("k", k, minimum=2)
    hp = _numbers(beta=beta, lam=lam)
    if kl_budget is None:
        return Algorithm("hypo", _make_hypo, hp, k=k)
    hp |= _numbers(kl_budget=kl_budget)  # the constrained form needs lam > 0 (dual ascent on log lam)
    return Algorithm("hypo", _make_hypo, hp, k=k, options=(("constrained", True),))


# ----------------------------------------------------------------------------------------------
# Online (on-policy) DPO — beyond the paper


def _make_online_dpo(alg: Algorithm, ctx: Context, hp):
    offline = _make_dpo(alg, ctx, hp)
    use_rm = dict(alg.options).get("label_with_reward_model", False)
    if not use_rm and ctx.pref_XxYxY is None:
        raise ValueError("pref_XxYxY is required: online_dpo labels its on-policy pairs with it")

    def pref(x, a, b):
        if use_rm:
            return jax.nn.sigmoid(ctx.reward_fn(x, a) - ctx.reward_fn(x, b))
        return ctx.pref_XxYxY[x, a, b]

    def online_loss(params, batch: Batch, key):
        x_P, w_P = batch.prompt_x_P, batch.prompt_w_P
        if ctx.exact:  # every ordered (a, b) weighted by sg(pi(a) pi(b)), labels in expectation
            logp_PxY = ctx.policy.table(params)[x_P]
            ref_PxY = sg(ctx.policy.table(ctx.ref_params)[x_P])
            d_PxY = jnp.where(jnp.isfinite(logp_PxY), ctx.policy.pair_scale * (logp_PxY - ref_PxY), 0.0)
            p_PxY = sg(jnp.exp(logp_PxY))
            n = p_PxY.shape[-1]
            a, b = jnp.meshgrid(jnp.arange(n), jnp.arange(n), indexing="ij")
            P_PxYxY = pref(x_P[:, None, None], a[None], b[None])
            margin = d_PxY[:, :, None] - d_PxY[:, None, :]
            pair_loss = P_PxYxY * -jax.nn.log_sigmoid(hp["beta"] * margin)
            w = 2.0 * p_PxY[:, :, None] * p_PxY[:, None, :]  # both orders of each drawn pair
            return weighted(jnp.sum(w * pair_loss, (-1, -2)), w_P)
        k_pair, k_label = jax.random.split(key)
        y_Px2 = ctx.policy.sample(sg(params), k_pair, x_P, 2)
        y, y2 = y_Px2[:, 0], y_Px2[:, 1]
        first_wins = jax.random.uniform(k_label, x_P.shape[:1]) < pref(x_P, y, y2)
        first_wins = first_wins.reshape(first_wins.shape + (1,) * (y.ndim - 1))
        y_w, y_l = jnp.where(first_wins, y, y2), jnp.where(first_wins, y2, y)
        return weighted(losses.dpo(*pair_logps(ctx, params, x_P, y_w, y_l), hp["beta"]), w_P)

    def objective(params, batch: Batch, key):
        off, metrics = offline(params, batch, key)
        on = online_loss(params, batch, key)
        f = hp["online_fraction"]
        loss = (1 - f) * off + f * on
        return loss, {"loss": loss, "offline_loss": off, "online_loss": on}

    return objective


def online_dpo(
    beta: float = 0.1, online_fraction: float = 1.0, label_with_reward_model: bool = False, r_max: float = 1.0
) -> Algorithm:
    """Online (on-policy) DPO: DPO on pairs drawn from the current policy, labelled by the Bradley–Terry oracle
    (or, with ``label_with_reward_model``, by a bounded reward model fitted on the offline pairs), mixed with
    offline DPO: ``(1 - online_fraction) * DPO_offline + online_fraction * DPO_online``. Beyond the paper.
    """
    label_with_reward_model = V.flag("label_with_reward_model", label_with_reward_model)
    return Algorithm(
        "online_dpo",
        _make_online_dpo,
        _numbers(beta=beta, online_fraction=online_fraction, r_max=r_max),
        k=2,
        reward_model=label_with_reward_model,
        options=(("label_with_reward_model", label_with_reward_model),),
    )

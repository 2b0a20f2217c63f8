"""The adapter: the transformer as a :class:`coverage_lab.policies.Policy` (and a bounded reward model).

Conventions that let the shared algorithms, ``fit`` and the losses take it exactly as they take the bandit
policies: ``x`` is a prompt index into the task's fixed prompts, ``y`` a response token array (B, L).

- ``log_probs(params, x_B, y_BxL) -> logp_B``: the sequence log-probability, a masked sum over the response
  positions of the token log-probabilities ``log pi(y_t | x, y_<t)`` (softmax over the response vocabulary).
  With ``normalize=True`` DPO's and IPO's ``d`` is length-normalised (``pair_scale = 1 / L``: the task's
  responses all have length ``L``, so the masked mean is the sum over ``L``); samples, KL terms and RLOO's
  score function keep the log-probability of the whole sequence, so their expectations stay ones over
  sequences.
- ``sample(params, key, x_B, k) -> (B, k, L)`` at temperature 1 (the policy's own distribution).
- ``table(params) -> logp_XxY`` over :func:`task.responses` when the task is enumerable, else ``None``.
- ``one_pass``: the objectives score several batches of responses (a pair's two, HyPO's samples) in one call, one
  forward pass (``algorithms.joint_log_probs``).

References: arXiv:2406.01462; SPEC.md §6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import _validate as V
from coverage_lab.policies import Policy, RewardModel
from coverage_lab.transformer import model as M
from coverage_lab.transformer import task as T


def check_config(task: T.Task, config: M.Config, *, out_size: int | None = None) -> None:
    """Validates that a model ``config`` fits ``task`` (vocabulary, context length, output size)."""
    if not isinstance(task, T.Task):
        raise ValueError(f"task must come from task.make_task, got {type(task).__name__}")
    if not isinstance(config, M.Config):
        raise ValueError(f"config must be a transformer.model.Config, got {type(config).__name__}")
    out = task.n_tokens if out_size is None else out_size
    if config.vocab_size != task.vocab_size or config.out_size != out:
        raise ValueError(
            f"config needs vocab_size={task.vocab_size}, out_size={out}; got {config.vocab_size}, {config.out_size}"
        )
    need = task.config.prompt_len + task.response_len
    if config.max_len < need:
        raise ValueError(f"config.max_len ({config.max_len}) must be >= prompt_len + response_len = {need}")


def masked_sequence_logp(token_logp_BxL, mask_BxL, *, mean: bool = False):
    """``sum_t mask_t log p_t`` (or that sum over ``sum_t mask_t``), shape (B,).

    ``mask_BxL``: 1 on response positions that count (0 on padding). ``mean`` with an all-zero row gives 0.
    """
    shape = V.same_shape(token_logp_BxL=token_logp_BxL, mask_BxL=mask_BxL)
    mean = V.flag("mean", mean)
    if len(shape) != 2:
        raise ValueError(f"token_logp_BxL and mask_BxL must have shape (B, L), got {shape}")
    if V.is_concrete(mask_BxL) and not np.isin(np.asarray(mask_BxL, np.float64), (0.0, 1.0)).all():
        raise ValueError("mask_BxL must hold 0 (padding) or 1 (a response position) only")
    mask = jnp.asarray(mask_BxL, jnp.float32)
    total = jnp.sum(jnp.where(mask > 0, token_logp_BxL, 0.0) * mask, -1)
    return total / jnp.maximum(mask.sum(-1), 1.0) if mean else total


def response_token_logp(params, task: T.Task, config: M.Config, x_B, y_BxL):
    """``log pi(y_t | x, y_<t)`` for every response position, shape (B, L)."""
    T.check_responses(task, x_B, y_BxL)
    prompts = jnp.asarray(task.prompts_XxP)[x_B]
    tokens = jnp.concatenate([prompts, y_BxL.astype(jnp.int32)], 1)
    p = prompts.shape[1]
    logits = M.apply(params, tokens[:, :-1], config)[:, p - 1 :]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, y_BxL[..., None].astype(jnp.int32), -1)[..., 0]


def sequence_policy(task: T.Task, config: M.Config, *, ref_params=None, normalize: bool = False) -> Policy:
    """The transformer over ``task``'s responses as a ``Policy``.

    ``init(key)`` returns ``ref_params`` when given (fine-tuning starts at the reference, as the bandit
    policies start at ``pi_ref``), else a random initialisation. See the module docstring for the rest.
    """
    check_config(task, config)
    normalize = V.flag("normalize", normalize)
    if ref_params is not None:
        M.check_params(ref_params, config, "ref_params")
    length = task.response_len
    prompts = jnp.asarray(task.prompts_XxP)

    def init(key):
        return ref_params if ref_params is not None else M.init(key, config)

    def log_probs(params, x_B, y_BxL):
        token_logp = response_token_logp(params, task, config, x_B, y_BxL)
        return masked_sequence_logp(token_logp, jnp.ones_like(token_logp))

    def sample(params, key, x_B, k):
        V.indices("x_B", x_B, task.n_prompts, "the task's prompts")
        V.integer("k", k, minimum=1)
        x = jnp.repeat(x_B, k, axis=0)
        y = M.sample(params, key, prompts[x], config, length=length)
        return y.reshape(x_B.shape[0], k, length)

    scale = 1.0 / length if normalize else 1.0
    return Policy(init, log_probs, sample, _enumerated(task, log_probs), one_pass=True, pair_scale=scale)


def reward_model(task: T.Task, config: M.Config, r_max) -> RewardModel:
    """A bounded transformer reward model ``r(x, y) = r_max * sigmoid(mean_t h_t)`` in ``[0, r_max]``.

    ``config.out_size`` must be 1: the scalar ``h_t`` is read at every response position and averaged
    (all positions see the prompt and the response so far). Trained by Bradley–Terry maximum likelihood
    (:func:`coverage_lab.algorithms.reward_model_objective`). ``table`` is None unless the task is enumerable.
    """
    check_config(task, config, out_size=1)
    V.positive("r_max", r_max)
    prompts = jnp.asarray(task.prompts_XxP)

    def init(key):
        return M.init(key, config)

    def rewards(params, x_B, y_BxL):
        T.check_responses(task, x_B, y_BxL)
        tokens = jnp.concatenate([prompts[x_B], y_BxL.astype(jnp.int32)], 1)
        h = M.apply(params, tokens, config)[:, prompts.shape[1] :, 0]
        return r_max * jax.nn.sigmoid(h.mean(-1))

    return RewardModel(init, rewards, _enumerated(task, rewards))


def _enumerated(task: T.Task, fn):
    """``params -> fn(params, x, y)`` over every (prompt, response) of an enumerable task as an (X, Y) table;
    None when the task is too large to enumerate."""
    if not task.enumerable:
        return None
    y_all = jnp.asarray(T.responses(task))
    x_all = jnp.repeat(jnp.arange(task.n_prompts, dtype=jnp.int32), task.n_responses)
    y_tiled = jnp.tile(y_all, (task.n_prompts, 1))
    return lambda params: fn(params, x_all, y_tiled).reshape(task.n_prompts, task.n_responses)

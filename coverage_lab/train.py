"""The one training loop: ``fit`` runs any objective on minibatches of any :class:`~coverage_lab.data.Batch`.

``fit`` is a pure function of its inputs (``jax.lax.scan`` over steps, an optax optimizer), so a whole run
can be ``jit``-ed and ``vmap``-ed over seeds and sweep values by the caller (nanodo passes the loss in;
bsuite has one run loop for every agent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from coverage_lab import _validate as V
from coverage_lab._sampling import fold_in
from coverage_lab.data import Batch, check_weights, minibatch_indices, take

Objective = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict]]


def make_step(
    objective: Objective,
    optimizer: optax.GradientTransformation,
    project: Callable[[Any, jax.Array], Any] | None = None,
):
    """One optimizer step of :func:`fit`: ``step((params, opt_state), batch, key, t) -> ((params, opt_state),
    metrics)`` — the objective's gradient on ``batch``, the optax update, then ``project(params, t)``.

    ``fit`` scans it over steps; it is public so that a caller can drive the same step from its own loop (the
    seed benchmark calls it from Python, one seed at a time and vmapped)."""
    grad_fn = jax.value_and_grad(_checked(objective), has_aux=True)

    def step(carry, batch: Batch, key, t):
        params, opt_state = carry
        (_, metrics), grads = grad_fn(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params if project is None else project(params, t), opt_state), metrics

    return step


def _checked(objective: Objective) -> Objective:
    """``objective``, refusing by name a result that is not ``(loss, metrics)`` (checked as it is traced: free)."""

    def checked(params, batch, key):
        out = objective(params, batch, key)
        if not (isinstance(out, tuple) and len(out) == 2):
            got = f"an array of shape {tuple(out.shape)}" if hasattr(out, "shape") else type(out).__name__
            raise ValueError(f"objective must return a pair (loss, metrics), got {got}")
        return out

    return checked


def check_optimizer(optimizer) -> None:
    """Raises a ValueError unless ``optimizer`` is an optax gradient transformation (``optax.adam(...)``, a chain)."""
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")


def fit(
    objective: Objective,
    params,
    data: Batch,
    key: jax.Array,
    *,
    steps: int,
    optimizer: optax.GradientTransformation,
    batch_size: int | None = None,
    log_every: int | None = None,
    evaluate: Callable[[Any], Any] | None = None,
    project: Callable[[Any, jax.Array], Any] | None = None,
):
    """Minimise ``objective(params, batch, key)`` for ``steps`` optimizer steps.

    Args:
      objective: returns ``(loss, metrics)``; its gradient in ``params`` drives the update.
      params: initial parameters (any pytree; no NaN or +inf in a concrete floating-point leaf).
      data: the dataset; each step takes the next minibatch of ``batch_size`` (epochs of fresh
        permutations), its weights renormalised to sum to 1 (rows of zero weight count for nothing);
        ``batch_size=None`` uses the whole (e.g. exact) batch every step.
      key: randomness of the minibatch order and of the objective (a fresh ``fold_in`` per step).
      steps: number of optimizer steps; a multiple of ``log_every`` when logging.
      log_every: log every ``log_every`` steps (and once before the first step).
      evaluate: ``evaluate(params) -> pytree`` recorded at each log point (default: nothing).
      project: ``project(params, step) -> params`` applied after each update (e.g. ``Algorithm.project``).

    Returns:
      ``(params, logs)``: final parameters and, with ``log_every``, a dict with ``step`` (L,),
      ``eval`` (the pytree of ``evaluate`` outputs stacked to leading dim L) and the objective's ``metrics``
      averaged over each logging interval (the first log point holds the metrics at step 0); without
      ``log_every``, the per-step metrics (steps,).
    """
    if not callable(objective):
        raise ValueError(f"objective must be a function (params, batch, key) -> (loss, metrics), got {objective!r}")
    check_weights(data)
    V.key("key", key)
    V.no_nan_leaves("params", params)
    check_optimizer(optimizer)
    steps = V.integer("steps", steps, minimum=1)
    batch_size = data.size if batch_size is None else V.integer("batch_size", batch_size, minimum=1)
    k_data, k_obj = jax.random.split(key)
    one_step = make_step(objective, optimizer, project)
    full = batch_size >= data.size
    idx = None if full else minibatch_indices(k_data, data.size, batch_size, steps)

    def batch_at(t):
        return data if full else take(data, idx[t])

    def step(carry, t):
        return one_step(carry, batch_at(t), fold_in(k_obj, t), t)

    carry = (params, optimizer.init(params))
    if log_every is None:
        (params, _), metrics = jax.lax.scan(step, carry, jnp.arange(steps))
        return params, metrics

    log_every = V.integer("log_every", log_every, minimum=1)
    if steps % log_every:
        raise ValueError(f"steps ({steps}) must be a multiple of log_every ({log_every})")
    evaluate = evaluate or (lambda p: ())

    def interval(carry, i):
        carry, metrics = jax.lax.scan(step, carry, i * log_every + jnp.arange(log_every))
        return carry, (jax.tree.map(lambda m: m.mean(0), metrics), evaluate(carry[0]))

    first_metrics = _checked(objective)(params, batch_at(0), fold_in(k_obj, 0))[1]
    first_eval = evaluate(params)
    (params, _), (metrics, evals) = jax.lax.scan(interval, carry, jnp.arange(steps // log_every))
    stack = lambda a, b: jnp.concatenate([jnp.asarray(a)[None], b])  # noqa: E731
    logs = {
        "step": jnp.arange(steps // log_every + 1) * log_every,
        "metrics": jax.tree.map(stack, first_metrics, metrics),
        "eval": jax.tree.map(stack, first_eval, evals),
    }
    return params, logs

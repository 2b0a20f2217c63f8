"""Policies and reward models as pairs of pure functions (optax's ``(init, update)`` idea).

A :class:`Policy` is ``init(key) -> params`` and ``log_probs(params, x_B, y_B) -> logp_B``, plus a sampler
and, where the response space can be enumerated, ``table(params) -> logp_XxY``. The bandit policies here
and the transformer adapter expose the same interface, so the algorithms and the training loop never ask
which one they hold. Parameterisations (SPEC §4.6):

- ``tabular_softmax``: one free logit per ``(x, y)``, initialised at ``log pi_ref`` (``-inf`` where
  ``pi_ref = 0``, so the policy starts with exactly no mass there).
- ``log_linear``: ``pi_theta(y|x) ∝ exp(phi(x, y) . theta)``, initialised at ``theta_ref``.

Reward models are bounded, as the theory requires (``r in [0, R_max]``): ``R_max * sigmoid(w)`` per table
entry, or ``R_max * sigmoid(phi . w)`` for features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import _validate as V
from coverage_lab._sampling import categorical
from coverage_lab.bandits import LinearBandit, TabularBandit, check_bandit

Params = Any


class Policy(NamedTuple):
    """``init(key) -> params``; ``log_probs(params, x_B, y_B) -> logp_B``;
    ``sample(params, key, x_B, k) -> y_BxK``; ``table(params) -> logp_XxY`` or None if not enumerable;
    ``one_pass``: the objectives score several batches of responses in one call of ``log_probs`` (a sequence
    model: one forward pass instead of several; ``algorithms.joint_log_probs``);
    ``pair_scale``: DPO's and IPO's ``d`` is ``pair_scale * (log_probs - ref log_probs)`` (``1 / L``: the
    length-normalised ``d`` of responses of length ``L``); sampling, KL and score-function terms always use
    ``log_probs`` itself, the log-probability of the whole response."""

    init: Callable[[jax.Array], Params]
    log_probs: Callable[[Params, jax.Array, jax.Array], jax.Array]
    sample: Callable[[Params, jax.Array, jax.Array, int], jax.Array]
    table: Callable[[Params], jax.Array] | None = None
    one_pass: bool = False
    pair_scale: float = 1.0


class RewardModel(NamedTuple):
    """``init(key) -> params``; ``rewards(params, x_B, y_B) -> r_B``; ``table(params) -> r_XxY``."""

    init: Callable[[jax.Array], Params]
    rewards: Callable[[Params, jax.Array, jax.Array], jax.Array]
    table: Callable[[Params], jax.Array]


def from_table(init: Callable[[jax.Array], Params], table: Callable[[Params], jax.Array]) -> Policy:
    """A policy over an enumerable response set from its log-probability table ``logp_XxY``."""
    if not callable(init):
        raise ValueError(f"init must be a function key -> params, got {init!r}")
    if not callable(table):
        raise ValueError(f"table must be a function params -> logp_XxY, got {table!r}")

    def log_probs(params, x_B, y_B):
        logp_XxY = table(params)
        _check_indices(x_B, y_B, logp_XxY.shape)
        return logp_XxY.reshape(-1)[x_B * logp_XxY.shape[-1] + y_B]  # a flat gather: cheaper under vmap

    def sample(params, key, x_B, k):
        V.key("key", key)
        V.integer("k", k, minimum=1)
        V.index_array("x_B", x_B)
        logp_XxY = table(params)
        V.indices("x_B", x_B, logp_XxY.shape[-2], "the number of prompts")
        return categorical(key, logp_XxY, k, rows=x_B)

    return Policy(init, log_probs, sample, table)


def _checked(table: Callable, shape: tuple) -> Callable:
    """``table`` refusing parameters of another shape (static: inside ``jit`` too) or, when concrete, holding NaN or
    ``+inf``: JAX would broadcast or clamp the first and return NaN log-probabilities for the second."""

    def checked(params):
        V.shape("params", params, shape)
        V.no_nan_leaves("params", params)
        return table(params)

    return checked


def tabular_softmax(env: TabularBandit | LinearBandit) -> Policy:
    """Tabular softmax policy: ``params = logits_XxY``, ``pi = softmax(logits)``, initialised at ``log pi_ref``."""
    check_bandit(env)
    pi_ref_XxY = env.pi_ref_XxY
    if V.is_concrete(pi_ref_XxY):  # a traced table is float32 already
        V.float32_masses("pi_ref_XxY", np.asarray(pi_ref_XxY, np.float64))
    log_pi_ref_XxY = jnp.log(jnp.asarray(pi_ref_XxY, jnp.float32))
    table = _checked(lambda logits: jax.nn.log_softmax(logits, axis=-1), log_pi_ref_XxY.shape)
    return from_table(lambda key: log_pi_ref_XxY, table)


def log_linear(env: LinearBandit) -> Policy:
    """Log-linear policy ``pi_theta(y|x) = softmax_y(phi(x, y) . theta)``; ``params = theta_D``, init ``theta_ref``."""
    if not isinstance(env, LinearBandit):
        raise ValueError(f"env must be a LinearBandit for a log-linear policy, got {type(env).__name__}")
    phi_XxYxD = jnp.asarray(env.phi_XxYxD, jnp.float32)
    theta_ref_D = jnp.asarray(env.theta_ref_D, jnp.float32)
    table = _checked(lambda theta: jax.nn.log_softmax(phi_XxYxD @ theta, axis=-1), theta_ref_D.shape)
    return from_table(lambda key: theta_ref_D, table)


def default_policy(env: TabularBandit | LinearBandit) -> Policy:
    """The natural policy class of an environment: log-linear for a linear bandit, tabular softmax otherwise."""
    check_bandit(env)
    return log_linear(env) if isinstance(env, LinearBandit) else tabular_softmax(env)


def bounded_reward_model(env: TabularBandit | LinearBandit, r_max) -> RewardModel:
    """Reward model in ``[0, r_max]``: ``r_max * sigmoid(w_XxY)`` (tabular) or ``r_max * sigmoid(phi . w)`` (linear).

    Initialised at ``w = 0``, i.e. ``r = r_max / 2`` everywhere: a response the data never shows keeps it.
    """
    check_bandit(env)
    V.float32_scale("r_max", r_max)  # skipped when traced (a swept hyper-parameter)
    if isinstance(env, LinearBandit):
        phi_XxYxD = jnp.asarray(env.phi_XxYxD, jnp.float32)
        init = lambda key: jnp.zeros(phi_XxYxD.shape[-1], jnp.float32)  # noqa: E731
        table = lambda w: r_max * jax.nn.sigmoid(phi_XxYxD @ w)  # noqa: E731
    else:
        shape = tuple(env.pi_ref_XxY.shape)
        init = lambda key: jnp.zeros(shape, jnp.float32)  # noqa: E731
        table = lambda w: r_max * jax.nn.sigmoid(w)  # noqa: E731

    def rewards(w, x_B, y_B):
        r_XxY = table(w)
        _check_indices(x_B, y_B, r_XxY.shape)
        return r_XxY[x_B, y_B]

    return RewardModel(init, rewards, table)


def _check_indices(x_B, y_B, shape) -> None:
    """Integer index arrays of one shape (static: checked inside ``jit`` too); their values, in eager calls only:
    JAX clamps an index out of range, which would read another response's entry."""
    V.index_array("x_B", x_B)
    V.index_array("y_B", y_B)
    V.same_shape(x_B=x_B, y_B=y_B)
    V.indices("x_B", x_B, shape[-2], "the number of prompts")
    V.indices("y_B", y_B, shape[-1], "the number of responses")

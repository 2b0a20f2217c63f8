"""Fitting with an algorithm: a bounded reward model by Bradley–Terry, then a policy from its reference, each
through the one training loop (:func:`coverage_lab.train.fit`). Any :class:`~coverage_lab.policies.Policy`: the
bandit runs (:mod:`coverage_lab.simulation`) and the transformer track (:mod:`coverage_lab.transformer.run`) are
both built on these.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from coverage_lab import _validate as V
from coverage_lab import algorithms as A
from coverage_lab import data as D
from coverage_lab.policies import Policy, RewardModel
from coverage_lab.train import fit


def default_optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """The default optimizer: Adam with a cosine decay of the step size to zero, so that both the exact and
    the sampled (noisy-gradient) versions converge. Constant-step Adam oscillates around an exact optimum once
    the gradients are tiny (measured: TV error 5e-8 after 1k steps, 3e-4 after 10k).

    Adam's per-coordinate scaling also turns float32 round-off into motion where the exact gradient is zero: under
    DPO or IPO, a tabular logit the offline data never shows drifts by up to several nats over a few thousand steps
    (SPEC §4.1 has it fixed). Where that invariant matters, use ``optax.sgd`` (``experiments.ood_without_fa``) or
    freeze those logits (``experiments._counts``)."""
    learning_rate = V.positive("learning_rate", learning_rate)
    steps = V.integer("steps", steps, minimum=1)
    return optax.adam(optax.cosine_decay_schedule(learning_rate, steps))


def fit_reward_model(
    reward_model: RewardModel,
    data: D.Batch,
    key: jax.Array,
    *,
    steps: int,
    optimizer: optax.GradientTransformation,
    batch_size: int | None = None,
):
    """Bradley–Terry maximum likelihood of a bounded ``reward_model`` on the labelled pairs of ``data``, through
    :func:`train.fit`; returns its parameters."""
    objective = A.reward_model_objective(reward_model.rewards)
    params, _ = fit(
        objective, reward_model.init(key), data, key, steps=steps, optimizer=optimizer, batch_size=batch_size
    )
    return params


def train_policy(
    policy: Policy,
    algorithm: A.Algorithm,
    data: D.Batch,
    hp: dict,
    key: jax.Array,
    *,
    exact: bool,
    steps: int,
    reward_fn=None,
    pref_XxYxY=None,
    batch_size: int | None = None,
    optimizer: optax.GradientTransformation,
    log_every: int | None = None,
    evaluate=None,
):
    """One run of ``algorithm`` from the reference policy ``policy.init(key)`` through :func:`train.fit`.

    Pure in ``key`` (``jit``/``vmap`` it); ``hp`` holds the algorithm's traced hyper-parameters; ``reward_fn``
    is the fitted reward model ``r_hat(x_B, y_B)`` for algorithms that use one (:func:`fit_reward_model`).
    ``evaluate`` defaults to the policy's log-probability table. Returns ``fit``'s ``(params, logs)`` for the
    training parameters (``algorithm.policy_params`` extracts the policy's).
    """
    check_algorithm(algorithm, hp)
    exact = V.flag("exact", exact)
    if exact and policy.table is None:
        raise ValueError("exact needs a policy over an enumerable response set (policy.table is None)")
    if algorithm.reward_model and reward_fn is None:
        raise ValueError(f"reward_fn is required: {algorithm.name} uses a reward model")
    ref_params = policy.init(key)
    ctx = A.Context(policy, ref_params, exact, reward_fn, _preferences(pref_XxYxY, policy, ref_params))
    if algorithm.offline_pairs:  # pi_ref's log-probabilities of the pairs, once rather than at every step
        data = A.with_reference(ctx, data, batch_size)
    if evaluate is None and log_every is not None:
        evaluate = lambda p: policy.table(algorithm.policy_params(p))  # noqa: E731
    return fit(
        algorithm.make(algorithm, ctx, hp),
        algorithm.init(ref_params, hp),
        data,
        key,
        steps=steps,
        optimizer=optimizer,
        batch_size=batch_size,
        log_every=log_every,
        evaluate=evaluate,
        project=algorithm.project,
    )


def _preferences(pref_XxYxY, policy: Policy, ref_params):
    """Online DPO's labelling oracle, checked: None, an object indexed like a table (``[x_B, a_B, b_B]``, e.g. the
    transformer track's ``GoldPreference``), or a table of the policy's shape (X, Y, Y), values checked when concrete
    (a numpy table becomes a JAX one: traced indices cannot index numpy)."""
    if isinstance(pref_XxYxY, (list, tuple)):
        pref_XxYxY = np.asarray(pref_XxYxY, np.float64)
    if pref_XxYxY is None or not hasattr(pref_XxYxY, "shape"):
        if pref_XxYxY is not None and not hasattr(pref_XxYxY, "__getitem__"):
            raise ValueError(f"pref_XxYxY must be a table P(a ≻ b|x) or indexable like one, got {pref_XxYxY!r:.80}")
        return pref_XxYxY
    if policy.table is not None:
        x, y = jax.eval_shape(policy.table, ref_params).shape
        V.shape("pref_XxYxY", pref_XxYxY, (x, y, y))
    if V.is_concrete(pref_XxYxY):
        D.check_preferences(pref_XxYxY)
    return jnp.asarray(pref_XxYxY, jnp.float32)


def check_algorithm(algorithm: A.Algorithm, hp) -> None:
    """Checks that ``algorithm`` comes from :mod:`coverage_lab.algorithms` and ``hp`` holds its hyper-parameters
    (:func:`algorithms.check_hparams`)."""
    if not isinstance(algorithm, A.Algorithm):
        raise ValueError(f"algorithm must come from coverage_lab.algorithms, got {type(algorithm).__name__}")
    A.check_hparams(algorithm, hp)

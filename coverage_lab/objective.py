"""What an algorithm is: a named builder of an objective, its hyper-parameters and their checks.

:class:`Algorithm` is what the factories of :mod:`coverage_lab.algorithms` return and what the training loop,
``simulate`` and the transformer track take; :func:`check_hparams` checks a run's hyper-parameters against it;
:class:`Augmented` holds the training state some algorithms carry beside the policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import _validate as V


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """An algorithm: ``make(self, ctx, hparams) -> objective``; hashable without ``hparams`` (a static jit argument).

    Attributes:
      name: the factory's name (``dpo``, ``ipo``, ``rlhf``, ``hypo``, ``online_dpo``).
      make: module-level builder of the objective.
      hparams: sweepable numbers (``beta``, ``lam``, ...), traced in the compiled run.
      k: on-policy samples per prompt for the sampled version (0: none).
      reward_model: fit a bounded Bradley–Terry reward model on the offline pairs first.
      offline_pairs: the objective reads the offline pairs (their reference log-probabilities are then
        computed once before training, :func:`coverage_lab.terms.with_reference`); False for RLHF, which
        reads only its reward model.
      options: static structural choices (hashable), read by ``make``.

    The hyper-parameters' values are checked on construction (:func:`check_hparams`), however it is built.
    """

    name: str
    make: Callable
    hparams: Mapping[str, float] = dataclasses.field(compare=False, hash=False, default_factory=dict)
    k: int = 0
    reward_model: bool = False
    offline_pairs: bool = True
    options: tuple = ()

    def __post_init__(self):
        if not callable(self.make):
            raise ValueError(f"make must be a function (algorithm, ctx, hparams) -> objective, got {self.make!r}")
        V.integer("k", self.k, minimum=0)
        check_hparams(self, self.hparams, where=f"{self.name}'s hparams")

    def init(self, policy_params, hparams=None):
        """Training parameters: the policy's, plus the state some algorithms carry (:class:`Augmented`).

        ``hparams``: the traced hyper-parameters of a compiled run (default ``self.hparams``); the constrained
        HyPO's dual ascent starts at their ``lam``, so a sweep over ``lam`` that reuses one program starts each
        run at its own value."""
        opts = dict(self.options)
        if not (opts.get("constrained") or opts.get("ppo_clip")):
            return policy_params
        hp = self.hparams if hparams is None else hparams
        log_lam = jnp.log(jnp.asarray(hp["lam"], jnp.float32)) if opts.get("constrained") else None
        return Augmented(policy_params, log_lam, policy_params if opts.get("ppo_clip") else None)

    def policy_params(self, params):
        """The policy's parameters inside the training parameters."""
        return params.policy if isinstance(params, Augmented) else params

    def project(self, params, step):
        """Applied after the optimizer update of ``step``: PPO refreshes its behaviour policy every
        ``refresh_every`` steps; every other algorithm leaves ``params`` alone."""
        every = dict(self.options).get("refresh_every")
        if not every:
            return params
        fresh = (step + 1) % every == 0
        behaviour = jax.tree.map(lambda p, b: jnp.where(fresh, p, b), params.policy, params.behaviour)
        return params._replace(behaviour=behaviour)


_POSITIVE = ("beta", "tau", "r_max", "ppo_clip")
_NONNEGATIVE = ("lam", "kl_budget", "online_fraction")


def check_hparams(algorithm: Algorithm, hp: Mapping, *, where: str = "hp") -> None:
    """Checks that ``hp`` (named ``where`` in messages) holds ``algorithm``'s hyper-parameters with valid values:
    ``beta``, ``tau``, ``r_max``, ``ppo_clip`` > 0; ``lam``, ``kl_budget`` >= 0 (``lam`` > 0 for the constrained
    HyPO: dual ascent on ``log lam``); ``online_fraction`` in [0, 1]. A value may be a number or an array of a
    sweep's values; traced values are skipped (checked at the boundary, before compiling)."""
    missing = sorted(set(algorithm.hparams) - set(hp))
    if missing:
        raise ValueError(f"{where} lacks {algorithm.name}'s hyper-parameters {missing}")
    unknown = sorted(set(hp) - set(algorithm.hparams))
    if unknown:
        raise ValueError(f"{where} has names {unknown} that are not {algorithm.name}'s hyper-parameters")
    constrained = dict(algorithm.options).get("constrained", False)
    for name, v in hp.items():
        if not V.is_concrete(v):
            continue
        if np.asarray(v).dtype == np.bool_:
            raise ValueError(f"{name} ({where}) must be a number, got {v!r}")
        a = V.array(f"{name} ({where})", v)
        if (name in _POSITIVE or (name == "lam" and constrained)) and not (a > 0).all():
            raise ValueError(f"{name} ({where}) must be > 0, got {v!r}")
        f32 = np.finfo(np.float32)  # the steps run in float32
        if (np.abs(a) > f32.max).any() or (name in _POSITIVE and (a < f32.tiny).any()):
            raise ValueError(f"{name} ({where}) must be in float32's range [{f32.tiny:.3g}, {f32.max:.3g}], got {v!r}")
        if name == "tau":
            V.ipo_tau(f"{name} ({where})", a)
        if name in _NONNEGATIVE and not (a >= 0).all():
            raise ValueError(f"{name} ({where}) must be >= 0, got {v!r}")
        if name == "online_fraction" and (a > 1).any():
            raise ValueError(f"{name} ({where}) must be in [0, 1], got {v!r}")


class Augmented(NamedTuple):
    """Training parameters of algorithms with state beyond the policy: the constrained HyPO's multiplier
    ``log_lam`` (dual ascent) and PPO's ``behaviour`` policy (the sampler, refreshed by ``Algorithm.project``;
    its gradient is zero, so the optimizer leaves it unchanged)."""

    policy: Any
    log_lam: Any = None
    behaviour: Any = None

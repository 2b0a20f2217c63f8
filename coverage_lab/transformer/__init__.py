"""The transformer track (SPEC §6): a tiny decoder-only transformer policy on a synthetic token task with
controlled coverage, trained by the shared losses, algorithms and training loop.

- :mod:`~coverage_lab.transformer.model`: the transformer in plain JAX (``Config``, ``init``, ``apply``,
  ``sample``); a leaf module.
- :mod:`~coverage_lab.transformer.task`: prompts, gold reward in ``[0, R_max]``, the corpus with rare tokens,
  ``mu`` and labelled pairs, enumeration of the responses.
- :mod:`~coverage_lab.transformer.policy`: the adapter to :class:`coverage_lab.policies.Policy` (sequence
  log-probabilities, sampler, table) and the bounded reward model.
- :mod:`~coverage_lab.transformer.sizes`: ``toy`` (enumerable), ``small``, ``medium`` (CPU), ``gpu``.
- :mod:`~coverage_lab.transformer.reference`: supervised training of ``pi_ref`` through ``fit``, cached on disk.
- :mod:`~coverage_lab.transformer.evaluate`: exact and Monte Carlo metrics.
- :mod:`~coverage_lab.transformer.run`: ``simulate`` (one algorithm, seeds vmapped) and ``simulate_many``.

References: arXiv:2406.01462.
"""

from coverage_lab.transformer import evaluate, model, policy, reference, run, sizes, task
from coverage_lab.transformer.model import Config
from coverage_lab.transformer.policy import reward_model, sequence_policy
from coverage_lab.transformer.reference import reference_params
from coverage_lab.transformer.run import simulate, simulate_many
from coverage_lab.transformer.sizes import SIZES, Size
from coverage_lab.transformer.task import TaskConfig, make_task

__all__ = [
    "SIZES",
    "Config",
    "Size",
    "TaskConfig",
    "evaluate",
    "make_task",
    "model",
    "policy",
    "reference",
    "reference_params",
    "reward_model",
    "run",
    "sequence_policy",
    "simulate",
    "simulate_many",
    "sizes",
    "task",
]

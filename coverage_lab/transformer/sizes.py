"""Named sizes of the transformer track: the task, the two models, the reference's training and run defaults.

- ``toy``: enumerable (6 response tokens, length 3: 216 responses per prompt), exact KL and ``ood_mass``;
  seconds on a CPU (the tests and the experiments' SMOKE runs).
- ``small`` and ``medium``: one task (10 response tokens, length 6: 10^6 responses, Monte Carlo KL) and two
  model sizes, for the CPU experiments (Table 1 needs two model sizes).
- ``gpu``: a task and a model large enough to keep an H200 busy (``benchmarks/transformer_bench.py``); its policy
  recomputes each layer's activations in the backward pass (``Config.remat``) to fit HyPO's step in memory.
"""

from __future__ import annotations

import dataclasses
import re

from coverage_lab import _validate as V
from coverage_lab.transformer import model as M
from coverage_lab.transformer import task as T


@dataclasses.dataclass(frozen=True)
class Size:
    """A named configuration (hashable: a static argument of compiled code).

    Attributes:
      name: the size's name; task: the token task; model: the policy's transformer; reward_model: the
        reward model's transformer (``out_size=1``).
      corpus_per_prompt, ref_steps, ref_batch_size, ref_learning_rate: supervised training of ``pi_ref``.
      n_pairs, steps, batch_size, learning_rate, reward_steps, k, eval_samples, log_every: defaults of a
        preference fine-tuning run (:func:`coverage_lab.transformer.run.simulate`).
      fast_compile: XLA's backend optimisations off (``coverage_lab._compile.FAST_OPTIONS``): about half the
        compile time for about twice the run time, the right trade where compiling dominates (``toy``).
    """

    name: str
    task: T.TaskConfig
    model: M.Config
    reward_model: M.Config
    corpus_per_prompt: int = 512
    ref_steps: int = 1000
    ref_batch_size: int = 128
    ref_learning_rate: float = 3e-3
    n_pairs: int = 1024
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 1e-3
    reward_steps: int = 400
    k: int = 4
    eval_samples: int = 64
    log_every: int = 20
    fast_compile: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name) or self.name[0] == ".":
            raise ValueError(f"name must be a plain name (letters, digits, '_', '-', '.'), got {self.name!r}")
        if not isinstance(self.task, T.TaskConfig):
            raise ValueError(f"task must be a task.TaskConfig, got {type(self.task).__name__}")
        for name in ("model", "reward_model"):
            if not isinstance(getattr(self, name), M.Config):
                raise ValueError(f"{name} must be a transformer.model.Config, got {type(getattr(self, name)).__name__}")
        V.flag("fast_compile", self.fast_compile)
        for name in ("corpus_per_prompt", "ref_steps", "ref_batch_size", "n_pairs", "steps", "batch_size"):
            V.integer(name, getattr(self, name), minimum=1)
        for name in ("reward_steps", "eval_samples", "log_every"):
            V.integer(name, getattr(self, name), minimum=1)
        V.integer("k", self.k, minimum=2)
        V.float32_scale("ref_learning_rate", self.ref_learning_rate)
        V.float32_scale("learning_rate", self.learning_rate)
        if self.steps % self.log_every:
            raise ValueError(f"log_every ({self.log_every}) must divide steps ({self.steps})")


def _configs(
    task: T.TaskConfig, d_model: int, n_layers: int, n_heads: int, rm_d_model: int, rm_layers: int, remat: bool
):
    t = T.make_task(task)
    max_len = task.prompt_len + task.response_len
    policy = M.Config(t.vocab_size, max_len, t.n_tokens, d_model, n_layers, n_heads, remat=remat)
    rm = M.Config(t.vocab_size, max_len, 1, rm_d_model, rm_layers, 4 if rm_d_model % 4 == 0 else 1)
    return policy, rm


TOY_TASK = T.TaskConfig(
    n_prompts=4, prompt_len=2, n_prompt_tokens=4, n_common=4, n_rare_good=1, n_rare_bad=1, response_len=3,
    rare_prob=0.03, r_max=5.0, seed=0,
)  # fmt: skip
CPU_TASK = T.TaskConfig(
    n_prompts=8, prompt_len=3, n_prompt_tokens=4, n_common=6, n_rare_good=1, n_rare_bad=3, response_len=6,
    rare_prob=0.02, r_max=10.0, seed=1,
)  # fmt: skip
GPU_TASK = T.TaskConfig(
    n_prompts=1024, prompt_len=32, n_prompt_tokens=64, n_common=480, n_rare_good=16, n_rare_bad=16,
    response_len=96, rare_prob=2e-4, r_max=5.0, seed=2,
)  # fmt: skip


def _size(name, task, dims, rm_dims, remat=False, **kw) -> Size:
    policy, rm = _configs(task, *dims, *rm_dims, remat)
    return Size(name, task, policy, rm, **kw)


SIZES: dict[str, Size] = {
    "toy": _size(
        "toy", TOY_TASK, (16, 1, 2), (16, 1), corpus_per_prompt=256, ref_steps=300, n_pairs=256, steps=100,
        batch_size=32, learning_rate=3e-3, reward_steps=100, eval_samples=64, log_every=10, fast_compile=True,
    ),
    "small": _size(
        "small", CPU_TASK, (32, 2, 2), (32, 1), corpus_per_prompt=1024, ref_steps=800, n_pairs=1024, steps=250,
        batch_size=32, learning_rate=3e-3, reward_steps=400, eval_samples=64, log_every=25,
    ),
    "medium": _size(
        "medium", CPU_TASK, (64, 2, 4), (32, 1), corpus_per_prompt=1024, ref_steps=800, n_pairs=1024, steps=250,
        batch_size=32, learning_rate=3e-3, reward_steps=400, eval_samples=64, log_every=25,
    ),
    "gpu": _size(
        "gpu", GPU_TASK, (768, 12, 12), (256, 4), corpus_per_prompt=256, ref_steps=2000, ref_batch_size=256,
        ref_learning_rate=3e-4, n_pairs=65536, steps=1000, batch_size=128, learning_rate=1e-4, reward_steps=1000,
        eval_samples=16, log_every=50, remat=True,
    ),
}  # fmt: skip


def get(size: str | Size) -> Size:
    """A size by name (``toy``, ``small``, ``medium``, ``gpu``), or ``size`` itself if it is a ``Size``."""
    if isinstance(size, Size):
        return size
    if not isinstance(size, str) or size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)} or a Size, got {size!r}")
    return SIZES[size]

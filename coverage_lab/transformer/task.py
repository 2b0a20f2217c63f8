"""The synthetic token task: prompts, a known gold reward in ``[0, R_max]``, a corpus with rare tokens, and ``mu``.

Vocabulary: response tokens ``0..n_tokens-1`` (``n_common`` common ones, then ``n_rare_good`` rare good ones,
then ``n_rare_bad`` rare bad ones), followed by ``n_prompt_tokens`` prompt-only tokens. There are
``n_prompts`` fixed prompts (``x`` is an index into them, ``rho`` uniform), each a string of ``prompt_len``
prompt tokens; a response is ``response_len`` response tokens.

- Gold reward: ``r*(x, y) = R_max * mean_t s(x, y_t)`` with per-prompt token scores ``s`` in ``[0, 1]``:
  common tokens ``U(0, 0.8)`` (their ranking depends on the prompt), rare good tokens 1, rare bad tokens 0.
- Corpus (what the reference is trained on): positions i.i.d. given the prompt, each rare token with
  probability ``rare_prob``, common tokens sharing the rest by a prompt-dependent softmax.
- ``mu`` (the offline response distribution): the corpus with every rare token's probability multiplied by
  ``mu_rare`` and renormalised; ``mu_rare = 0`` never shows a rare token, so every response containing one
  is uncovered (``mu(y|x) = 0``), ``mu_rare = 1`` is the corpus itself.
- Preferences: Bradley–Terry on the gold reward, ``P(y ≻ y') = sigmoid((r*(y) - r*(y')) / temperature)``.

References: arXiv:2406.01462, §6 of SPEC.md (the transformer track).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import _validate as V
from coverage_lab._compile import jit
from coverage_lab.data import Batch

ENUMERATION_LIMIT = 4096  # largest response set enumerated for exact KL and ood_mass


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Shape and coverage of the token task (hashable). ``seed`` fixes the prompts, corpus and scores."""

    n_prompts: int = 4
    prompt_len: int = 2
    n_prompt_tokens: int = 4
    n_common: int = 4
    n_rare_good: int = 1
    n_rare_bad: int = 1
    response_len: int = 3
    rare_prob: float = 0.02
    r_max: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("n_prompts", "prompt_len", "n_prompt_tokens", "n_common", "response_len"):
            V.integer(name, getattr(self, name), minimum=1)
        for name in ("n_rare_good", "n_rare_bad", "seed"):
            V.integer(name, getattr(self, name), minimum=0)
        V.float32_scale("r_max", self.r_max)
        V.nonnegative("rare_prob", self.rare_prob)
        if self.rare_prob * (self.n_rare_good + self.n_rare_bad) >= 1:
            raise ValueError(f"rare_prob ({self.rare_prob}) times the number of rare tokens must be < 1")
        if self.n_prompt_tokens**self.prompt_len < self.n_prompts:
            raise ValueError("n_prompts exceeds the number of distinct prompts n_prompt_tokens ** prompt_len")


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """The task's arrays (numpy, built once per config by :func:`make_task`).

    prompts_XxP: prompt tokens (ids ``>= n_tokens``); corpus_logp_XxV: per-position corpus log-probabilities
    of the response tokens; score_XxV: gold token scores in [0, 1]; rare_V, good_V, bad_V: token classes.
    """

    config: TaskConfig
    prompts_XxP: np.ndarray
    corpus_logp_XxV: np.ndarray
    score_XxV: np.ndarray
    rare_V: np.ndarray
    good_V: np.ndarray
    bad_V: np.ndarray

    @property
    def n_tokens(self) -> int:
        return self.corpus_logp_XxV.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.n_tokens + self.config.n_prompt_tokens

    @property
    def n_prompts(self) -> int:
        return self.config.n_prompts

    @property
    def response_len(self) -> int:
        return self.config.response_len

    @property
    def n_responses(self) -> int:
        return self.n_tokens**self.response_len

    @property
    def enumerable(self) -> bool:
        """Whether every response can be enumerated (at most ``ENUMERATION_LIMIT``): exact KL and ood_mass."""
        return self.n_responses <= ENUMERATION_LIMIT


def make_task(config: TaskConfig) -> Task:
    """The task of ``config``: deterministic in ``config.seed`` (built once per configuration)."""
    if not isinstance(config, TaskConfig):
        raise ValueError(f"config must be a TaskConfig, got {type(config).__name__}")
    return _make_task(config)


@functools.lru_cache(maxsize=32)
def _make_task(c: TaskConfig) -> Task:
    rng = np.random.default_rng(c.seed)
    n_rare = c.n_rare_good + c.n_rare_bad
    n_tokens = c.n_common + n_rare
    if c.n_prompt_tokens**c.prompt_len <= 1 << 20:
        codes = rng.choice(c.n_prompt_tokens**c.prompt_len, size=c.n_prompts, replace=False)
        digits = (codes[:, None] // c.n_prompt_tokens ** np.arange(c.prompt_len)[None]) % c.n_prompt_tokens
    else:  # a huge prompt space: draw strings, redraw until distinct
        digits = rng.integers(0, c.n_prompt_tokens, (c.n_prompts, c.prompt_len))
        while len(np.unique(digits, axis=0)) < c.n_prompts:
            digits = rng.integers(0, c.n_prompt_tokens, (c.n_prompts, c.prompt_len))
    prompts = (n_tokens + digits).astype(np.int32)
    common = np.exp(rng.normal(0.0, 0.5, (c.n_prompts, c.n_common)))
    common = common / common.sum(1, keepdims=True) * (1 - n_rare * c.rare_prob)
    corpus = np.concatenate([common, np.full((c.n_prompts, n_rare), c.rare_prob)], 1)
    with np.errstate(divide="ignore"):
        corpus_logp = np.log(corpus)
    score = np.concatenate(
        [
            rng.uniform(0.0, 0.8, (c.n_prompts, c.n_common)),
            np.ones((c.n_prompts, c.n_rare_good)),
            np.zeros((c.n_prompts, c.n_rare_bad)),
        ],
        1,
    )
    tokens = np.arange(n_tokens)
    good = (tokens >= c.n_common) & (tokens < c.n_common + c.n_rare_good)
    bad = tokens >= c.n_common + c.n_rare_good
    return Task(c, prompts, corpus_logp, score, good | bad, good, bad)


def _check_task(task):
    if not isinstance(task, Task):
        raise ValueError(f"task must come from make_task, got {type(task).__name__}")


def check_responses(task: Task, x_B, y_BxL) -> None:
    """Validates a batch of prompt indices (B,) and response tokens (B, L) (shapes; values when concrete)."""
    _check_task(task)
    if jnp.ndim(x_B) != 1 or jnp.ndim(y_BxL) != 2 or jnp.shape(y_BxL) != (jnp.shape(x_B)[0], task.response_len):
        raise ValueError(
            f"x_B must have shape (B,) and y_BxL shape (B, {task.response_len}); "
            f"got {jnp.shape(x_B)}, {jnp.shape(y_BxL)}"
        )
    _check_indices(x_B, task.n_prompts, y_BxL, task.n_tokens)


def _check_indices(x_B, n_prompts: int, y_BxL=None, n_tokens: int | None = None) -> None:
    """Integer prompt indices ``x_B`` in ``[0, n_prompts)`` and tokens ``y_BxL`` in ``[0, n_tokens)`` (values when
    concrete: JAX clamps an index out of range instead of failing)."""
    for name, a, top in (("x_B", x_B, n_prompts), ("y_BxL", y_BxL, n_tokens)):
        if a is None:
            continue
        if not jnp.issubdtype(jnp.result_type(a), jnp.integer):
            raise ValueError(f"{name} must hold integers, got {jnp.result_type(a)}")
        V.indices(name, a, top)


def _check_token_table(token_logp_XxV, x_B, y_BxL=None):
    table = check_token_logp(token_logp_XxV)
    if jnp.ndim(x_B) != 1 or (y_BxL is not None and (jnp.ndim(y_BxL) != 2 or jnp.shape(y_BxL)[0] != x_B.shape[0])):
        raise ValueError(f"x_B must have shape (B,) and y_BxL (B, L); got {jnp.shape(x_B)}, {jnp.shape(y_BxL)}")
    _check_indices(x_B, table.shape[0], y_BxL, table.shape[1])
    return table


def check_token_logp(token_logp_XxV):
    """A per-position token table (corpus, ``mu``) as float32 (X, V); when concrete, checked to hold normalised
    log-probabilities in each row (``-inf``: a token with no mass)."""
    if V.is_concrete(token_logp_XxV):
        V.log_prob_table("token_logp_XxV", token_logp_XxV)
    table = jnp.asarray(token_logp_XxV, jnp.float32)
    if table.ndim != 2:
        raise ValueError(f"token_logp_XxV must have shape (X, V), got {table.shape}")
    return table


def gold_reward(task: Task, x_B, y_BxL):
    """Gold reward ``r*(x, y) = R_max * mean_t s(x, y_t)`` in ``[0, R_max]``, shape (B,)."""
    check_responses(task, x_B, y_BxL)
    score = jnp.asarray(task.score_XxV, jnp.float32)
    return task.config.r_max * score[x_B[:, None], y_BxL].mean(-1)


def gold_sign(task: Task, x_B, y_BxL, y2_BxL):
    """``sign(r*(x, y) - r*(x, y'))`` in ``{-1, 0, 1}`` (float32), shape (B,); ``0`` exactly when the two responses'
    token scores are the same multiset (equal rewards: the float32 means may differ in their last bit with the
    tokens' order or the compiled program, which an equality test of :func:`gold_reward` would count as a win)."""
    check_responses(task, x_B, y_BxL)
    check_responses(task, x_B, y2_BxL)
    score = jnp.asarray(task.score_XxV, jnp.float32)
    s, s2 = score[x_B[:, None], y_BxL], score[x_B[:, None], y2_BxL]
    same = (jnp.sort(s, axis=-1) == jnp.sort(s2, axis=-1)).all(-1)
    return jnp.where(same, 0.0, jnp.sign(s.mean(-1) - s2.mean(-1)))


def mu_token_logp(task: Task, mu_rare) -> np.ndarray:
    """Per-position token log-probabilities of ``mu`` (X, V): the corpus with rare tokens scaled by ``mu_rare``.

    ``mu_rare = 0``: rare tokens never shown (log-probability ``-inf``); ``1``: the corpus.
    """
    _check_task(task)
    s = V.nonnegative("mu_rare", mu_rare)
    p = np.exp(task.corpus_logp_XxV) * np.where(task.rare_V, s, 1.0)[None]
    with np.errstate(divide="ignore"):
        return np.log(p / p.sum(1, keepdims=True))


def sequence_logp(token_logp_XxV, x_B, y_BxL):
    """``log q(y|x) = sum_t log q(y_t|x)`` for an i.i.d.-position token table (corpus or ``mu``), shape (B,)."""
    table = _check_token_table(token_logp_XxV, x_B, y_BxL)
    return table[x_B[:, None], y_BxL].sum(-1)


def sample_iid(key, token_logp_XxV, x_B, length: int):
    """Responses ``(B, length)`` with positions drawn i.i.d. from ``token_logp_XxV[x]`` (jit-able)."""
    V.key("key", key)
    length = V.integer("length", length, minimum=1)
    logits = _check_token_table(token_logp_XxV, x_B)[x_B]
    return jax.random.categorical(key, logits[:, None, :], shape=(x_B.shape[0], length)).astype(jnp.int32)


_sample_iid_jit = jit(sample_iid, library_fusions=True, static_argnums=3)


def sample_corpus(key, task: Task, per_prompt: int):
    """The supervised corpus: ``per_prompt`` responses for every prompt. Returns ``(x_N, y_NxL)``."""
    V.key("key", key)
    _check_task(task)
    per_prompt = V.integer("per_prompt", per_prompt, minimum=1)
    x = jnp.repeat(jnp.arange(task.n_prompts, dtype=jnp.int32), per_prompt)
    return x, _sample_iid_jit(key, jnp.asarray(task.corpus_logp_XxV, jnp.float32), x, task.response_len)


def preference(task: Task, x_B, y_BxL, y2_BxL, temperature: float = 1.0):
    """Bradley–Terry ``P(y ≻ y' | x) = sigmoid((r*(x, y) - r*(x, y')) / temperature)``, shape (B,)."""
    V.temperature("temperature", temperature)
    return jax.nn.sigmoid((gold_reward(task, x_B, y_BxL) - gold_reward(task, x_B, y2_BxL)) / temperature)


def sample_pairs(
    key, task: Task, n: int, mu_token_logp_XxV, *, temperature: float = 1.0, deterministic: bool = False
) -> Batch:
    """``n`` labelled pairs: ``x`` uniform, ``y, y'`` i.i.d. from ``mu``, Bradley–Terry labels on the gold reward.

    ``deterministic``: the better response always wins (ties by a coin). Weights ``1/n``; ``mu_w_B``, ``mu_l_B``
    are the sequence probabilities ``mu(y|x)``; on-policy prompts are the pairs' prompts.
    """
    V.key("key", key)
    _check_task(task)
    n = V.integer("n", n, minimum=1)
    V.temperature("temperature", temperature)
    mu = V.array("mu_token_logp_XxV", mu_token_logp_XxV, ndim=2, finite=False)
    V.shape("mu_token_logp_XxV", mu, task.corpus_logp_XxV.shape)
    V.prob_table("exp(mu_token_logp_XxV)", np.exp(mu))
    deterministic = V.flag("deterministic", deterministic)
    return _sample_pairs_jit(key, task, n, jnp.asarray(mu, jnp.float32), float(temperature), deterministic)


def _sample_pairs(key, task, n, mu_logp_XxV, temperature=1.0, deterministic=False) -> Batch:
    k_x, k_y, k_label = jax.random.split(key, 3)
    x = jax.random.randint(k_x, (n,), 0, task.n_prompts, dtype=jnp.int32)
    y_2xNxL = sample_iid(k_y, mu_logp_XxV, jnp.concatenate([x, x]), task.response_len).reshape(2, n, -1)
    y, y2 = y_2xNxL[0], y_2xNxL[1]
    if deterministic:  # ties (the same token scores) by a coin
        p = 0.5 * (1.0 + gold_sign(task, x, y, y2))
    else:
        p = jax.nn.sigmoid((gold_reward(task, x, y) - gold_reward(task, x, y2)) / temperature)
    first = (jax.random.uniform(k_label, (n,)) < p)[:, None]
    y_w, y_l = jnp.where(first, y, y2), jnp.where(first, y2, y)
    w = jnp.full((n,), 1.0 / n, jnp.float32)
    mu_w, mu_l = (jnp.exp(sequence_logp(mu_logp_XxV, x, v)) for v in (y_w, y_l))
    return Batch(x, y_w, y_l, w, mu_w, mu_l, x, w)


_sample_pairs_jit = jit(_sample_pairs, library_fusions=True, static_argnums=(1, 2, 4, 5))


def responses(task: Task) -> np.ndarray:
    """Every response ``(Y, L)`` in lexicographic order (response index = base-``n_tokens`` number)."""
    _check_task(task)
    if not task.enumerable:
        raise ValueError(f"task has {task.n_responses} responses, more than ENUMERATION_LIMIT = {ENUMERATION_LIMIT}")
    return np.array(list(itertools.product(range(task.n_tokens), repeat=task.response_len)), np.int32).reshape(
        task.n_responses, task.response_len
    )


def uncovered(mu_token_logp_XxV, x_B, y_BxL):
    """True where ``mu(y|x) = 0`` (the response holds a token ``mu`` never shows with that prompt), shape (B,)."""
    table = _check_token_table(mu_token_logp_XxV, x_B, y_BxL)
    return jnp.isneginf(table[x_B[:, None], y_BxL]).any(-1)

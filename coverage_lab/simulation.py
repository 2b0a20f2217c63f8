"""``simulate``: one algorithm on one bandit, many seeds in one compiled call, a tidy table out.

The whole run of one seed — sample the offline pairs, fit the reward model if the algorithm has one, train
the policy through :func:`coverage_lab.train.fit` — is a pure function of its key, so seeds are a ``vmap``
axis. Hyper-parameters, ``mu`` and the environment's arrays are traced arguments: a sweep over ``beta``,
``lam`` or the coverage level reuses the compiled program.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from coverage_lab import _validate as V
from coverage_lab import algorithms as A
from coverage_lab import data as D
from coverage_lab import metrics as M
from coverage_lab._compile import jit, shard_rows
from coverage_lab.bandits import LinearBandit, TabularBandit, check_bandit, preference_table
from coverage_lab.coverage import pair_table
from coverage_lab.fitting import check_algorithm, default_optimizer, fit_reward_model, train_policy
from coverage_lab.policies import bounded_reward_model, default_policy
from coverage_lab.train import check_optimizer


class Run(NamedTuple):
    """Raw output of :func:`run`: ``logs`` of ``fit`` stacked over seeds (``logs["eval"]`` holds the policy's
    log-probability tables, (S, L, X, Y)), the offline ``data`` of each seed, the seed ids and their keys."""

    logs: dict
    data: D.Batch
    seed_ids: list
    keys: jax.Array


def run(
    env: TabularBandit | LinearBandit,
    algorithm: A.Algorithm | Sequence[A.Algorithm],
    *,
    mu,
    n_pairs: int | None,
    steps: int,
    seeds: int | Sequence[int],
    key: jax.Array,
    log_every: int | None = None,
    pair_XxYxY=None,
    temperature: float = 1.0,
    deterministic: bool = False,
    batch_size: int = 64,
    learning_rate: float = 0.05,
    reward_steps: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> Run:
    """The compiled run behind :func:`simulate`, returning raw arrays (arguments as there).

    Everything but the arrays is a static argument of the compiled program: ``n_pairs``, ``steps``, the number of
    seeds, the algorithm's structure and ``optimizer`` (compared by identity: reuse one optax object across a
    sweep, or every call compiles again).

    ``algorithm`` may be a list of one algorithm at several hyper-parameter values (e.g. ``[A.hypo(lam=l) for l
    in lams]``): every (value, seed) pair is then a row of one compiled, vmapped call, the rows sharded over the
    devices like seeds, each value on the same seeds (the same data); returns one :class:`Run` per value.
    """
    check_bandit(env)
    sweep = not isinstance(algorithm, A.Algorithm)
    algorithms = _sweep_values(algorithm)
    algorithm = algorithms[0]
    V.key("key", key)
    pi_ref = np.asarray(env.pi_ref_XxY, np.float64)
    if isinstance(env, TabularBandit):  # its policy starts at log pi_ref in float32 (a log-linear one takes logits)
        V.float32_masses("env.pi_ref_XxY", pi_ref)
    mu = V.prob_table("mu", mu, ndim=2)
    V.shape("mu", mu, pi_ref.shape)
    if ((mu > 0) & (pi_ref == 0)).any():
        raise ValueError("mu puts mass where pi_ref is zero: the log-ratios of those responses are infinite")
    if n_pairs is not None:
        n_pairs = V.integer("n_pairs", n_pairs, minimum=1)
    steps = V.integer("steps", steps, minimum=1)
    if log_every is None:  # about 20 log points: the largest divisor of steps up to steps // 20
        log_every = max(d for d in range(1, max(steps // 20, 1) + 1) if steps % d == 0)
    log_every = V.integer("log_every", log_every, minimum=1)
    if steps % log_every:
        raise ValueError(f"log_every ({log_every}) must divide steps ({steps})")
    reward_steps = steps if reward_steps is None else V.integer("reward_steps", reward_steps, minimum=1)
    batch_size = V.integer("batch_size", batch_size, minimum=1)
    V.float32_scale("learning_rate", learning_rate)
    _check_optimizer(optimizer)
    if algorithm.k and algorithm.k < 2:
        raise ValueError(f"k must be >= 2 for the RLOO estimate, got {algorithm.k}")
    seed_ids = V.seed_ids(seeds)
    if pair_XxYxY is None:
        pair = pair_table(mu)
    else:
        pair = V.array("pair_XxYxY", pair_XxYxY, ndim=3)
        V.shape("pair_XxYxY", pair, pi_ref.shape + pi_ref.shape[-1:])
        V.prob_table("pair_XxYxY", pair.reshape(pair.shape[0], -1))  # a distribution over (y, y') per prompt
        if ((pair.sum(2) + pair.sum(1) > 0) & (mu == 0)).any():
            raise ValueError("pair_XxYxY shows responses that mu gives no mass: pass the mu it was built from")
    pref = preference_table(env.reward_XxY, temperature=temperature, deterministic=deterministic)
    exact_data = None
    if n_pairs is None:  # padded to a power of two so coverage sweeps share compiled programs
        exact_data = D.exact_batch(env.rho_X, pair, pref)
        exact_data = D.exact_batch(env.rho_X, pair, pref, size=1 << (exact_data.size - 1).bit_length())
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.asarray(seed_ids, jnp.uint32))
    n_seeds = len(seed_ids)
    row_keys = jnp.concatenate([keys] * len(algorithms))  # value-major: row v * n_seeds + i is seed i at value v
    hp = {
        k: jnp.repeat(jnp.asarray([a.hparams[k] for a in algorithms], jnp.float32), n_seeds) for k in algorithm.hparams
    }
    row_keys, hp = shard_rows(row_keys, hp)
    logs, data = _run(
        row_keys,
        env,
        exact_data,
        jnp.asarray(pair, jnp.float32),
        jnp.asarray(pref, jnp.float32),
        hp,
        algorithm=algorithm,
        n_pairs=n_pairs,
        steps=steps,
        reward_steps=reward_steps,
        log_every=log_every,
        batch_size=batch_size,
        learning_rate=float(learning_rate),
        optimizer=optimizer,
    )
    runs = [
        Run(*jax.tree.map(lambda a, v=v: a[v * n_seeds : (v + 1) * n_seeds], (logs, data)), seed_ids, keys)
        for v in range(len(algorithms))
    ]  # the padding rows, past the last value's, are dropped
    return runs if sweep else runs[0]


def _sweep_values(algorithm) -> list[A.Algorithm]:
    """``[algorithm]``, or a non-empty list of one algorithm's values (same structure and hyper-parameter names)."""
    algorithms = [algorithm] if isinstance(algorithm, A.Algorithm) else algorithm
    if not isinstance(algorithms, (list, tuple)) or not algorithms:
        raise ValueError(f"algorithm must be an Algorithm or a non-empty list of them, got {type(algorithm).__name__}")
    for a in algorithms:
        if not isinstance(a, A.Algorithm):
            raise ValueError(f"algorithm must come from coverage_lab.algorithms, got {type(a).__name__}")
        if a != algorithms[0] or set(a.hparams) != set(algorithms[0].hparams):
            raise ValueError(
                "algorithm: a sweep's algorithms must differ only in their hyper-parameter values "
                f"(got {algorithms[0].name} {sorted(algorithms[0].hparams)} and {a.name} {sorted(a.hparams)})"
            )
    return list(algorithms)


def simulate(
    env: TabularBandit | LinearBandit,
    algorithm: A.Algorithm | Sequence[A.Algorithm],
    *,
    mu,
    n_pairs: int | None,
    steps: int,
    seeds: int | Sequence[int],
    key: jax.Array,
    beta: float | None = None,
    metrics: Sequence[str] | None = None,
    kl_samples: int = 64,
    **options,
) -> pd.DataFrame:
    """Train ``algorithm`` on offline data from ``mu`` in ``env`` and return its metrics over training.

    Args:
      env: a ``TabularBandit`` (tabular softmax policy) or ``LinearBandit`` (log-linear policy).
      algorithm: from ``coverage_lab.algorithms`` (``dpo``, ``ipo``, ``rlhf``, ``hypo``, ``online_dpo``), or a
        list of one algorithm at several hyper-parameter values: a sweep in one compiled call (:func:`run`).
      mu: offline response distribution ``mu_XxY``; pairs are ``mu ⊗ mu`` unless ``pair_XxYxY`` is given.
      n_pairs: number of labelled offline pairs; ``None`` is the exact population version (full batch,
        enumerated on-policy expectations).
      steps: optimizer steps (Adam, ``learning_rate``); ``reward_steps`` for the reward model (default ``steps``).
      seeds: a number of seeds ``0..n-1`` or the seed ids; seed ``i`` runs on ``fold_in(key, i)``.
      key: a JAX PRNG key.
      options: ``log_every`` (steps between log points, default the largest divisor of ``steps`` up to
        ``steps // 20``), ``pair_XxYxY``,
        ``temperature``/``deterministic`` (Bradley–Terry labels), ``batch_size`` (minibatch of offline pairs),
        ``learning_rate`` (of the default optimizer, Adam with cosine decay), ``reward_steps``, ``optimizer``
        (any optax transformation instead): see :func:`run`.
      beta: the ``beta`` of ``J`` in ``value`` and ``suboptimality`` (default: the algorithm's ``beta``, else ``tau``).
      metrics: the metric names to keep (default all of ``metrics.NAMES``).
      kl_samples: samples per prompt for the ``kl_k1``/``kl_k3`` estimates.

    Returns:
      A tidy DataFrame: ``algorithm``, ``seed``, ``step``, ``metric``, ``value``, ``n_pairs`` (NaN when exact) and
      one column per hyper-parameter of the algorithm.
    """
    names = M.check_names(metrics)
    algorithms = _sweep_values(algorithm)
    betas = [beta if beta is not None else a.hparams.get("beta", a.hparams.get("tau")) for a in algorithms]
    betas = [V.positive("beta", b) for b in betas]
    V.integer("kl_samples", kl_samples, minimum=1)
    runs = run(env, algorithms, mu=mu, n_pairs=n_pairs, steps=steps, seeds=seeds, key=key, **options)
    frames = [
        tidy(r, env, a, mu=mu, beta=b, n_pairs=n_pairs, metrics=names, kl_samples=kl_samples)
        for r, a, b in zip(runs, algorithms, betas, strict=True)
    ]
    return pd.concat(frames, ignore_index=True)


def train_on_data(
    env: TabularBandit | LinearBandit,
    algorithm: A.Algorithm,
    data: D.Batch,
    hp: dict,
    *,
    key: jax.Array,
    rm_key: jax.Array,
    exact: bool,
    steps: int,
    reward_steps: int,
    learning_rate: float,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int | None = None,
    pref_XxYxY=None,
    log_every: int | None = None,
):
    """One seed's run on given offline ``data``: the bounded reward model fitted on it first if ``algorithm``
    uses one (:func:`fit_reward_model` with ``rm_key``, ``reward_steps`` steps), then the policy
    (:func:`train_policy` with ``key``, ``steps`` steps). What :func:`run` does after drawing the data, for callers
    that bring their own (``experiments.rates``: the sufficient statistics of sampled pairs).

    Pure in the keys (``jit``/``vmap`` it). ``optimizer`` defaults to :func:`default_optimizer` of
    ``learning_rate`` over each fit's steps. Returns :func:`train_policy`'s ``(params, logs)``.
    """
    check_bandit(env)
    check_algorithm(algorithm, hp)
    V.key("key", key)
    V.key("rm_key", rm_key)
    D.check_batch(data)
    V.integer("steps", steps, minimum=1)
    V.integer("reward_steps", reward_steps, minimum=1)
    V.float32_scale("learning_rate", learning_rate)
    _check_optimizer(optimizer)
    reward_fn = None
    if algorithm.reward_model:
        rm = bounded_reward_model(env, hp["r_max"])
        rm_opt = optimizer or default_optimizer(learning_rate, reward_steps)
        w = fit_reward_model(rm, data, rm_key, steps=reward_steps, optimizer=rm_opt, batch_size=batch_size)
        reward_fn = functools.partial(rm.rewards, w)
    return train_policy(
        default_policy(env), algorithm, data, hp, key, exact=exact, steps=steps, reward_fn=reward_fn,
        pref_XxYxY=pref_XxYxY, batch_size=batch_size, optimizer=optimizer or default_optimizer(learning_rate, steps),
        log_every=log_every,
    )  # fmt: skip


def _check_optimizer(optimizer) -> None:
    if optimizer is not None:  # None: default_optimizer
        check_optimizer(optimizer)


def _run_one(
    key, env, exact_data, pair, pref, hp, *, algorithm, n_pairs, batch_size, steps, reward_steps, learning_rate,
    optimizer, log_every,
):  # fmt: skip
    k_data, k_rm, k_train = jax.random.split(key, 3)
    exact = n_pairs is None
    data = exact_data if exact else D._sample_pairs(k_data, env.rho_X, pair, pref, n_pairs)
    _, logs = train_on_data(
        env, algorithm, data, hp, key=k_train, rm_key=k_rm, exact=exact, steps=steps, reward_steps=reward_steps,
        learning_rate=learning_rate, optimizer=optimizer, batch_size=None if exact else min(batch_size, n_pairs),
        pref_XxYxY=pref, log_every=log_every,
    )  # fmt: skip
    return logs, data


_STATIC = ("algorithm", "n_pairs", "steps", "reward_steps", "log_every", "batch_size", "learning_rate", "optimizer")


@jit(static_argnames=_STATIC)
def _run(keys, env, exact_data, pair, pref, hp, **static):
    run = functools.partial(_run_one, **static)
    return jax.vmap(run, in_axes=(0, None, None, None, None, 0))(keys, env, exact_data, pair, pref, hp)


def tidy(
    r: Run, env, algorithm: A.Algorithm, *, mu, beta: float, n_pairs: int | None, metrics=M.NAMES, kl_samples: int = 64
) -> pd.DataFrame:
    """The tidy table of :func:`simulate` from a :class:`Run` (for callers that also need the raw tables)."""
    names = M.check_names(metrics)
    if not isinstance(r, Run):
        raise ValueError(f"r must be a simulation.Run (from simulation.run), got {type(r).__name__}")
    logs, data, seed_ids, keys = r
    mu = np.asarray(mu, np.float64)
    steps = np.asarray(logs["step"])[0]
    frames = []
    for i, seed in enumerate(seed_ids):
        logp = np.asarray(logs["eval"][i])
        data_i = jax.tree.map(lambda a, i=i: np.asarray(a[i]), data)
        values = {
            **M.policy_metrics(logp, env, beta=beta, mu_XxY=mu),
            **M.data_metrics(logp, data_i, env.n_prompts, env.n_responses),
            "loss": np.asarray(logs["metrics"]["loss"][i], np.float64),
        }
        if {"kl_k1", "kl_k3"} & set(names):  # sampled: a compiled call per seed, skipped when not asked for
            values |= M.sampled_kl(jax.random.fold_in(keys[i], 1), logp, env.pi_ref_XxY, env.rho_X, kl_samples)
        for name in names:
            frames.append(pd.DataFrame({"seed": seed, "step": steps, "metric": name, "value": values[name]}))
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "algorithm", algorithm.name)
    df["n_pairs"] = np.nan if n_pairs is None else n_pairs
    for k, v in algorithm.hparams.items():
        df[k] = float(v)
    return df

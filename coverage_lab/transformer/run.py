"""``simulate`` for the transformer track: one algorithm on the token task, seeds vmapped, a tidy table out.

The transformer analogue of :mod:`coverage_lab.simulation`: the whole run of one seed — sample offline pairs
from ``mu`` with Bradley–Terry labels from the gold reward, fit the bounded reward model if the algorithm
has one (or if ``rm_eval`` asks for its score), train the policy through :func:`coverage_lab.train.fit` from
``pi_ref`` — is a pure function of its key, so seeds are a ``vmap`` axis. The objectives are the shared ones
of :mod:`coverage_lab.algorithms`; nothing is rewritten for this track. ``pi_ref`` comes from
:func:`coverage_lab.transformer.reference.reference_params` (trained once per size, cached on disk).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from coverage_lab import _validate as V
from coverage_lab import algorithms as A
from coverage_lab.train import fit
from coverage_lab.transformer import evaluate as E
from coverage_lab.transformer import model as M
from coverage_lab.transformer import reference as R
from coverage_lab.transformer import sizes as S
from coverage_lab.transformer import task as T
from coverage_lab.transformer.policy import reward_model, sequence_policy

SNAPSHOT_LIMIT = 50_000_000  # parameters x log points kept in memory to evaluate after training


class GoldPreference:
    """The Bradley–Terry oracle on token responses, indexable as ``pref[x_B, y_BxL, y2_BxL]`` like the bandit's
    ``pref_XxYxY`` table (what ``algorithms.Context.pref_XxYxY`` is read as by online DPO)."""

    def __init__(self, task: T.Task, temperature: float = 1.0):
        self.task, self.temperature = task, V.positive("temperature", temperature)

    def __getitem__(self, index):
        x, y, y2 = index
        return T.preference(self.task, x, y, y2, self.temperature)


def _seed_ids(seeds) -> list[int]:
    ids = list(range(V.integer("seeds", seeds, minimum=1))) if isinstance(seeds, int) else list(seeds)
    if not ids or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in ids):
        raise ValueError(f"seeds must be a positive count or a list of non-negative ids, got {seeds!r}")
    return [int(s) for s in ids]


def simulate(
    size: str | S.Size,
    algorithm: A.Algorithm,
    *,
    key: jax.Array,
    seeds: int | Sequence[int] = 3,
    mu_rare: float = 0.0,
    n_pairs: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    reward_steps: int | None = None,
    log_every: int | None = None,
    eval_samples: int | None = None,
    label_temperature: float = 1.0,
    exact: bool = False,
    normalize: bool = False,
    rm_eval: bool = False,
    ref_key: jax.Array | None = None,
    fast_compile: bool | None = None,
) -> pd.DataFrame:
    """Fine-tune ``pi_ref`` of ``size`` with ``algorithm`` on offline pairs from ``mu``; metrics over training.

    Args:
      size: a name in ``sizes.SIZES`` (``toy`` is enumerable) or a ``sizes.Size``; ``None`` arguments below
        take its defaults.
      algorithm: from :mod:`coverage_lab.algorithms` (``dpo``, ``ipo``, ``rlhf``, ``hypo``, ``online_dpo``).
      key: a JAX PRNG key; seed ``i`` runs on ``fold_in(key, i)``. seeds: a count ``0..n-1`` or the ids.
      mu_rare: ``mu`` shows rare tokens with ``mu_rare`` times their corpus probability (0: never).
      n_pairs, steps, batch_size, learning_rate (Adam), reward_steps, log_every, eval_samples (per prompt):
        the run's sizes.
      label_temperature: Bradley–Terry temperature of the gold-reward labels.
      exact: enumerate on-policy expectations (``policy.table``) instead of sampling (enumerable sizes only).
      normalize: length-normalised sequence log-probabilities in the objective (per-token mean ``d``).
      rm_eval: fit the reward model even if the algorithm does not use it, to report ``rm_score``.
      ref_key: key of the reference's training (default ``jax.random.key(0)``; cached on disk).
      fast_compile: compile without XLA's backend optimisations (default: the size's ``fast_compile``).

    Returns:
      A tidy DataFrame: ``algorithm``, ``seed``, ``step``, ``metric``, ``value`` (metrics: ``evaluate.names``
      and ``loss``), ``size``, ``n_pairs``, ``mu_rare``, ``normalize`` and one column per hyper-parameter.
    """
    size = S.get(size)
    if not isinstance(algorithm, A.Algorithm):
        raise ValueError(f"algorithm must come from coverage_lab.algorithms, got {type(algorithm).__name__}")
    V.key("key", key)
    task = T.make_task(size.task)
    if exact and not task.enumerable:
        raise ValueError(f"exact needs an enumerable size; {size.name} has {task.n_responses} responses")
    opt = dict(n_pairs=n_pairs, steps=steps, batch_size=batch_size, reward_steps=reward_steps)
    opt |= dict(log_every=log_every, eval_samples=eval_samples)
    opt = {k: getattr(size, k) if v is None else V.integer(k, v, minimum=1) for k, v in opt.items()}
    if opt["steps"] % opt["log_every"]:
        raise ValueError(f"log_every ({opt['log_every']}) must divide steps ({opt['steps']})")
    learning_rate = V.positive("learning_rate", size.learning_rate if learning_rate is None else learning_rate)
    V.positive("label_temperature", label_temperature)
    seed_ids = _seed_ids(seeds)
    mu_logp = jnp.asarray(T.mu_token_logp(task, mu_rare), jnp.float32)
    ref_params = R.reference_params(size, key=ref_key)
    keys = jnp.stack([jax.random.fold_in(key, s) for s in seed_ids])
    hp = {k: jnp.float32(v) for k, v in algorithm.hparams.items()}
    static = dict(size=size, algorithm=algorithm, exact=bool(exact), normalize=bool(normalize), rm_eval=bool(rm_eval))
    static |= dict(learning_rate=float(learning_rate), label_temperature=float(label_temperature), **opt)
    fast = size.fast_compile if fast_compile is None else bool(fast_compile)
    logs = _RUN[fast](keys, ref_params, mu_logp, hp, **static)
    df = _tidy(logs, seed_ids)
    df.insert(0, "algorithm", algorithm.name)
    df["size"] = size.name
    df["n_pairs"] = opt["n_pairs"]
    df["mu_rare"] = float(mu_rare)
    df["normalize"] = bool(normalize)
    for k, v in algorithm.hparams.items():
        df[k] = float(v)
    return df


def simulate_many(size: str | S.Size, algorithms: Sequence[A.Algorithm], *, key: jax.Array, **options) -> pd.DataFrame:
    """:func:`simulate` for several algorithms with the same ``key`` (so the same offline pairs per seed), their
    programs compiled and run in parallel threads (XLA compiles outside the GIL; compiling dominates on a CPU).

    Returns the algorithms' tidy tables concatenated in the order given.
    """
    if not algorithms or not all(isinstance(a, A.Algorithm) for a in algorithms):
        raise ValueError("algorithms must be a non-empty sequence of coverage_lab.algorithms.Algorithm")
    R.reference_params(S.get(size), key=options.get("ref_key"))  # trained (or loaded) once, before the threads
    with ThreadPoolExecutor(max_workers=len(algorithms)) as pool:
        futures = [pool.submit(simulate, size, alg, key=key, **options) for alg in algorithms]
        return pd.concat([f.result() for f in futures], ignore_index=True)


def _run_one(key, ref_params, mu_logp, hp, *, size, algorithm, exact, normalize, rm_eval, **o):
    task = T.make_task(size.task)
    k_data, k_rm, k_fit, k_eval = jax.random.split(key, 4)
    data = T._sample_pairs(k_data, task, o["n_pairs"], mu_logp, o["label_temperature"])
    batch_size = min(o["batch_size"], o["n_pairs"])
    optimizer = optax.adam(o["learning_rate"])
    policy = sequence_policy(task, size.model, ref_params=ref_params, normalize=normalize)
    reward_fn = rewards = None
    if algorithm.reward_model or rm_eval:
        rm = reward_model(task, size.reward_model, hp.get("r_max", task.config.r_max))
        rm_params, _ = fit(
            A.reward_model_objective(rm.rewards),
            rm.init(k_rm),
            data,
            k_rm,
            steps=o["reward_steps"],
            optimizer=optimizer,
            batch_size=batch_size,
        )
        rewards = functools.partial(rm.rewards, rm_params)
        if algorithm.reward_model:
            if exact:  # the exact on-policy path passes response indices, not tokens
                rm_table = rm.table(rm_params)
                reward_fn = lambda x, y: rm_table[x, y]  # noqa: E731
            else:
                reward_fn = rewards
    pref = GoldPreference(task, o["label_temperature"])
    if exact:
        y_all = jnp.asarray(T.responses(task))
        g = jax.vmap(lambda x: T.gold_reward(task, jnp.full(y_all.shape[0], x), y_all))(jnp.arange(task.n_prompts))
        pref = jax.nn.sigmoid((g[:, :, None] - g[:, None, :]) / o["label_temperature"])
    ctx = A.Context(policy, ref_params, exact, reward_fn, pref)
    objective = algorithm.make(algorithm, ctx, hp)
    metrics_policy = sequence_policy(task, size.model, ref_params=ref_params) if normalize else policy
    evaluate = E.make_evaluator(
        task,
        metrics_policy,
        ref_params,
        k_eval,
        n_samples=o["eval_samples"],
        mu_logp_XxV=mu_logp,
        data=data,
        rewards=rewards,
    )
    # Small models: snapshot the parameters at each log point and evaluate them all afterwards, so the
    # evaluation is compiled once (fit evaluates the first log point outside its scan, the rest inside).
    snapshot = M.n_params(ref_params) * (o["steps"] // o["log_every"] + 1) <= SNAPSHOT_LIMIT
    _, logs = fit(
        objective,
        algorithm.init(ref_params),
        data,
        k_fit,
        steps=o["steps"],
        optimizer=optimizer,
        batch_size=batch_size,
        log_every=o["log_every"],
        evaluate=lambda p: algorithm.policy_params(p) if snapshot else evaluate(algorithm.policy_params(p)),
        project=algorithm.project,
    )
    if snapshot:
        logs["eval"] = jax.lax.map(evaluate, logs["eval"])
    return logs


_STATIC = (
    "size", "algorithm", "exact", "normalize", "rm_eval", "learning_rate", "label_temperature", "n_pairs", "steps",
    "batch_size", "reward_steps", "log_every", "eval_samples",
)  # fmt: skip


def _run(keys, ref_params, mu_logp, hp, **static):
    run = functools.partial(_run_one, **static)
    return jax.vmap(run, in_axes=(0, None, None, None))(keys, ref_params, mu_logp, hp)


_RUN = {fast: S.jit(_run, fast_compile=fast, static_argnames=_STATIC) for fast in (False, True)}


def _tidy(logs, seed_ids) -> pd.DataFrame:
    steps = np.asarray(logs["step"])[0]
    values = {**logs["eval"], "loss": logs["metrics"]["loss"]}
    frames = []
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        for i, seed in enumerate(seed_ids):
            frames.append(pd.DataFrame({"seed": seed, "step": steps, "metric": name, "value": v[i]}))
    return pd.concat(frames, ignore_index=True)

"""``simulate`` for the transformer track: algorithms on the token task, seeds vmapped, a tidy table out.

The transformer analogue of :mod:`coverage_lab.simulation`, built from the same pieces
(``fitting.fit_reward_model``, ``fitting.train_policy``) with the transformer ``Policy`` in place of the
tabular one; the objectives are the shared ones of :mod:`coverage_lab.algorithms`, nothing is rewritten for
this track. A run of one seed is a pure function of its key (seeds are a ``vmap`` axis), in three compiled
programs, so that what several algorithms share is compiled and computed once (on a CPU, compiling dominates):

1. data: offline pairs from ``mu`` with Bradley–Terry labels on the gold reward, and the bounded reward model
   fitted on them (if an algorithm uses it, or ``rm_eval`` asks for its score) — once for all algorithms;
2. training, one program per algorithm: ``train_policy`` from ``pi_ref``, keeping the parameters at each log
   point (small models; large ones are evaluated inside the training program instead);
3. evaluation of those snapshots (:mod:`coverage_lab.transformer.evaluate`) — one program for all algorithms.

``pi_ref`` comes from :func:`coverage_lab.transformer.reference.reference_params` (trained once per size,
cached on disk).
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
from coverage_lab._compile import jit
from coverage_lab.fitting import fit_reward_model, train_policy
from coverage_lab.transformer import evaluate as E
from coverage_lab.transformer import model as M
from coverage_lab.transformer import reference as R
from coverage_lab.transformer import sizes as S
from coverage_lab.transformer import task as T
from coverage_lab.transformer.policy import reward_model, sequence_policy

SNAPSHOT_LIMIT = 50_000_000  # parameters x log points x seeds kept to evaluate after training


class GoldPreference:
    """The Bradley–Terry oracle on token responses, indexable as ``pref[x_B, y_BxL, y2_BxL]`` like the bandit's
    ``pref_XxYxY`` table (what ``algorithms.Context.pref_XxYxY`` is read as by online DPO)."""

    def __init__(self, task: T.Task, temperature: float = 1.0):
        self.task, self.temperature = task, V.positive("temperature", temperature)

    def __getitem__(self, index):
        x, y, y2 = index
        return T.preference(self.task, x, y, y2, self.temperature)


def simulate(size: str | S.Size, algorithm: A.Algorithm, *, key: jax.Array, **options) -> pd.DataFrame:
    """Fine-tune ``pi_ref`` of ``size`` with ``algorithm`` on offline pairs from ``mu``; metrics over training.

    Options as :func:`simulate_many` (which this is, for one algorithm).
    """
    if not isinstance(algorithm, A.Algorithm):
        raise ValueError(f"algorithm must come from coverage_lab.algorithms, got {type(algorithm).__name__}")
    return simulate_many(size, [algorithm], key=key, **options)


def simulate_many(
    size: str | S.Size,
    algorithms: Sequence[A.Algorithm],
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
    """Fine-tune ``pi_ref`` of ``size`` with each algorithm on the same offline pairs; metrics over training.

    Every algorithm sees the same data and reward model per seed (a paired comparison); the algorithms'
    training programs are compiled and run in parallel threads (XLA compiles outside the GIL).

    Args:
      size: a name in ``sizes.SIZES`` (``toy`` is enumerable) or a ``sizes.Size``; ``None`` arguments below
        take its defaults.
      algorithms: from :mod:`coverage_lab.algorithms` (``dpo``, ``ipo``, ``rlhf``, ``hypo``, ``online_dpo``).
        The reward model is bounded by the task's ``R_max``; an algorithm's own ``r_max`` must equal it.
      key: a JAX PRNG key; seed ``i`` runs on ``fold_in(key, i)``. seeds: a count ``0..n-1`` or the ids.
      mu_rare: ``mu`` shows rare tokens with ``mu_rare`` times their corpus probability (0: never).
      n_pairs, steps, batch_size, learning_rate (constant-step Adam, for the policy and the reward model),
        reward_steps, log_every, eval_samples (per prompt): the run's sizes.
      label_temperature: Bradley–Terry temperature of the gold-reward labels.
      exact: enumerate on-policy expectations (``policy.table``) instead of sampling (enumerable sizes only).
      normalize: DPO's and IPO's ``d`` length-normalised (per token); samples, KL terms, RLOO and the metrics
        use the log-probability of the whole sequence either way.
      rm_eval: fit the reward model even if no algorithm uses it, to report ``rm_score``.
      ref_key: key of the reference's training (default ``jax.random.key(0)``; cached on disk).
      fast_compile: compile without XLA's backend optimisations (default: the size's ``fast_compile``).

    Returns:
      A tidy DataFrame: ``algorithm``, ``seed``, ``step``, ``metric``, ``value`` (metrics: ``evaluate.names``,
      and ``loss``, the objective's ``loss`` averaged over each logging interval, from the first log point
      after step 0), ``size``, ``n_pairs``, ``mu_rare``, ``normalize``, and one column per hyper-parameter.
    """
    size = S.get(size)
    algorithms = list(algorithms) if isinstance(algorithms, (list, tuple)) else algorithms
    if not isinstance(algorithms, list) or not algorithms or not all(isinstance(a, A.Algorithm) for a in algorithms):
        raise ValueError("algorithms must be a non-empty list of coverage_lab.algorithms.Algorithm")
    V.key("key", key)
    if ref_key is not None:
        V.key("ref_key", ref_key)
    exact, normalize, rm_eval = V.flag("exact", exact), V.flag("normalize", normalize), V.flag("rm_eval", rm_eval)
    fast = size.fast_compile if fast_compile is None else V.flag("fast_compile", fast_compile)
    task = T.make_task(size.task)
    r_max = task.config.r_max
    for a in algorithms:
        if a.reward_model and not np.isclose(a.hparams.get("r_max", r_max), r_max):
            raise ValueError(f"{a.name}'s r_max ({a.hparams['r_max']}) must equal the task's R_max ({r_max})")
    if exact and not task.enumerable:
        raise ValueError(f"exact needs an enumerable size; {size.name} has {task.n_responses} responses")
    opt = dict(n_pairs=n_pairs, steps=steps, batch_size=batch_size, reward_steps=reward_steps)
    opt |= dict(log_every=log_every, eval_samples=eval_samples)
    opt = {k: getattr(size, k) if v is None else V.integer(k, v, minimum=1) for k, v in opt.items()}
    if opt["steps"] % opt["log_every"]:
        raise ValueError(f"log_every ({opt['log_every']}) must divide steps ({opt['steps']})")
    lr = float(V.float32_scale("learning_rate", size.learning_rate if learning_rate is None else learning_rate))
    V.temperature("label_temperature", label_temperature)
    seed_ids = V.seed_ids(seeds)
    mu_logp = jnp.asarray(T.mu_token_logp(task, mu_rare), jnp.float32)
    ref_params = R.reference_params(size, key=ref_key)
    keys = jnp.stack([jax.random.fold_in(key, s) for s in seed_ids])
    use_rm = rm_eval or any(a.reward_model for a in algorithms)
    batch = min(opt["batch_size"], opt["n_pairs"])
    data, rm_params = _PREPARE[fast](
        keys,
        mu_logp,
        task=size.task,
        rm_config=size.reward_model,
        n_pairs=opt["n_pairs"],
        batch_size=batch,
        learning_rate=lr,
        label_temperature=float(label_temperature),
        reward_steps=opt["reward_steps"],
        use_rm=use_rm,
    )
    n_logs = opt["steps"] // opt["log_every"] + 1
    snapshot = M.n_params(ref_params) * n_logs * len(seed_ids) <= SNAPSHOT_LIMIT
    train = dict(size=size, batch_size=batch, learning_rate=lr, steps=opt["steps"], log_every=opt["log_every"])
    train |= dict(eval_samples=opt["eval_samples"])
    train |= dict(exact=exact, normalize=normalize, label_temperature=float(label_temperature))
    train |= dict(snapshot=snapshot)
    evaluation = dict(size=size, n_samples=opt["eval_samples"])

    def one(alg):
        hp = {k: jnp.float32(v) for k, v in alg.hparams.items()}
        logs = _TRAIN[fast](keys, ref_params, data, rm_params, mu_logp, hp, algorithm=alg, **train)
        if snapshot:
            logs = {
                **logs,
                "eval": _EVALUATE[fast](keys, ref_params, logs["eval"], data, rm_params, mu_logp, **evaluation),
            }
        df = _tidy(logs, seed_ids)
        df.insert(0, "algorithm", alg.name)
        for k, v in alg.hparams.items():
            df[k] = float(v)
        return df

    with ThreadPoolExecutor(max_workers=len(algorithms)) as pool:
        frames = list(pool.map(one, algorithms))
    df = pd.concat(frames, ignore_index=True)
    df["size"] = size.name
    df["n_pairs"] = opt["n_pairs"]
    df["mu_rare"] = float(mu_rare)
    df["normalize"] = normalize
    return df


def _optimizer(learning_rate):
    return optax.adam(learning_rate)  # constant step: a climbing KL is the method's, not a schedule's


def _seed_keys(key) -> dict:
    """A seed's four keys, one split shared by the three programs: ``data`` (the offline pairs), ``rm`` (the
    reward model's fit), ``fit`` (the policy's), ``eval`` (the evaluation samples, the same wherever evaluated)."""
    return dict(zip(("data", "rm", "fit", "eval"), jax.random.split(key, 4), strict=True))


def _prepare_one(
    key, mu_logp, *, task, rm_config, n_pairs, batch_size, learning_rate, label_temperature, reward_steps, use_rm
):
    """Its static arguments are what the data and the reward model depend on, not the policy's size, so the model
    sizes of one task (``small`` and ``medium``) share this program: traced and compiled once per process."""
    task = T.make_task(task)
    keys = _seed_keys(key)
    data = T._sample_pairs(keys["data"], task, n_pairs, mu_logp, label_temperature)
    if not use_rm:
        return data, None
    rm = reward_model(task, rm_config, task.config.r_max)
    opt = _optimizer(learning_rate)
    return data, fit_reward_model(rm, data, keys["rm"], steps=reward_steps, optimizer=opt, batch_size=batch_size)


def _train_one(key, ref_params, data, rm_params, mu_logp, hp, *, size, algorithm, exact, normalize, snapshot, **o):
    task = T.make_task(size.task)
    keys = _seed_keys(key)
    policy = sequence_policy(task, size.model, ref_params=ref_params, normalize=normalize)
    rm = reward_model(task, size.reward_model, task.config.r_max)
    reward_fn = None
    if algorithm.reward_model:
        if exact:  # the exact on-policy path passes response indices, not tokens
            rm_table = rm.table(rm_params)
            reward_fn = lambda x, y: rm_table[x, y]  # noqa: E731
        else:
            reward_fn = functools.partial(rm.rewards, rm_params)
    pref = GoldPreference(task, o["label_temperature"])
    if exact:
        y_all = jnp.asarray(T.responses(task))
        g = jax.vmap(lambda x: T.gold_reward(task, jnp.full(y_all.shape[0], x), y_all))(jnp.arange(task.n_prompts))
        pref = jax.nn.sigmoid((g[:, :, None] - g[:, None, :]) / o["label_temperature"])
    if snapshot:  # the parameters at each log point, evaluated by a program of their own
        evaluate = algorithm.policy_params
    else:
        evaluator = _evaluator(
            keys["eval"], ref_params, data, rm_params, mu_logp, size=size, n_samples=o["eval_samples"]
        )
        evaluate = lambda p: evaluator(algorithm.policy_params(p))  # noqa: E731
    _, logs = train_policy(
        policy,
        algorithm,
        data,
        hp,
        keys["fit"],
        exact=exact,
        steps=o["steps"],
        reward_fn=reward_fn,
        pref_XxYxY=pref,
        batch_size=o["batch_size"],
        optimizer=_optimizer(o["learning_rate"]),
        log_every=o["log_every"],
        evaluate=evaluate,
    )
    # The step-0 metrics are dropped: fit computes them with an extra forward pass of the objective outside its
    # loop, which XLA then eliminates (a sizeable share of the compile time of this program).
    return {**logs, "metrics": jax.tree.map(lambda m: m[1:], logs["metrics"])}


def _evaluator(k_eval, ref_params, data, rm_params, mu_logp, *, size, n_samples):
    task = T.make_task(size.task)
    policy = sequence_policy(task, size.model, ref_params=ref_params)  # summed log-probabilities
    rewards = None
    if rm_params is not None:
        rewards = functools.partial(reward_model(task, size.reward_model, task.config.r_max).rewards, rm_params)
    return E.make_evaluator(
        task, policy, ref_params, k_eval, n_samples=n_samples, mu_logp_XxV=mu_logp, data=data, rewards=rewards
    )


def _evaluate_one(key, ref_params, snapshots, data, rm_params, mu_logp, *, size, n_samples):
    evaluate = _evaluator(_seed_keys(key)["eval"], ref_params, data, rm_params, mu_logp, size=size, n_samples=n_samples)
    return jax.lax.map(evaluate, snapshots)


def _prepare(keys, mu_logp, **static):
    return jax.vmap(functools.partial(_prepare_one, **static), in_axes=(0, None))(keys, mu_logp)


def _train(keys, ref_params, data, rm_params, mu_logp, hp, **static):
    run = functools.partial(_train_one, **static)
    return jax.vmap(run, in_axes=(0, None, 0, 0, None, None))(keys, ref_params, data, rm_params, mu_logp, hp)


def _evaluate(keys, ref_params, snapshots, data, rm_params, mu_logp, **static):
    run = functools.partial(_evaluate_one, **static)
    return jax.vmap(run, in_axes=(0, None, 0, 0, 0, None))(keys, ref_params, snapshots, data, rm_params, mu_logp)


_PREPARE_STATIC = (
    "task", "rm_config", "n_pairs", "batch_size", "learning_rate", "label_temperature", "reward_steps", "use_rm",
)  # fmt: skip
_TRAIN_STATIC = (
    "size", "algorithm", "exact", "normalize", "snapshot", "batch_size", "learning_rate", "steps",
    "log_every", "eval_samples", "label_temperature",
)  # fmt: skip
_PREPARE, _TRAIN, _EVALUATE = (
    {fast: jit(fn, fast_compile=fast, library_fusions=True, static_argnames=names) for fast in (False, True)}
    for fn, names in ((_prepare, _PREPARE_STATIC), (_train, _TRAIN_STATIC), (_evaluate, ("size", "n_samples")))
)


def _tidy(logs, seed_ids) -> pd.DataFrame:
    steps = np.asarray(logs["step"])[0]
    frames = []
    for name, v in {**logs["eval"], "loss": logs["metrics"]["loss"]}.items():
        v = np.asarray(v, np.float64)
        at = steps[-v.shape[1] :]  # the loss starts at the first log point after step 0
        for i, seed in enumerate(seed_ids):
            frames.append(pd.DataFrame({"seed": seed, "step": at, "metric": name, "value": v[i]}))
    return pd.concat(frames, ignore_index=True)

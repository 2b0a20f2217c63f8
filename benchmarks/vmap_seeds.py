"""Seeds as a batch axis: ``S`` seeds vmapped against a Python loop over ``S`` single-seed calls, two readings.

(a) **step**: one optimizer step of :func:`coverage_lab.train.fit` (objective, gradient, optax update, the
    algorithm's projection), jitted for one seed and called ``S x steps`` times from Python, against the same
    step vmapped over the seeds and called ``steps`` times. The step is rebuilt here from the library's pieces
    exactly as ``fit`` builds it (``fit`` keeps it inside its ``lax.scan``) and compiled with the library's CPU
    options (``coverage_lab._compile.cpu_options``); it is checked to reach the same parameters in both readings.
(b) **run**: whole compiled runs, ``coverage_lab.run(..., seeds=[s])`` called for each ``s`` against one
    ``coverage_lab.run(..., seeds=S)``.
(c) **breakdown** of the vmapped run's time: its training steps alone, the minibatch permutations and the pair
    sampling, as fractions of the whole run (their sum is close to it).

Default problem (as ``benchmarks/seeds.py``): HyPO (``k = 4`` on-policy samples, RLOO) on a 4x16 tabular bandit
with sampled pairs (``n_pairs = 256``, minibatches of 32), Adam with cosine decay.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import coverage_lab as cl
from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage
from coverage_lab import data as D
from coverage_lab._compile import cpu_options, jit
from coverage_lab._sampling import fold_in
from coverage_lab.fitting import default_optimizer
from coverage_lab.policies import default_policy
from coverage_lab.train import make_step

from ._timing import best_of, compile_clock, row, wall

NAME = "vmap_seeds"


class Problem(NamedTuple):
    env: object
    mu: np.ndarray
    algorithm: A.Algorithm
    n_pairs: int
    batch_size: int
    learning_rate: float


def default_problem() -> Problem:
    env = bandits.random_tabular(jax.random.key(0), 4, 16)
    mu = coverage.deficient(env.pi_ref_XxY, 4, env.reward_XxY)
    return Problem(env, mu, A.hypo(beta=0.1, lam=0.1, k=4), n_pairs=256, batch_size=32, learning_rate=0.05)


class Step(NamedTuple):
    """``setup(key) -> (carry, inputs)`` for one seed and ``step(carry, inputs, t) -> (carry, metrics)``: one
    step of ``fit``, with the loop-invariant ``inputs`` passed beside the carry (as ``fit``'s scan closes over
    them) rather than returned by every call."""

    setup: object
    step: object


def fit_step(problem: Problem, steps: int, optimizer: optax.GradientTransformation | None = None) -> Step:
    """One step of ``fit`` (:func:`coverage_lab.train.make_step`) for a sampled-data algorithm without a reward
    model.

    ``carry = (params, opt_state)``; ``inputs = (data, idx, k_obj)``: the seed's sampled pairs, its minibatch
    rows for every step (``data.minibatch_indices``) and the objective's key, drawn from the seed's key as
    ``simulation._run_one`` and ``fit`` draw them. ``optimizer`` defaults to ``fitting.default_optimizer``.
    """
    env, mu, algorithm, n_pairs, batch_size, lr = problem
    if algorithm.reward_model:
        raise ValueError("the step benchmark covers algorithms without a reward model")
    policy = default_policy(env)
    pair = jnp.asarray(coverage.pair_table(mu), jnp.float32)
    pref = jnp.asarray(bandits.preference_table(env.reward_XxY), jnp.float32)
    rho = jnp.asarray(env.rho_X, jnp.float32)
    ref_params = policy.init(jax.random.key(0))  # tabular and log-linear policies start at pi_ref whatever the key
    hp = {k: jnp.float32(v) for k, v in algorithm.hparams.items()}
    ctx = A.Context(policy, ref_params, False, None, pref)
    objective = algorithm.make(algorithm, ctx, hp)
    optimizer = optimizer or default_optimizer(lr, steps)
    one_step = make_step(objective, optimizer, algorithm.project)
    batch_size = min(batch_size, n_pairs)

    def setup(key):
        k_data, _, k_fit = jax.random.split(key, 3)
        data = D._sample_pairs(k_data, rho, pair, pref, n_pairs)
        if algorithm.offline_pairs:  # as train_policy does before fit
            data = A.with_reference(ctx, data, batch_size)
        k_idx, k_obj = jax.random.split(k_fit)
        idx = D.minibatch_indices(k_idx, n_pairs, batch_size, steps)
        params = algorithm.init(ref_params, hp)
        return (params, optimizer.init(params)), (data, idx, k_obj)

    def step(carry, inputs, t):  # fit's step at t: the t-th minibatch, the objective's key folded with t
        data, idx, k_obj = inputs
        return one_step(carry, D.take(data, idx[t]), fold_in(k_obj, t), t)

    return Step(setup, step)


def _keys(n_seeds: int) -> jax.Array:
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(1), s))(jnp.arange(n_seeds, dtype=jnp.uint32))


def measure_step(problem: Problem, n_seeds: int, steps: int, optimizer=None) -> dict:
    """Seconds for ``steps`` steps of ``n_seeds`` seeds: the single-seed step in a loop, the vmapped step;
    compile seconds of each; the final parameters of both readings (``params_loop``: a list over seeds,
    ``params_vmapped``: stacked).

    The two readings agree to float rounding (about 1e-9 in the gradients), but Adam's first steps divide each
    gradient entry by its own magnitude, so entries that are zero up to rounding move by up to the step size:
    compare them with plain SGD (``tests/test_benchmarks.py`` does)."""
    s = fit_step(problem, steps, optimizer)
    carries, inputs = jit(jax.vmap(s.setup))(_keys(n_seeds))
    # jax.jit with the library's CPU options: the library's jit wrapper checks its arguments for tracers on every
    # call (about 8 us), which the loop would pay 64 times a step and fit, stepping inside one lax.scan, never does
    options = cpu_options() if jax.default_backend() == "cpu" else None
    one = jax.jit(s.step, compiler_options=options)
    many = jax.jit(jax.vmap(s.step, in_axes=(0, 0, None)), compiler_options=options)
    per_seed = [jax.tree.map(lambda a, i=i: a[i], (carries, inputs)) for i in range(n_seeds)]
    ts = list(jnp.arange(steps, dtype=jnp.int32))

    def loop():
        seeds = [carry for carry, _ in per_seed]
        for t in ts:
            for i in range(n_seeds):
                seeds[i], _ = one(seeds[i], per_seed[i][1], t)
        return seeds

    def vmapped():
        carry = carries
        for t in ts:
            carry, _ = many(carry, inputs, t)
        return carry

    c0 = compile_clock()[0]
    jax.block_until_ready(one(*per_seed[0], ts[0]))
    c1 = compile_clock()[0]
    jax.block_until_ready(many(carries, inputs, ts[0]))
    c2 = compile_clock()[0]
    # both readings the same way: the fastest of three (the loop stops repeating past 10 s, 512 seeds)
    t_vmapped, final_vmapped = best_of(vmapped, 3, result=True)
    t_loop, final_loop = best_of(loop, 3, budget=10.0, result=True)
    return {
        "loop": t_loop,
        "vmapped": t_vmapped,
        "compile_one": c1 - c0,
        "compile_vmapped": c2 - c1,
        "params_loop": [seed[0] for seed in final_loop],
        "params_vmapped": final_vmapped[0],
    }


def measure_run(problem: Problem, n_seeds: int, steps: int) -> dict:
    """Seconds of whole runs: ``coverage_lab.run`` with ``n_seeds`` seeds once (first call and best of the
    next), and ``n_seeds`` single-seed calls of one compiled program in a loop."""
    env, mu, algorithm, n_pairs, batch_size, lr = problem
    kw = dict(mu=mu, n_pairs=n_pairs, steps=steps, key=jax.random.key(1), batch_size=batch_size, learning_rate=lr)

    def run(seeds):
        return cl.run(env, algorithm, seeds=seeds, **kw).logs

    c0 = compile_clock()[0]
    first = wall(lambda: run(n_seeds))
    c1 = compile_clock()[0]
    vmapped = best_of(lambda: run(n_seeds), 3)
    wall(lambda: run([0]))  # compile the single-seed program
    loop = wall(lambda: [run([s]) for s in range(n_seeds)])
    return {"first": first, "compile": c1 - c0, "vmapped": vmapped, "loop": loop}


def breakdown(problem: Problem, n_seeds: int, steps: int) -> dict:
    """Where the time of one vmapped ``coverage_lab.run`` goes: seconds of the whole run, of its training steps
    alone (a ``lax.scan`` of :func:`fit_step` over the seeds' prepared inputs), of drawing every minibatch's
    rows (``data.minibatch_indices``: a sort-based permutation per epoch) and of sampling the pairs
    (``data._sample_pairs``), each vmapped over the seeds and timed after compilation."""
    env, mu, algorithm, n_pairs, batch_size, lr = problem
    s = fit_step(problem, steps)
    keys = _keys(n_seeds)
    carries, inputs = jit(jax.vmap(s.setup))(keys)
    pair = jnp.asarray(coverage.pair_table(mu), jnp.float32)
    pref = jnp.asarray(bandits.preference_table(env.reward_XxY), jnp.float32)
    rho = jnp.asarray(env.rho_X, jnp.float32)
    bs = min(batch_size, n_pairs)

    def scanned(carry, inputs):
        return jax.lax.scan(lambda c, t: (s.step(c, inputs, t)[0], None), carry, jnp.arange(steps))[0][0]

    parts = {
        "steps": (jit(jax.vmap(scanned)), (carries, inputs)),
        "minibatch_indices": (jit(jax.vmap(lambda k: D.minibatch_indices(k, n_pairs, bs, steps))), (keys,)),
        "sample_pairs": (jit(jax.vmap(lambda k: D._sample_pairs(k, rho, pair, pref, n_pairs))), (keys,)),
    }
    kw = dict(mu=mu, n_pairs=n_pairs, steps=steps, key=jax.random.key(1), batch_size=batch_size, learning_rate=lr)
    calls = {name: (lambda f=f, a=a: f(*a)) for name, (f, a) in parts.items()}
    calls["run"] = lambda: cl.run(env, algorithm, seeds=n_seeds, **kw).logs
    for call in calls.values():
        wall(call)
    best = {name: float("inf") for name in calls}
    for _ in range(3):  # interleaved, so that a burst of load does not fall on one part only
        for name, call in calls.items():
            best[name] = min(best[name], wall(call))
    return best


def bench(seed_counts=(64, 512), run_steps: int = 500, step_steps: int = 100, problem: Problem | None = None):
    """Rows for each seed count: step-level and run-level loop/vmapped times and their ratios; for the first
    seed count, the step ratio of offline DPO too, and the breakdown of the vmapped run's time."""
    problem = problem or default_problem()
    rows = []
    for n in seed_counts:
        t = measure_step(problem, n, step_steps)
        rows += [
            row(NAME, f"step: {n} seeds x {step_steps} steps, single-seed step in a loop", t["loop"], "s"),
            row(NAME, f"step: {n} seeds x {step_steps} steps, vmapped step", t["vmapped"], "s"),
            row(NAME, f"step: {n} seeds, loop / vmapped", t["loop"] / t["vmapped"], "x"),
            row(
                NAME,
                f"step: {n} seeds, compile of the vmapped step / its {step_steps} steps",
                t["compile_vmapped"] / t["vmapped"],
                "x",
            ),
        ]
        r = measure_run(problem, n, run_steps)
        rows += [
            row(NAME, f"run: {n} single-seed runs of {run_steps} steps in a loop", r["loop"], "s"),
            row(NAME, f"run: one {n}-seed run of {run_steps} steps", r["vmapped"], "s"),
            row(NAME, f"run: {n} seeds, loop / vmapped", r["loop"] / r["vmapped"], "x"),
            row(NAME, f"run: {n} seeds, compile / run", r["compile"] / r["vmapped"], "x"),
        ]
    n = seed_counts[0]
    if problem.algorithm.name != "dpo":  # the same reading for offline DPO: no on-policy samples in its step
        t = measure_step(problem._replace(algorithm=A.dpo(0.1)), n, step_steps)
        rows.append(row(NAME, f"step (DPO): {n} seeds, loop / vmapped", t["loop"] / t["vmapped"], "x"))
    b = breakdown(problem, n, run_steps)
    tag = f"run breakdown ({n} seeds x {run_steps} steps, {problem.algorithm.name}, {problem.n_pairs} sampled pairs)"
    rows += [
        row(NAME, f"{tag}: whole vmapped run", b["run"], "s"),
        row(NAME, f"{tag}: training steps (lax.scan of the step) / run", b["steps"] / b["run"], "fraction"),
        row(NAME, f"{tag}: data.minibatch_indices / run", b["minibatch_indices"] / b["run"], "fraction"),
        row(NAME, f"{tag}: data._sample_pairs / run", b["sample_pairs"] / b["run"], "fraction"),
    ]
    return rows

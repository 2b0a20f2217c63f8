"""Benchmark of the transformer track: DPO, HyPO and RLHF at equal batch size — time per step, tokens per second,
share of time spent sampling, and peak device memory.

    python -m benchmarks.transformer_bench [--size gpu] [--steps 10] [--batch-size B] [--algorithms dpo,hypo,rlhf]
                                           [--isolate] [--csv PATH]

Each algorithm's objective is built exactly as in a run (``coverage_lab.algorithms`` on the transformer
``Policy``, the pairs' reference log-probabilities computed once beforehand as ``fitting.train_policy`` does),
and ``steps`` optimizer steps go through ``coverage_lab.train.fit`` in one compiled call; the first call (compile +
run) is discarded, the second is timed. Weights are random: the cost of a step does not depend
on them (RLHF's reward model is untrained for the same reason). Reported per algorithm:

- ``step_s``: wall seconds per optimizer step (``batch_size`` offline pairs; HyPO and RLHF also draw ``k``
  on-policy samples for each of the ``batch_size`` prompts);
- ``tokens_per_s``: response tokens the policy is trained on per second — DPO ``2 B L``, HyPO ``2 B L + B k L``,
  RLHF ``B k L`` per step (prompt tokens, reference and reward-model passes not counted);
- ``sample_share``: seconds of sampling ``B k`` responses (the same sampler, compiled alone, timed alike)
  over ``step_s``;
- ``peak_bytes``: the device's peak memory in use (``memory_stats``; NaN where the backend has none, e.g. the
  CPU), cumulative over the process unless ``--isolate`` runs each algorithm in a fresh process;
  ``peak_rss_bytes``: the process's peak resident memory (host; on a CPU backend, the device's);
  ``xla_temp_bytes``: XLA's own estimate of the step program's scratch memory, per program.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from coverage_lab import algorithms as A
from coverage_lab.train import fit
from coverage_lab.transformer import model as M
from coverage_lab.transformer import sizes as S
from coverage_lab.transformer import task as T
from coverage_lab.transformer.policy import reward_model, sequence_policy

BETA, LAM = 0.1, 0.01


def _algorithm(name: str, size: S.Size) -> A.Algorithm:
    factories = {
        "dpo": lambda: A.dpo(BETA),
        "hypo": lambda: A.hypo(BETA, lam=LAM, k=size.k),
        "rlhf": lambda: A.rlhf(BETA, r_max=size.task.r_max, k=size.k),
    }
    if name not in factories:
        raise ValueError(f"algorithm must be one of {sorted(factories)}, got {name!r}")
    return factories[name]()


def _compiled(fn, *args):
    """``(executable, seconds of one timed call)``: compiled once, run once to warm up, then timed."""
    executable = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(executable(*args))
    start = time.perf_counter()
    jax.block_until_ready(executable(*args))
    return executable, time.perf_counter() - start


def peak_bytes() -> float:
    """The default device's peak memory in use, in bytes (NaN if the backend does not report it)."""
    stats = jax.devices()[0].memory_stats() or {}
    return float(stats.get("peak_bytes_in_use", np.nan))


def measure(size: str | S.Size, name: str, *, steps: int, batch_size: int | None = None, key=None) -> dict:
    """Time ``steps`` optimizer steps of algorithm ``name`` on ``size`` and its sampler; see the module docstring."""
    size = S.get(size)
    alg = _algorithm(name, size)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    b = size.batch_size if batch_size is None else batch_size
    if not isinstance(b, int) or b < 1:
        raise ValueError(f"batch_size must be a positive integer, got {b!r}")
    key = jax.random.key(0) if key is None else key
    task = T.make_task(size.task)
    k_ref, k_pol, k_data, k_rm, k_fit, k_sample = jax.random.split(key, 6)
    ref = jax.jit(M.init, static_argnames="config")(k_ref, size.model)
    policy = sequence_policy(task, size.model, ref_params=ref)
    data = T.sample_pairs(k_data, task, b * steps, T.mu_token_logp(task, 0.0))
    reward_fn = None
    if alg.reward_model:
        rm = reward_model(task, size.reward_model, size.task.r_max)
        reward_fn = functools.partial(rm.rewards, jax.jit(rm.init)(k_rm))
    ctx = A.Context(policy, ref, False, reward_fn)
    if alg.offline_pairs:  # pi_ref's log-probabilities of the pairs, once before training (as train_policy does)
        data = jax.jit(lambda d: A.with_reference(ctx, d, b))(data)
    objective = alg.make(alg, ctx, {k: jnp.float32(v) for k, v in alg.hparams.items()})
    optimizer = optax.adam(1e-4)

    def train(params, key):
        return fit(objective, params, data, key, steps=steps, optimizer=optimizer, batch_size=b, project=alg.project)

    executable, seconds = _compiled(train, alg.init(ref), k_fit)
    step_s = seconds / steps
    memory = executable.memory_analysis()
    temp_bytes = float(getattr(memory, "temp_size_in_bytes", np.nan)) if memory is not None else np.nan

    sample_s = 0.0
    if alg.k:
        prompts = jnp.arange(b, dtype=jnp.int32) % task.n_prompts

        def sample_all(params, key):
            def one(_, k):
                return None, policy.sample(params, k, prompts, alg.k)

            return jax.lax.scan(one, None, jax.random.split(key, steps))[1]

        sample_s = _compiled(sample_all, ref, k_sample)[1] / steps
    L = task.response_len
    tokens = {"dpo": 2 * b * L, "hypo": 2 * b * L + b * alg.k * L, "rlhf": b * alg.k * L}[name]
    return {
        "size": size.name,
        "algorithm": name,
        "device": jax.devices()[0].device_kind,
        "batch_size": b,
        "k": alg.k,
        "params": M.n_params(ref),
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "sample_share": sample_s / step_s,
        "peak_bytes": peak_bytes(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0,
        "xla_temp_bytes": temp_bytes,
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="gpu", choices=sorted(S.SIZES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--algorithms", default="dpo,hypo,rlhf")
    parser.add_argument("--isolate", action="store_true", help="measure each algorithm in a fresh process")
    parser.add_argument("--json", action="store_true", help="print one JSON line per algorithm (used by --isolate)")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.algorithms.split(",") if n.strip()]
    rows = []
    for name in names:
        if args.isolate:
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.transformer_bench",
                "--size",
                args.size,
                "--steps",
                str(args.steps),
            ]
            cmd += ["--algorithms", name, "--json"] + (
                ["--batch-size", str(args.batch_size)] if args.batch_size else []
            )
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        else:
            rows.append(measure(args.size, name, steps=args.steps, batch_size=args.batch_size))
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    if not args.json:
        with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
            print(df.to_string(index=False))
    if args.csv:
        df.to_csv(args.csv, index=False)
    return df


if __name__ == "__main__":
    main()

"""Benchmark: 64 seeds in one vmapped call against 64 sequential single-seed calls of the same compiled
run, and compile time against run time. Prints ratios measured in one run (this machine is noisy).

    python -m benchmarks.seeds [--seeds 64] [--steps 500]
"""

from __future__ import annotations

import argparse
import time

import jax

import coverage_lab as cl
from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage


def _time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def measure(n_seeds: int = 64, steps: int = 500, algorithm=None) -> dict:
    """Times (seconds) of: first call of the vmapped run (compile + run), the vmapped run, one single-seed run,
    and ``n_seeds`` sequential single-seed runs of that compiled program."""
    env = bandits.random_tabular(jax.random.key(0), 4, 16)
    mu = coverage.deficient(env.pi_ref_XxY, 4, env.reward_XxY)
    algorithm = algorithm or A.hypo(beta=0.1, lam=0.1, k=4)
    kw = dict(mu=mu, n_pairs=256, steps=steps, key=jax.random.key(1), batch_size=32)

    def run(seeds):
        return cl.run(env, algorithm, seeds=seeds, **kw).logs

    start = time.perf_counter()
    jax.block_until_ready(run(n_seeds))
    first = time.perf_counter() - start
    vmapped = _time(lambda: run(n_seeds))
    jax.block_until_ready(run([0]))  # compile the single-seed program once
    single = _time(lambda: run([0]))
    sequential = _time(lambda: [run([s]) for s in range(n_seeds)], repeat=1)
    return {"compile": first - vmapped, "vmapped": vmapped, "single": single, "sequential": sequential}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args(argv)
    t = measure(args.seeds, args.steps)
    print(f"{args.seeds} seeds, {args.steps} steps, HyPO (k=4) on a 4x16 tabular bandit, {jax.devices()[0].platform}")
    print(f"  compile time                         {t['compile']:8.3f} s")
    print(f"  {args.seeds} seeds in one vmapped call          {t['vmapped']:8.3f} s")
    print(f"  {args.seeds} sequential single-seed calls       {t['sequential']:8.3f} s")
    print(f"  speed-up of vmap over the loop       {t['sequential'] / t['vmapped']:8.1f} x")
    print(f"  compile / vmapped run                {t['compile'] / t['vmapped']:8.2f}")
    return t


if __name__ == "__main__":
    main()

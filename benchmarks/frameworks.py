"""The tabular exact DPO training loop in coverage_lab (JAX) against plain NumPy and PyTorch references.

All three run the same loop (:mod:`benchmarks.numpy_dpo`) for the same number of steps from the same start in
float32; "equal accuracy" is checked, not assumed: the total-variation distance of each final policy to the
closed-form optimum ``exact.optimal_policy`` (reached by DPO under full coverage and Bradley–Terry labels at
temperature 1) and between the final policies. JAX is one ``coverage_lab.run`` call with one seed after
compilation (its compile time is reported beside it); PyTorch runs eagerly, after a first short call that pays
its imports, with its default intra-op threads and with one thread (on a loaded machine its default threads can
spin-wait on each other: 0.2 ms a step with one thread against 8-12 ms with two was seen here); the ratio uses
the faster. The default-threads setting is timed on the first 100 steps only and scaled to the full run (same
work per step), so that a pathological case does not eat the suite's budget.
"""

from __future__ import annotations

import jax
import numpy as np

import coverage_lab as cl
from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage, exact

from . import numpy_dpo, torch_dpo
from ._timing import best_of, compile_clock, row, wall

NAME = "frameworks"
BETA = 0.1
TORCH_DEFAULT_THREADS_STEPS = 100  # torch with its default threads is timed on this many steps, scaled to all


def problem(n_prompts: int, n_responses: int):
    """A random tabular bandit with a uniform ``mu`` (full support) and its exact pairs."""
    env = bandits.random_tabular(jax.random.key(7), n_prompts, n_responses)
    mu = np.full((n_prompts, n_responses), 1.0 / n_responses)
    pairs = numpy_dpo.exact_pairs(env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))
    return env, mu, pairs


def tv(p_XxY, q_XxY) -> float:
    """The largest total-variation distance over prompts, ``max_x 1/2 sum_y |p - q|``."""
    return float(0.5 * np.abs(np.asarray(p_XxY) - np.asarray(q_XxY)).sum(-1).max())


def measure(
    n_prompts: int, n_responses: int, steps: int, learning_rate: float = 0.05, torch: bool = True, budget: float = 5.0
) -> dict:
    """Seconds per training run of each implementation (best of up to 3 for JAX, 2 for the references, fewer once
    ``budget`` seconds are spent on one), JAX's compile seconds and the TV distances."""
    env, mu, (x, y_w, y_l, w) = problem(n_prompts, n_responses)
    log_pi_ref = np.log(np.asarray(env.pi_ref_XxY, np.float32))
    optimum = exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, BETA)
    out = {"pairs": len(x)}

    def jax_run():
        r = cl.run(
            env,
            A.dpo(BETA),
            mu=mu,
            n_pairs=None,
            steps=steps,
            seeds=1,
            key=jax.random.key(0),
            learning_rate=learning_rate,
        )
        return r.logs["eval"][0, -1]

    c0 = compile_clock()[0]
    first = wall(jax_run)
    out["jax_compile"] = compile_clock()[0] - c0
    out["jax"], last = best_of(jax_run, 3, budget=budget, result=True)
    out["jax_first"] = first
    pi = {"jax": numpy_dpo.policy(last)}

    def numpy_run():
        return numpy_dpo.train(log_pi_ref, x, y_w, y_l, w, beta=BETA, steps=steps, learning_rate=learning_rate)

    out["numpy"], last = best_of(numpy_run, 2, budget=budget, result=True)
    pi["numpy"] = numpy_dpo.policy(last)
    if torch and torch_dpo.available():
        import torch as _torch

        out["torch_threads"] = _torch.get_num_threads()
        torch_dpo.train(log_pi_ref, x, y_w, y_l, w, beta=BETA, steps=5)  # first-call imports and allocations

        def torch_run(threads=1, steps=steps):
            return torch_dpo.train(
                log_pi_ref, x, y_w, y_l, w, beta=BETA, steps=steps, learning_rate=learning_rate, threads=threads
            )

        out["torch_1thread"], last = best_of(torch_run, 2, budget=budget, result=True)
        pi["torch"] = numpy_dpo.policy(last)
        short = min(steps, TORCH_DEFAULT_THREADS_STEPS)  # its default threads can be very slow under load
        out["torch"] = best_of(lambda: torch_run(None, short), 2, budget=budget) * steps / short
    for name, p in pi.items():
        out[f"tv_{name}"] = tv(p, optimum)
        if name != "jax":
            out[f"tv_{name}_jax"] = tv(p, pi["jax"])
    return out


def bench(sizes=((4, 16), (8, 128)), steps: int = 1000, torch: bool = True):
    rows = []
    if torch and not torch_dpo.available():
        rows.append(row(NAME, "PyTorch reference skipped: torch is not installed", np.nan, "-"))
    for n_prompts, n_responses in sizes:
        m = measure(n_prompts, n_responses, steps, torch=torch)
        tag = f"{n_prompts}x{n_responses} ({m['pairs']} pairs, {steps} steps)"
        rows += [
            row(NAME, f"{tag}: coverage_lab (JAX) run", m["jax"], "s"),
            row(NAME, f"{tag}: JAX compile / run", m["jax_compile"] / m["jax"], "x"),
            row(NAME, f"{tag}: NumPy reference run", m["numpy"], "s"),
            row(NAME, f"{tag}: NumPy / JAX time", m["numpy"] / m["jax"], "x"),
            row(NAME, f"{tag}: NumPy / (JAX compile + run)", m["numpy"] / m["jax_first"], "x"),
            row(NAME, f"{tag}: TV(JAX, optimum)", m["tv_jax"], "TV"),
            row(NAME, f"{tag}: TV(NumPy, optimum)", m["tv_numpy"], "TV"),
            row(NAME, f"{tag}: TV(NumPy, JAX)", m["tv_numpy_jax"], "TV"),
        ]
        if "torch" in m:
            short = min(steps, TORCH_DEFAULT_THREADS_STEPS)
            fastest = min(m["torch"], m["torch_1thread"])
            rows += [
                row(
                    NAME,
                    f"{tag}: PyTorch reference run ({m['torch_threads']} threads, torch's default; from {short} steps)",
                    m["torch"],
                    "s",
                ),
                row(NAME, f"{tag}: PyTorch reference run (1 thread)", m["torch_1thread"], "s"),
                row(NAME, f"{tag}: PyTorch (faster thread setting) / JAX time", fastest / m["jax"], "x"),
                row(NAME, f"{tag}: TV(PyTorch, optimum)", m["tv_torch"], "TV"),
                row(NAME, f"{tag}: TV(PyTorch, JAX)", m["tv_torch_jax"], "TV"),
            ]
    return rows

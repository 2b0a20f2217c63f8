"""The exact (population) DPO gradient against the number of responses ``|Y|``.

One prompt, ``Y`` responses, full-support ``mu``: ``data.exact_batch`` enumerates all ``Y^2`` ordered pairs
(ties included), and ``jax.grad`` of the library's DPO objective (``algorithms.dpo``, tabular softmax policy)
is timed after compilation. FLOPs are XLA's own count for the compiled gradient
(``compiled.cost_analysis()["flops"]``, transcendentals not included), bytes its ``"bytes accessed"``; the
achieved rates are compared with this machine's measured float32 matmul rate (``n x n`` ``jnp.dot``) and
memory read bandwidth (a sum over 128 MB). The time is fitted as ``c Y^p`` on the larger sizes.

For comparison the same loss is also written densely on the ``Y x Y`` weight table (no gathers, no
scatters): ``sum_ab W_ab softplus(-beta (d_a - d_b))``, differentiated by ``jax.grad``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage
from coverage_lab import data as D
from coverage_lab.policies import tabular_softmax

from ._timing import best_of, row

NAME = "exact_dpo_grad"
BETA = 0.1


def problem(n_responses: int):
    """A one-prompt bandit with ``n_responses`` responses, uniform ``mu`` (every ordered pair has weight)."""
    env = bandits.random_tabular(jax.random.key(n_responses), 1, n_responses)
    mu = np.full((1, n_responses), 1.0 / n_responses)
    return env, mu


def library_grad(env, mu):
    """``(grad_fn, params, batch)``: ``jax.grad`` of the library's exact DPO objective on the exact batch."""
    pref = bandits.preference_table(env.reward_XxY)
    batch = D.exact_batch(env.rho_X, coverage.pair_table(mu), pref)
    policy = tabular_softmax(env)
    params = policy.init(jax.random.key(0))
    objective = A.dpo(BETA).make(A.dpo(BETA), A.Context(policy, params, True), {"beta": jnp.float32(BETA)})
    return jax.jit(jax.grad(lambda p, b: objective(p, b, None)[0])), params, batch


def dense_grad(env, mu):
    """``(grad_fn, params, weight_XxYxY)``: the same loss on the dense table of pair weights."""
    w = D.pair_weights(env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))
    w = jnp.asarray(w, jnp.float32)  # sums to 1, as the exact batch's weights
    log_ref = jax.nn.log_softmax(jnp.log(jnp.asarray(env.pi_ref_XxY, jnp.float32)), -1)

    def loss(logits, w_XxYxY):
        d = jax.nn.log_softmax(logits, -1) - log_ref
        return jnp.sum(w_XxYxY * jax.nn.softplus(-BETA * (d[:, :, None] - d[:, None, :])))

    return jax.jit(jax.grad(loss)), log_ref, w


def measure(n_responses: int, repeat: int = 5) -> dict:
    """Seconds per gradient (library and dense), XLA's flops and bytes, and the two gradients' difference."""
    env, mu = problem(n_responses)
    grad, params, batch = library_grad(env, mu)
    cost = grad.lower(params, batch).compile().cost_analysis() or {}
    g = jax.block_until_ready(grad(params, batch))
    t = best_of(lambda: grad(params, batch), repeat, budget=2.0)
    dgrad, dparams, w = dense_grad(env, mu)
    gd = jax.block_until_ready(dgrad(dparams, w))
    td = best_of(lambda: dgrad(dparams, w), repeat, budget=2.0)
    return {
        "pairs": n_responses**2,
        "seconds": t,
        "dense_seconds": td,
        "flops": float(cost.get("flops", np.nan)),
        "bytes": float(cost.get("bytes accessed", np.nan)),
        "diff": float(jnp.max(jnp.abs(g - gd)) / (jnp.max(jnp.abs(g)) + 1e-30)),
    }


def fit_exponent(sizes, seconds, smallest: int = 256) -> float:
    """The slope ``p`` of ``log t = p log Y + c`` over the sizes ``>= smallest`` (all of them if fewer than 2)."""
    sizes, seconds = np.asarray(sizes, float), np.asarray(seconds, float)
    keep = sizes >= smallest if (sizes >= smallest).sum() >= 2 else np.ones(len(sizes), bool)
    return float(np.polyfit(np.log(sizes[keep]), np.log(seconds[keep]), 1)[0])


def bench(sizes=tuple(2**k for k in range(4, 12)), matmul_flops: float = np.nan, read_bytes: float = np.nan):
    """Rows per size (time, pairs/s, FLOP rate and bandwidth as fractions of the measured limits), the fitted
    exponents and the library/dense time ratio."""
    rows, times, dense = [], [], []
    for y in sizes:
        m = measure(y)
        times.append(m["seconds"])
        dense.append(m["dense_seconds"])
        flop_rate, byte_rate = m["flops"] / m["seconds"], m["bytes"] / m["seconds"]
        rows += [
            row(NAME, f"|Y|={y}: gradient time ({m['pairs']} pairs)", m["seconds"], "s"),
            row(NAME, f"|Y|={y}: XLA flops per pair", m["flops"] / m["pairs"], "flop"),
            row(NAME, f"|Y|={y}: FLOP rate / matmul rate", flop_rate / matmul_flops, "fraction"),
            row(NAME, f"|Y|={y}: bytes rate / read bandwidth", byte_rate / read_bytes, "fraction"),
            row(NAME, f"|Y|={y}: library (gather/scatter) / dense YxY time", m["seconds"] / m["dense_seconds"], "x"),
            row(NAME, f"|Y|={y}: max |grad - dense grad| / max |grad|", m["diff"], "rel"),
        ]
    rows.append(
        row(
            NAME, f"fitted exponent p in t ~ |Y|^p (|Y| >= {min(256, max(sizes))})", fit_exponent(sizes, times), "power"
        )
    )
    rows.append(
        row(NAME, f"dense: fitted exponent (|Y| >= {min(256, max(sizes))})", fit_exponent(sizes, dense), "power")
    )
    return rows

"""Timing helpers shared by the benchmarks: best-of wall time, JAX's compile-time events, the matmul rate.

Every benchmark returns rows ``{"benchmark", "quantity", "value", "unit"}``; ratios are taken between numbers
measured in the same process, minutes apart, because this machine is shared and noisy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import monitoring

# JAX reports the stages of every compilation as duration events (jax/_src/dispatch.py). Tracing events nest
# (tracing an outer jit traces the inner ones inside it) and XLA compilations may run in parallel threads (the
# transformer experiments compile three programs at once), so "compile" below is the wall time covered by XLA
# backend compilations: the union of their intervals, neither nested nor double-counted.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_intervals: list[tuple[float, float]] = []  # (start, end) of each finished XLA compilation, epoch seconds
_lowering = {"count": 0, "last_epoch": None}
_on_compile: list = []  # callbacks, called after each lowering or XLA compilation event


def _on_event(name: str, seconds: float, **kwargs) -> None:
    if name == BACKEND_COMPILE_EVENT:
        now = time.time()
        _intervals.append((now - seconds, now))
    elif name == LOWERING_EVENT:
        _lowering["count"] += 1
        _lowering["last_epoch"] = time.time()
    else:
        return
    for callback in _on_compile:
        callback()


monitoring.register_event_duration_secs_listener(_on_event)


def union(intervals) -> float:
    """The length of the union of ``(start, end)`` intervals."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def compile_clock() -> tuple[float, int]:
    """Wall seconds covered by XLA compilations, and their number, so far in this process."""
    return union(_intervals), len(_intervals)


def compile_status() -> dict:
    """The finished XLA compilations' intervals (epoch seconds), the lowerings so far and the epoch time of the
    last one: more lowerings than compilations means a compilation is in progress (since about then)."""
    return {"intervals": list(_intervals), "lowered": _lowering["count"], "last_lowered": _lowering["last_epoch"]}


def row(benchmark: str, quantity: str, value: float, unit: str) -> dict:
    return {"benchmark": benchmark, "quantity": quantity, "value": float(value), "unit": unit}


def _timed(fn: Callable[[], object]):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def wall(fn: Callable[[], object]) -> float:
    """Wall time of one call, waiting for JAX's asynchronous results."""
    return _timed(fn)[0]


def best_of(fn: Callable[[], object], repeat: int = 3, budget: float | None = None, result: bool = False):
    """The fastest of ``repeat`` calls (the least disturbed by other load); stops early once ``budget``
    seconds are spent, after at least one call. With ``result``: ``(seconds, what the last call returned)``."""
    best, spent, out = float("inf"), 0.0, None
    for _ in range(repeat):
        t, out = _timed(fn)
        best, spent = min(best, t), spent + t
        if budget is not None and spent > budget:
            break
    return (best, out) if result else best


def matmul_rate(n: int = 1024, repeat: int = 10) -> float:
    """This machine's measured float32 matmul rate (FLOP/s): ``2 n^3`` over the fastest ``n x n`` ``jnp.dot``."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    return 2.0 * n**3 / best_of(lambda: dot(a, b), repeat)


def read_rate(n_bytes: int = 1 << 27, repeat: int = 5) -> float:
    """This machine's measured memory read bandwidth (bytes/s): the fastest sum of a float32 array of ``n_bytes``
    (larger than the caches; a sum allocates nothing, so page faults do not count)."""
    a = jnp.ones(n_bytes // 4, jnp.float32)
    total = jax.jit(jnp.sum)
    jax.block_until_ready(total(a))
    return n_bytes / best_of(lambda: total(a), repeat)

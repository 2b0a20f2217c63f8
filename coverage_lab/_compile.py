"""``jit`` with this project's XLA compiler options, chosen by the backend a call runs on; ``shard_rows``, a
compiled run's rows spread over the visible devices.

On the CPU, compiling dominates a run of the experiments (the transformer track's programs take 15-40 s each
to compile on this project's 2-core machine), and XLA's default backend optimisation level buys nothing at
these sizes: level 1 compiled the ``medium`` transformer's DPO program 23% faster (19.2 s -> 14.8 s) and ran it
as fast (6.8 s vs 6.6 s), and the seven bandit experiments took 68 s instead of 75 s (measured 2026-11-29).
Other backends keep XLA's defaults. ``fast_compile`` turns the backend optimisations off everywhere (level 0:
about half the compile time, about 3x the run time; for the toy sizes the tests use).

XLA's CPU backend also hands fused subgraphs (elementwise chains, reductions, products) to YNNPACK. On the
tabular programs' arrays (tens to thousands of entries) each such call costs more than its work: with
:data:`OWN_LOOPS` (YNNPACK for single matrix products only, XLA's own loops for the rest) the benchmark's 64-seed
vmapped HyPO step took 200-245 us instead of 265-290 (measured 2026-11-29). The transformer's activations are large
enough for YNNPACK to win (its HyPO program ran 7.9 s instead of 8.2 and compiled in 6.9 s instead of 8.4), so
its programs ask for ``library_fusions``. Where the installed XLA lacks the option, it is left out.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

CPU_OPTIONS = {"xla_backend_optimization_level": 1}
FAST_OPTIONS = {"xla_backend_optimization_level": 0}
OWN_LOOPS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.cache
def _supported(options: tuple) -> bool:
    """Whether this XLA accepts the compiler ``options`` (an experimental flag may be renamed or dropped)."""
    try:
        jax.jit(lambda x: x, compiler_options=dict(options)).lower(0.0).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


def cpu_options(fast_compile: bool = False, library_fusions: bool = False) -> dict:
    """The compiler options of a CPU program: :data:`FAST_OPTIONS` or :data:`CPU_OPTIONS`, plus :data:`OWN_LOOPS`
    unless ``library_fusions`` (where this XLA supports it)."""
    options = dict(FAST_OPTIONS if fast_compile else CPU_OPTIONS)
    if not library_fusions and _supported(tuple(OWN_LOOPS.items())):
        options |= OWN_LOOPS
    return options


class _Jit:
    """``jax.jit(fun, **kwargs)`` per backend, built on first use there; attributes (``lower``, ...) forward to it.

    Called inside another traced function, it is a plain ``jax.jit`` (JAX takes compiler options at the top level
    only; the outer program's apply)."""

    def __init__(self, fun, fast_compile: bool, library_fusions: bool, kwargs: dict):
        self._fun, self._kwargs, self._by_backend = fun, kwargs, {}
        self._fast, self._library = fast_compile, library_fusions
        functools.update_wrapper(self, fun)

    def _jitted(self, nested: bool = False):
        backend = "nested" if nested else jax.default_backend()
        if backend not in self._by_backend:
            if nested:
                options = None
            elif backend == "cpu":
                options = cpu_options(self._fast, self._library)
            else:
                options = FAST_OPTIONS if self._fast else None
            self._by_backend[backend] = jax.jit(self._fun, compiler_options=options, **self._kwargs)
        return self._by_backend[backend]

    def __call__(self, *args, **kwargs):
        nested = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((args, kwargs)))
        return self._jitted(nested)(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._jitted(), name)


def jit(fun=None, *, fast_compile: bool = False, library_fusions: bool = False, **kwargs):
    """``jax.jit(fun, **kwargs)`` with :func:`cpu_options` on the CPU (:data:`FAST_OPTIONS` elsewhere with
    ``fast_compile``); usable as a decorator, bare or with keyword arguments. ``library_fusions``: keep XLA's
    YNNPACK fusions on the CPU (for programs on large arrays, the transformer's; see the module docstring)."""
    if fun is None:
        return functools.partial(jit, fast_compile=fast_compile, library_fusions=library_fusions, **kwargs)
    return _Jit(fun, bool(fast_compile), bool(library_fusions), kwargs)


def shard_rows(*trees):
    """Spread the leading (row: seed, or sweep value and seed) axis of every array in ``trees`` over every visible
    device (``jax.sharding``, one mesh axis ``seeds``); the compiled run follows the sharding.

    With ``n`` devices the rows are padded to a multiple of ``n`` with copies of the first ones (the caller
    drops their results). One device: the arrays unchanged. On a CPU,
    ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (set before JAX starts) gives two devices. Returns the
    trees (one tree: that tree).
    """
    devices = jax.devices()
    if len(devices) > 1:
        sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(devices), ("seeds",)), P("seeds"))

        def put(a):
            pad = (-a.shape[0]) % len(devices)
            return jax.device_put(jnp.concatenate([a, a[:pad]]) if pad else a, sharding)

        trees = jax.tree.map(put, trees)
    return trees[0] if len(trees) == 1 else trees

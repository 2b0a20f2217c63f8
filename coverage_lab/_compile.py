"""``jit`` with this project's XLA compiler options, chosen by the backend a call runs on.

On the CPU, compiling dominates a run of the experiments (the transformer track's programs take 15-40 s each
to compile on this project's 2-core machine), and XLA's default backend optimisation level buys nothing at
these sizes: level 1 compiled the ``medium`` transformer's DPO program 23% faster (19.2 s -> 14.8 s) and ran it
as fast (6.8 s vs 6.6 s), and the seven bandit experiments took 68 s instead of 75 s (measured 2026-11-29).
Other backends keep XLA's defaults. ``fast_compile`` turns the backend optimisations off everywhere (level 0:
about half the compile time, about 3x the run time; for the toy sizes the tests use).
"""

from __future__ import annotations

import functools

import jax

CPU_OPTIONS = {"xla_backend_optimization_level": 1}
FAST_OPTIONS = {"xla_backend_optimization_level": 0}


class _Jit:
    """``jax.jit(fun, **kwargs)`` per backend, built on first use there; attributes (``lower``, ...) forward to it.

    Called inside another traced function, it is a plain ``jax.jit`` (JAX takes compiler options at the top level
    only; the outer program's apply)."""

    def __init__(self, fun, fast_compile: bool, kwargs: dict):
        self._fun, self._fast, self._kwargs, self._by_backend = fun, fast_compile, kwargs, {}
        functools.update_wrapper(self, fun)

    def _jitted(self, nested: bool = False):
        backend = "nested" if nested else jax.default_backend()
        if backend not in self._by_backend:
            options = None if nested else FAST_OPTIONS if self._fast else CPU_OPTIONS if backend == "cpu" else None
            self._by_backend[backend] = jax.jit(self._fun, compiler_options=options, **self._kwargs)
        return self._by_backend[backend]

    def __call__(self, *args, **kwargs):
        nested = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((args, kwargs)))
        return self._jitted(nested)(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._jitted(), name)


def jit(fun=None, *, fast_compile: bool = False, **kwargs):
    """``jax.jit(fun, **kwargs)`` with :data:`CPU_OPTIONS` on the CPU (:data:`FAST_OPTIONS` with ``fast_compile``);
    usable as a decorator, bare or with keyword arguments."""
    if fun is None:
        return functools.partial(jit, fast_compile=fast_compile, **kwargs)
    return _Jit(fun, bool(fast_compile), kwargs)

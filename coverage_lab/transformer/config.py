"""``Config``: the shape of the transformer of :mod:`coverage_lab.transformer.model` (imported from there as
``model.Config``), validated on construction; and the model's input checks (a leaf, like the model: its own
checks, not ``coverage_lab._validate``'s)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Config:
    """Shape of the transformer (hashable: a static argument of compiled code).

    Attributes:
      vocab_size: input vocabulary size ``V``.
      max_len: longest sequence ``T`` the position embeddings cover.
      out_size: number of output logits ``O`` (default ``vocab_size``).
      d_model, n_layers, n_heads: width, depth and attention heads (``d_model % n_heads == 0``).
      d_ff: hidden width of the MLP (default ``4 * d_model``).
      remat: recompute each layer's activations in the backward pass (``jax.checkpoint`` on the layer, whose
        loop then stays rolled) instead of keeping them: the gradient's memory then holds one layer's activations
        and every layer's input, for about one more forward pass of compute. The values are equal up to float
        rounding; the ``gpu`` size needs it (HyPO's step at batch 128 asked for 114 GiB without it on an H200,
        2026-11-30).
    """

    vocab_size: int
    max_len: int
    out_size: int = 0
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int = 0
    remat: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "d_model", "n_layers", "n_heads"):
            positive_int(name, getattr(self, name))
        for name in ("out_size", "d_ff"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer (0: default), got {v!r}")
        if not isinstance(self.remat, bool):
            raise ValueError(f"remat must be a bool, got {self.remat!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.out_size == 0:
            object.__setattr__(self, "out_size", self.vocab_size)
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def positive_int(name, v):
    """Checks a Python or numpy integer >= 1."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def check_config(config):
    """Checks that ``config`` is a :class:`Config`."""
    if not isinstance(config, Config):
        raise ValueError(f"config must be a transformer.model.Config, got {type(config).__name__}")


def check_key(key):
    """Checks a single PRNG key: typed (``jax.random.key``) or raw (``jax.random.PRNGKey``)."""
    typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
    if not (typed or (isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,))):
        raise ValueError(f"key must be a single JAX PRNG key such as jax.random.key(0), got {key!r}")


def check_temperature(temperature):
    """Checks a sampling temperature: a finite number > 0 whose inverse is finite in float32 (tracers pass)."""
    if isinstance(temperature, jax.core.Tracer):
        return
    if isinstance(temperature, (bool, str)) or np.ndim(temperature) != 0 or not 0 < float(temperature) < np.inf:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    with np.errstate(over="ignore", divide="ignore"):
        if not np.isfinite(np.float32(1.0) / np.float32(temperature)):
            raise ValueError(f"temperature ({temperature:g}) is too small: 1/temperature overflows float32")


def check_tokens(name, tokens, config, max_len):
    """``tokens`` as a JAX integer array (B, T), ``1 <= T <= max_len``, values (when concrete) in the vocabulary."""
    try:
        tokens = jnp.asarray(tokens)
    except TypeError as err:
        raise ValueError(f"{name} must be an integer array of shape (B, T), got {type(tokens).__name__}") from err
    if not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim != 2:
        raise ValueError(f"{name} must be an integer array of shape (B, T), got {tokens.dtype} {tokens.shape}")
    if not 1 <= tokens.shape[1] <= max_len:
        raise ValueError(f"{name} has length {tokens.shape[1]}, outside [1, {max_len}] (config.max_len)")
    if not isinstance(tokens, jax.core.Tracer) and tokens.size:
        t = jax.device_get(tokens)  # a host array: a jnp reduction inside a trace would be staged, not evaluated
        if not 0 <= t.min() <= t.max() < config.vocab_size:
            raise ValueError(f"{name} must hold tokens in [0, {config.vocab_size}) (config.vocab_size)")
    return tokens

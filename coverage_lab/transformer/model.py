"""A small decoder-only transformer in plain JAX: parameters as a pytree, ``init``, ``apply`` and a KV-cache sampler.

Pre-LayerNorm blocks (GPT-2 / nanoGPT), learned token and position embeddings, causal multi-head
self-attention, a GELU MLP, and an untied output projection to ``out_size`` logits (the input vocabulary may
be larger than the output one: prompt tokens are read, never written). The blocks' parameters are stacked
on a leading layer axis and run with ``lax.scan``, so compile time does not grow with depth.

A leaf module: it imports only JAX and its ``Config`` (DESIGN.md, the layering test).

References: Radford et al. Language Models are Unsupervised Multitask Learners (GPT-2), 2019;
Karpathy, nanoGPT.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from coverage_lab.transformer.config import (
    Config,
    check_config,
    check_key,
    check_temperature,
    check_tokens,
    positive_int,
)


@functools.lru_cache(maxsize=64)
def _param_shapes(config: Config):
    return jax.eval_shape(functools.partial(init, config=config), jax.random.key(0))


def check_params(params, config: Config, name: str = "params") -> None:
    """Checks that ``params`` is a parameter pytree of ``config``'s model (the structure and every leaf's shape;
    shapes are static, so this holds inside ``jit`` too): parameters of another configuration would otherwise run,
    reading clamped embeddings or returning logits over another vocabulary."""
    check_config(config)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    expected, expected_def = jax.tree_util.tree_flatten(_param_shapes(config))
    if treedef != expected_def:
        raise ValueError(f"{name} must be a parameter pytree of this config's model (transformer.model.init)")
    for (path, leaf), spec in zip(leaves, expected, strict=True):
        if np.shape(leaf) != spec.shape:
            where = jax.tree_util.keystr(path)
            raise ValueError(f"{name}{where} has shape {np.shape(leaf)}; this config's model needs {spec.shape}")


def _check_finite_params(params, name: str = "params") -> None:
    """Concrete leaves only (inside a trace the values are staged): a NaN or inf weight makes every logit NaN, and
    ``jax.random.categorical`` turns NaN logits into valid-looking tokens instead of failing."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    concrete = [(path, leaf) for path, leaf in leaves if not isinstance(leaf, jax.core.Tracer)]
    with jax.ensure_compile_time_eval():  # a concrete array closed over by a jitted function: checked at trace time
        finite = jax.device_get([jnp.isfinite(leaf).all() for _, leaf in concrete])  # one flag a leaf to the host
    for (path, _), ok in zip(concrete, finite, strict=True):
        if not ok:
            raise ValueError(f"{name}{jax.tree_util.keystr(path)} contains NaN or inf")


def init(key, config: Config) -> dict:
    """Random parameters (GPT-2 initialisation: normal(0.02), residual projections scaled by ``1/sqrt(2 n_layers)``).

    Returns a dict pytree: ``tok_emb`` (V, D), ``pos_emb`` (T, D), ``blocks`` (each leaf with a leading layer
    axis N), ``ln_f_*`` (D,), ``w_out`` (D, O), ``b_out`` (O,).
    """
    check_config(config)
    check_key(key)
    c = config
    n, d, f = c.n_layers, c.d_model, c.d_ff
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * n)
    k = jax.random.split(key, 7)

    def normal(k, shape, s):
        return s * jax.random.normal(k, shape, jnp.float32)

    zeros, ones = (lambda *s: jnp.zeros(s, jnp.float32)), (lambda *s: jnp.ones(s, jnp.float32))
    return {
        "tok_emb": normal(k[0], (c.vocab_size, d), std),
        "pos_emb": normal(k[1], (c.max_len, d), std),
        "blocks": {
            "ln1_scale": ones(n, d),
            "ln1_bias": zeros(n, d),
            "w_qkv": normal(k[2], (n, d, 3 * d), std),
            "b_qkv": zeros(n, 3 * d),
            "w_o": normal(k[3], (n, d, d), proj_std),
            "b_o": zeros(n, d),
            "ln2_scale": ones(n, d),
            "ln2_bias": zeros(n, d),
            "w_fc": normal(k[4], (n, d, f), std),
            "b_fc": zeros(n, f),
            "w_proj": normal(k[5], (n, f, d), proj_std),
            "b_proj": zeros(n, d),
        },
        "ln_f_scale": ones(d),
        "ln_f_bias": zeros(d),
        "w_out": normal(k[6], (d, c.out_size), std),
        "b_out": zeros(c.out_size),
    }


UNROLL_UP_TO = 8  # loops over layers or tokens this short are unrolled


def _unroll(n: int) -> bool:
    """Unroll a ``lax.scan`` of ``n`` iterations when ``n <= UNROLL_UP_TO``. On the CPU sizes (2 layers, 6 response
    tokens) a rolled loop's per-iteration overhead and its stacked residuals (dynamic slices and updates) cost
    more than the work: unrolled, a HyPO run at ``medium`` took 23 s instead of 38 s, and 23 s instead of 17 s to
    compile (measured 2026-11-29).
    Deep models and long responses keep the loop, which bounds their compile time."""
    return n <= UNROLL_UP_TO


def _lift(v, ndim):
    """``v`` (D,) reshaped to broadcast against an array of rank ``ndim`` without implicit rank promotion."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


LN_EPS = 1e-5


def _standardise_parts(x):
    centred = x - x.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt((centred * centred).mean(-1, keepdims=True) + LN_EPS)
    return centred * rstd, rstd


@jax.custom_vjp
def _standardise(x):
    """``(x - mean) / sqrt(var + eps)`` over the last axis, with its gradient written out:
    ``rstd (g - mean(g) - x_hat mean(g x_hat))`` from the saved ``x_hat`` and ``rstd``. Autodiff's own backward
    pass gave XLA a chain it fused into each consumer and recomputed (two fusions of 1.5 and 0.8 ms a step of
    ``medium``'s HyPO); written out, HyPO's and DPO's ``medium`` steps ran 13-18% faster (2026-11-30)."""
    return _standardise_parts(x)[0]


def _standardise_fwd(x):
    x_hat, rstd = _standardise_parts(x)
    return x_hat, (x_hat, rstd)


def _standardise_bwd(saved, g):
    x_hat, rstd = saved
    return (rstd * (g - g.mean(-1, keepdims=True) - x_hat * (g * x_hat).mean(-1, keepdims=True)),)


_standardise.defvjp(_standardise_fwd, _standardise_bwd)


def _layer_norm(x, scale, bias):
    return _standardise(x) * _lift(scale, x.ndim) + _lift(bias, x.ndim)


def _dense(x, w, b):
    return x @ w + _lift(b, x.ndim)


def _mlp(x, p):
    h = _layer_norm(x, p["ln2_scale"], p["ln2_bias"])
    return x + _dense(jax.nn.gelu(_dense(h, p["w_fc"], p["b_fc"])), p["w_proj"], p["b_proj"])


def _qkv(x, p, config):
    h = _layer_norm(x, p["ln1_scale"], p["ln1_bias"])
    qkv = _dense(h, p["w_qkv"], p["b_qkv"])
    qkv = qkv.reshape(*x.shape[:-1], 3, config.n_heads, config.head_dim)
    return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]


def _attend(q, k, v, mask, config):
    """``q`` (B, Q, H, Dh) against ``k, v`` (B, K, H, Dh); ``mask`` (Q, K) True where attention is allowed."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(config.head_dim)
    scores = jnp.where(mask[None, None], scores, jnp.finfo(scores.dtype).min)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    return out.reshape(*out.shape[:2], config.d_model)


def _embed(params, tokens_BxT, start):
    t = tokens_BxT.shape[1]
    pos = jax.lax.dynamic_slice_in_dim(params["pos_emb"], start, t)
    return params["tok_emb"][tokens_BxT] + pos[None]


def _head(params, x):
    return _dense(_layer_norm(x, params["ln_f_scale"], params["ln_f_bias"]), params["w_out"], params["b_out"])


def _forward(params, tokens_BxT, config):
    """Full causal forward; returns the logits (B, T, O) and every layer's keys and values (N, B, T, H, Dh)."""
    t = tokens_BxT.shape[1]
    mask = jnp.tril(jnp.ones((t, t), bool))

    def block(x, p):
        q, k, v = _qkv(x, p, config)
        x = x + _dense(_attend(q, k, v, mask, config), p["w_o"], p["b_o"])
        return _mlp(x, p), (k, v)

    if config.remat:  # an unrolled loop would let XLA keep every layer's activations anyway
        block = jax.checkpoint(block)
    unroll = _unroll(config.n_layers) and not config.remat
    x, kv = jax.lax.scan(block, _embed(params, tokens_BxT, 0), params["blocks"], unroll=unroll)
    return _head(params, x), kv


def apply(params, tokens_BxT, config: Config):
    """Logits ``(B, T, out_size)``: position ``t`` sees tokens ``0..t`` only (causal attention).

    ``tokens_BxT``: integer tokens in ``[0, vocab_size)``, ``1 <= T <= max_len``. Concrete parameters must be
    finite (inside a trace they are not checked: the training loop's steps pay nothing).
    """
    check_params(params, config)
    _check_finite_params(params)
    tokens_BxT = check_tokens("tokens_BxT", tokens_BxT, config, config.max_len)
    return _forward(params, tokens_BxT, config)[0]


def _decode_step(params, cache, tok_B, pos, config):
    """One token at position ``pos`` through every layer with the KV cache (N, B, T, H, Dh); logits (B, O). The
    cache is carried whole and written one (layer, position) slice at a time, in place."""
    pos, zero = jnp.asarray(pos, jnp.int32), jnp.int32(0)  # int32 indices also under jax_enable_x64
    x = _embed(params, tok_B[:, None], pos)  # (B, 1, D)
    mask = (jnp.arange(cache[0].shape[2]) <= pos)[None]  # (1, T)

    def block(carry, p):
        x, k_cache, v_cache, layer = carry
        q, k, v = _qkv(x, p, config)
        at = (layer, zero, pos, zero, zero)
        k_cache = jax.lax.dynamic_update_slice(k_cache, k[None], at)
        v_cache = jax.lax.dynamic_update_slice(v_cache, v[None], at)
        k_l, v_l = (jax.lax.dynamic_index_in_dim(c, layer, keepdims=False) for c in (k_cache, v_cache))
        x = x + _dense(_attend(q, k_l, v_l, mask, config), p["w_o"], p["b_o"])
        return (_mlp(x, p), k_cache, v_cache, layer + 1), None

    carry = (x, *cache, zero)
    (x, *cache, _), _ = jax.lax.scan(block, carry, params["blocks"], unroll=_unroll(config.n_layers))
    return _head(params, x)[:, 0], tuple(cache)


def sample(params, key, prompt_BxP, config: Config, *, length: int, temperature: float = 1.0):
    """``length`` tokens after each prompt, drawn autoregressively from ``softmax(logits / temperature)``.

    Runs the prompt once (prefill), then one cached step per token (``lax.scan``); jit-able with ``length``
    static. Returns integer tokens ``(B, length)`` in ``[0, out_size)``; ``P + length <= max_len`` and the
    output vocabulary must be a prefix of the input one (``out_size <= vocab_size``) so sampled tokens can be
    fed back. ``temperature > 0`` (1: the model's own distribution).
    """
    check_params(params, config)
    _check_finite_params(params)
    check_key(key)
    positive_int("length", length)
    check_temperature(temperature)
    if config.out_size > config.vocab_size:
        raise ValueError("sample needs out_size <= vocab_size (sampled tokens are fed back as inputs)")
    prompt_BxP = check_tokens("prompt_BxP", prompt_BxP, config, config.max_len - length)
    b, p = prompt_BxP.shape
    total = p + length
    logits, (k, v) = _forward(params, prompt_BxP, config)
    pad = ((0, 0), (0, 0), (0, total - p), (0, 0), (0, 0))
    cache = (jnp.pad(k, pad), jnp.pad(v, pad))
    keys = jax.random.split(key, length)
    first = jax.random.categorical(keys[0], logits[:, -1] / temperature).astype(jnp.int32)

    def step(carry, inputs):
        cache, tok = carry
        pos, k_step = inputs
        logits, cache = _decode_step(params, cache, tok, pos, config)
        nxt = jax.random.categorical(k_step, logits / temperature).astype(jnp.int32)
        return (cache, nxt), nxt

    _, rest = jax.lax.scan(step, (cache, first), (p + jnp.arange(length - 1), keys[1:]), unroll=_unroll(length - 1))
    return jnp.concatenate([first[:, None], rest.T], axis=1)


def n_params(params) -> int:
    """Number of scalar parameters in a pytree of arrays."""
    leaves = jax.tree.leaves(params)
    if not all(hasattr(x, "size") and hasattr(x, "dtype") for x in leaves):
        raise ValueError(f"params must be a pytree of arrays, got {type(params).__name__}")
    return sum(int(x.size) for x in leaves)

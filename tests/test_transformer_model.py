"""The transformer leaf: shapes, validation, causality, and the KV-cache sampler against the full forward."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coverage_lab._compile import jit
from coverage_lab.transformer import model as M

# compiled without XLA's backend optimisations, as the toy size's runs are (sizes.Size.fast_compile)
fast_jit = functools.partial(jit, fast_compile=True)

CFG = M.Config(vocab_size=10, max_len=8, out_size=6, d_model=16, n_layers=2, n_heads=2)
init = fast_jit(M.init, static_argnames="config")
apply = fast_jit(M.apply, static_argnames="config")


@pytest.fixture(scope="module")
def params():
    return init(jax.random.key(0), CFG)


def test_shapes_and_defaults(params):
    assert params["tok_emb"].shape == (10, 16) and params["pos_emb"].shape == (8, 16)
    assert params["blocks"]["w_qkv"].shape == (2, 16, 48) and params["w_out"].shape == (16, 6)
    assert M.Config(5, 4).out_size == 5 and M.Config(5, 4, d_model=8).d_ff == 32
    logits = apply(params, jnp.zeros((3, 5), jnp.int32), CFG)
    assert logits.shape == (3, 5, 6) and logits.dtype == jnp.float32
    assert M.n_params(params) == sum(x.size for x in jax.tree.leaves(params))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(vocab_size=0, max_len=4), "vocab_size"),
        (dict(vocab_size=4, max_len=4, d_model=6, n_heads=4), "d_model"),
        (dict(vocab_size=4, max_len=4, n_layers=1.5), "n_layers"),
        (dict(vocab_size=4, max_len=4, out_size=-1), "out_size"),
        (dict(vocab_size=4, max_len=4, remat=1), "remat"),
    ],
)
def test_config_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        M.Config(**kwargs)


def test_input_validation(params):
    with pytest.raises(ValueError, match="tokens_BxT"):
        M.apply(params, jnp.zeros((2, 9), jnp.int32), CFG)  # longer than max_len
    with pytest.raises(ValueError, match="tokens_BxT"):
        M.apply(params, jnp.zeros((2, 3)), CFG)  # not integers
    with pytest.raises(ValueError, match="config"):
        M.apply(params, jnp.zeros((2, 3), jnp.int32), {"d_model": 16})
    with pytest.raises(ValueError, match="temperature"):
        M.sample(params, jax.random.key(0), jnp.zeros((2, 2), jnp.int32), CFG, length=3, temperature=0.0)
    with pytest.raises(ValueError, match="prompt_BxP"):
        M.sample(params, jax.random.key(0), jnp.zeros((2, 6), jnp.int32), CFG, length=3)


@given(st.integers(0, 2**31 - 1), st.integers(0, 6))
def test_causality_later_tokens_do_not_change_earlier_logits(seed, t):
    params = init(jax.random.key(seed % 3), CFG)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 10, (3, 8))
    changed = tokens.copy()
    changed[:, t + 1 :] = rng.integers(0, 10, (3, 7 - t))
    a, b = apply(params, jnp.asarray(tokens), CFG), apply(params, jnp.asarray(changed), CFG)
    np.testing.assert_array_equal(a[:, : t + 1], b[:, : t + 1])


def test_causality_gradient_on_later_positions_is_exactly_zero(params):
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, 10)

    def logits_at(p, onehot_T):  # the logits at the one position selected by onehot_T
        return jnp.sum(M.apply(p, tokens, CFG) * onehot_T[None, :, None])

    grads = fast_jit(jax.vmap(jax.grad(logits_at), in_axes=(None, 0)))(params, jnp.eye(8))
    g = np.asarray(grads["pos_emb"])  # (position t, position s, D): d logits_t / d pos_emb_s
    for t in range(8):
        assert np.all(g[t, t + 1 :] == 0.0), t
        assert np.any(g[t, : t + 1] != 0.0), t


def test_cached_decoding_matches_the_full_forward(params):
    prompt = jnp.array([[7, 8], [9, 6], [6, 6]], jnp.int32)
    y = fast_jit(M.sample, static_argnames=("config", "length"))(params, jax.random.key(3), prompt, CFG, length=5)
    assert y.shape == (3, 5) and y.dtype == jnp.int32 and int(y.min()) >= 0 and int(y.max()) < 6
    full = apply(params, jnp.concatenate([prompt, y], 1), CFG)
    logits, (k, v) = fast_jit(M._forward, static_argnums=2)(params, prompt, CFG)
    pad = ((0, 0), (0, 0), (0, 5), (0, 0), (0, 0))
    cache = (jnp.pad(k, pad), jnp.pad(v, pad))
    np.testing.assert_allclose(logits[:, -1], full[:, 1], atol=1e-5)
    decode = fast_jit(M._decode_step, static_argnums=4)
    for i in range(4):
        step_logits, cache = decode(params, cache, y[:, i], 2 + i, CFG)
        np.testing.assert_allclose(step_logits, full[:, 2 + i], atol=1e-5)
    with jax.enable_x64(True):  # 64-bit default integers: the cache's indices must still agree in type
        y64 = M.sample(params, jax.random.key(3), prompt, CFG, length=5)
    np.testing.assert_array_equal(y64, y)


def test_sampling_is_jittable_and_low_temperature_is_greedy(params):
    prompt = jnp.array([[7, 8]] * 64, jnp.int32)
    fn = fast_jit(lambda p, k, temp: M.sample(p, k, prompt, CFG, length=1, temperature=temp))
    cold = np.asarray(fn(params, jax.random.key(0), 1e-4))
    greedy = int(jnp.argmax(apply(params, prompt[:1], CFG)[0, -1]))
    assert (cold == greedy).all()
    warm = np.asarray(fn(params, jax.random.key(0), 1.0))
    assert len(np.unique(warm)) > 1


def test_unrolled_and_rolled_loops_compute_the_same(params, monkeypatch):
    """Short layer and token loops are unrolled (``UNROLL_UP_TO``); the rolled loop gives the same logits and,
    from the same key, the same samples."""
    prompt = jnp.array([[7, 8], [9, 6], [6, 6]], jnp.int32)
    tokens = jnp.array([[7, 8, 1, 2, 3], [9, 6, 0, 0, 5], [6, 6, 4, 1, 2]], jnp.int32)

    def outputs():  # fresh jits: the unroll choice is made at trace time
        logits = fast_jit(M.apply, static_argnames="config")(params, tokens, CFG)
        y = fast_jit(M.sample, static_argnames=("config", "length"))(params, jax.random.key(5), prompt, CFG, length=5)
        return np.asarray(logits), np.asarray(y)

    assert M._unroll(CFG.n_layers) and M._unroll(4)
    unrolled = outputs()
    monkeypatch.setattr(M, "UNROLL_UP_TO", 0)
    assert not M._unroll(CFG.n_layers)
    rolled = outputs()
    np.testing.assert_allclose(unrolled[0], rolled[0], atol=1e-5)
    np.testing.assert_array_equal(unrolled[1], rolled[1])


def test_remat_same_gradient_less_memory():
    """``Config.remat``: the loss and its gradient are those without it (to rounding), and the compiled gradient
    keeps less scratch memory, by XLA's own account of the program, also at a depth whose loop is otherwise
    unrolled (unrolled, XLA would keep every layer's activations anyway)."""
    deep = M.Config(vocab_size=10, max_len=16, d_model=16, n_layers=4, n_heads=2)
    assert M._unroll(deep.n_layers)
    tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, 10)

    def loss(params, config):
        return jax.nn.log_softmax(M.apply(params, tokens, config)).mean()

    params = init(jax.random.key(2), deep)
    values, temps = [], []
    for config in (deep, dataclasses.replace(deep, remat=True)):
        grad = fast_jit(jax.value_and_grad(loss), static_argnames="config").lower(params, config).compile()
        values.append(grad(params))
        temps.append(grad.memory_analysis().temp_size_in_bytes)
    np.testing.assert_allclose(values[0][0], values[1][0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(values[0][1]), jax.tree.leaves(values[1][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert temps[1] < 0.7 * temps[0], temps


@given(st.integers(0, 2**31 - 1), st.floats(0.01, 100.0), st.floats(-10.0, 10.0))
def test_layer_norm_gradient_written_out_is_autodiffs(seed, spread, shift):
    """The layer norm's hand-written backward pass (``_standardise``) equals autodiff of the plain formula, for
    the input, scale and bias, under vmap, at small and large spreads and offsets (up to 10 spreads: further
    out, float32's cancellation in ``x - mean`` separates any two formulas); the forward is unchanged."""
    offset = shift * spread

    def plain(x, scale, bias):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + M.LN_EPS) * M._lift(scale, x.ndim) + M._lift(bias, x.ndim)

    k = jax.random.split(jax.random.key(seed), 4)
    x = offset + spread * jax.random.normal(k[0], (2, 3, 8))
    scale, bias, w = jax.random.normal(k[1], (8,)), jax.random.normal(k[2], (8,)), jax.random.normal(k[3], (2, 3, 8))

    def loss(fn):
        return lambda x, s, b: jnp.sum(jnp.tanh(jax.vmap(fn, in_axes=(0, None, None))(x, s, b)) * w)

    np.testing.assert_allclose(M._layer_norm(x, scale, bias), plain(x, scale, bias), rtol=1e-6, atol=1e-6)
    got = jax.grad(loss(M._layer_norm), (0, 1, 2))(x, scale, bias)
    want = jax.grad(loss(plain), (0, 1, 2))(x, scale, bias)
    for g, h in zip(got, want, strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-5 * float(jnp.abs(h).max()) + 1e-7)

"""The shared sampler (inverse CDF, rows of a table) and the project's ``jit`` (compiler options by backend)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from coverage_lab import _compile, jit
from coverage_lab._sampling import (
    SHORT_ROW,
    UNROLLED_SUM,
    _is_threefry,
    _running_sum,
    bits,
    categorical,
    fold_in,
    uniform,
)


@pytest.mark.parametrize("n", [16, 100])  # a comparison against every entry below 64, a binary search above
def test_categorical_rows_draw_each_row_of_the_table(n):
    """Drawing for ``rows`` of a table is drawing from the gathered rows, draw for draw; and the draws follow the
    table (chi-square, failure probability 1e-4 under the null)."""
    logits = jax.random.normal(jax.random.key(0), (3, n)).at[1, :5].set(-jnp.inf)  # row 1: five impossible
    rows = jnp.array([2, 0, 1, 1, 2], jnp.int32)
    key = jax.random.key(1)
    draw = jax.jit(categorical, static_argnums=2)  # as the library calls it (op by op it took 6-11 s here)
    y = draw(key, logits, 4, rows=rows)
    np.testing.assert_array_equal(y, draw(key, logits[rows], 4))
    assert y.shape == (5, 4) and y.dtype == jnp.int32
    draws = np.asarray(draw(jax.random.key(2), logits, 60_000, rows=jnp.array([1])))[0]
    assert draws.min() >= 5 and draws.max() < n
    p = np.asarray(jax.nn.softmax(logits[1]), np.float64)[5:]
    counts = np.bincount(draws - 5, minlength=n - 5)
    assert stats.chisquare(counts, 60_000 * p / p.sum()).pvalue > 1e-4


@pytest.mark.parametrize("n", [1, UNROLLED_SUM, UNROLLED_SUM + 1, 40, SHORT_ROW, SHORT_ROW + 1, 100])
def test_categorical_is_the_inverse_cdf_of_a_left_to_right_running_sum(n):
    """The written-out running sum is float32 addition left to right, bit for bit; every row length: each draw is
    the number of cumulative probabilities <= its uniform (``searchsorted(..., side="right")``), impossible
    entries (first, middle, last) included and never drawn."""
    logits = jax.random.normal(jax.random.key(0), (5, n)) * 4
    if n > 2:
        logits = logits.at[:, jnp.array([0, n // 2, n - 1])].set(-jnp.inf)
    p = jnp.exp(logits - jax.nn.logsumexp(logits, -1, keepdims=True))  # as categorical normalises
    want = np.asarray(p).copy()
    for i in range(1, n):
        want[:, i] = want[:, i - 1] + want[:, i]
    np.testing.assert_array_equal(jax.jit(_running_sum)(p), want)
    cdf = np.asarray(jax.jit(_running_sum if n <= UNROLLED_SUM else lambda p: jnp.cumsum(p, -1))(p))
    u = np.asarray(uniform(jax.random.key(1), (5, 300))) * cdf[:, -1:]
    draws = np.stack([np.searchsorted(c, v, side="right") for c, v in zip(cdf, u, strict=True)])
    got = np.asarray(jax.jit(lambda x: categorical(jax.random.key(1), x, 300))(logits))
    np.testing.assert_array_equal(got, draws)
    assert np.all(np.take_along_axis(np.asarray(p), got, 1) > 0)


def test_a_long_row_never_draws_a_zero_probability_entry_for_any_uniform(monkeypatch):
    """Every uniform the sampler can draw (2^23 of them), through rows of 1000 entries, 30% of them impossible: XLA's
    cumsum of such rows is not monotone on the CPU, and without the running maximum about half these rows had one
    or two uniforms landing on a zero (2026-12-01)."""
    from coverage_lab import _sampling

    grid = jnp.arange(2**23, dtype=jnp.uint32).astype(jnp.float32) * jnp.float32(2.0**-23)
    monkeypatch.setattr(_sampling, "uniform", lambda key, shape: grid.reshape(shape))
    draw = jax.jit(categorical, static_argnums=2)
    rng = np.random.default_rng(0)
    for _ in range(6):
        p = rng.dirichlet(np.full(1000, 0.3))
        p[rng.random(1000) < 0.3] = 0
        y = np.asarray(draw(jax.random.key(0), jnp.log(jnp.asarray(p / p.sum(), jnp.float32))[None], 2**23))[0]
        assert (p[y] > 0).all()


def test_uniform_is_a_pure_uniform_draw():
    u = np.asarray(uniform(jax.random.key(0), (100_000,)))
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    np.testing.assert_array_equal(u, uniform(jax.random.key(0), (100_000,)))
    assert not np.array_equal(u[:8], uniform(jax.random.key(1), (8,)))


@pytest.mark.parametrize("n", [1, 2, 7, 128, 1001])
def test_bits_and_uniform_are_jax_sequential_threefry_bit_for_bit(n):
    """The written-out cipher gives JAX's own words and floats, for odd and even counts, one key and vmapped keys,
    and falls back to JAX for another PRNG implementation."""
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(3), s))(jnp.arange(4, dtype=jnp.uint32))
    with jax.threefry_partitionable(False):
        want_bits = jax.vmap(lambda k: jax.random.bits(k, (n,), jnp.uint32))(keys)
        want_u = jax.random.uniform(keys[0], (n,))
        rbg = jax.random.key(5, impl="rbg")
        want_rbg = jax.random.bits(rbg, (n,), jnp.uint32)
    np.testing.assert_array_equal(jax.jit(jax.vmap(lambda k: bits(k, n)))(keys), want_bits)
    np.testing.assert_array_equal(uniform(keys[0], (n,)), want_u)
    np.testing.assert_array_equal(bits(rbg, n), want_rbg)
    assert _is_threefry(keys[0]) and _is_threefry(jax.random.PRNGKey(0)) and not _is_threefry(rbg)  # the fast path


def test_bits_rejects_what_it_cannot_draw():
    with pytest.raises(ValueError, match="key must be one PRNG key"):
        bits(jax.random.split(jax.random.key(0), 3), 3)
    for n in (-1, 2**32 - 1, 2.0, True):
        with pytest.raises(ValueError, match="n must be"):
            bits(jax.random.key(0), n)
    assert bits(jax.random.key(0), 0).shape == (0,)


def test_jit_top_level_nested_and_as_decorator():
    def f(x, n):
        return jnp.sin(x) * n

    plain = jax.jit(f, static_argnames="n")
    ours = jit(f, static_argnames="n")
    x = jnp.linspace(0, 1, 7)
    np.testing.assert_allclose(ours(x, n=3), plain(x, n=3), rtol=1e-6)
    # inside another traced function JAX refuses compiler options; the wrapper drops them there
    np.testing.assert_allclose(jax.jit(lambda x: ours(x, n=2))(x), plain(x, n=2), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda x: ours(x, n=2))(x), plain(x, n=2), rtol=1e-6)
    assert ours._cache_size() == 1  # attributes forward to the jitted function
    fast = jit(static_argnames="n", fast_compile=True)(f)
    np.testing.assert_allclose(fast(x, n=3), plain(x, n=3), rtol=1e-6)
    assert ours.__name__ == "f"


def test_cpu_options_keep_xla_own_loops_unless_library_fusions_are_asked_for():
    """Tabular programs get OWN_LOOPS where XLA has the option (the compiled program then has no YNNPACK fusion
    where the default makes one); ``library_fusions`` (the transformer's) keeps XLA's default; an option this XLA
    lacks is detected, not passed on to fail at compile time."""
    assert _compile._supported(tuple(_compile.CPU_OPTIONS.items()))  # the probe does say yes
    assert not _compile._supported((("xla_no_such_option_anywhere", True),))
    own = _compile._supported(tuple(_compile.OWN_LOOPS.items()))
    assert _compile.cpu_options() == _compile.CPU_OPTIONS | (_compile.OWN_LOOPS if own else {})
    assert _compile.cpu_options(library_fusions=True) == _compile.CPU_OPTIONS
    assert _compile.cpu_options(fast_compile=True, library_fusions=True) == _compile.FAST_OPTIONS
    f = lambda x: jax.nn.logsumexp(2.0 * x, -1)  # noqa: E731
    x = jax.random.normal(jax.random.key(0), (64, 4, 16))
    hlo = {lib: jit(f, library_fusions=lib).lower(x).compile().as_text() for lib in (False, True)}
    if own and "__ynn_fusion" in hlo[True]:
        assert "__ynn_fusion" not in hlo[False]
    np.testing.assert_allclose(jit(f)(x), jax.jit(f)(x), rtol=1e-6)


def test_fold_in_is_jax_fold_in_bit_for_bit():
    """Typed and raw keys, one and vmapped, data up to 2**32 - 1 and traced; another PRNG goes to JAX's."""
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(3), s))(jnp.arange(5, dtype=jnp.uint32))
    for d in (0, 1, 7, 2**31 + 5, 2**32 - 1):
        got = jax.jit(jax.vmap(lambda k, d=d: fold_in(k, d)))(keys)
        want = jax.vmap(lambda k, d=d: jax.random.fold_in(k, d))(keys)
        np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))
    steps = jnp.arange(10, dtype=jnp.int32)
    got = jax.jit(jax.vmap(lambda t: fold_in(keys[0], t)))(steps)
    want = jax.vmap(lambda t: jax.random.fold_in(keys[0], t))(steps)
    np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))
    raw, rbg = jax.random.PRNGKey(4), jax.random.key(5, impl="rbg")
    np.testing.assert_array_equal(fold_in(raw, 9), jax.random.fold_in(raw, 9))
    np.testing.assert_array_equal(jax.random.key_data(fold_in(rbg, 3)), jax.random.key_data(jax.random.fold_in(rbg, 3)))
    with pytest.raises(ValueError, match="data must be a scalar"):
        fold_in(raw, jnp.arange(2))
    with pytest.raises(ValueError, match="key must be one PRNG key"):
        fold_in(keys, 1)

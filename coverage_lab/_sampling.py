"""Categorical sampling by inverse CDF: one uniform per draw.

``jax.random.categorical`` draws one Gumbel per category; for the small tables here the random bits dominate
(measured: 72 ms of a 64-seed sampled run at Y = 16 for the pairs, and 7-9 s of compile time for a 4-D
categorical in the metrics). A cumulative sum and a search in it for the uniform (a count of the entries at or below
it for short rows, a binary search for long ones) draw the same distribution, to the uniforms' resolution
(:func:`categorical`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _threefry2x32(k0, k1, x0, x1):
    """The Threefry-2x32 block cipher (20 rounds; Salmon et al., Random123, SC 2011) on uint32 arrays, written
    out round by round. JAX's own CPU lowering runs the five key injections as a rolled ``while`` loop (a small
    compile, but five passes over the array and a loop per call); written out, XLA fuses the whole hash into
    one elementwise kernel. The same function, so the same bits (``tests/test_sampling_compile.py``)."""
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(_PARITY))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r)))
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def bits(key, n: int):
    """``n`` random uint32 words: ``jax.random.bits(key, (n,), jnp.uint32)`` under threefry's sequential counter
    scheme (``jax.threefry_partitionable(False)``), bit for bit, for ``n < 2**32 - 1``: the counters ``0..n-1``
    (padded with a 0 to even length) split in halves as the cipher's two input words, the two output words
    concatenated. One hash gives two words, where the partitionable scheme hashes once per word; the scheme only
    matters for an array sharded within one key's draw, which a seed's draws never are (seeds are sharded whole).
    Keys of another PRNG implementation go to ``jax.random.bits``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**32 - 1:
        raise ValueError(f"n must be an integer in [0, 2**32 - 1), got {n!r}")
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if key.shape != (() if typed else (2,)):
        raise ValueError(f"key must be one PRNG key (shape () typed, (2,) raw), got shape {key.shape}")
    if not _is_threefry(key):
        with jax.threefry_partitionable(False):
            return jax.random.bits(key, (n,), jnp.uint32)
    k = jax.random.key_data(key)
    count = jnp.concatenate([jnp.arange(n, dtype=jnp.uint32), jnp.zeros(n % 2, jnp.uint32)])
    half = count.shape[0] // 2
    return jnp.concatenate(_threefry2x32(k[0], k[1], count[:half], count[half:]))[:n]


def fold_in(key, data):
    """``jax.random.fold_in(key, data)``, bit for bit, with the Threefry hash written out (:func:`_threefry2x32`):
    the key hashes the counter pair ``(0, uint32(data))``. JAX's own runs a rolled ``while`` loop, which in a
    64-seed vmapped HyPO step of the benchmark (``fit`` folds the step number into its key) was 64 of 310 us.
    ``key``: one typed or raw key; another PRNG implementation goes to JAX's ``fold_in``."""
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if key.shape != (() if typed else (2,)):
        raise ValueError(f"key must be one PRNG key (shape () typed, (2,) raw), got shape {key.shape}")
    if jnp.ndim(data):
        raise ValueError(f"data must be a scalar integer, got shape {jnp.shape(data)}")
    if not _is_threefry(key):
        return jax.random.fold_in(key, data)
    k = jax.random.key_data(key)
    out = jnp.stack(_threefry2x32(k[0], k[1], jnp.uint32(0), jnp.uint32(data)))  # JAX converts data alike
    out = jax.lax.optimization_barrier(out)  # else XLA fuses the hash into each use, once per element drawn
    return jax.random.wrap_key_data(out, impl=jax.random.key_impl(key)) if typed else out


def _is_threefry(key) -> bool:
    return jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl="threefry2x32"))


def uniform(key, shape):
    """``jax.random.uniform(key, shape)`` (float32 in [0, 1)) on :func:`bits`: the top 23 bits of each word as the
    mantissa of a float in [1, 2), minus 1, as JAX converts them; a pure function of the key. Measured for 64
    seeds x 128 draws on this CPU: JAX's partitionable scheme 117 us, its sequential one 74 us, this 38 us."""
    words = bits(key, math.prod(shape)).reshape(shape)
    one = jax.lax.bitcast_convert_type((words >> jnp.uint32(9)) | jnp.uint32(0x3F800000), jnp.float32)
    return jnp.maximum(one - 1.0, 0.0)


SHORT_ROW = 64  # rows up to this long: a comparison against every entry; longer: a binary search
UNROLLED_SUM = 16  # rows up to this long: the cumulative sum written out (:func:`_running_sum`)


def _running_sum(p_RxY):
    """``cumsum`` along the last axis as a written-out running sum, left to right: one elementwise kernel. XLA's
    CPU ``cumsum`` is a ``reduce-window``, which for the 64-seed vmapped HyPO step's 64x4x16 table took 16-24 us
    of the step's ~290 (measured 2026-11-29). Up to 17 entries that ``reduce-window`` adds in the same order (the
    same sums, bit for bit; above, it does not). Written out, the compile time grows with the row: at 50 entries
    it added about 1 s to each of the reverse_kl experiment's two training programs, hence :data:`UNROLLED_SUM`."""
    out = [p_RxY[..., 0]]
    for i in range(1, p_RxY.shape[-1]):
        out.append(out[-1] + p_RxY[..., i])
    return jnp.stack(out, -1)


def categorical(key, logits_RxY, k: int, rows=None):
    """``k`` draws per row from ``softmax(logits_RxY)``, shape (R, k), int32; with ``rows`` (B,), ``k`` draws from
    row ``rows[b]`` for each ``b``, shape (B, k). Zero-probability entries are never drawn (a uniform ``u`` picks
    the first index whose cumulative probability exceeds it). The uniforms have 23 bits, so probabilities are
    resolved to about ``2^-23 = 1.2e-7`` of the row's total: an entry far below that is drawn as if it had 0 or
    ``2^-23`` by where its interval falls (``jax.random.categorical`` errs there too, otherwise).

    Above :data:`UNROLLED_SUM` entries the cumulative sums come from ``jnp.cumsum``, which XLA's CPU computes in
    another order than left to right: at a few hundred entries they decrease here and there by round-off, and a
    zero entry's sum can exceed the one before it, so a uniform could land on a zero-probability entry (measured:
    about 1.5e-6 of the draws from a 20,000-entry pair table, 2026-12-01). A running maximum over the sums, with
    zero entries held at the sum before them, restores a CDF.

    ``rows`` gathers rows of the cumulative table rather than of the logits, so a table of X rows is normalised
    and summed once however many draws index it (the sampled objectives draw for every pair's prompt: 32 rows
    of a 4-row table per step; measured, a 64-seed vmapped HyPO step went from about 690 to 540 us)."""
    p = jnp.exp(logits_RxY - jax.nn.logsumexp(logits_RxY, -1, keepdims=True))
    n = p.shape[-1]
    if n <= UNROLLED_SUM:
        cdf = _running_sum(p)
    else:  # XLA's cumsum is not left to right: made non-decreasing, and flat across zero entries, as a CDF is
        cdf = jax.lax.cummax(jnp.where(p > 0, jnp.cumsum(p, -1), 0.0), axis=p.ndim - 1)
    if rows is not None:
        cdf = cdf[rows]
    u = uniform(key, (cdf.shape[0], k)) * cdf[:, -1:]
    if n <= SHORT_ROW:
        # count the entries <= u: searchsorted(side="right") without its total float order (the sums are finite
        # and >= +0), which in the 64-seed vmapped HyPO step took 42-52 us instead of 15-29. A row with no finite
        # logit (NaN sums) draws 0 here and its last index there: meaningless either way.
        y = jnp.sum(cdf[:, None, :] <= u[:, :, None], -1, dtype=jnp.int32)
    else:  # a binary search
        y = jax.vmap(lambda c, v: jnp.searchsorted(c, v, side="right", method="scan"))(cdf, u)
    return jnp.minimum(y, n - 1).astype(jnp.int32)  # guards round-off at the top

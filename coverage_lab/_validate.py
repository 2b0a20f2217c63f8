"""Argument checks shared by every public function.

Each check raises ``ValueError`` naming the offending parameter. Value checks run only on concrete
arrays: inside ``jit``/``vmap`` the values are tracers and only the (static) shapes can be checked, so
callers validate once at the boundary, outside the compiled code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

PROB_ATOL = 1e-5


def is_concrete(x) -> bool:
    """True unless ``x`` (or a leaf of it) is a JAX tracer or a non-array placeholder."""
    return not isinstance(x, Tracer)


def no_nan_leaves(name: str, tree) -> None:
    """Checks that no concrete floating-point leaf of the pytree ``tree`` holds NaN or ``+inf`` (one flag per leaf
    leaves the device; tracers are skipped): such a parameter trains into NaN everywhere without an error.
    ``-inf`` is allowed: a tabular policy's logits are ``log pi_ref``, ``-inf`` where ``pi_ref`` has no mass."""
    leaves = [(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if is_concrete(leaf)]
    leaves = [(path, leaf) for path, leaf in leaves if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    with jax.ensure_compile_time_eval():  # a concrete leaf closed over by a traced function is still checked
        bad = jax.device_get([(jnp.isnan(leaf) | (leaf == jnp.inf)).any() for _, leaf in leaves])
    for (path, _), nan in zip(leaves, bad, strict=True):
        if nan:
            raise ValueError(f"{name}{jax.tree_util.keystr(path)} contains NaN or +inf")


def array(name: str, x, *, ndim: int | None = None, finite: bool = True) -> np.ndarray:
    """``x`` as a float64 numpy array; checks its rank and that it holds no NaN (nor inf if ``finite``)."""
    try:
        raw = np.asarray(x)
        a = raw.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from err
    if raw.dtype == np.bool_:  # True would silently read as 1.0
        raise ValueError(f"{name} must be an array of numbers, got booleans")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    if finite and not np.isfinite(a).all():
        raise ValueError(f"{name} contains inf")
    return a


def prob_table(name: str, p, *, ndim: int | None = None, atol: float = PROB_ATOL) -> np.ndarray:
    """Checks that ``p`` is a probability table over its last axis: finite, >= 0, rows summing to 1."""
    a = array(name, p, ndim=ndim)
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension")
    if (a < 0).any():
        raise ValueError(f"{name} has negative probabilities (min {a.min():.3g})")
    sums = a.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=atol, rtol=0):
        worst = sums.flat[np.argmax(np.abs(sums - 1.0))]
        raise ValueError(f"{name} must sum to 1 over its last axis (a row sums to {worst:.6g})")
    return a


def in_range(name: str, v, *, lo: float = -np.inf, hi: float = np.inf, lo_open: bool = False) -> float:
    """Checks a finite scalar in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    f = number(name, v)
    if f < lo or f > hi or (lo_open and f == lo):
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {f}")
    return f


def prob_rows(name: str, p, expected: tuple | None = None, *, unseen_ok: bool = False) -> np.ndarray:
    """A probability table (X, Y), of shape ``expected`` if given; with ``unseen_ok`` a row may be all zero (a
    prompt absent from a dataset)."""
    a = array(name, p, ndim=2) if unseen_ok else prob_table(name, p, ndim=2)
    if a.shape[1] == 0:
        raise ValueError(f"{name} must have at least one response (column), got shape {a.shape}")
    if expected is not None:
        shape(name, a, expected)
    s = a.sum(-1)
    if unseen_ok and ((a < 0).any() or not (np.isclose(s, 1.0, atol=PROB_ATOL, rtol=0) | (s == 0)).all()):
        raise ValueError(f"{name} must be >= 0 with rows summing to 1 (or 0 for an unseen prompt), got sums {s}")
    return a


def log_prob_table(name: str, logp, *, atol: float = 1e-4) -> np.ndarray:
    """Checks that ``logp`` holds normalised log-probabilities over its last axis: no NaN or ``+inf`` (``-inf``: no
    mass), a finite entry in every row, each row's log-sum-exp 0 within ``atol``; returns it as float64."""
    a = array(name, logp, finite=False)
    if a.ndim == 0 or np.isposinf(a).any() or not np.isfinite(a).any(-1).all():
        raise ValueError(f"{name} must be log-probabilities over its last axis: no +inf, a finite entry in every row")
    top = a.max(-1, keepdims=True)
    log_total = top[..., 0] + np.log(np.exp(a - top).sum(-1))
    if not np.allclose(log_total, 0.0, atol=atol, rtol=0):
        worst = log_total.flat[np.argmax(np.abs(log_total))]
        raise ValueError(f"{name} must be normalised log-probabilities (a row's log-sum-exp is {worst:.3g}, not 0)")
    return a


def positive(name: str, v) -> float:
    """Checks a strictly positive finite scalar (skipped for tracers)."""
    if not is_concrete(v):
        return v
    f = _scalar(name, v)
    if not f > 0:
        raise ValueError(f"{name} must be > 0, got {f}")
    return f


def nonnegative(name: str, v) -> float:
    """Checks a finite scalar >= 0 (skipped for tracers)."""
    if not is_concrete(v):
        return v
    f = _scalar(name, v)
    if not f >= 0:
        raise ValueError(f"{name} must be >= 0, got {f}")
    return f


def temperature(name: str, v) -> float:
    """Checks a temperature: > 0 and still > 0 in float32, where it divides logits or reward gaps (skipped for
    tracers)."""
    if not is_concrete(v):
        return v
    f = positive(name, v)
    with np.errstate(over="ignore", divide="ignore"):
        inverse = np.float32(1.0) / np.float32(f)
    if not np.isfinite(inverse):
        raise ValueError(f"{name} ({f:g}) is too small: 1/{name} overflows float32")
    return f


# IPO's square (d - 1/(2 tau))^2 overflows float32 once 1/(2 tau) reaches 2^64 = sqrt(2^128): the smallest float32 tau
# above 2^-65 (about 2.7e-20), compared in float32 because the compiled steps compute in float32
IPO_TAU_MIN = float(np.nextafter(np.float32(2.0**-65), np.float32(1.0)))


def ipo_tau(name: str, v):
    """Checks IPO's ``tau`` (a number, or an array of a sweep's values): > 0 and at least :data:`IPO_TAU_MIN`, so
    that the loss's square of its target margin ``1/(2 tau)`` is finite in float32 (skipped for tracers)."""
    if not is_concrete(v):
        return v
    a = np.asarray(v, np.float32)  # as the compiled steps hold it
    if not (a >= np.float32(IPO_TAU_MIN)).all():
        raise ValueError(
            f"{name} ({v!r}) must be at least {IPO_TAU_MIN:.3g}: below it IPO's squared margin (1/(2 {name}))^2 "
            "overflows float32"
        )
    return v


def number(name: str, v) -> float:
    """Checks a finite scalar of any sign (skipped for tracers)."""
    return v if not is_concrete(v) else _scalar(name, v)


def integer(name: str, v, *, minimum: int) -> int:
    """Checks a Python integer >= ``minimum``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def flag(name: str, v) -> bool:
    """Checks a yes/no switch: ``True`` or ``False`` (a numpy bool or a concrete 0-d boolean array too), not a
    truthy string or number."""
    scalar_array = isinstance(v, (np.ndarray, jax.Array)) and v.dtype == bool and v.ndim == 0 and is_concrete(v)
    if not (isinstance(v, (bool, np.bool_)) or scalar_array):
        raise ValueError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def indices(name: str, a, top: int, bound: str | None = None) -> None:
    """Checks that integer indices ``a`` lie in ``[0, top)`` (``bound``: the parameter that sets ``top``, named in
    the message); values are read only when concrete (JAX clamps an index out of range instead of failing, so a bad
    one would give a silently wrong answer)."""
    if is_concrete(a) and np.size(a):
        h = np.asarray(a)
        if not 0 <= h.min() <= h.max() < top:
            limit = f"[0, {top})" + (f" ({bound})" if bound else "")
            raise ValueError(f"{name} must hold indices in {limit}, got range [{h.min()}, {h.max()}]")


def same_shape(**arrays) -> tuple:
    """Checks that every named array has the same shape; returns that shape."""
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    first = next(iter(shapes.values()))
    for k, s in shapes.items():
        if s != first:
            desc = ", ".join(f"{n}{t}" for n, t in shapes.items())
            raise ValueError(f"{k} has shape {s}, which does not match the others: {desc}")
    return first


def shape(name: str, x, expected: tuple) -> None:
    """Checks ``np.shape(x) == expected``."""
    if tuple(np.shape(x)) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(np.shape(x))}")


def mask(name: str, m, expected: tuple) -> np.ndarray:
    """``m`` as a boolean numpy array of shape ``expected`` (a bool array, or 0/1 values)."""
    a = np.asarray(m)
    if a.dtype == object:  # None, ragged lists: np.asarray(None, float) would read as NaN
        raise ValueError(f"{name} must be a boolean mask (or 0/1 values), got {type(m).__name__}")
    if a.dtype != bool:
        a = array(name, a)
        if not np.isin(a, (0.0, 1.0)).all():
            raise ValueError(f"{name} must be a boolean mask (or 0/1 values)")
        a = a.astype(bool)
    shape(name, a, expected)
    return a


def _scalar(name: str, v) -> float:
    """``v`` as a finite float; a list, an array of several entries or a bool is refused, not reduced."""
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, (np.ndarray, jax.Array)) and v.dtype == bool):
        raise ValueError(f"{name} must be a number, got {v!r}")
    a = np.asarray(v) if isinstance(v, (int, float, np.ndarray, np.generic, jax.Array)) else None
    if a is None or a.ndim != 0:
        raise ValueError(f"{name} must be a single number (a scalar), got {v!r}")
    try:
        f = float(a)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number, got {v!r}") from err
    if not np.isfinite(f):
        raise ValueError(f"{name} must be finite, got {f}")
    return f


def key(name: str, k) -> jax.Array:
    """Checks one JAX PRNG key: a typed key (``jax.random.key``, shape ``()``) or a raw ``uint32[2]`` one
    (``PRNGKey``); a batch of keys (``jax.random.split(key, n)``) is refused."""
    typed = isinstance(k, jax.Array) and jnp.issubdtype(k.dtype, jax.dtypes.prng_key)
    raw = isinstance(k, jax.Array) and k.dtype == jnp.uint32 and k.shape[-1:] == (2,)
    if (typed and k.ndim == 0) or (raw and k.ndim == 1):
        return k
    if typed or raw:
        raise ValueError(f"{name} must be a single JAX PRNG key, got a batch of keys of shape {k.shape}")
    raise ValueError(f"{name} must be a JAX PRNG key such as jax.random.key(0), got {k!r}")


def seed_ids(seeds) -> list[int]:
    """``seeds``: a count ``n`` (ids ``0..n-1``) or a non-empty list of non-negative integer ids."""
    if isinstance(seeds, (int, np.integer)):
        return list(range(integer("seeds", seeds, minimum=1)))
    try:
        ids = list(seeds)
    except TypeError as err:
        raise ValueError(f"seeds must be a positive count or a list of non-negative ids, got {seeds!r}") from err
    if not ids or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in ids):
        raise ValueError(f"seeds must be a positive count or a list of non-negative ids, got {seeds!r}")
    return [int(s) for s in ids]


def float32_scale(name: str, v) -> float:
    """Checks a scale (``beta``, ``r_max``) that multiplies float32 arrays: > 0, finite, and still finite and
    non-zero in float32 (a normal number: at most about 3.4e38, at least about 1.2e-38); skipped for tracers."""
    if not is_concrete(v):
        return v
    f = positive(name, v)
    info = np.finfo(np.float32)
    if not float(info.tiny) <= f <= float(info.max):
        raise ValueError(f"{name} ({f:g}) is outside float32's range [{info.tiny:.3g}, {info.max:.3g}]")
    return f


def index_array(name: str, a, *, ndim: int | None = None):
    """Checks that ``a`` is an integer numpy or JAX array (of rank ``ndim`` if given); its dtype and rank are static,
    so this holds inside ``jit`` too. A list, a float or a boolean array is refused: JAX reads a float index as an
    error, a boolean one as a mask, and ``list * n`` repeats the list instead of scaling it."""
    dtype = getattr(a, "dtype", None)
    if dtype is None or not hasattr(a, "ndim"):
        raise ValueError(f"{name} must be an integer array (numpy or JAX), got {type(a).__name__}")
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array of indices, got dtype {dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(a.shape)}")
    return a


def vanishes_in_float32(p) -> np.ndarray:
    """Where a probability lies in (0, float32's smallest normal number): a mass float32 rounds away."""
    p = np.asarray(p, np.float64)
    return (p > 0) & (p < np.finfo(np.float32).tiny)


def float32_masses(name: str, p) -> None:
    """Checks that no probability in ``p`` lies in (0, float32's smallest normal number): such a mass is 0 in float32,
    where the compiled runs live, so a response the table supports would start at ``log 0 = -inf`` and give NaN
    log-ratios once the data shows it."""
    p = np.asarray(p, np.float64)
    tiny = vanishes_in_float32(p)
    if tiny.any():
        raise ValueError(
            f"{name} has entries in (0, {np.finfo(np.float32).tiny:.3g}) (smallest {p[tiny].min():.3g}): they vanish "
            "in float32, where the compiled runs live; round them to 0 or raise them"
        )

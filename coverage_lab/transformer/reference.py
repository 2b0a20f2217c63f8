"""The reference policy: supervised (cross-entropy) training on the task's corpus through the one training loop,
cached on disk under a path derived from the configuration and the key.

``pi_ref`` is the transformer after ``ref_steps`` of Adam on the per-token negative log-likelihood of the
corpus (:func:`task.sample_corpus`): rare tokens are rare in the corpus, so ``pi_ref`` gives them little mass.
Training is a pure function of its key (deterministic on a given machine and JAX version); the weights are
saved to ``$COVERAGE_LAB_CACHE/reference/<size>-<digest>.npz`` (default cache: ``.cache/coverage_lab`` under
the repository root) and a second call loads them instead of retraining. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from coverage_lab import _validate as V
from coverage_lab._compile import jit
from coverage_lab.data import Batch
from coverage_lab.train import fit
from coverage_lab.transformer import model as M
from coverage_lab.transformer import sizes as S
from coverage_lab.transformer import task as T
from coverage_lab.transformer.policy import sequence_policy

# In the cache key: bump it whenever training computes differently, or a checkout keeps the old weights (v2: the
# layer norm's written-out backward pass).
FORMAT = "reference-v2"
_REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The cache folder: ``$COVERAGE_LAB_CACHE`` if set, else ``.cache/coverage_lab`` under the repository root."""
    env = os.environ.get("COVERAGE_LAB_CACHE")
    return Path(env) if env else _REPO / ".cache" / "coverage_lab"


def _key_bytes(key) -> bytes:
    V.key("key", key)
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.asarray(data, np.uint32).tobytes()


def cache_path(size: str | S.Size, key=None, directory: str | os.PathLike | None = None) -> Path:
    """Where the reference of ``size`` trained from ``key`` (default ``jax.random.key(0)``) is cached.

    The file name holds a digest of everything training depends on: the task and model configurations (``remat``
    included: it changes the trained weights' rounding), the corpus size, the optimisation settings, whether the
    training program is compiled with ``fast_compile`` (other rounding again), the key and a format tag.
    """
    size = S.get(size)
    key = jax.random.key(0) if key is None else key
    recipe = (
        FORMAT,
        size.task,
        size.model,
        size.corpus_per_prompt,
        size.ref_steps,
        size.ref_batch_size,
        size.ref_learning_rate,
        size.fast_compile,
    )
    digest = hashlib.sha256(repr(recipe).encode() + _key_bytes(key)).hexdigest()[:16]
    return Path(directory or cache_dir()) / "reference" / f"{size.name}-{digest}.npz"


def sft_objective(policy, response_len: int):
    """Cross-entropy objective for ``fit``: the weighted per-token negative log-likelihood of ``batch.y_w_B``.

    ``loss = sum_i w_i * (-log pi(y_i | x_i) / L)``, the sequence log-probability from ``policy.log_probs``.
    """
    V.integer("response_len", response_len, minimum=1)

    def objective(params, batch: Batch, key):
        nll = -policy.log_probs(params, batch.x_B, batch.y_w_B) / response_len
        loss = jnp.sum(batch.weight_B * nll)
        return loss, {"loss": loss}

    return objective


def corpus_batch(key, size: str | S.Size) -> Batch:
    """The supervised corpus of ``size`` as a :class:`Batch` (responses in ``y_w_B``, weights ``1/N``)."""
    size = S.get(size)
    x, y = T.sample_corpus(key, T.make_task(size.task), size.corpus_per_prompt)
    n = x.shape[0]
    w = jnp.full((n,), 1.0 / n, jnp.float32)
    ones = jnp.ones((n,), jnp.float32)
    return Batch(x, y, y, w, ones, ones, x, w)


def _train(key, size: S.Size):
    task = T.make_task(size.task)
    policy = sequence_policy(task, size.model)
    k_corpus, k_init, k_fit = jax.random.split(key, 3)
    data = corpus_batch(k_corpus, size)
    schedule = optax.cosine_decay_schedule(size.ref_learning_rate, size.ref_steps, alpha=0.1)
    params, metrics = fit(
        sft_objective(policy, task.response_len),
        policy.init(k_init),
        data,
        k_fit,
        steps=size.ref_steps,
        optimizer=optax.adam(schedule),
        batch_size=size.ref_batch_size,
    )
    return params, metrics["loss"]


_TRAIN = {fast: jit(_train, fast_compile=fast, library_fusions=True, static_argnames="size") for fast in (False, True)}


def train_reference(size: str | S.Size, key=None):
    """Train ``pi_ref`` of ``size`` from ``key`` (default ``jax.random.key(0)``), without the cache.

    Returns ``(params, loss_steps)``: the parameters and the training loss at every step.
    """
    size = S.get(size)
    key = jax.random.key(0) if key is None else key
    V.key("key", key)
    return _TRAIN[size.fast_compile](key, size)


def _template(size: S.Size):
    return jax.eval_shape(functools.partial(M.init, config=size.model), jax.random.key(0))


def save(params, path: str | os.PathLike) -> Path:
    """Write a parameter pytree to ``path`` (``.npz``, one array per leaf path), atomically: through a temporary
    file of its own, so processes saving the same reference at once (``pytest -n``) do not collide."""
    path = Path(path)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    arrays = {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would keep other users of a shared cache out
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as err:
        raise ValueError(f"cannot write the reference cache at {path} ({err}); set COVERAGE_LAB_CACHE") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def load(size: str | S.Size, path: str | os.PathLike):
    """Read parameters of ``size``'s model from ``path``; ``ValueError`` if the file cannot be read as one, or its
    parameters do not fit the model or are not finite."""
    size = S.get(size)
    paths, treedef = jax.tree_util.tree_flatten_with_path(_template(size))
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable parameter file ({type(err).__name__}: {err})") from err
    leaves = []
    for p, spec in paths:
        name = jax.tree_util.keystr(p)
        if name not in arrays or arrays[name].shape != spec.shape:
            raise ValueError(f"{path} does not hold parameters of the {size.name} model (at {name})")
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{path} holds non-finite parameters (at {name})")
        leaves.append(jnp.asarray(arrays[name], spec.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def reference_params(size: str | S.Size, *, key=None, cache: bool = True, directory=None):
    """The reference parameters of ``size``: loaded from the cache if there, else trained and cached (a cached file
    that cannot be read, or holds other or non-finite parameters, is trained again and replaced, with a warning)."""
    size = S.get(size)
    cache = V.flag("cache", cache)
    path = cache_path(size, key, directory)
    if cache and path.exists():
        try:
            return load(size, path)
        except ValueError as err:
            warnings.warn(f"retraining the reference: {err}", stacklevel=2)
    params, _ = train_reference(size, key)
    if cache:
        try:
            save(params, path)
        except ValueError as err:  # an unwritable cache: the trained weights are still good
            warnings.warn(f"the reference is not cached: {err}", stacklevel=2)
    return params

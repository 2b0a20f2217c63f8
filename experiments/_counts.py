"""Finite offline data as pair counts, trained with exact on-policy expectations: the runners shared by ``rates``
and ``separation_map`` (not an experiment of its own).

The losses of ``N`` labelled pairs are sums over distinct ``(x, y_w, y_l)`` triples, so a dataset is its counts,
drawn as the multinomial they are (:func:`sample_counts`) and handed to the training loop as an exact batch of
the empirical pair and win frequencies (:func:`train_on_counts`, ``data.empirical_batch``): one compiled program
for every ``N``, and one for both experiments (they use the same bandit shape).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from coverage_lab import _validate as V
from coverage_lab import algorithms, bandits, coverage, jit
from coverage_lab import data as D
from coverage_lab.fitting import default_optimizer
from coverage_lab.policies import default_policy
from coverage_lab.simulation import train_on_data
from experiments import one_of


def labelled_pair_probs(env, mu_XxY) -> np.ndarray:
    """The probability of each labelled draw ``(x, winner, loser)`` from ``mu ⊗ mu`` (``data.pair_weights``)."""
    return D.pair_weights(env.rho_X, coverage.pair_table(mu_XxY), bandits.preference_table(env.reward_XxY))


@jit
def _sample_counts(keys_B, n_B, p_BxXxYxY):
    return jax.vmap(D.sample_counts)(keys_B, p_BxXxYxY, n_B)


def _freezes_unseen(env, algorithm) -> bool:
    """Whether a run freezes the logits of the responses its data never shows: a tabular policy trained by an
    objective of the offline pairs alone (DPO, IPO: no on-policy samples, no reward model)."""
    return isinstance(env, bandits.TabularBandit) and algorithm.k == 0 and not algorithm.reward_model


def _frozen(frozen_XxY) -> optax.GradientTransformation:
    """Zero the gradient of the logits in ``frozen_XxY`` (before Adam)."""
    return optax.stateless(lambda updates, params=None: jnp.where(frozen_XxY, 0.0, updates))


@jit(static_argnames=("algorithm", "steps", "learning_rate"))
def _train(keys_B, env, data_B, unseen_BxXxY, hp, *, algorithm, steps, learning_rate):
    def one(key, data, unseen):  # full batch, exact on-policy expectations: the keys draw nothing
        opts = dict(exact=True, steps=steps, reward_steps=steps, learning_rate=learning_rate)
        if _freezes_unseen(env, algorithm):
            opts["optimizer"] = optax.chain(_frozen(unseen), default_optimizer(learning_rate, steps))
        params, _ = train_on_data(env, algorithm, data, hp, key=key, rm_key=key, **opts)
        return default_policy(env).table(algorithm.policy_params(params))

    return jax.vmap(one)(keys_B, data_B, unseen_BxXxY)


def sample_counts(env, mu_XxY, n_pairs, keys) -> np.ndarray:
    """Counts ``c[b, x, a, b']`` of ``n_pairs[b]`` labelled pairs from ``mu`` (one table, or one per run) drawn
    with ``keys[b]``, as ``Multinomial(N, labelled_pair_probs)``: the distribution of the counts of
    ``data.sample_pairs`` without drawing N rows. One compiled program for every N. Shape (B, X, Y, Y)."""
    n_pairs = V.array("n_pairs", n_pairs)
    if n_pairs.shape != (len(keys),):
        raise ValueError(f"n_pairs must hold one number per key ({len(keys)}), got shape {n_pairs.shape}")
    if (n_pairs < 1).any() or (n_pairs != np.round(n_pairs)).any() or (n_pairs > D.MAX_COUNT).any():
        raise ValueError(f"n_pairs must be whole numbers in [1, 2**24] (the counts are float32), got {n_pairs}")
    mus = list(mu_XxY) if isinstance(mu_XxY, list) else [mu_XxY] * len(keys)
    by_table = {id(mu): labelled_pair_probs(env, mu) for mu in mus}  # once per distinct table
    probs = np.stack([by_table[id(mu)] for mu in mus])
    counts = _sample_counts(jnp.stack(keys), jnp.asarray(n_pairs, jnp.float32), jnp.asarray(probs, jnp.float32))
    counts = np.rint(np.asarray(counts)).astype(np.int64)
    return counts.reshape(len(keys), env.n_prompts, env.n_responses, env.n_responses)


def train_on_counts(env, algorithm, counts_BxXxYxY, keys, *, steps: int, learning_rate: float = 0.05) -> np.ndarray:
    """Train ``algorithm`` on each dataset of pair counts (``data.empirical_batch``); returns ``logp_BxXxY``.

    On-policy expectations are exact; full-batch Adam for ``steps`` steps (the reward model first, for RLHF).
    All datasets share one compiled program.

    DPO and IPO on a tabular policy leave the logits of the responses a dataset never shows where they are:
    their gradient there is zero (SPEC §4.1). In float32 it is round-off instead (about 1e-10), which Adam
    divides by a second moment just as small into steps of the order of the learning rate: the difference
    between two unseen logits moved by 6.2 nats under IPO in 2000 steps on ``separation_map``'s ``deficient_2``
    (2026-12-01; 0 with SGD). So those runs freeze them, as exact arithmetic would; RLHF and HyPO move them for
    real.
    """
    counts = np.asarray(counts_BxXxYxY)
    batches = [D.empirical_batch(c) for c in counts]
    data_B = jax.tree.map(lambda *a: jnp.stack(a), *batches)
    unseen = jnp.asarray((counts + counts.transpose(0, 1, 3, 2)).sum(-1) == 0)  # (B, X, Y)
    hp = {k: jnp.float32(v) for k, v in algorithm.hparams.items()}
    opts = dict(algorithm=algorithm, steps=steps, learning_rate=learning_rate)
    logp = _train(jnp.stack(keys), env, data_B, unseen, hp, **opts)
    return np.asarray(logp, np.float64)


def make_algorithm(method: str, beta: float, r_max: float = 1.0, lam: float = 0.01, tau: float | None = None):
    """The algorithm for a method name (a setting value), with the experiment's hyper-parameters."""
    factories = {
        "dpo": lambda: algorithms.dpo(beta),
        "ipo": lambda: algorithms.ipo(tau if tau is not None else beta / 4),
        "rlhf": lambda: algorithms.rlhf(beta, r_max),
        "hypo": lambda: algorithms.hypo(beta, lam),
    }
    one_of(*factories)("method", method)
    return factories[method]()

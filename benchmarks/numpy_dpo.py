"""A plain NumPy reference of the tabular exact DPO training loop, written for the benchmarks.

The same loop as ``coverage_lab.run(env, algorithms.dpo(beta), mu=mu, n_pairs=None, ...)``: softmax logits
initialised at ``log pi_ref``, the exact batch (every ``(x, y_w, y_l)`` with weight
``rho(x) (mu_pair(a, b) + mu_pair(b, a)) P(a ≻ b|x)``, as ``data.exact_batch``), the full batch every step,
and Adam with a cosine decay of the step size to zero (``fitting.default_optimizer``: optax's ``adam`` and
``cosine_decay_schedule``, ``b1 = 0.9``, ``b2 = 0.999``, ``eps = 1e-8``). The gradient is written by hand:

    m_i = beta ((logp[x_i, w_i] - ref[x_i, w_i]) - (logp[x_i, l_i] - ref[x_i, l_i]))
    dL/dm_i = -weight_i beta sigmoid(-m_i)
    G = scatter-add of dL/dm_i at (x_i, w_i), minus at (x_i, l_i)
    dL/dlogits = G - softmax(logits) * sum_y G          (the Jacobian of log_softmax)

The reference's constant ``ref`` margins are computed once, outside the loop.
"""

from __future__ import annotations

import math

import numpy as np


def exact_pairs(rho_X, pair_XxYxY, pref_XxYxY):
    """``(x, y_w, y_l, weight)``: every labelled triple of positive weight, weights summing to one (the rows of
    ``data.exact_batch`` without its padding)."""
    rho, pair, pref = (np.asarray(a, np.float64) for a in (rho_X, pair_XxYxY, pref_XxYxY))
    w = rho[:, None, None] * (pair + pair.transpose(0, 2, 1)) * pref
    x, a, b = np.nonzero(w > 0)
    weight = w[x, a, b]
    return x, a, b, weight / weight.sum()


def log_softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def cosine_step_size(learning_rate: float, steps: int, t: int) -> float:
    """optax's ``cosine_decay_schedule(learning_rate, steps)`` at count ``t`` (0 for the first update)."""
    return learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps))


def dpo_grad(logits_XxY, ref_margin_B, i_w_B, i_l_B, weight_B, beta):
    """The exact DPO loss and its gradient in the logits; ``i_w``, ``i_l`` index the flattened (X*Y) table."""
    n_prompts, n_responses = logits_XxY.shape
    logp = log_softmax(logits_XxY).reshape(-1)
    m = beta * (logp[i_w_B] - logp[i_l_B] - ref_margin_B)
    loss = np.sum(weight_B * np.logaddexp(0.0, -m))
    g_m = (-beta * weight_B * 0.5 * (1.0 - np.tanh(0.5 * m))).astype(logits_XxY.dtype)  # sigmoid(-m), stable
    size = n_prompts * n_responses
    G = (np.bincount(i_w_B, g_m, size) - np.bincount(i_l_B, g_m, size)).astype(logits_XxY.dtype)
    G = G.reshape(n_prompts, n_responses)
    p = np.exp(logp.reshape(n_prompts, n_responses))
    return loss, G - p * G.sum(-1, keepdims=True)


def train(
    log_pi_ref_XxY,
    x_B,
    y_w_B,
    y_l_B,
    weight_B,
    *,
    beta: float,
    steps: int,
    learning_rate: float = 0.05,
    dtype=np.float32,
):
    """Exact DPO by Adam with cosine decay from ``logits = log pi_ref``; returns the final logits (X, Y)."""
    logits = np.asarray(log_pi_ref_XxY, dtype).copy()
    n_responses = logits.shape[1]
    ref = log_softmax(logits).reshape(-1)
    i_w = (np.asarray(x_B) * n_responses + np.asarray(y_w_B)).astype(np.intp)
    i_l = (np.asarray(x_B) * n_responses + np.asarray(y_l_B)).astype(np.intp)
    ref_margin = ref[i_w] - ref[i_l]
    weight = np.asarray(weight_B, dtype)
    m1, m2 = np.zeros_like(logits), np.zeros_like(logits)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(steps):
        _, g = dpo_grad(logits, ref_margin, i_w, i_l, weight, beta)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        m_hat, v_hat = m1 / (1 - b1 ** (t + 1)), m2 / (1 - b2 ** (t + 1))
        logits = logits - cosine_step_size(learning_rate, steps, t) * m_hat / (np.sqrt(v_hat) + eps)
    return logits


def policy(logits_XxY) -> np.ndarray:
    """``softmax(logits)`` in float64, (X, Y)."""
    return np.exp(log_softmax(np.asarray(logits_XxY, np.float64)))

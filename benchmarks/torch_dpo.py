"""The tabular exact DPO training loop in PyTorch (eager, autograd, ``torch.optim.Adam``), if torch is installed.

The same loop as :mod:`benchmarks.numpy_dpo`: logits from ``log pi_ref``, the full exact batch every step,
Adam (``b1 = 0.9``, ``b2 = 0.999``, ``eps = 1e-8``, the same update as optax's) with the step size set to
optax's cosine decay before each step. The gradient is torch's autograd of
``sum_i weight_i softplus(-beta margin_i)``.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from .numpy_dpo import cosine_step_size


def available() -> bool:
    return importlib.util.find_spec("torch") is not None


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
    threads: int | None = None,
):
    """Exact DPO in float32 PyTorch; returns the final logits as a NumPy array (X, Y). ``threads`` sets torch's
    intra-op threads for this call (default: torch's own choice)."""
    import torch

    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return train(
                log_pi_ref_XxY, x_B, y_w_B, y_l_B, weight_B, beta=beta, steps=steps, learning_rate=learning_rate
            )
        finally:
            torch.set_num_threads(before)

    logits = torch.tensor(np.asarray(log_pi_ref_XxY, np.float32), requires_grad=True)
    n_responses = logits.shape[1]
    i_w = torch.as_tensor(np.asarray(x_B) * n_responses + np.asarray(y_w_B), dtype=torch.long)
    i_l = torch.as_tensor(np.asarray(x_B) * n_responses + np.asarray(y_l_B), dtype=torch.long)
    weight = torch.as_tensor(np.asarray(weight_B, np.float32))
    with torch.no_grad():
        ref = torch.log_softmax(logits, -1).reshape(-1)
        ref_margin = ref[i_w] - ref[i_l]
    opt = torch.optim.Adam([logits], lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)
    for t in range(steps):
        opt.param_groups[0]["lr"] = cosine_step_size(learning_rate, steps, t)
        opt.zero_grad(set_to_none=True)
        logp = torch.log_softmax(logits, -1).reshape(-1)
        margin = beta * (logp[i_w] - logp[i_l] - ref_margin)
        loss = torch.sum(weight * torch.nn.functional.softplus(-margin))
        loss.backward()
        opt.step()
    return logits.detach().numpy().copy()

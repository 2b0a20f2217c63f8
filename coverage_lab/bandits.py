"""Contextual-bandit environments as frozen, validated pytrees, and the paper's named instances.

An environment is data (gymnax style): prompt distribution ``rho_X``, reference policy ``pi_ref_XxY``
and ground-truth reward ``reward_XxY``. Nothing in it mutates; vary it with ``dataclasses.replace``.
The offline data distribution ``mu`` is not part of the environment: it is a knob (``coverage``).

References:
  Song, Swamy, Singh, Bagnell, Sun. The Importance of Online Data: Understanding Preference
  Fine-tuning via Coverage. arXiv:2406.01462.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from coverage_lab import _validate as V


def _concrete(env) -> bool:
    """True unless a field is a tracer or a pytree placeholder (``None``, JAX's sentinels, a ``vmap`` axis spec):
    anything array-like (numpy, JAX, pandas, lists) or numeric is validated; text or a mapping is refused."""
    fields = {f.name: getattr(env, f.name) for f in dataclasses.fields(env)}
    for name, x in fields.items():
        if isinstance(x, (str, bytes, dict)):
            raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__} {x!r}")
    if any(isinstance(x, (np.ndarray, jax.Array)) and V.is_concrete(x) for x in fields.values()):
        for name, x in fields.items():  # None beside arrays: a field left out, not a pytree placeholder
            if x is None:
                raise ValueError(f"{name} is missing (None); {type(env).__name__} needs every one of its arrays")
    return all(
        V.is_concrete(x) and (hasattr(x, "__array__") or isinstance(x, (list, tuple, float, int)))
        for x in fields.values()
    )


def _pytree(cls):
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])


def _check_common(rho_X, pi_ref_XxY, reward_XxY) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rho = V.prob_table("rho_X", rho_X)
    pi_ref = V.prob_table("pi_ref_XxY", pi_ref_XxY)
    reward = V.array("reward_XxY", reward_XxY)
    if pi_ref.ndim < 2:
        raise ValueError(f"pi_ref_XxY must have shape (X, Y), got {pi_ref.shape}")
    if rho.shape != pi_ref.shape[:-1]:
        raise ValueError(f"rho_X has shape {rho.shape}, but pi_ref_XxY has {pi_ref.shape[-2]} prompts")
    if reward.shape != pi_ref.shape:
        raise ValueError(f"reward_XxY has shape {reward.shape}, expected pi_ref_XxY's {pi_ref.shape}")
    return rho, pi_ref, reward


@_pytree
@dataclasses.dataclass(frozen=True)
class TabularBandit:
    """A tabular contextual bandit.

    Attributes:
      rho_X: prompt distribution ``rho(x)``, shape (X,).
      pi_ref_XxY: reference policy ``pi_ref(y|x)``, rows sum to 1, shape (X, Y).
      reward_XxY: ground-truth reward ``r*(x, y)``, shape (X, Y).
    """

    rho_X: np.ndarray
    pi_ref_XxY: np.ndarray
    reward_XxY: np.ndarray

    def __post_init__(self):
        if _concrete(self):
            checked = _check_common(self.rho_X, self.pi_ref_XxY, self.reward_XxY)
            for name, a in zip(("rho_X", "pi_ref_XxY", "reward_XxY"), checked, strict=True):
                object.__setattr__(self, name, a)

    @property
    def n_prompts(self) -> int:
        return self.pi_ref_XxY.shape[-2]

    @property
    def n_responses(self) -> int:
        return self.pi_ref_XxY.shape[-1]


@_pytree
@dataclasses.dataclass(frozen=True)
class LinearBandit:
    """A linear contextual bandit with a log-linear reference policy.

    ``r*(x, y) = phi(x, y) . theta_star`` and ``pi_ref(y|x) = softmax_y(phi(x, y) . theta_ref)``.

    Attributes:
      rho_X: prompt distribution, shape (X,).
      phi_XxYxD: features ``phi(x, y)``, shape (X, Y, D).
      theta_star_D: reward parameter, shape (D,).
      theta_ref_D: reference-policy parameter, shape (D,).
    """

    rho_X: np.ndarray
    phi_XxYxD: np.ndarray
    theta_star_D: np.ndarray
    theta_ref_D: np.ndarray

    def __post_init__(self):
        if not _concrete(self):
            return
        rho = V.prob_table("rho_X", self.rho_X)
        phi = V.array("phi_XxYxD", self.phi_XxYxD)
        theta_star = V.array("theta_star_D", self.theta_star_D)
        theta_ref = V.array("theta_ref_D", self.theta_ref_D)
        if phi.ndim < 3 or 0 in phi.shape[-2:]:
            raise ValueError(f"phi_XxYxD must have shape (X, Y, D) with Y, D >= 1, got {phi.shape}")
        if rho.shape != phi.shape[:-2]:
            raise ValueError(f"rho_X has shape {rho.shape}, but phi_XxYxD has {phi.shape[-3]} prompts")
        logits = {}
        for name, t in (("theta_star_D", theta_star), ("theta_ref_D", theta_ref)):
            if t.shape != phi.shape[:-3] + phi.shape[-1:]:
                raise ValueError(f"{name} has shape {t.shape}, expected ({phi.shape[-1]},) to match phi_XxYxD")
            with np.errstate(over="ignore", invalid="ignore"):
                logits[name] = np.einsum("...xyd,...d->...xy", phi, t)
                if not np.isfinite(logits[name]).all():
                    raise ValueError(f"phi_XxYxD @ {name} overflows float64: scale the features or {name} down")
        ref_logits = logits["theta_ref_D"]
        if ref_logits.size and (np.exp(ref_logits - ref_logits.max(-1, keepdims=True)) == 0).any():
            raise ValueError(
                "theta_ref_D spreads the logits phi_XxYxD @ theta_ref_D so far (a gap over ~745) that pi_ref_XxY "
                "gives a response exactly 0, and a KL to it would be inf: scale the features or theta_ref_D down"
            )
        for name, a in (("rho_X", rho), ("phi_XxYxD", phi), ("theta_star_D", theta_star), ("theta_ref_D", theta_ref)):
            object.__setattr__(self, name, a)

    @property
    def n_prompts(self) -> int:
        return self.phi_XxYxD.shape[-3]

    @property
    def n_responses(self) -> int:
        return self.phi_XxYxD.shape[-2]

    @property
    def reward_XxY(self):
        return self.phi_XxYxD @ self.theta_star_D

    @property
    def pi_ref_XxY(self):
        logits = self.phi_XxYxD @ self.theta_ref_D
        if isinstance(logits, np.ndarray):
            logits = logits - logits.max(axis=-1, keepdims=True)
            p = np.exp(logits)
            return p / p.sum(axis=-1, keepdims=True)
        return jax.nn.softmax(logits, axis=-1)

    def to_tabular(self) -> TabularBandit:
        """The same bandit with its reward and reference policy written out as tables."""
        return TabularBandit(self.rho_X, self.pi_ref_XxY, self.reward_XxY)


Bandit = TabularBandit | LinearBandit


# ----------------------------------------------------------------------------------------------
# Named instances. Paper instances come with the offline distribution ``mu_XxY`` that defines them.


def check_bandit(env, name: str = "env") -> None:
    """Raises a ValueError naming ``name`` unless ``env`` is a :class:`TabularBandit` or :class:`LinearBandit`."""
    if not isinstance(env, (TabularBandit, LinearBandit)):
        raise ValueError(f"{name} must be a TabularBandit or LinearBandit, got {type(env).__name__}")


def counterexample(eps: float = 1e-3, r_max: float = 1.0) -> tuple[TabularBandit, np.ndarray]:
    """The out-of-support construction of arXiv:2406.01462 (SPEC §4.2): one prompt, three responses.

    ``pi_ref = ((1-eps)/2, (1-eps)/2, eps)``, ``r* = (r_max, 0, 0)``; the offline data ``mu`` is
    ``pi_ref`` restricted to the first two responses, so response 2 (``y0``) is never shown. At
    ``eps = 0`` the reference puts no mass on ``y0`` and any mass there makes the reverse KL infinite.

    Returns:
      ``(env, mu_XxY)``.
    """
    eps = V.nonnegative("eps", eps)
    if eps >= 1:
        raise ValueError(f"eps must be < 1, got {eps}")
    V.positive("r_max", r_max)
    pi_ref = np.array([[(1 - eps) / 2, (1 - eps) / 2, eps]])
    env = TabularBandit(np.ones(1), pi_ref, np.array([[r_max, 0.0, 0.0]]))
    return env, np.array([[0.5, 0.5, 0.0]])


def linear_extrapolation(covered: bool = True) -> tuple[LinearBandit, np.ndarray]:
    """SPEC §5's extrapolation instance: one prompt, data only on the pair ``(y1, y2)``.

    ``covered=True``: ``phi(y1)=(1,0)``, ``phi(y2)=(0,1)``, ``phi(y3)=(2,-1)``, ``theta*=(1,0)``. All feature
    differences are parallel to ``(1,-1)``, which the data covers, so the unseen best response ``y3`` gains
    mass under DPO and RLHF. ``covered=False``: a third feature direction the data never sees,
    ``phi(y3)=(2,-1,1)`` and ``theta*=(1,0,-3)``, so ``y3`` is the worst response yet DPO still pushes mass
    onto it. ``pi_ref`` is uniform (``theta_ref = 0``).

    Returns:
      ``(env, mu_XxY)`` with ``mu`` uniform on ``{y1, y2}``.
    """
    if V.flag("covered", covered):
        phi = np.array([[[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]])
        theta_star = np.array([1.0, 0.0])
    else:
        phi = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.0, -1.0, 1.0]]])
        theta_star = np.array([1.0, 0.0, -3.0])
    env = LinearBandit(np.ones(1), phi, theta_star, np.zeros_like(theta_star))
    return env, np.array([[0.5, 0.5, 0.0]])


def random_tabular(
    key: jax.Array, n_prompts: int, n_responses: int, *, r_max: float = 1.0, concentration: float = 1.0
) -> TabularBandit:
    """A random tabular bandit: Dirichlet ``rho`` and ``pi_ref`` (full support), uniform ``r* in [0, r_max]``."""
    n_prompts = V.integer("n_prompts", n_prompts, minimum=1)
    n_responses = V.integer("n_responses", n_responses, minimum=2)
    V.positive("r_max", r_max)
    V.positive("concentration", concentration)
    rng = _numpy_rng(key)
    rho = rng.dirichlet(np.ones(n_prompts))
    pi_ref = rng.dirichlet(concentration * np.ones(n_responses), n_prompts)
    pi_ref = np.clip(np.asarray(pi_ref, np.float64), 1e-6, None)
    reward = r_max * rng.uniform(size=(n_prompts, n_responses))
    return TabularBandit(_normalise(rho), pi_ref / pi_ref.sum(-1, keepdims=True), np.asarray(reward, np.float64))


def random_linear(
    key: jax.Array, n_prompts: int, n_responses: int, dim: int, *, ref_scale: float = 0.5
) -> LinearBandit:
    """A random linear bandit: Gaussian features, unit-norm ``theta*``, ``theta_ref`` of norm ``ref_scale``."""
    n_prompts = V.integer("n_prompts", n_prompts, minimum=1)
    n_responses = V.integer("n_responses", n_responses, minimum=2)
    dim = V.integer("dim", dim, minimum=1)
    V.nonnegative("ref_scale", ref_scale)
    rng = _numpy_rng(key)
    rho = rng.dirichlet(np.ones(n_prompts))
    phi = rng.standard_normal((n_prompts, n_responses, dim))
    theta_star = rng.standard_normal(dim)
    theta_ref = rng.standard_normal(dim)
    return LinearBandit(
        _normalise(rho),
        phi,
        theta_star / np.linalg.norm(theta_star),
        ref_scale * theta_ref / np.linalg.norm(theta_ref),
    )


def gaussian_bump(
    n_responses: int = 100, *, peak: float = 80.0, width: float = 5.0, ref_mode: float = 20.0, ref_width: float = 10.0
) -> TabularBandit:
    """One prompt, ``n_responses`` ordered responses: reward a Gaussian bump at ``peak`` (values in [0, 1]),
    reference policy a discretised Gaussian at ``ref_mode``, far from the reward's peak.

    The didactic setting of Tajwar et al. 2024 (Preference Fine-Tuning of LLMs Should Leverage Suboptimal,
    On-Policy Data, arXiv:2404.14367).
    """
    n_responses = V.integer("n_responses", n_responses, minimum=2)
    V.positive("width", width)
    V.positive("ref_width", ref_width)
    peak, ref_mode = V.number("peak", peak), V.number("ref_mode", ref_mode)
    y = np.arange(n_responses, dtype=np.float64)
    reward = np.exp(-0.5 * ((y - peak) / width) ** 2)
    pi_ref = np.exp(-0.5 * ((y - ref_mode) / ref_width) ** 2) + 1e-8
    return TabularBandit(np.ones(1), (pi_ref / pi_ref.sum())[None], reward[None])


def _numpy_rng(key) -> np.random.Generator:
    """A numpy generator seeded by the key's bits: instances stay pure functions of the key without compiling
    JAX's Dirichlet sampler (seconds per process)."""
    bits = np.asarray(jax.random.key_data(V.key("key", key)), np.uint32).ravel()
    return np.random.default_rng(bits.tolist())


def _normalise(p) -> np.ndarray:
    p = np.asarray(p, np.float64)
    return p / p.sum(-1, keepdims=True)


def preference_table(reward_XxY, *, temperature: float = 1.0, deterministic: bool = False) -> np.ndarray:
    """Bradley–Terry preference probabilities ``P_XxYxY[x, a, b] = P(a ≻ b | x)``.

    ``P(a ≻ b | x) = sigmoid((r*(x, a) - r*(x, b)) / temperature)``; with ``deterministic=True`` the better
    response always wins (``1``, ``0``, and ``1/2`` on ties). float64, shape (X, Y, Y).
    """
    r = V.array("reward_XxY", reward_XxY)
    if r.ndim < 1:
        raise ValueError(f"reward_XxY must have a response axis, got a scalar {r}")
    diff = r[..., :, None] - r[..., None, :]
    t = V.positive("temperature", temperature)  # checked even where deterministic ignores it
    if V.flag("deterministic", deterministic):
        return np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    return 0.5 * (1.0 + np.tanh(0.5 * diff / t))

"""Test configuration: one hypothesis profile (no deadline: JIT compilation would flake it) and
rank promotion as an error, so silent broadcasting fails loudly."""

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile(
    "coverage_lab",
    deadline=None,
    max_examples=25,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("coverage_lab")

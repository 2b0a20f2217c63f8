"""Test configuration: one hypothesis profile (no deadline: JIT compilation would flake it),
rank promotion as an error, so silent broadcasting fails loudly, and ``--key-offset N`` (other draws for the
experiments' smoke runs and their claims)."""

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


def pytest_addoption(parser):
    parser.addoption(
        "--key-offset",
        type=int,
        default=0,
        help="shift the key of every experiment setting by N (coverage_lab.cli.setting_seed), so the smoke runs and "
        "the claims checked on them use other draws: a claim that holds only for the committed draws is luck",
    )


def pytest_configure(config):
    offset = config.getoption("--key-offset")
    if offset:
        import coverage_lab.cli as cli

        original = cli.setting_seed
        cli.setting_seed = lambda setting: (original(setting) + offset) % 2**32

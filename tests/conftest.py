"""Test configuration: one hypothesis profile (no deadline: JIT compilation would flake it),
rank promotion as an error, so silent broadcasting fails loudly, ``--key-offset N`` (other draws for the
experiments' smoke runs and their claims), and the longest test files first."""

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


# The test files that took longest on this project's 2-core machine (``--durations``, 2026-11-30), longest first.
# ``make test`` hands whole files to its workers (``--dist loadfile``) in collection order: started first, the long
# files end near each other instead of leaving one worker running a long file while the other idles.
LONG_FIRST = (
    "test_notebooks.py",
    "test_sampled_track.py",
    "test_sweep_cli.py",
    "test_algorithms.py",
    "test_transformer_experiments.py",
    "test_transformer_bench.py",
    "test_transformer_run.py",
    "test_experiments_theory.py",
    "test_experiments_dynamics.py",
    "test_benchmarks.py",
    "test_sharding.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order is kept

"""Seeds, and sweep values with seeds, sharded over several devices give the same numbers as one device (two CPU
devices forced by XLA_FLAGS)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = """
import json, jax, numpy as np
import coverage_lab as cl
from coverage_lab import algorithms as A, bandits, coverage
from coverage_lab._compile import shard_rows
from coverage_lab.simulation import _run
env = bandits.random_tabular(jax.random.key(0), 3, 6)
mu = coverage.deficient(env.pi_ref_XxY, 2, env.reward_XxY)
kw = dict(mu=mu, n_pairs=64, steps=40, seeds=3, key=jax.random.key(0), batch_size=16)
r = cl.run(env, A.hypo(0.1, 0.1), **kw)
sweep = cl.run(env, [A.hypo(0.1, 0.01), A.hypo(0.1, 1.0)], **kw)  # 6 rows of (value, seed) over the devices
keys = shard_rows(jax.random.split(jax.random.key(0), 4))
print(json.dumps({"devices": len(jax.devices()), "key_devices": len(keys.sharding.device_set),
                  "eval": np.asarray(r.logs["eval"]).tolist(),
                  "sweep": [np.asarray(s.logs["eval"]).tolist() for s in sweep]}))
"""


def run_with(devices: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # run by .ci/run after make test
def test_sharded_seeds_equal_one_device():
    one, two = run_with(1), run_with(2)
    assert (one["devices"], two["devices"], two["key_devices"]) == (1, 2, 2)
    np.testing.assert_allclose(np.array(two["eval"]), np.array(one["eval"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(two["sweep"]), np.array(one["sweep"]), rtol=1e-5, atol=1e-6)

"""The transformer benchmark runs on a CPU at the toy size and reports what it promises."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# loaded from its file: ``benchmarks`` is importable as a package only from the repository root (python -m pytest)
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "transformer_bench.py"
_spec = importlib.util.spec_from_file_location("transformer_bench", _PATH)
tb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb)

COLUMNS = {"step_s", "tokens_per_s", "sample_share", "peak_bytes", "peak_rss_bytes", "xla_temp_bytes"}


def test_benchmark_runs_on_cpu_at_the_toy_size(tmp_path, capsys):
    """In this process, one algorithm (all three run in the dry run of the GPU script below)."""
    args = ["--size", "toy", "--steps", "2", "--batch-size", "4", "--algorithms", "dpo"]
    df = tb.main([*args, "--csv", str(tmp_path / "bench.csv")])
    assert list(df["algorithm"]) == ["dpo"] and COLUMNS <= set(df.columns) and (df["batch_size"] == 4).all()
    assert (tmp_path / "bench.csv").exists() and "tokens_per_s" in capsys.readouterr().out


def test_benchmark_validation():
    with pytest.raises(ValueError, match="algorithm"):
        tb.measure("toy", "ppo", steps=1)
    with pytest.raises(ValueError, match="steps"):
        tb.measure("toy", "dpo", steps=0)
    with pytest.raises(ValueError, match="size"):
        tb.measure("tiny", "dpo", steps=1)


def test_gpu_size_is_consistent_without_running_it():
    """The ``gpu`` size, abstractly (shapes only, nothing computed): a model of tens of millions of parameters
    whose log-probabilities, sampler and HyPO gradient trace at its batch size."""
    import jax
    import jax.numpy as jnp

    from coverage_lab import algorithms as A
    from coverage_lab.transformer import model as M
    from coverage_lab.transformer import sizes as S
    from coverage_lab.transformer import task as T
    from coverage_lab.transformer.policy import sequence_policy

    size = S.get("gpu")
    assert size.model.remat and not S.get("medium").model.remat  # HyPO's step needs it to fit an H200 (README)
    task = T.make_task(size.task)
    assert not task.enumerable and task.vocab_size == size.model.vocab_size
    params = jax.eval_shape(lambda k: M.init(k, size.model), jax.random.key(0))
    assert M.n_params(params) > 5e7
    b, length = size.batch_size, task.response_len
    x = jax.ShapeDtypeStruct((b,), jnp.int32)
    y = jax.ShapeDtypeStruct((b, length), jnp.int32)
    policy = sequence_policy(task, size.model)
    assert jax.eval_shape(policy.log_probs, params, x, y).shape == (b,)
    samples = jax.eval_shape(lambda p, k, x: policy.sample(p, k, x, size.k), params, jax.random.key(0), x)
    assert samples.shape == (b, size.k, length)
    alg = A.hypo(0.1, lam=0.01, k=size.k)
    data = T.sample_pairs(jax.random.key(0), task, b, T.mu_token_logp(task, 0.0))

    def loss(p, ref, key):
        objective = alg.make(alg, A.Context(policy, ref, False), {"beta": 0.1, "lam": 0.01})
        return objective(p, data, key)[0]

    grads = jax.eval_shape(jax.grad(loss), params, params, jax.random.key(1))
    assert jax.tree.structure(grads) == jax.tree.structure(params)


@pytest.mark.slow  # run by .ci/run after make test
def test_the_prepared_gpu_script_runs_as_a_dry_run_on_the_cpu(tmp_path):
    repo = _PATH.parents[1]
    env = {**os.environ, "SIZE": "toy", "STEPS": "1", "PY": sys.executable, "OUT": str(tmp_path)}
    # a dry run: compile fast (48 s -> 31 s here), keeping any XLA flags the caller set
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    df = pd.read_csv(tmp_path / "transformer_bench.csv")
    assert list(df["algorithm"]) == ["dpo", "hypo", "rlhf"] and (df["size"] == "toy").all()
    assert COLUMNS <= set(df.columns) and (df["step_s"] > 0).all() and (df["tokens_per_s"] > 0).all()
    assert df.set_index("algorithm").loc["dpo", "sample_share"] == 0.0  # DPO never samples
    assert (df.set_index("algorithm").loc[["hypo", "rlhf"], "sample_share"] > 0).all()
    assert np.isnan(df["peak_bytes"]).all() or (df["peak_bytes"] > 0).all()
    assert "dpo: exit 0" in done.stdout and "jax " in (tmp_path / "env.txt").read_text()

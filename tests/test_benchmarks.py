"""The benchmark suite's pieces at tiny sizes (so the code cannot rot) and its references' correctness.

No timing is asserted: the machine is shared; only that every piece runs and measures the right thing.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from benchmarks import exact_grad, experiments_cost, frameworks, numpy_dpo, run, torch_dpo, vmap_seeds
from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage, data, exact
from coverage_lab.policies import tabular_softmax
from coverage_lab.train import fit


def test_numpy_pairs_are_the_exact_batch():
    env, mu, (x, y_w, y_l, w) = frameworks.problem(2, 5)
    batch = data.exact_batch(env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))
    np.testing.assert_array_equal(x, np.asarray(batch.x_B))
    np.testing.assert_array_equal(y_w, np.asarray(batch.y_w_B))
    np.testing.assert_array_equal(y_l, np.asarray(batch.y_l_B))
    np.testing.assert_allclose(w, np.asarray(batch.weight_B), rtol=1e-6)


def test_numpy_gradient_is_the_library_gradient():
    env, mu, (x, y_w, y_l, w) = frameworks.problem(3, 6)
    logits = np.asarray(jax.random.normal(jax.random.key(3), (3, 6)), np.float64)
    policy = tabular_softmax(env)
    ref = policy.init(None)
    objective = A.dpo(0.1).make(A.dpo(0.1), A.Context(policy, ref, True), {"beta": 0.1})
    batch = data.exact_batch(env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))
    loss, grad = jax.value_and_grad(lambda p: objective(p, batch, None)[0])(jnp.asarray(logits, jnp.float32))
    ref_flat = numpy_dpo.log_softmax(np.asarray(ref, np.float64)).reshape(-1)
    i_w, i_l = x * 6 + y_w, x * 6 + y_l
    np_loss, np_grad = numpy_dpo.dpo_grad(logits, ref_flat[i_w] - ref_flat[i_l], i_w, i_l, w, 0.1)
    np.testing.assert_allclose(np_loss, float(loss), rtol=1e-5)
    np.testing.assert_allclose(np_grad, np.asarray(grad), rtol=1e-4, atol=1e-8)


def test_numpy_reference_reaches_the_closed_form_optimum():
    env, mu, (x, y_w, y_l, w) = frameworks.problem(4, 16)
    logits = numpy_dpo.train(np.log(env.pi_ref_XxY), x, y_w, y_l, w, beta=frameworks.BETA, steps=1000)
    optimum = exact.optimal_policy(env.reward_XxY, env.pi_ref_XxY, frameworks.BETA)
    assert frameworks.tv(numpy_dpo.policy(logits), optimum) < 1e-4


def test_numpy_reference_follows_the_library_run():
    m = frameworks.measure(2, 8, steps=100, torch=False, budget=0.0)
    assert m["tv_numpy_jax"] < 1e-4
    assert m["numpy"] > 0 and m["jax"] > 0 and "torch" not in m


@pytest.mark.skipif(not torch_dpo.available(), reason="torch is not installed")
def test_torch_reference_follows_the_numpy_reference():
    env, mu, (x, y_w, y_l, w) = frameworks.problem(2, 8)
    log_pi_ref = np.log(np.asarray(env.pi_ref_XxY, np.float32))
    a = torch_dpo.train(log_pi_ref, x, y_w, y_l, w, beta=0.1, steps=100)
    b = numpy_dpo.train(log_pi_ref, x, y_w, y_l, w, beta=0.1, steps=100)
    assert frameworks.tv(numpy_dpo.policy(a), numpy_dpo.policy(b)) < 1e-5


def test_frameworks_rows_say_when_torch_is_absent(monkeypatch):
    monkeypatch.setattr(torch_dpo, "available", lambda: False)
    rows = frameworks.bench(sizes=((1, 4),), steps=10)
    assert rows[0]["quantity"].startswith("PyTorch reference skipped")
    assert not any("PyTorch /" in r["quantity"] for r in rows)


def test_the_benchmarked_step_is_fits_step():
    """Loop and vmapped readings of the step, and fit's lax.scan, reach the same parameters (SGD: no Adam
    normalisation to amplify rounding)."""
    problem = vmap_seeds.default_problem()._replace(n_pairs=32, batch_size=8)
    sgd = optax.sgd(0.5)
    m = vmap_seeds.measure_step(problem, n_seeds=2, steps=6, optimizer=sgd)
    for i, params in enumerate(m["params_loop"]):
        np.testing.assert_allclose(params, m["params_vmapped"][i], atol=1e-6)
    step = vmap_seeds.fit_step(problem, 6, sgd)
    key = vmap_seeds._keys(2)[1]
    (params0, _), (batch, _, _) = step.setup(key)
    objective = problem.algorithm.make(
        problem.algorithm,
        A.Context(
            tabular_softmax(problem.env),
            params0,
            False,
            None,
            jnp.asarray(bandits.preference_table(problem.env.reward_XxY), jnp.float32),
        ),
        {k: jnp.float32(v) for k, v in problem.algorithm.hparams.items()},
    )
    fitted, _ = fit(objective, params0, batch, jax.random.split(key, 3)[2], steps=6, optimizer=sgd, batch_size=8)
    np.testing.assert_allclose(fitted, m["params_loop"][1], atol=1e-6)


def test_vmap_seeds_rows():
    problem = vmap_seeds.default_problem()._replace(algorithm=A.dpo(0.1), n_pairs=16, batch_size=8)
    rows = vmap_seeds.bench(seed_counts=(2,), run_steps=4, step_steps=2, problem=problem)
    ratios = {r["quantity"]: r["value"] for r in rows if r["unit"] == "x"}
    assert "step: 2 seeds, loop / vmapped" in ratios and "run: 2 seeds, loop / vmapped" in ratios
    assert all(np.isfinite(v) and v > 0 for v in ratios.values())


def test_exact_gradient_measurement():
    m = exact_grad.measure(8, repeat=1)
    assert m["pairs"] == 64 and m["diff"] < 1e-5 and m["flops"] > 0
    assert exact_grad.fit_exponent([256, 512, 1024], [1.0, 4.0, 16.0]) == pytest.approx(2.0)
    rows = exact_grad.bench(sizes=(4, 8), matmul_flops=1e9, read_bytes=1e9)
    assert any(r["quantity"].startswith("fitted exponent") for r in rows)


def test_reproduce_cost_reads_the_latest_full_run(tmp_path):
    path = tmp_path / "timings.csv"
    assert experiments_cost.reproduce_cost(path) is None
    pd.DataFrame(
        {"experiment": ["a", "b", "a", "b"], "seconds": [1.0, 2.0, 3.0, 9.0], "smoke": [False, False, False, True]}
    ).to_csv(path, index=False)
    cost = experiments_cost.reproduce_cost(path).set_index("experiment")
    assert cost["seconds"].to_dict() == {"a": 3.0, "b": 2.0} and (cost["loaded"] == 0).all()  # no column: 0


@pytest.mark.skipif(importlib.util.find_spec("experiments.kl_estimators") is None, reason="no kl_estimators")
def test_experiment_cost_in_a_child_process(tmp_path):
    rows = experiments_cost.bench(["kl_estimators"], smoke=True, timings=tmp_path / "none.csv")
    values = {r["quantity"]: r["value"] for r in rows}
    assert values["kl_estimators: XLA compilations in the second call"] == 0
    assert values["kl_estimators: compile / run"] > 0
    assert experiments_cost.bench(["kl_estimators"], deadline=0.0, timings=tmp_path / "none.csv")[0]["quantity"] == (
        "kl_estimators: skipped, out of the time budget"
    )


def test_an_experiment_too_long_at_full_size_is_timed_at_smoke_size(monkeypatch, tmp_path):
    def fake(name, *, smoke, deadline, timeout):
        if not smoke:
            return {"error": "timed out", "timed_out": True}
        return {"first": 2.0, "first_compile": 1.5, "second": 0.5, "second_compiles": 0}

    monkeypatch.setattr(experiments_cost, "measure", fake)
    rows = experiments_cost.bench(["big"], cap=30.0, timings=tmp_path / "none.csv")
    values = {r["quantity"]: r["value"] for r in rows}
    assert values["big (smoke size: full size took over 30 s): compile / run"] == 3.0
    pd.DataFrame({"experiment": ["big"], "seconds": [100.0], "smoke": [False]}).to_csv(tmp_path / "t.csv", index=False)
    rows = experiments_cost.bench(["big"], cap=30.0, timings=tmp_path / "t.csv")  # known to be long: smoke at once
    assert rows[0]["quantity"] == "big (smoke size: its full reproduce took 100 s): first call (compile + run)"


def test_suite_writes_a_tidy_csv(tmp_path, capsys):
    out = tmp_path / "results.csv"
    df = run.main(["--quick", "--only", "machine", "--out", str(out)])
    assert list(pd.read_csv(out).columns) == ["benchmark", "quantity", "value", "unit"]
    assert len(df) == len(pd.read_csv(out))
    assert "suite wall time" in capsys.readouterr().out

"""The reference policy: supervised training through fit is deterministic given its key, learns the corpus
(rare tokens stay rare), and is cached on disk: a second call loads instead of retraining."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coverage_lab.transformer import policy as P
from coverage_lab.transformer import reference as R
from coverage_lab.transformer import sizes as S
from coverage_lab.transformer import task as T

TOY = S.get("toy")


@pytest.fixture(scope="module")
def trained():
    return R.train_reference("toy", jax.random.key(0))


def test_training_is_deterministic_given_its_key(trained):
    params, loss = trained
    again, loss2 = R.train_reference("toy", jax.random.key(0))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loss, loss2)
    other, _ = R.train_reference("toy", jax.random.key(1))
    assert not np.array_equal(other["w_out"], params["w_out"])


def test_supervised_training_learns_the_corpus(trained):
    params, loss = trained
    assert loss.shape == (TOY.ref_steps,) and float(loss[-20:].mean()) < float(loss[:5].mean())
    task = T.make_task(TOY.task)
    pi = np.exp(np.asarray(jax.jit(P.sequence_policy(task, TOY.model).table)(params), np.float64))
    y = T.responses(task)
    # token marginals at each position against the corpus's per-position distribution
    for pos in range(task.response_len):
        marg = np.stack([np.bincount(y[:, pos], weights=pi[x], minlength=task.n_tokens) for x in range(4)])
        corpus = np.exp(task.corpus_logp_XxV)
        assert 0.5 * np.abs(marg - corpus).sum(1).max() < 0.08, pos
        assert marg[:, task.rare_V].max() < 3 * TOY.task.rare_prob  # rare tokens stay rare under pi_ref


def test_second_call_loads_from_the_cache(tmp_path, monkeypatch, trained):
    monkeypatch.setenv("COVERAGE_LAB_CACHE", str(tmp_path))
    path = R.cache_path("toy", jax.random.key(0))
    assert path.parent.parent == tmp_path and not path.exists()
    first = R.reference_params("toy", key=jax.random.key(0))
    assert path.exists()
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(trained[0]), strict=True):
        np.testing.assert_array_equal(a, b)

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache holds the reference")

    monkeypatch.setattr(R, "train_reference", no_training)
    second = R.reference_params("toy", key=jax.random.key(0))
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AssertionError, match="retrained"):
        R.reference_params("toy", key=jax.random.key(0), cache=False)


def test_cache_path_depends_on_everything_training_depends_on(tmp_path):
    base = R.cache_path("toy", jax.random.key(0), tmp_path)
    assert base.name.startswith("toy-") and base.suffix == ".npz"
    assert R.cache_path("toy", jax.random.key(1), tmp_path) != base
    assert R.cache_path("small", jax.random.key(0), tmp_path) != base
    import dataclasses

    longer = dataclasses.replace(TOY, ref_steps=TOY.ref_steps + 1)
    assert R.cache_path(longer, jax.random.key(0), tmp_path) != base
    # fast_compile trains in another program, whose rounding gives other weights
    other_program = dataclasses.replace(TOY, fast_compile=not TOY.fast_compile)
    assert R.cache_path(other_program, jax.random.key(0), tmp_path) != base
    assert R.cache_path("toy", jax.random.key(0), tmp_path) == base
    assert R.cache_path("toy", jax.random.PRNGKey(0), tmp_path) == base  # raw and typed keys alike


def test_load_rejects_parameters_of_another_model(tmp_path, trained):
    path = R.save(trained[0], tmp_path / "toy.npz")
    with pytest.raises(ValueError, match="small"):
        R.load("small", path)
    with pytest.raises(ValueError, match="key"):
        R.cache_path("toy", 0)


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "nan weights"])
def test_a_damaged_cache_file_is_retrained_and_replaced(tmp_path, monkeypatch, trained, damage):
    monkeypatch.setattr(R, "train_reference", lambda size, key: trained)  # the training itself is tested above
    path = R.cache_path("toy", jax.random.key(0), tmp_path)
    good = R.save(trained[0], path).read_bytes()
    if damage == "nan weights":
        R.save(jax.tree.map(lambda a: a * np.nan, trained[0]), path)
    else:
        damaged = {"garbage": b"not a parameter file", "empty": b"", "truncated": good[: len(good) // 2]}
        path.write_bytes(damaged[damage])
    with pytest.warns(UserWarning, match="retraining the reference"):
        params = R.reference_params("toy", key=jax.random.key(0), directory=tmp_path)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained[0]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert path.read_bytes() == good and [f.name for f in path.parent.iterdir()] == [path.name]  # no temp files


def test_a_cache_that_cannot_be_written_warns_and_keeps_the_trained_weights(tmp_path, monkeypatch, trained):
    monkeypatch.setattr(R, "train_reference", lambda size, key: trained)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(R.np, "savez", disk_full)
    with pytest.warns(UserWarning, match="not cached.*No space left"):
        params = R.reference_params("toy", key=jax.random.key(0), directory=tmp_path)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained[0]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not list((tmp_path / "reference").iterdir())  # no temporary file left behind


def test_a_cached_reference_is_readable_by_other_users(tmp_path, trained):
    assert R.save(trained[0], tmp_path / "toy.npz").stat().st_mode & 0o777 == 0o644


def test_sft_objective_is_the_per_token_nll():
    task = T.make_task(TOY.task)
    policy = P.sequence_policy(task, TOY.model)
    params = policy.init(jax.random.key(0))
    data = R.corpus_batch(jax.random.key(1), "toy")
    loss, _ = jax.jit(R.sft_objective(policy, 3))(params, data, jax.random.key(2))
    # near-uniform random initialisation: about log(6) nats per token
    assert float(loss) == pytest.approx(np.log(6), rel=0.05)
    manual = -jnp.mean(jax.jit(policy.log_probs)(params, data.x_B, data.y_w_B)) / 3
    np.testing.assert_allclose(loss, manual, rtol=1e-5)

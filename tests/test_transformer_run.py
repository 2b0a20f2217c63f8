"""The transformer track reuses the shared losses and algorithms (same values through the bandit path), and
``simulate`` runs every algorithm through the one training loop, sampled and exact, seeds vmapped."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coverage_lab import algorithms as A
from coverage_lab import losses, policies
from coverage_lab._compile import jit
from coverage_lab.data import Batch
from coverage_lab.transformer import evaluate as E
from coverage_lab.transformer import model as M
from coverage_lab.transformer import policy as P
from coverage_lab.transformer import run as RN
from coverage_lab.transformer import sizes as S
from coverage_lab.transformer import task as T

TOY = S.get("toy")
# the toy programs compiled without XLA's backend optimisations, as the toy size's runs are (sizes.Size.fast_compile)
fast_jit = functools.partial(jit, fast_compile=True)
TASK = T.make_task(TOY.task)


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """The reference cache in a temporary folder shared by the transformer test modules of this session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COVERAGE_LAB_CACHE", str(tmp_path_factory.getbasetemp() / "coverage_lab_cache"))
        yield


def peaked(key, scale=20.0):
    p = fast_jit(M.init, static_argnames="config")(key, TOY.model)
    return {**p, "w_out": p["w_out"] * scale}


@pytest.fixture(scope="module")
def setup():
    """Two transformer policies and a batch of token pairs from mu."""
    pi, ref = peaked(jax.random.key(1)), peaked(jax.random.key(2))
    data = T.sample_pairs(jax.random.key(3), TASK, 32, T.mu_token_logp(TASK, 1.0))
    return pi, ref, data


def bandit_twin(policy, pi, ref, data):
    """The same pairs as a bandit: prompt i = pair i, response 0 = y_w, 1 = y_l, log-probability tables (B, 2)
    filled with the transformer's own sequence log-probabilities (scored as its objectives score them: both
    responses in one call); a tabular ``Policy`` over them."""

    def table_of(params):
        return jnp.stack(A.joint_log_probs(policy, params, (data.x_B, data.y_w_B), (data.x_B, data.y_l_B)), 1)

    tables = {"pi": table_of(pi), "ref": table_of(ref)}
    twin = policies.from_table(lambda key: tables["pi"], lambda t: t)._replace(pair_scale=policy.pair_scale)
    b = data.size
    idx = jnp.arange(b, dtype=jnp.int32)
    zeros, ones = jnp.zeros(b, jnp.int32), jnp.ones(b, jnp.int32)
    batch = Batch(idx, zeros, ones, data.weight_B, data.mu_w_B, data.mu_l_B, idx, data.weight_B)
    return twin, tables, batch


def test_one_pass_scoring_and_the_precomputed_reference_match_one_call_per_batch(setup):
    """The transformer scores the pairs' two responses (and HyPO's samples) in one forward pass and reads pi_ref's
    terms from the data: the same numbers as one call per batch, to float rounding."""
    pi, ref, data = setup
    policy = P.sequence_policy(TASK, TOY.model)
    apart = policy._replace(one_pass=False)
    assert policy.one_pass
    pairs = ((data.x_B, data.y_w_B), (data.x_B, data.y_l_B))
    # compiled, each side as one program (op by op, the transformer's ops took a minute of this suite)
    joint = {pol: fast_jit(lambda p, pol=pol: A.joint_log_probs(pol, p, *pairs))(pi) for pol in (policy, apart)}
    for got, want in zip(joint[policy], joint[apart], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    ctx = A.Context(policy, ref, False)
    filled = A.with_reference(ctx, data, 5)  # 32 pairs: six chunks and a padded seventh
    log_probs = fast_jit(policy.log_probs)
    np.testing.assert_allclose(filled.ref_w_B, log_probs(ref, data.x_B, data.y_w_B), rtol=1e-5)
    np.testing.assert_allclose(filled.ref_l_B, log_probs(ref, data.x_B, data.y_l_B), rtol=1e-5)
    for algorithm in (A.dpo(0.1), A.hypo(0.1, lam=0.5, k=3)):
        hp = {k: jnp.float32(v) for k, v in algorithm.hparams.items()}
        one = fast_jit(algorithm.make(algorithm, ctx, hp))(pi, filled, jax.random.key(4))
        each = fast_jit(algorithm.make(algorithm, ctx._replace(policy=apart), hp))(pi, data, jax.random.key(4))
        for name in one[1]:
            np.testing.assert_allclose(one[1][name], each[1][name], rtol=1e-5)


@pytest.mark.parametrize(
    "algorithm, normalize",
    [(A.dpo(0.1), False), (A.ipo(0.2), False), (A.ipo(0.2), True), (A.dpo(0.5), True)],
    ids=["dpo", "ipo-summed", "ipo-length-normalised", "dpo-length-normalised"],
)
def test_same_log_probs_give_identical_losses_through_both_paths(setup, algorithm, normalize, monkeypatch):
    pi, ref, data = setup
    policy = P.sequence_policy(TASK, TOY.model, normalize=normalize)
    twin, tables, batch = bandit_twin(policy, pi, ref, data)
    hp = {k: jnp.float32(v) for k, v in algorithm.hparams.items()}
    called = []
    shared = getattr(losses, algorithm.name)
    monkeypatch.setattr(losses, algorithm.name, lambda *a: called.append(True) or shared(*a))
    transformer = algorithm.make(algorithm, A.Context(policy, ref, False), hp)(pi, data, jax.random.key(0))[0]
    bandit = algorithm.make(algorithm, A.Context(twin, tables["ref"], False), hp)(tables["pi"], batch, None)[0]
    assert len(called) == 2  # the shared loss function, once per path
    assert float(transformer) == float(bandit)
    # by hand: d from the sequence log-probabilities, per token (over the length 3) when length-normalised
    length = 3 if normalize else 1
    logps = [lp / length for lp in (*tables["pi"].T, *tables["ref"].T)]
    expected = jnp.sum(data.weight_B * shared(*logps, *hp.values()))
    np.testing.assert_allclose(float(transformer), float(expected), rtol=1e-5)


@pytest.mark.parametrize("exact", [False, True], ids=["sampled", "exact"])
def test_length_normalised_hypo_is_summed_hypo_at_beta_over_length(setup, exact):
    """Length normalisation touches only DPO's ``d``: HyPO with ``normalize`` at ``beta`` has the value and the
    gradient of summed HyPO at ``beta / L``, and both carry the sequence-level reverse KL (exact: the enumerated
    KL of the policies' distributions over whole responses)."""
    pi, ref, data = setup
    prompts = jnp.arange(4, dtype=jnp.int32)
    batch = data._replace(prompt_x_P=prompts, prompt_w_P=jnp.full(4, 0.25, jnp.float32))
    key = jax.random.key(7)

    def value_and_grad(normalize, beta):
        policy = P.sequence_policy(TASK, TOY.model, normalize=normalize)
        algorithm = A.hypo(beta, lam=0.2, k=4)
        hp = {k: jnp.float32(v) for k, v in algorithm.hparams.items()}
        objective = algorithm.make(algorithm, A.Context(policy, ref, exact), hp)
        return fast_jit(jax.value_and_grad(objective, has_aux=True))(pi, batch, key)

    (n_val, n_metrics), n_grad = value_and_grad(True, 0.3)
    (s_val, s_metrics), s_grad = value_and_grad(False, 0.1)
    np.testing.assert_allclose(n_val, s_val, rtol=1e-5)
    np.testing.assert_allclose(n_metrics["kl_penalty"], s_metrics["kl_penalty"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(n_grad), jax.tree.leaves(s_grad), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    if exact:
        table = fast_jit(P.sequence_policy(TASK, TOY.model, normalize=True).table)
        np.testing.assert_allclose(np.exp(np.asarray(table(pi), np.float64)).sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(n_metrics["kl_penalty"], E.exact_kl(table(pi), table(ref)), rtol=1e-5)


@pytest.mark.parametrize("name", ["hypo", "rlhf"])
def test_exact_on_policy_terms_identical_through_the_bandit_path(setup, name):
    """HyPO's exact KL and RLHF's exact expected reward from the enumerated table: the transformer's table fed
    to a tabular policy gives the same objective."""
    pi, ref, data = setup
    policy = P.sequence_policy(TASK, TOY.model)
    table = jax.jit(policy.table)  # XLA's default options: the op-by-op path below computes the same bits
    t_pi, t_ref = table(pi), table(ref)
    twin = policies.from_table(lambda key: t_pi, lambda t: t)
    r_XxY = jax.random.uniform(jax.random.key(9), t_pi.shape) * 5.0
    reward_fn = lambda x, y: r_XxY[x, y]  # noqa: E731  (indices on the exact path, as simulate passes them)
    algorithm = A.hypo(0.1, lam=0.3, k=4) if name == "hypo" else A.rlhf(0.1, r_max=5.0, k=4)
    hp = {k: jnp.float32(v) for k, v in algorithm.hparams.items()}
    prompts = jnp.arange(4, dtype=jnp.int32)
    batch = data._replace(prompt_x_P=prompts, prompt_w_P=jnp.full(4, 0.25, jnp.float32))
    ctx_t = A.Context(policy, ref, True, reward_fn)
    ctx_b = A.Context(twin, t_ref, True, reward_fn)
    t_val = algorithm.make(algorithm, ctx_t, hp)(pi, batch, None)
    if name == "hypo":  # the DPO part needs index pairs on the bandit path: compare the KL term
        np.testing.assert_allclose(t_val[1]["kl_penalty"], E.exact_kl(t_pi, t_ref), rtol=1e-6)
        _, b_kl = A.on_policy(ctx_b, t_pi, batch, None, 4, lambda x, y, t: t)
        _, t_kl = A.on_policy(ctx_t, pi, batch, None, 4, lambda x, y, t: t)
        assert float(t_kl) == float(b_kl)
    else:
        b_val = algorithm.make(algorithm, ctx_b, hp)(t_pi, batch, None)
        assert float(t_val[0]) == float(b_val[0])


@pytest.mark.slow
def test_simulate_exact_paths_and_online_dpo():
    for alg in (
        A.hypo(0.1, lam=0.1, k=4),
        A.rlhf(0.1, r_max=5.0, k=4),
        A.online_dpo(0.1),
        A.online_dpo(0.1, label_with_reward_model=True, r_max=5.0),
    ):
        df = RN.simulate("toy", alg, key=jax.random.key(0), seeds=1, steps=10, log_every=5, exact=True)
        assert np.isfinite(df["value"]).all(), alg.name
    sampled = RN.simulate("toy", A.online_dpo(0.1), key=jax.random.key(0), seeds=1, steps=10, log_every=5)
    assert np.isfinite(sampled["value"]).all()


@pytest.mark.slow
def test_simulate_ipo_length_normalised_and_mu_rare():
    df = RN.simulate(
        "toy", A.ipo(0.5), key=jax.random.key(0), seeds=1, steps=10, log_every=5, normalize=True, mu_rare=1.0
    )
    assert df["normalize"].all() and (df["mu_rare"] == 1.0).all()
    at0 = df[df["step"] == 0].set_index("metric")["value"]
    assert at0["ood_mass"] == 0.0  # mu shows every token: nothing is uncovered


def test_simulate_validation():
    with pytest.raises(ValueError, match="size"):
        RN.simulate("nope", A.dpo(), key=jax.random.key(0))
    with pytest.raises(ValueError, match="algorithm"):
        RN.simulate("toy", "dpo", key=jax.random.key(0))
    with pytest.raises(ValueError, match="exact"):
        RN.simulate("small", A.dpo(), key=jax.random.key(0), exact=True)
    with pytest.raises(ValueError, match="log_every"):
        RN.simulate("toy", A.dpo(), key=jax.random.key(0), steps=10, log_every=3)
    with pytest.raises(ValueError, match="seeds"):
        RN.simulate("toy", A.dpo(), key=jax.random.key(0), seeds=[-1])
    with pytest.raises(ValueError, match="key"):
        RN.simulate("toy", A.dpo(), key=0)
    with pytest.raises(ValueError, match="mu_rare"):
        RN.simulate("toy", A.dpo(), key=jax.random.key(0), mu_rare=-0.5)

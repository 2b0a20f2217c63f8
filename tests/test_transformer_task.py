"""The token task and the Policy adapter: gold reward, mu, pairs, enumeration (probabilities sum to 1, exact KL
against Monte Carlo, the sampler against the probabilities by a chi-square test), masked sequence log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from coverage_lab.transformer import model as M
from coverage_lab.transformer import policy as P
from coverage_lab.transformer import sizes as S
from coverage_lab.transformer import task as T

TOY = S.get("toy")
TASK = T.make_task(TOY.task)


def peaked_params(key, scale=30.0):
    """Random parameters with a scaled-up output layer, so the policy is far from uniform."""
    p = jax.jit(M.init, static_argnames="config")(key, TOY.model)
    return {**p, "w_out": p["w_out"] * scale}


@pytest.fixture(scope="module")
def policy():
    return P.sequence_policy(TASK, TOY.model)


@pytest.fixture(scope="module")
def two_policies():
    return peaked_params(jax.random.key(1)), peaked_params(jax.random.key(2))


def test_task_layout():
    assert TASK.enumerable and TASK.n_responses == 6**3 and TASK.vocab_size == 10
    assert TASK.prompts_XxP.min() >= TASK.n_tokens and len({tuple(p) for p in TASK.prompts_XxP}) == TASK.n_prompts
    np.testing.assert_allclose(np.exp(TASK.corpus_logp_XxV).sum(1), 1.0, atol=1e-12)
    assert TASK.rare_V.tolist() == [False] * 4 + [True, True] and TASK.good_V[4] and TASK.bad_V[5]
    np.testing.assert_allclose(np.exp(TASK.corpus_logp_XxV[:, TASK.rare_V]), TOY.task.rare_prob)
    y = T.responses(TASK)
    assert y.shape == (216, 3) and len({tuple(r) for r in y}) == 216
    assert T.make_task(TOY.task) is TASK  # cached, deterministic in the config
    assert not T.make_task(S.get("small").task).enumerable


@given(st.integers(0, 2**31 - 1))
def test_gold_reward_is_bounded_and_per_token(seed):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.integers(0, 4, 16), jnp.int32)
    y = jnp.asarray(rng.integers(0, 6, (16, 3)), jnp.int32)
    r = np.asarray(T.gold_reward(TASK, x, y))
    assert (r >= 0).all() and (r <= TOY.task.r_max + 1e-6).all()
    np.testing.assert_allclose(r, TOY.task.r_max * TASK.score_XxV[np.asarray(x)[:, None], np.asarray(y)].mean(1), 1e-6)
    best = jnp.full((16, 3), 4, jnp.int32)  # the rare good token everywhere: R_max
    np.testing.assert_allclose(T.gold_reward(TASK, x, best), TOY.task.r_max, rtol=1e-6)
    np.testing.assert_allclose(T.gold_reward(TASK, x, best + 1), 0.0)  # the rare bad token: 0


def test_gold_sign_ties_exactly_where_the_token_scores_are_the_same_multiset():
    y = jnp.asarray(T.responses(TASK))
    for x in range(TASK.n_prompts):
        xs = jnp.full(y.shape[0], x, jnp.int32)
        assert (T.gold_sign(TASK, xs, y, y[:, ::-1]) == 0).all()  # a reordering: the same reward, whatever float32 says
        score = TASK.score_XxV[x][np.asarray(y)].sum(1)
        other = jnp.asarray(np.random.default_rng(x).permutation(np.asarray(y)))
        other_score = TASK.score_XxV[x][np.asarray(other)].sum(1)
        expected = np.where(np.isclose(score, other_score, rtol=0, atol=1e-9), 0.0, np.sign(score - other_score))
        np.testing.assert_array_equal(T.gold_sign(TASK, xs, y, other), expected)
    # two rare bad tokens (score 0 each) or one in place of the other: a tie
    bad = np.flatnonzero(TASK.bad_V)
    two_bad = np.full((1, 3), bad[0], np.int32)
    assert float(T.gold_sign(TASK, jnp.zeros(1, jnp.int32), two_bad, two_bad[:, ::-1])[0]) == 0.0


def test_win_rate_of_a_policy_against_itself_is_a_half_under_jit(policy):
    """A nearly deterministic policy against itself: every pair is one response twice, a tie, so the win rate is
    exactly 1/2. The evaluator is built eagerly and called under jit (its documented use), where float32 may round
    the same reward differently in the two programs; a tie must not depend on that (an equality test of the two
    rewards read 0.625 here on the AMD host, 2026-12-01)."""
    from coverage_lab import jit
    from coverage_lab.transformer import evaluate as E

    point = peaked_params(jax.random.key(21), scale=1e4)  # 4 prompts, one response each
    mu = jnp.asarray(T.mu_token_logp(TASK, 1.0), jnp.float32)
    data = T.sample_pairs(jax.random.key(1), TASK, 8, mu)
    evaluator = E.make_evaluator(TASK, policy, point, jax.random.key(2), n_samples=16, mu_logp_XxV=mu, data=data)
    assert float(jit(evaluator, fast_compile=True)(point)["win_rate"]) == 0.5


def test_mu_hides_or_thins_the_rare_tokens():
    never = T.mu_token_logp(TASK, 0.0)
    assert np.isneginf(never[:, TASK.rare_V]).all() and np.isfinite(never[:, ~TASK.rare_V]).all()
    np.testing.assert_allclose(T.mu_token_logp(TASK, 1.0), TASK.corpus_logp_XxV, atol=1e-12)
    data = T.sample_pairs(jax.random.key(0), TASK, 2000, never)
    assert not TASK.rare_V[np.asarray(data.y_w_B)].any() and not TASK.rare_V[np.asarray(data.y_l_B)].any()
    assert data.y_w_B.shape == (2000, 3) and float(data.weight_B.sum()) == pytest.approx(1.0)
    np.testing.assert_allclose(data.mu_w_B, np.exp(T.sequence_logp(never, data.x_B, data.y_w_B)), rtol=1e-5)
    assert not T.uncovered(never, data.x_B, data.y_w_B).any()
    assert T.uncovered(never, jnp.zeros(1, jnp.int32), jnp.array([[0, 5, 0]])).all()


def test_labels_follow_the_gold_reward():
    mu = T.mu_token_logp(TASK, 1.0)
    d = T.sample_pairs(jax.random.key(1), TASK, 4000, mu, deterministic=True)
    assert (T.gold_reward(TASK, d.x_B, d.y_w_B) >= T.gold_reward(TASK, d.x_B, d.y_l_B)).all()
    noisy = T.sample_pairs(jax.random.key(1), TASK, 4000, mu, temperature=1.0)
    gap = T.gold_reward(TASK, noisy.x_B, noisy.y_w_B) - T.gold_reward(TASK, noisy.x_B, noisy.y_l_B)
    assert 0.5 < float((gap > 0).mean()) < 0.95  # Bradley–Terry: mostly, not always, the better one


def test_validation():
    with pytest.raises(ValueError, match="rare_prob"):
        T.TaskConfig(rare_prob=0.6)
    with pytest.raises(ValueError, match="n_prompts"):
        T.TaskConfig(n_prompts=100, prompt_len=1, n_prompt_tokens=4)
    with pytest.raises(ValueError, match="mu_rare"):
        T.mu_token_logp(TASK, -1.0)
    with pytest.raises(ValueError, match="y_BxL"):
        T.gold_reward(TASK, jnp.zeros(2, jnp.int32), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="y_BxL"):
        T.gold_reward(TASK, jnp.zeros(2, jnp.int32), jnp.full((2, 3), 6, jnp.int32))
    with pytest.raises(ValueError, match="x_B"):
        T.gold_reward(TASK, jnp.full(2, 4, jnp.int32), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="n"):
        T.sample_pairs(jax.random.key(0), TASK, 0, T.mu_token_logp(TASK, 0.0))
    with pytest.raises(ValueError, match="ENUMERATION_LIMIT"):
        T.responses(T.make_task(S.get("small").task))
    with pytest.raises(ValueError, match="config"):
        P.sequence_policy(TASK, S.get("small").model)
    with pytest.raises(ValueError, match="size"):
        S.get("huge")


def test_masked_sequence_logp_hand_computed():
    lp = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    mask = jnp.array([[1, 1, 1], [1, 1, 0]])
    np.testing.assert_allclose(P.masked_sequence_logp(lp, mask), [-6.0, -1.0])
    np.testing.assert_allclose(P.masked_sequence_logp(lp, mask, mean=True), [-2.0, -0.5])
    with pytest.raises(ValueError, match="mask_BxL"):
        P.masked_sequence_logp(lp, mask[:, :2])


def test_length_normalisation_scales_only_the_pair_terms(two_policies):
    """``normalize`` sets DPO's ``pair_scale`` to 1/L; ``log_probs`` stays the sum over the response's tokens (the
    sequence's log-probability, which sampling, KL and RLOO need)."""
    pi, _ = two_policies
    summed = P.sequence_policy(TASK, TOY.model)
    mean = P.sequence_policy(TASK, TOY.model, normalize=True)
    assert (summed.pair_scale, mean.pair_scale) == (1.0, 1.0 / 3)
    x, y = jnp.array([0, 3], jnp.int32), jnp.array([[0, 1, 2], [5, 4, 3]], jnp.int32)
    tok = P.response_token_logp(pi, TASK, TOY.model, x, y)
    for policy in (summed, mean):
        np.testing.assert_allclose(policy.log_probs(pi, x, y), tok.sum(1), rtol=1e-6)


def test_probabilities_over_all_responses_sum_to_one(policy, two_policies):
    table = jax.jit(policy.table)
    for params in (*two_policies, policy.init(jax.random.key(5))):
        logp = np.asarray(table(params), np.float64)
        assert logp.shape == (4, 216)
        np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, atol=1e-5)


def test_table_agrees_with_log_probs(policy, two_policies):
    pi, _ = two_policies
    y = jnp.asarray(T.responses(TASK))
    x = jnp.full(216, 2, jnp.int32)
    np.testing.assert_allclose(jax.jit(policy.table)(pi)[2], jax.jit(policy.log_probs)(pi, x, y), atol=1e-5)


def test_exact_kl_matches_its_monte_carlo_estimate(policy, two_policies):
    """k1 on n = 8000 samples per prompt; |exact - estimate| < 4 standard errors (fails with probability
    ~6e-5 for a correct implementation, under the normal approximation; the key is fixed)."""
    pi, ref = two_policies
    table = jax.jit(policy.table)
    lp, lr = np.asarray(table(pi), np.float64), np.asarray(table(ref), np.float64)
    exact = (np.exp(lp) * (lp - lr)).sum(1).mean()
    x = jnp.arange(4, dtype=jnp.int32)
    y = jax.jit(policy.sample, static_argnums=3)(pi, jax.random.key(7), x, 8000).reshape(-1, 3)
    xs = jnp.repeat(x, 8000)
    t = np.asarray(jax.jit(policy.log_probs)(pi, xs, y) - jax.jit(policy.log_probs)(ref, xs, y), np.float64)
    t = t.reshape(4, 8000)
    estimate = t.mean()
    se = np.sqrt(t.var(1, ddof=1).sum() / 8000) / 4  # the mean over 4 prompts of independent means
    assert exact > 0.1  # a non-trivial KL
    assert abs(estimate - exact) < 4 * se, (exact, estimate, se)


def test_sampler_frequencies_match_the_probabilities(policy, two_policies):
    """Chi-square goodness of fit of 40000 samples per prompt to exp(table), cells with expected count < 5
    pooled; rejected at p < 1e-3 (a correct sampler fails with probability 1e-3 per prompt; key fixed)."""
    pi, _ = two_policies
    n = 40_000
    probs = np.exp(np.asarray(jax.jit(policy.table)(pi), np.float64))
    y = np.asarray(jax.jit(policy.sample, static_argnums=3)(pi, jax.random.key(11), jnp.arange(4), n))
    index = (y * 6 ** np.arange(2, -1, -1)).sum(-1)  # lexicographic index of task.responses
    for x in range(4):
        counts = np.bincount(index[x], minlength=216)
        expected = probs[x] / probs[x].sum() * n
        small = expected < 5
        obs = np.append(counts[~small], counts[small].sum())
        exp = np.append(expected[~small], expected[small].sum())
        assert stats.chisquare(obs, exp).pvalue > 1e-3, x


def test_reward_model_is_bounded():
    rm = P.reward_model(TASK, TOY.reward_model, 5.0)
    params = rm.init(jax.random.key(0))
    params = {**params, "w_out": params["w_out"] * 1e3}
    r = np.asarray(jax.jit(rm.table)(params))
    assert r.shape == (4, 216) and (r >= 0).all() and (r <= 5.0).all() and r.std() > 0.1
    with pytest.raises(ValueError, match="config"):
        P.reward_model(TASK, TOY.model, 5.0)  # out_size must be 1

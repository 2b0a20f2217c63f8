"""The paper's claims as properties of random instances (hypothesis), computed rather than asserted.

References: arXiv:2406.01462, §4 (SPEC §4).
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import coverage_lab as cl
from coverage_lab import algorithms as A
from coverage_lab import bandits, coverage, data, exact, losses, minimisers, policies

seeds = st.integers(0, 2**31 - 1)


def random_tables(seed, n_prompts=2, n_responses=4, zeros=False):
    rng = np.random.default_rng(seed)
    pi_ref = rng.dirichlet(np.full(n_responses, 2.0), size=n_prompts)
    if zeros:
        pi_ref[:, -1] = 0.0
        pi_ref /= pi_ref.sum(-1, keepdims=True)
    return rng.dirichlet(np.ones(n_prompts)), pi_ref, rng.uniform(0, 1, (n_prompts, n_responses)), rng


def population_dpo_loss(pi, pi_ref, batch, beta):
    with np.errstate(divide="ignore"):
        logp, ref = np.log(pi), np.log(pi_ref)
    x, w, l = (np.asarray(v) for v in (batch.x_B, batch.y_w_B, batch.y_l_B))
    out = np.asarray(losses.dpo(logp[x, w], logp[x, l], ref[x, w], ref[x, l], beta), np.float64)
    return float(np.sum(np.asarray(batch.weight_B, np.float64) * out))


@given(seeds, st.floats(0.1, 3.0), st.floats(0.3, 3.0))
def test_dpo_minimiser_is_pi_star_under_full_coverage(seed, beta, temperature):
    rho, pi_ref, reward, _ = random_tables(seed)
    pref = bandits.preference_table(reward, temperature=temperature)
    ms = minimisers.minimiser_set(pi_ref, coverage.pair_table(pi_ref), pref, rho, reward, beta)
    assert (ms.n_components_X == 1).all() and not ms.uncovered_XxY.any()
    # BT with temperature T: the population DPO minimiser is pi_ref exp(r / (beta T)) / Z
    np.testing.assert_allclose(ms.worst_policy_XxY, exact.optimal_policy(reward / temperature, pi_ref, beta), atol=1e-9)


@given(seeds, st.floats(0.05, 2.0), st.floats(0.0, 0.99), st.integers(1, 2))
def test_dpo_loss_is_invariant_to_mass_on_unseen_responses(seed, beta, delta, n_unseen):
    rho, pi_ref, reward, rng = random_tables(seed, n_responses=5)
    support = np.ones_like(pi_ref, bool)
    support[:, -n_unseen:] = False
    mu = coverage.restrict(pi_ref, support)
    batch = data.exact_batch(rho, coverage.pair_table(mu), bandits.preference_table(reward))
    pi = rng.dirichlet(np.ones(5), size=2)
    before = population_dpo_loss(pi, pi_ref, batch, beta)
    after = population_dpo_loss(minimisers.move_mass(pi, 4, delta), pi_ref, batch, beta)
    np.testing.assert_allclose(after, before, rtol=1e-5)


@given(seeds, st.floats(0.05, 1.0), st.floats(0.1, 3.0))
def test_rlhf_kl_bound_holds_for_any_bounded_reward(seed, beta, r_max):
    """SPEC §4.3: RLHF's policy is ``pi_ref exp(r_hat/beta) / Z`` (written out here in numpy), which keeps
    ``KL <= R_max/beta`` and zero mass where ``pi_ref`` is zero, whatever ``r_hat`` in ``[0, R_max]``.

    The bound is tight up to ``1 + log s``, ``s = R_max/beta``: with two responses, ``r_hat = (R_max, 0)`` and
    ``pi_ref = (q, 1-q)``, ``q = (s-1) e^{-s}``, ``Z = 1 - q + q e^s = s - (s-1) e^{-s} < s`` and
    ``pi(y1) = q e^s / Z = (s-1)/Z``, so ``KL = E_pi[r_hat]/beta - log Z = s (s-1)/Z - log Z > s - 1 - log s``.
    """
    rho, pi_ref, reward, _ = random_tables(seed, zeros=True)
    r_hat = r_max * reward
    pi = exact.rlhf_policy(r_hat, pi_ref, beta, r_max=r_max)
    tilt = pi_ref * np.exp((r_hat - r_hat.max(-1, keepdims=True)) / beta)
    np.testing.assert_allclose(pi, tilt / tilt.sum(-1, keepdims=True), rtol=1e-10, atol=0)  # float64 exp
    assert exact.reverse_kl(pi, pi_ref, rho) <= r_max / beta + 1e-12
    assert (pi[pi_ref == 0] == 0).all()

    s = r_max / beta
    if s > 1:  # the near-extremal instance needs q > 0
        q = (s - 1) * np.exp(-s)
        pi_ref_2 = np.array([[q, 1 - q]])
        pi_2 = exact.rlhf_policy(np.array([[r_max, 0.0]]), pi_ref_2, beta, r_max=r_max)
        z = s - (s - 1) * np.exp(-s)
        kl = exact.reverse_kl(pi_2, pi_ref_2, np.ones(1))
        np.testing.assert_allclose(kl, s * (s - 1) / z - np.log(z), rtol=1e-9)  # one cancellation near s = 1
        # KL - (s - 1 - log s) falls like s e^-s, below float64's resolution of KL once s passes about 36
        assert s - 1 - np.log(s) - 1e-14 * s < kl <= s


@given(seeds, st.floats(0.01, 0.99))
@settings(max_examples=5)
def test_hypo_puts_zero_mass_where_pi_ref_is_zero(seed, delta):
    """SPEC §4.4 at ``eps = 0``: moving mass ``delta`` onto a response with ``pi_ref = 0`` leaves DPO's population
    objective unchanged but makes HyPO's, DPO's plus ``lam * KL(pi||pi_ref)``, infinite, so no HyPO minimiser puts
    mass there (without it, HyPO's objective is DPO's plus ``lam`` times the exact KL). And HyPO trained from
    ``pi_ref`` keeps that response at exactly zero, its other log-probabilities finite (no NaN from ``0 log 0``)."""
    rho, pi_ref, reward, rng = random_tables(seed, zeros=True)
    env = bandits.TabularBandit(rho, pi_ref, reward)
    beta, lam = 0.2, 0.1
    batch = data.exact_batch(rho, coverage.pair_table(pi_ref), bandits.preference_table(reward))
    policy = policies.tabular_softmax(env)
    ctx = A.Context(policy, policy.init(None), exact=True)
    dpo, hypo = (
        alg.make(alg, ctx, {k: np.float32(v) for k, v in alg.hparams.items()})
        for alg in (A.dpo(beta), A.hypo(beta, lam=lam))
    )
    covered = np.where(pi_ref > 0, rng.dirichlet(np.ones(4), size=2), 0.0)
    covered /= covered.sum(-1, keepdims=True)
    moved = minimisers.move_mass(covered, 3, delta)

    def at(objective, pi):
        with np.errstate(divide="ignore"):
            return float(objective(np.log(pi).astype(np.float32), batch, jax.random.key(0))[0])

    # float32 objectives: rtol 1e-5 is a few hundred ulps
    np.testing.assert_allclose(at(dpo, moved), at(dpo, covered), rtol=1e-5)
    np.testing.assert_allclose(
        at(hypo, covered), at(dpo, covered) + lam * exact.reverse_kl(covered, pi_ref, rho), rtol=1e-5
    )
    assert at(hypo, moved) == np.inf

    r = cl.run(env, A.hypo(beta, lam=lam), mu=pi_ref, n_pairs=None, steps=200, seeds=1, key=jax.random.key(0))
    logp_LxXxY = np.asarray(r.logs["eval"][0])
    assert (np.exp(logp_LxXxY)[..., -1] == 0).all() and np.isfinite(logp_LxXxY[..., :-1]).all()


@given(seeds, st.floats(0.05, 0.5), st.sampled_from([0.03, 0.1]), st.integers(1, 2))
@settings(max_examples=6)
def test_hypo_raises_unseen_mass_to_pi_ref_times_exp_kl(seed, beta, lam, n_unseen):
    """Tabular HyPO's KL term is the only force on an unseen logit, ``lam rho pi(y) [log(pi/pi_ref)(y) - KL_x]``,
    so trained to a stationary point it holds ``pi(y) = pi_ref(y) exp(KL_x)`` on every response the data never
    shows (``exact.hypo_unseen_mass``): more than ``pi_ref``'s mass there, not less, whatever the data."""
    rho, pi_ref, reward, rng = random_tables(seed, n_prompts=2, n_responses=5)
    support = np.ones_like(pi_ref, bool)
    for x in range(2):
        support[x, rng.choice(5, n_unseen, replace=False)] = False
    mu = coverage.restrict(pi_ref, support)
    env = bandits.TabularBandit(rho, pi_ref, reward)
    r = cl.run(env, A.hypo(beta, lam=lam), mu=mu, n_pairs=None, steps=4000, seeds=1, key=jax.random.key(0))
    pi = np.exp(np.asarray(r.logs["eval"][0, -1], np.float64))
    pi /= pi.sum(-1, keepdims=True)
    kl_X = exact.kl_per_prompt(pi, pi_ref)
    assume(kl_X.min() > 1e-3)  # a tilt to see: the data moved every prompt (the lift e^KL - 1 is 100x the tolerance)
    ratio = pi[~support] / pi_ref[~support]  # trained to within about 1e-7 of the identity in float32
    np.testing.assert_allclose(np.log(ratio), np.broadcast_to(kl_X[:, None], pi.shape)[~support], atol=1e-5)
    unseen_mass = rho @ (pi * ~support).sum(-1)
    np.testing.assert_allclose(unseen_mass, exact.hypo_unseen_mass(pi, pi_ref, ~support, rho), rtol=1e-5)
    assert unseen_mass > rho @ (pi_ref * ~support).sum(-1)


@given(hnp.arrays(np.float64, 6, elements=st.floats(-4, 4)), st.integers(0, 5), st.floats(1e-3, 5.0))
def test_squeezing_a_step_that_lowers_log_pi_y_raises_the_most_likely_other(logits, y, eta):
    """Gradient descent on log pi(y) moves logit j by eta (pi_j - [j = y]): every other response gains in
    proportion to its probability, so the most likely other one gains the most and its probability rises."""
    pi = jax.nn.softmax(jnp.asarray(logits))
    others = np.delete(np.arange(6), y)
    top = others[np.argmax(np.asarray(pi)[others])]
    assume(float(pi[y]) > 1e-6)
    step = logits - eta * np.asarray(jax.grad(lambda z: jax.nn.log_softmax(z)[y])(jnp.asarray(logits)), np.float64)
    new = np.asarray(jax.nn.softmax(jnp.asarray(step)))
    assert new[y] < float(pi[y])
    assert new[top] > float(pi[top])


@given(seeds, hnp.arrays(np.float64, 2, elements=st.floats(-5, 5)), st.floats(0.1, 2.0))
def test_per_prompt_reward_shifts_change_nothing(seed, shift_X, beta):
    rho, pi_ref, reward, rng = random_tables(seed)
    shifted = reward + shift_X[:, None]
    np.testing.assert_allclose(bandits.preference_table(shifted), bandits.preference_table(reward), atol=1e-12)
    np.testing.assert_allclose(
        exact.optimal_policy(shifted, pi_ref, beta), exact.optimal_policy(reward, pi_ref, beta), atol=1e-12
    )
    pi = rng.dirichlet(np.ones(4), size=2)
    losses_ = [
        population_dpo_loss(
            pi, pi_ref, data.exact_batch(rho, coverage.pair_table(pi_ref), bandits.preference_table(r)), beta
        )
        for r in (reward, shifted)
    ]
    np.testing.assert_allclose(losses_[0], losses_[1], rtol=1e-6)


@given(seeds, st.floats(0.05, 1.0))
def test_worst_case_over_dpo_minimisers_is_a_vertex_and_below_any_minimiser(seed, beta):
    """Without global coverage, J over the set of DPO minimisers is minimised at a vertex: check that no random
    member of the set (mixtures of components' tilted policies and uncovered mass) does worse."""
    rho, pi_ref, reward, rng = random_tables(seed, n_responses=5)
    support = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 0, 0]], bool)
    mu = coverage.restrict(pi_ref, support)
    ms = minimisers.minimiser_set(pi_ref, coverage.pair_table(mu), bandits.preference_table(reward), rho, reward, beta)
    for _ in range(20):
        w = rng.dirichlet(np.ones(5) * 0.5, size=2)  # weights: covered block vs each uncovered response
        member = np.zeros_like(pi_ref)
        for x in range(2):
            covered = ~ms.uncovered_XxY[x]
            member[x, covered] = w[x, 0] * ms.tilted_XxY[x, covered]
            free = np.flatnonzero(ms.uncovered_XxY[x])
            member[x, free] = w[x, 1 : 1 + len(free)] / max(w[x, 1:].sum(), 1e-300) * (1 - w[x, 0])
        member /= member.sum(-1, keepdims=True)
        assert exact.value(member, reward, pi_ref, rho, beta) >= ms.worst_value - 1e-9
        assert exact.reverse_kl(member, pi_ref, rho) <= ms.max_kl + 1e-9
    # ... and both bounds are attained at a vertex: the reported worst policy is one (a component's tilted policy or
    # a point mass on an uncovered response) with J = worst_value; the vertex of largest KL has KL = max_kl.
    most_kl = np.zeros_like(pi_ref)
    for x in range(2):
        vertices = [ms.component_policy(x, j) for j in range(ms.n_components_X[x])]
        vertices += [np.eye(5)[y] for y in np.flatnonzero(ms.uncovered_XxY[x])]
        assert any(np.array_equal(ms.worst_policy_XxY[x], v) for v in vertices)
        kls = [exact.kl_per_prompt(v[None], pi_ref[x][None])[0] for v in vertices]
        most_kl[x] = vertices[int(np.argmax(kls))]
    # float64, the same terms summed in another order
    np.testing.assert_allclose(exact.value(ms.worst_policy_XxY, reward, pi_ref, rho, beta), ms.worst_value, rtol=1e-12)
    np.testing.assert_allclose(exact.reverse_kl(most_kl, pi_ref, rho), ms.max_kl, rtol=1e-12)

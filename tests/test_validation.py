"""Bad inputs get a ValueError that names the parameter — never a NaN three calls later."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import coverage_lab as cl
from coverage_lab import _validate as V
from coverage_lab import algorithms as A
from coverage_lab import (
    bandits,
    cli,
    coverage,
    data,
    exact,
    losses,
    metrics,
    minimisers,
    plotting,
    policies,
    sweep,
    train,
)
from coverage_lab.transformer import evaluate as TE
from coverage_lab.transformer import model as TM
from coverage_lab.transformer import policy as TP
from coverage_lab.transformer import run as TR
from coverage_lab.transformer import sizes as TS
from coverage_lab.transformer import task as TT
from experiments import _counts as CNT
from experiments import kl_estimators as KE
from experiments import lower_bound as LB
from experiments import rates as RATES
from experiments import reverse_kl as RK
from experiments import separation_map as SM
from experiments import transformer_reverse_kl as TRK
from experiments import transformer_table as TTAB

GOOD_REF = np.array([[0.5, 0.3, 0.2]])
GOOD_R = np.array([[1.0, 0.0, 0.5]])
ONE = np.ones(1)
env, mu = bandits.counterexample(0.1)
z = np.zeros(1)
PAIRS = data.exact_batch(env.rho_X, coverage.pair_table(mu), bandits.preference_table(env.reward_XxY))
KEY = jax.random.key(0)
UNIFORM_LOGP = np.log(np.full((1, 1, 3), 1 / 3))
TOY = TS.get("toy")
TASK = TT.make_task(TOY.task)
MU_TOKENS = TT.mu_token_logp(TASK, 0.0)
X2, Y2 = np.zeros(2, np.int32), np.zeros((2, TASK.response_len), np.int32)


def _train_on_data(env, algorithm, hp, learning_rate=0.1, exact=True):
    opts = dict(key=KEY, rm_key=KEY, exact=exact, steps=1, reward_steps=1, learning_rate=learning_rate)
    return cl.simulation.train_on_data(env, algorithm, PAIRS, hp, **opts)


PAIR, PREF = coverage.pair_table(mu), bandits.preference_table(env.reward_XxY)
WEIGHTS = data.pair_weights(env.rho_X, PAIR, PREF)
PHI = np.array([[[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]])
MIN_SET = (GOOD_REF, np.array([[[0.25, 0.25, 0], [0.25, 0.25, 0], [0, 0, 0]]]), bandits.preference_table(GOOD_R))
MIN_SET = (*MIN_SET, ONE, GOOD_R)
ONLINE_HP = {"beta": 0.1, "online_fraction": 1.5, "r_max": 1.0}
SIM = dict(mu=mu, n_pairs=None, steps=2, seeds=1, key=KEY)
NO_TABLE = policies.tabular_softmax(env)._replace(table=None)
POLICY_OPTS = dict(exact=True, steps=1, optimizer=cl.fitting.default_optimizer(0.1, 1))
OPT = cl.fitting.default_optimizer(0.1, 1)


def _objective(params, batch, key):
    return params**2, {}


def _uniform_logp(n_rows, n_cols):
    return np.log(np.full((n_rows, n_cols), 1.0 / n_cols))


TOY_POLICY = TP.sequence_policy(TASK, TOY.model)
TOY_PARAMS = TM.init(KEY, TOY.model)


THREE_LAYERS = dataclasses.replace(TOY.model, n_layers=3)  # the toy model has one


def _toy_sample(key=KEY, temperature=1.0, params=TOY_PARAMS):
    return TM.sample(params, key, np.zeros((2, 2), np.int32), TOY.model, length=3, temperature=temperature)


def _bare_loss(params, batch, key):
    return (params**2).sum()  # not (loss, metrics)


TINY_REF_ENV = bandits.TabularBandit(ONE, np.array([[1 - 1e-50, 1e-50]]), np.zeros((1, 2)))
EVAL_OPTS = dict(n_samples=2, mu_logp_XxV=MU_TOKENS, data=PAIRS)


def _softmax_logp(x_B, y_B):
    policy = policies.tabular_softmax(env)
    return policy.log_probs(policy.init(KEY), x_B, y_B)


def _rm_rewards(x_B, y_B):
    rm = policies.bounded_reward_model(env, 1.0)
    return rm.rewards(rm.init(KEY), x_B, y_B)


TAB, LOGLIN = (
    policies.tabular_softmax(env),
    policies.log_linear(bandits.LinearBandit(ONE, PHI, np.zeros(2), np.zeros(2))),
)
X1 = jnp.array([0])


def _dpo_fit(pairs):
    return cl.fitting.train_policy(TAB, A.dpo(0.1), pairs, {"beta": 0.1}, KEY, **POLICY_OPTS)


def _online_fit(pref):
    alg = A.online_dpo(online_fraction=0.5)
    return cl.fitting.train_policy(TAB, alg, PAIRS, alg.hparams, KEY, pref_XxYxY=pref, **POLICY_OPTS)


def _ctx(exact, policy=TAB):
    return A.Context(policy, TAB.init(KEY), exact)


_RK_ENV, _RK_MU = RK.instance(jax.random.key(1))
_RK_LOGP = np.log(np.asarray(_RK_ENV.pi_ref_XxY, np.float64))[None]
_RK_PAIRS = RK.heldout_pairs(_RK_ENV, _RK_MU, KEY)


# pairs only between responses 1 and 2, the reward all on response 0: J/beta of the vertex y0 overflows
_TILTED_AWAY = (GOOD_REF, np.array([[[0, 0, 0], [0, 0, 0.5], [0, 0.5, 0]]]), np.full((1, 3, 3), 0.5), ONE)
_TILTED_AWAY = (*_TILTED_AWAY, np.array([[1e10, 0.0, 0.0]]))
_NO_HELDOUT = pd.DataFrame({c: [0] for c in RK.PLOT_COLUMNS}).assign(algorithm="dpo", metric="kl", split="report")
_NO_TABLE_METRIC = pd.DataFrame({c: [0] for c in TTAB.PLOT_COLUMNS}).assign(algorithm="dpo", metric="loss")


CASES = [
    ("unnormalised rho", lambda: bandits.TabularBandit(np.array([0.7]), GOOD_REF, GOOD_R), "rho_X"),
    ("negative pi_ref", lambda: bandits.TabularBandit(ONE, np.array([[1.2, -0.2, 0.0]]), GOOD_R), "pi_ref_XxY"),
    ("unnormalised pi_ref", lambda: bandits.TabularBandit(ONE, np.array([[0.5, 0.3, 0.1]]), GOOD_R), "pi_ref_XxY"),
    ("reward shape", lambda: bandits.TabularBandit(ONE, GOOD_REF, np.zeros((1, 4))), "reward_XxY"),
    ("NaN reward", lambda: bandits.TabularBandit(ONE, GOOD_REF, np.array([[np.nan, 0, 0]])), "reward_XxY"),
    ("theta shape", lambda: bandits.LinearBandit(ONE, np.zeros((1, 3, 2)), np.zeros(3), np.zeros(2)), "theta_star_D"),
    ("eps >= 1", lambda: bandits.counterexample(1.0), "eps"),
    ("one response", lambda: bandits.random_tabular(jax.random.key(0), 2, 1), "n_responses"),
    ("not a key", lambda: bandits.random_tabular(0, 2, 3), "key"),
    ("negative beta (loss)", lambda: losses.dpo(z, z, z, z, -0.1), "beta"),
    ("zero beta (factory)", lambda: A.dpo(beta=0.0), "beta"),
    ("negative lam", lambda: A.hypo(beta=0.1, lam=-1.0), "lam"),
    ("k < 2", lambda: A.hypo(beta=0.1, lam=0.1, k=1), "k"),
    ("online fraction > 1", lambda: A.online_dpo(online_fraction=1.5), "online_fraction"),
    ("negative beta (exact)", lambda: exact.optimal_policy(GOOD_R, GOOD_REF, -1.0), "beta"),
    ("pi shape (exact)", lambda: exact.reverse_kl(np.ones((1, 2)) / 2, GOOD_REF, ONE), "pi_XxY"),
    ("tail mass eps", lambda: coverage.tail_mass(GOOD_REF, np.array([[0, 0, 1]], bool), 1.5), "eps"),
    ("negative radius", lambda: coverage.kl_ball_coefficient(GOOD_REF, GOOD_REF, ONE, -1.0), "radius"),
    (
        "pair table not a distribution",
        lambda: data.exact_batch(ONE, np.ones((1, 3, 3)), np.full((1, 3, 3), 0.5)),
        "pair_XxYxY",
    ),
    (
        "n_pairs <= 0",
        lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=0, steps=2, seeds=1, key=jax.random.key(0)),
        "n_pairs",
    ),
    (
        "mu not a distribution",
        lambda: cl.simulate(env, A.dpo(), mu=mu * 2, n_pairs=8, steps=2, seeds=1, key=jax.random.key(0)),
        "mu",
    ),
    ("key not a key", lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=8, steps=2, seeds=1, key=0), "key"),
    (
        "unknown metric",
        lambda: cl.simulate(
            env, A.dpo(), mu=mu, n_pairs=8, steps=2, seeds=1, key=jax.random.key(0), metrics=["kl", "nope"]
        ),
        "metrics",
    ),
    (
        "log_every not dividing",
        lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=8, steps=10, seeds=1, key=jax.random.key(0), log_every=3),
        "log_every",
    ),
    (
        "algorithm k < 2",
        lambda: cl.simulate(
            env,
            A.Algorithm("hypo", A._make_hypo, {"beta": 0.1, "lam": 0.1}, k=1),
            mu=mu,
            n_pairs=8,
            steps=2,
            seeds=1,
            key=jax.random.key(0),
        ),
        "k",
    ),
    (
        "bool seed ids",
        lambda: cl.run(env, A.dpo(), mu=mu, n_pairs=8, steps=2, seeds=[True], key=jax.random.key(0)),
        "seeds",
    ),
    ("pair counts shape", lambda: data.empirical_batch(np.ones((1, 3, 2))), "counts_XxYxY"),
    ("pair weights shape", lambda: data.sample_counts(jax.random.key(0), np.ones((3, 3)) / 9, 4), "weights_XxYxY"),
    ("count table size", lambda: data.pair_counts(PAIRS, 0, 3), "n_prompts"),
    ("pairs outside the table", lambda: data.pair_counts(PAIRS, 1, 1), "n_responses"),
    (
        "hp lacks a hyper-parameter",
        lambda: cl.fitting.train_policy(
            cl.policies.tabular_softmax(env),
            A.dpo(),
            PAIRS,
            {},
            jax.random.key(0),
            exact=False,
            steps=1,
            optimizer=cl.fitting.default_optimizer(0.1, 1),
        ),
        "hp",
    ),  # fmt: skip
    ("train on data: not a bandit", lambda: _train_on_data("env", A.dpo(), {"beta": 0.1}), "env"),
    ("train on data: rlhf without r_max", lambda: _train_on_data(env, A.rlhf(), {"beta": 0.1}), "hp"),
    ("train on data: negative step size", lambda: _train_on_data(env, A.dpo(), {"beta": 0.1}, -0.1), "learning_rate"),
    # a list or a bool where one number is meant is refused, not reduced to one of its entries
    ("beta as a list", lambda: exact.optimal_policy(GOOD_R, GOOD_REF, [0.1, 10.0]), "beta"),
    ("beta as a bool", lambda: A.dpo(beta=True), "beta"),
    ("lam as an array", lambda: A.hypo(beta=0.1, lam=np.array([0.1, 1.0])), "lam"),
    ("beta too small for the reward", lambda: exact.optimal_policy(2 * GOOD_R, GOOD_REF, 1e-308), "beta"),
    ("beta too small (optimal value)", lambda: exact.optimal_value(2 * GOOD_R, GOOD_REF, ONE, 1e-308), "beta"),
    (
        "tau too small (IPO)",
        lambda: exact.ipo_solution(GOOD_REF, GOOD_REF, bandits.preference_table(GOOD_R), 1e-310),
        "tau",
    ),
    ("seeds not a count or ids", lambda: V.seed_ids(2.5), "seeds"),
    (
        "metrics a string, not its letters",
        lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=8, steps=2, seeds=1, key=KEY, metrics="kl"),
        "metrics must be a sequence of names",
    ),
    (
        "an algorithm with beta overflowing float32 (it gave NaN losses in simulate)",
        lambda: A.dpo(beta=1e39),
        "beta",
    ),
    (
        "simulate, learning rate overflowing float32",
        lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=None, steps=2, seeds=1, key=KEY, learning_rate=1e39),
        "learning_rate",
    ),
    (
        "simulate, a pi_ref mass float32 cannot hold",
        lambda: cl.simulate(bandits.counterexample(1e-50)[0], A.dpo(), mu=mu, n_pairs=None, steps=2, seeds=1, key=KEY),
        "pi_ref_XxY",
    ),
    (
        "no metrics",
        lambda: cl.simulate(env, A.dpo(), mu=mu, n_pairs=8, steps=2, seeds=1, key=KEY, metrics=[]),
        "metrics",
    ),
    (
        "sampled run, pair table not a distribution",
        lambda: cl.run(
            env, A.dpo(), mu=mu, pair_XxYxY=2 * coverage.pair_table(mu), n_pairs=8, steps=2, seeds=1, key=KEY
        ),
        "pair_XxYxY",
    ),
    (
        "sampled KL, pi_ref not a distribution",
        lambda: metrics.sampled_kl(KEY, UNIFORM_LOGP, GOOD_REF * 5, ONE),
        "pi_ref",
    ),
    ("sampled KL, rho length", lambda: metrics.sampled_kl(KEY, UNIFORM_LOGP, GOOD_REF, np.ones(2) / 2), "rho_X"),
    ("sampled KL, logp shape", lambda: metrics.sampled_kl(KEY, np.zeros((1, 3)), GOOD_REF, ONE), "logp_NxXxY"),
    ("policy metrics, +inf logp", lambda: metrics.policy_metrics(np.array([[[np.inf, 0, 0]]]), env, beta=0.1), "logp"),
    ("policy metrics, no mass", lambda: metrics.policy_metrics(np.full((1, 1, 3), -np.inf), env, beta=0.1), "logp"),
    ("policy metrics, not a bandit", lambda: metrics.policy_metrics(UNIFORM_LOGP, "env", beta=0.1), "env"),
    ("data metrics, prompts", lambda: metrics.data_metrics(UNIFORM_LOGP, PAIRS, 0, 3), "n_prompts"),
    ("data metrics, not a batch", lambda: metrics.data_metrics(UNIFORM_LOGP, (1, 2, 3), 1, 3), "data"),
    ("rho as a pandas Series", lambda: bandits.TabularBandit(pd.Series([0.7]), GOOD_REF, GOOD_R), "rho_X"),
    ("bump peak", lambda: bandits.gaussian_bump(peak=np.inf), "peak"),
    ("negative r_max (reward model)", lambda: policies.bounded_reward_model(env, -1.0), "r_max"),
    ("policy of a non-bandit", lambda: policies.tabular_softmax("env"), "env"),
    ("minibatch larger than the data", lambda: data.minibatch_indices(KEY, 10, 20, 5), "batch_size"),
    ("minibatch of no data", lambda: data.minibatch_indices(KEY, 0, 1, 5), "n"),
    ("negative pair count", lambda: data.sample_counts(KEY, np.full((1, 2, 2), 0.25), -5), "n"),
    ("loglog fit lengths", lambda: plotting.loglog_fit([1, 2, 3], [1, 2]), "err"),
    ("loglog fit, too few points", lambda: plotting.loglog_fit([1, 2, 3], [1, 0, 0]), "err"),
    ("sweep run not a table", lambda: sweep.run_sweep([{"a": 1}], lambda s: {}, "/nonexistent/x.csv"), "run"),
    ("sweep settings a string", lambda: sweep.run_sweep("ab", lambda s: None, "/nonexistent/x.csv"), "settings"),
    ("float tokens", lambda: TT.gold_reward(TASK, X2, Y2.astype(np.float32)), "y_BxL"),
    ("token out of range", lambda: TT.sequence_logp(_uniform_logp(TASK.n_prompts, 3), X2, Y2 + 3), "y_BxL"),
    ("prompt out of range", lambda: TT.uncovered(_uniform_logp(1, TASK.n_tokens), X2 + 1, Y2), "x_B"),
    (
        "model token out of range",
        lambda: TM.apply(TM.init(KEY, TOY.model), np.full((1, 2), TOY.model.vocab_size, np.int32), TOY.model),
        "tokens_BxT",
    ),
    ("rewards not numbers", lambda: losses.bt(["high"], ["low"]), "r_w_B"),
    ("pair outside pi_ref", lambda: losses.dpo(-np.inf + z, z, -np.inf + z, z, 0.1), "ref_logp_w_B"),
    ("no responses", lambda: coverage.reward_softmax(np.zeros((1, 0)), 1.0), "reward_XxY"),
    (
        "band without the by column",
        lambda: plotting.band(None, pd.DataFrame({"step": [0], "value": [1.0]})),
        "algorithm",
    ),
    ("exact KL shapes", lambda: TE.exact_kl(np.zeros((2, 3)), np.zeros((2, 1))), "ref_logp_XxY"),
    ("a switch given as a string", lambda: A.online_dpo(label_with_reward_model="no"), "label_with_reward_model"),
    ("a switch given as a number", lambda: TR.simulate_many("toy", [A.dpo()], key=KEY, exact=2), "exact"),
    ("pairs, deterministic as a string", lambda: TT.sample_pairs(KEY, TASK, 2, MU_TOKENS, deterministic="y"), "det"),
    (
        "preference labels, deterministic as a string",
        lambda: bandits.preference_table(GOOD_R, deterministic="no"),
        "det",
    ),
    (
        "deterministic labels with a negative temperature",
        lambda: bandits.preference_table(GOOD_R, temperature=-1.0, deterministic=True),
        "temperature",
    ),
    ("normalize as a number", lambda: TP.sequence_policy(TASK, TOY.model, normalize=1), "normalize"),
    ("no features", lambda: coverage.feature_coverage(np.zeros((1, 3, 0)), GOOD_REF, GOOD_REF, ONE), "phi_XxYxD"),
    ("no features (hull)", lambda: coverage.global_coverage_loglinear(GOOD_REF, np.zeros((1, 3, 0)), ONE), "phi"),
    # a second audit (2026-11-30): each of these returned NaN, a silently wrong number or an unnamed error
    ("count weights with NaN", lambda: data.sample_counts(KEY, WEIGHTS * np.nan, 10), "weights_XxYxY"),
    ("count weights negative", lambda: data.sample_counts(KEY, -WEIGHTS, 10), "weights_XxYxY"),
    ("count weights not summing to 1", lambda: data.sample_counts(KEY, 2 * WEIGHTS, 10), "weights_XxYxY"),
    ("count weights as text", lambda: data.sample_counts(KEY, [[["a"]]], 3), "weights_XxYxY"),
    ("a fractional number of draws", lambda: data.sample_counts(KEY, WEIGHTS, 2.5), "n"),
    ("a row index past the data", lambda: data.take(PAIRS, np.array([0, 100])), "idx_B"),
    ("a batch of keys", lambda: data.sample_pairs(jax.random.split(KEY, 2), env.rho_X, PAIR, PREF, 4), "single"),
    ("unnormalised log-probabilities", lambda: metrics.data_metrics(UNIFORM_LOGP + 3, PAIRS, 1, 3), "logp_NxXxY"),
    ("DPO, a pair with no mass", lambda: losses.dpo(-np.inf, -np.inf, 0.0, 0.0, 0.1), "logp_w_B"),
    ("DPO, NaN log-probability", lambda: losses.dpo(np.nan, 0.0, 0.0, 0.0, 0.1), "logp_w_B"),
    ("DPO, complex log-probability", lambda: losses.dpo(1j, 0.0, 0.0, 0.0, 0.1), "logp_w_B"),
    ("IPO, NaN log-probability", lambda: losses.ipo(0.0, np.nan, 0.0, 0.0, 0.1), "logp_l_B"),
    ("BT, NaN reward", lambda: losses.bt(np.nan, 0.0), "r_w_B"),
    ("BT, infinite rewards", lambda: losses.bt(np.inf, np.inf), "r_w_B"),
    ("k3 of a sample with no mass", lambda: losses.kl_k3(-np.inf, 0.0), "logp_B"),
    ("RLOO of a sample with no mass", lambda: losses.rloo([[-np.inf, 0.0]], [[1.0, 1.0]]), "logp_BxK"),
    ("LOO, infinite reward", lambda: losses.loo_advantage([[np.inf, 1.0]]), "reward_BxK"),
    ("LOO, text", lambda: losses.loo_advantage(["a", "b"]), "reward_BxK"),
    ("PPO, no sample axis", lambda: losses.ppo_clip(0.0, 0.0, 0.0, 0.2), "logp_BxK"),
    ("IPO minimisers, overflowing tau", lambda: minimisers.minimiser_set(*MIN_SET, 0.1, loss="ipo", tau=1e-310), "tau"),
    ("DPO minimisers, overflowing beta", lambda: minimisers.minimiser_set(*MIN_SET, 1e-310), "beta"),
    ("covariance overflow", lambda: coverage.pair_covariance(PHI * 1e200, GOOD_REF, ONE), "phi_XxYxD"),
    ("mixture weight as a switch", lambda: coverage.mixture(GOOD_REF, GOOD_REF, True), "alpha"),
    ("mixture weight as text", lambda: coverage.mixture(GOOD_REF, GOOD_REF, "0.5"), "alpha"),
    ("KL radius, beta as a switch", lambda: coverage.kl_radius(1.0, True), "beta"),
    ("reward as text", lambda: bandits.TabularBandit(ONE, GOOD_REF, "r"), "reward_XxY"),
    (
        "linear logits overflow",
        lambda: bandits.LinearBandit(ONE, PHI * 1e200, np.zeros(2), np.ones(2) * 1e200),
        "theta_ref_D",
    ),
    ("preferences of a scalar reward", lambda: bandits.preference_table(1.0), "reward_XxY"),
    ("covered as text", lambda: bandits.linear_extrapolation("no"), "covered"),
    ("response index out of range", lambda: _softmax_logp(np.array([0]), np.array([3])), "y_B"),
    ("negative response index", lambda: _softmax_logp(np.array([0]), np.array([-1])), "y_B"),
    ("reward model, prompt out of range", lambda: _rm_rewards(np.array([5]), np.array([0])), "x_B"),
    ("hp lam NaN", lambda: _train_on_data(env, A.hypo(), {"beta": 0.1, "lam": np.nan}), "lam"),
    ("hp beta negative", lambda: _train_on_data(env, A.dpo(), {"beta": -0.1}), "beta"),
    ("hp online fraction > 1", lambda: _train_on_data(env, A.online_dpo(), ONLINE_HP), "online_fraction"),
    (
        "an algorithm built with a negative lam",
        lambda: cl.simulate(env, A.Algorithm("hypo", A.hypo().make, {"beta": 0.1, "lam": -1.0}, k=4), **SIM),
        "lam",
    ),
    ("exact as text", lambda: _train_on_data(env, A.dpo(), {"beta": 0.1}, exact="no"), "exact"),
    (
        "exact without a table",
        lambda: cl.fitting.train_policy(NO_TABLE, A.dpo(), PAIRS, {"beta": 0.1}, KEY, **POLICY_OPTS),
        "exact",
    ),
    ("fit, key not a key", lambda: train.fit(_objective, 0.0, PAIRS, 0, steps=1, optimizer=OPT), "key"),
    ("fit, data not a batch", lambda: train.fit(_objective, 0.0, (1, 2), KEY, steps=1, optimizer=OPT), "data"),
    ("fit, no optimizer", lambda: train.fit(_objective, 0.0, PAIRS, KEY, steps=1, optimizer=None), "optimizer"),
    (
        "fit, NaN parameters",
        lambda: train.fit(_objective, np.array([0.0, np.nan]), PAIRS, KEY, steps=1, optimizer=OPT),
        "params",
    ),
    (
        "fit, a +inf leaf named by its path (-inf, a logit of no mass, is fine)",
        lambda: train.fit(_objective, {"a": -np.inf * np.ones(2), "b": np.inf}, PAIRS, KEY, steps=1, optimizer=OPT),
        r"params\['b'\]",
    ),
    ("optimizer, NaN step size", lambda: cl.fitting.default_optimizer(np.nan, 10), "learning_rate"),
    ("optimizer, negative step size", lambda: cl.fitting.default_optimizer(-0.1, 10), "learning_rate"),
    ("optimizer, fractional steps", lambda: cl.fitting.default_optimizer(0.1, 2.5), "steps"),
    ("reproduce, zero seeds", lambda: cli.reproduce("kl_estimators", smoke=True, seeds=0), "seeds"),
    ("slope, one distinct n", lambda: plotting.loglog_fit([2, 2, 2], [1.0, 0.5, 0.3]), "n"),
    ("seed slope, lengths", lambda: plotting.loglog_fit_seeds([1, 1, 2, 2, 3, 3], [1.0, 1.0]), "err"),
    ("seed slope, a zero", lambda: plotting.loglog_fit_seeds([1, 1, 2, 2, 3, 3], [1, 1, 1, 0, 1, 1]), "err"),
    ("seed slope, a NaN", lambda: plotting.loglog_fit_seeds([1, 1, 2, 2, 3, 3], [1, 1, 1, np.nan, 1, 1]), "err"),
    ("seed slope, infinite n", lambda: plotting.loglog_fit_seeds([1, 1, 2, 2, np.inf, 3], [1.0] * 6), "n"),
    ("seed slope, one run at an n", lambda: plotting.loglog_fit_seeds([1, 1, 2, 2, 3], [1.0] * 5), "err"),
    ("seed slope, two distinct n", lambda: plotting.loglog_fit_seeds([1, 1, 2, 2], [1.0] * 4), "err"),
    ("seed slope, few resamples", lambda: plotting.loglog_fit_seeds([1, 1, 2, 2, 3, 3], [1.0] * 6, n_boot=5), "n_boot"),
    ("band of a dict", lambda: plotting.band(None, {"value": [1]}), "df"),
    ("sweep without a run function", lambda: sweep.run_sweep([{"a": 1}], None, "unused.csv"), "run"),
    ("constrained HyPO from lam = 0", lambda: A.hypo(0.1, lam=0.0, kl_budget=1.0), "lam"),
    ("a hyper-parameter as a switch", lambda: A.dpo(True), "beta"),
    ("a sweep of lam with a negative value", lambda: A.check_hparams(A.hypo(), {"beta": 0.1, "lam": [0.1, -1]}), "lam"),
    ("a key that is not one", lambda: V.key("key", jax.numpy.zeros((), jax.numpy.uint32)), "PRNG key such as"),
    # the transformer track's audit (2026-11-30)
    ("sampling prompts out of range", lambda: TOY_POLICY.sample(TOY_PARAMS, KEY, np.array([10, -3]), 2), "x_B"),
    ("sampling k = 0", lambda: TOY_POLICY.sample(TOY_PARAMS, KEY, X2, 0), "k"),
    ("parameters of another model", lambda: TM.apply(TM.init(KEY, THREE_LAYERS), Y2, TOY.model), "params"),
    ("reference parameters not parameters", lambda: TP.sequence_policy(TASK, TOY.model, ref_params="abc"), "ref_"),
    ("a temperature underflowing float32", lambda: TT.preference(TASK, X2, Y2, Y2, 1e-39), "temperature"),
    (
        "a label temperature underflowing float32",
        lambda: TR.simulate_many("toy", [A.dpo()], key=KEY, label_temperature=1e-300),
        "label_temperature",
    ),
    ("a sampling temperature underflowing", lambda: _toy_sample(temperature=1e-45), "temperature"),
    ("model sampling, key not a key", lambda: _toy_sample(key=0), "key"),
    ("exact KL, unnormalised reference", lambda: TE.exact_kl(np.log([[1 / 3] * 3]), np.zeros((1, 3))), "ref_logp"),
    ("exact KL, NaN", lambda: TE.exact_kl(np.array([[np.nan, 0.0]]), np.log([[0.5, 0.5]])), "logp_XxY"),
    ("exact KL, no prompts", lambda: TE.exact_kl(np.zeros((0, 3)), np.zeros((0, 3))), "logp_XxY"),
    ("token table with NaN", lambda: TT.uncovered(np.full((1, TASK.n_tokens), np.nan), X2[:1], Y2[:1]), "token_logp"),
    ("token table unnormalised", lambda: TT.sequence_logp(np.zeros((TASK.n_prompts, 3)), X2, Y2), "token_logp"),
    ("i.i.d. sampling, key not a key", lambda: TT.sample_iid(0, MU_TOKENS, X2, 3), "key"),
    ("mean as text", lambda: TP.masked_sequence_logp(np.zeros((1, 3)), np.ones((1, 3)), mean="no"), "mean"),
    ("a mask of 2", lambda: TP.masked_sequence_logp(np.zeros((1, 3)), np.full((1, 3), 2.0)), "mask_BxL"),
    ("1-D log-probabilities", lambda: TP.masked_sequence_logp(np.zeros(3), np.ones(3)), "token_logp_BxL"),
    ("a size's fast_compile as text", lambda: dataclasses.replace(TOY, fast_compile="yes"), "fast_compile"),
    ("a size named by a path", lambda: dataclasses.replace(TOY, name="../../x"), "name"),
    ("a size's task by name", lambda: dataclasses.replace(TOY, task="toy"), "task"),
    ("a size given as a list", lambda: TS.get(["toy"]), "size"),
    ("metric names of a task name", lambda: TE.names("toy", reward_model=True), "task"),
    ("metric names, reward_model as text", lambda: TE.names(TASK, reward_model="no"), "reward_model"),
    # a third audit: each of these gave NaN or inf, a silently wrong answer, or an error naming nothing
    ("DPO, beta overflowing float32", lambda: losses.dpo(z, z, z, z, 1e39), "beta"),
    ("DPO, beta vanishing in float32", lambda: losses.dpo(z, z, z, z, 1e-50), "beta"),
    ("IPO, 1/tau overflowing float32", lambda: losses.ipo(z, z, z, z, 1e-40), "tau"),
    ("IPO, its squared margin overflowing float32", lambda: losses.ipo(z, z, z, z, 1e-21), "tau"),
    ("IPO's factory, its squared margin overflowing float32", lambda: A.ipo(tau=1e-21), "tau"),
    ("IPO, a sweep value overflowing", lambda: A.check_hparams(A.ipo(), {"tau": np.array([0.1, 1e-21])}), "tau"),
    ("reward model, r_max overflowing float32", lambda: policies.bounded_reward_model(env, 1e39), "r_max"),
    ("policy of a pi_ref mass float32 cannot hold", lambda: policies.tabular_softmax(TINY_REF_ENV), "pi_ref_XxY"),
    (
        "linear pi_ref underflowing to 0",
        lambda: bandits.LinearBandit(ONE, PHI, np.zeros(2), np.array([400.0, 0])),
        "theta_ref",
    ),
    ("more draws than float32 counts", lambda: data.sample_counts(KEY, WEIGHTS, 2**24 + 1), "n must be <="),
    (
        "log-probs, x_B and y_B of different shapes",
        lambda: _softmax_logp(np.zeros(2, int), np.zeros((2, 1), int)),
        "x_B",
    ),
    ("log-probs, float prompt indices", lambda: _softmax_logp(np.array([0.0]), np.array([1])), "x_B"),
    ("log-probs, indices as lists", lambda: _softmax_logp([0], [1]), "x_B"),
    ("rewards, x_B and y_B of different shapes", lambda: _rm_rewards(np.zeros(3, int), np.zeros(1, int)), "y_B"),
    ("a table policy of no functions", lambda: policies.from_table(None, None), "init"),
    (
        "model sampling, NaN parameters",
        lambda: _toy_sample(params=jax.tree.map(lambda a: a * np.nan, TOY_PARAMS)),
        "params",
    ),
    (
        "model logits, an inf parameter",
        lambda: TM.apply(jax.tree.map(lambda a: a + np.inf, TOY_PARAMS), np.zeros((1, 2), np.int32), TOY.model),
        "params",
    ),
    ("a mask of None", lambda: coverage.restrict(GOOD_REF, None), "support_XxY must be a boolean mask"),
    ("reference key not a key", lambda: TR.simulate_many("toy", [A.dpo()], key=KEY, ref_key=5), "ref_key"),
    ("a bandit missing an array", lambda: bandits.TabularBandit(None, GOOD_REF, GOOD_R), "rho_X"),
    ("float row indices", lambda: data.take(PAIRS, np.array([0.0, 1.0])), "idx_B"),
    ("2-D row indices", lambda: data.take(PAIRS, np.zeros((2, 1), int)), "idx_B"),
    ("pair counts of float prompts", lambda: data.pair_counts(PAIRS._replace(x_B=PAIRS.x_B * 1.0), 1, 3), "data.x_B"),
    ("pairs of different lengths", lambda: data.pair_indices(PAIRS._replace(y_w_B=PAIRS.y_w_B[:1]), 1, 3), "y_w_B"),
    ("evaluator of a task name", lambda: TE.make_evaluator("foo", TOY_POLICY, TOY_PARAMS, KEY, **EVAL_OPTS), "task"),
    ("evaluator of no policy", lambda: TE.make_evaluator(TASK, None, TOY_PARAMS, KEY, **EVAL_OPTS), "policy"),
    ("seed slope, negative seed", lambda: plotting.loglog_fit_seeds([1, 1, 2, 2, 3, 3], [1.0] * 6, seed=-1), "seed"),
    (
        "fit, objective returning a bare loss",
        lambda: train.fit(_bare_loss, np.ones(2), PAIRS, KEY, steps=1, optimizer=OPT),
        "objective",
    ),
    ("compile cache of True", lambda: cli.use_compile_cache(True), "directory"),
    # found by an audit of the public functions (2026-11-30): each of these returned NaN, a wrong value or a bare error
    ("tilt target out of reach", lambda: KE.tilt_for(np.array([0.5, 0.5]), np.array([1.0, 0.0]), 5.0), "target"),
    ("tilt of a constant reward", lambda: KE.tilt_for(np.array([0.5, 0.5]), np.ones(2), 0.3), "target"),
    ("kl of unnormalised p", lambda: KE.kl(np.array([0.5, 0.7]), np.array([0.5, 0.5])), "p_Y"),
    ("minimiser set, beta overflowing", lambda: minimisers.minimiser_set(*_TILTED_AWAY, 1e-300), "J/beta overflows"),
    ("tabular sample, prompt out of range", lambda: TAB.sample(TAB.init(KEY), KEY, jnp.array([7]), 4), "x_B"),
    ("tabular sample, k = 0", lambda: TAB.sample(TAB.init(KEY), KEY, jnp.array([0]), 0), "k"),
    ("tabular sample, int key", lambda: TAB.sample(TAB.init(KEY), 0, jnp.array([0]), 2), "key"),
    ("tabular log-probs, NaN params", lambda: TAB.log_probs(jnp.full((1, 3), jnp.nan), X1, X1), "params"),
    ("tabular log-probs, params of another shape", lambda: TAB.log_probs(jnp.zeros((2, 2)), X1, X1), "params"),
    ("log-linear table, theta of another size", lambda: LOGLIN.table(jnp.zeros(3)), "params"),
    ("fit, negative weights", lambda: _dpo_fit(PAIRS._replace(weight_B=-PAIRS.weight_B)), "weight_B"),
    ("fit, NaN weights", lambda: _dpo_fit(PAIRS._replace(weight_B=PAIRS.weight_B * np.nan)), "weight_B"),
    ("fit, weights summing to 5", lambda: _dpo_fit(PAIRS._replace(weight_B=PAIRS.weight_B * 5)), "weight_B"),
    ("fit, one weight short", lambda: _dpo_fit(PAIRS._replace(weight_B=PAIRS.weight_B[1:])), "weight_B"),
    ("online DPO, no preference table", lambda: _online_fit(None), "pref_XxYxY"),
    ("online DPO, table of another shape", lambda: _online_fit(jnp.full((1, 2, 2), 0.5)), "pref_XxYxY"),
    ("online DPO, probabilities above 1", lambda: _online_fit(jnp.full((1, 3, 3), 5.0)), "pref_XxYxY"),
    ("online DPO, not a table", lambda: _online_fit(5), "pref_XxYxY"),
    (
        "transformer run, learning rate past float32",
        lambda: TR.simulate("toy", A.dpo(0.1), key=KEY, learning_rate=1e39),
        "learning_rate",
    ),
    ("token task, r_max past float32", lambda: TT.TaskConfig(r_max=1e39), "r_max"),
    ("transformer sample, infinite temperature", lambda: _toy_sample(temperature=np.inf), "temperature"),
    ("validation loss, negative beta", lambda: RK.validation_loss(_RK_LOGP, _RK_ENV, _RK_MU, -0.5), "beta"),
    ("held-out loss, NaN beta", lambda: RK.heldout_loss(_RK_LOGP, _RK_ENV, _RK_PAIRS, np.nan), "beta"),
    (
        "validation loss, a table of another shape",
        lambda: RK.validation_loss(np.log(np.full((1, _RK_LOGP.shape[1], 2), 0.5)), _RK_ENV, _RK_MU, 0.5),
        "logp_NxXxY must have shape",
    ),
    (
        "lower bound loss, table smaller than the batch",
        lambda: LB.dpo_population_loss(np.zeros((1, 1)), PAIRS, np.zeros((1, 1)), 0.1),
        "batch.y_w_B",
    ),
    ("separation map, unknown family", lambda: SM.make_instance("foo", 0, 1.0), "family"),
    ("pair counts past float32's exact range", lambda: CNT.sample_counts(env, mu, [2**25], [KEY]), "n_pairs"),
    ("pair counts, negative", lambda: CNT.sample_counts(env, mu, [-5], [KEY]), "n_pairs"),
    ("on-policy term, k = 1", lambda: A.on_policy(_ctx(False), TAB.init(KEY), PAIRS, KEY, 1, lambda x, y, t: t), "k"),
    (
        "on-policy term, exact without a table",
        lambda: A.on_policy(_ctx(True, NO_TABLE), TAB.init(KEY), PAIRS, KEY, 2, lambda x, y, t: t),
        "table",
    ),
    ("weighted, mismatched shapes", lambda: A.weighted(jnp.ones(3), jnp.ones(2)), "weight_B"),
    ("k1 of a positive log-probability", lambda: losses.kl_k1(np.array([3.0]), np.array([-1.0])), "logp_B"),
    ("k3 of a huge reference log-probability", lambda: losses.kl_k3(np.array([-3e38]), np.array([3e38])), "ref_logp_B"),
    (
        "boolean arrays as numbers",
        lambda: coverage.single_policy_coverage([[True, False]], [[True, False]], [True]),
        "must be an array of numbers",
    ),
    ("coverage of zero responses", lambda: coverage.global_coverage(np.zeros((2, 0)), [0.5, 0.5]), "mu_XxY"),
    (
        "linear bandit of zero responses",
        lambda: bandits.LinearBandit(ONE, np.ones((1, 0, 2)), np.ones(2), np.zeros(2)),
        "phi_XxYxD",
    ),
    (
        "batch with a weight short",
        lambda: data.take(PAIRS._replace(weight_B=PAIRS.weight_B[1:]), np.array([0])),
        "data.weight_B",
    ),
    (
        "tidy of an unknown metric",
        lambda: cl.simulation.tidy(None, env, A.dpo(0.1), mu=mu, beta=0.1, n_pairs=None, metrics=["foo"]),
        "metrics",
    ),
    ("task of a dict", lambda: TT.make_task({"n_prompts": 2}), "config"),
    ("parameter count of a string", lambda: TM.n_params("abc"), "params"),
    ("hyper-parameters with a misspelt name", lambda: A.check_hparams(A.dpo(0.1), {"beta": 0.1, "betta": -5}), "betta"),
    ("algorithm with k < 0", lambda: A.Algorithm("x", A.dpo(0.1).make, k=-3), "k"),
    ("algorithm with no builder", lambda: A.Algorithm("x", 5), "make"),
    ("setting id of a list", lambda: sweep.setting_id([1, 2]), "setting"),
    ("rates' slopes of a frame without columns", lambda: RATES.slopes(pd.DataFrame({"x": [1]})), "lacks the columns"),
    (
        "separation summary of a frame without columns",
        lambda: SM.summary(pd.DataFrame({"x": [1]})),
        "lacks the columns",
    ),
    ("lam selection without held-out rows", lambda: RK.selected_lam(_NO_HELDOUT), "held-out"),
    ("KL metric of an empty frame", lambda: TRK.kl_metric(pd.DataFrame()), "lacks the columns"),
    ("Table 1 of no table metric", lambda: TTAB.final(_NO_TABLE_METRIC), "table's metrics"),
]


@pytest.mark.parametrize("call, param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_value_error_naming_the_parameter(call, param):
    with pytest.raises(ValueError, match=param):
        call()


def test_infinite_kl_is_inf_not_nan():
    pi = np.array([[0.5, 0.5, 0.0]])
    pi_ref = np.array([[1.0, 0.0, 0.0]])
    assert exact.reverse_kl(pi, pi_ref, ONE) == np.inf
    assert exact.value(pi, np.zeros((1, 3)), pi_ref, ONE, 0.1) == -np.inf


def test_seed_counts_and_settings_of_any_integer_or_iterable_type_are_taken():
    assert V.seed_ids(np.int64(2)) == [0, 1] and V.seed_ids(np.arange(3)) == [0, 1, 2]
    assert V.positive("beta", np.float32(0.5)) == 0.5 and V.number("peak", -3) == -3.0


def test_sweep_takes_a_generator_of_settings(tmp_path):
    out = sweep.run_sweep(({"a": a} for a in (1, 2)), lambda s: pd.DataFrame({"x": [s["a"]]}), tmp_path / "s.csv")
    assert out["x"].tolist() == [1, 2]


def test_a_switch_may_be_a_numpy_or_a_0d_boolean_array():
    assert V.flag("exact", np.True_) is True and V.flag("exact", jax.numpy.array(False)) is False
    with pytest.raises(ValueError, match="exact"):
        V.flag("exact", np.array([True]))


def test_fit_checks_concrete_parameters_under_jit_too_and_allows_minus_inf():
    """-inf is a tabular logit of no mass (log pi_ref), so it trains; NaN is refused, also when the parameters are a
    concrete array that a jitted function closes over (the check runs at trace time)."""

    def objective(params, batch, key):
        return jnp.sum(jnp.where(jnp.isfinite(params), params, 0.0) ** 2), {}

    def train_from(params):
        return jax.jit(lambda k: train.fit(objective, params, PAIRS, k, steps=1, optimizer=OPT)[0])(KEY)

    assert np.isneginf(train_from(jnp.array([0.5, -jnp.inf]))[1])
    with pytest.raises(ValueError, match="params"):
        train_from(jnp.array([0.5, jnp.nan]))


def test_the_model_checks_closed_over_parameters_under_jit():
    """Reference parameters closed over by a jitted function are concrete there: ``apply`` and ``sample`` read them
    at trace time, so finite ones run as they do eagerly and an inf one is refused by name."""
    tokens = np.zeros((1, 2), np.int32)

    def logits_and_tokens(params):
        out = jax.jit(lambda k: (TM.apply(params, tokens, TOY.model), _toy_sample(k, params=params)))(KEY)
        return jax.device_get(out)

    eager = (TM.apply(TOY_PARAMS, tokens, TOY.model), _toy_sample(KEY))
    for got, want in zip(logits_and_tokens(TOY_PARAMS), eager, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="params"):
        logits_and_tokens(jax.tree.map(lambda a: a + np.inf, TOY_PARAMS))


def test_ipo_tau_floor_is_float32s():
    """At its smallest accepted tau IPO's loss is finite in float32 (as the compiled steps compute it); the float32
    below it is refused."""
    z = jnp.zeros(2, jnp.float32)
    tau = jnp.float32(V.IPO_TAU_MIN)
    assert np.isfinite(jax.jit(losses.ipo)(z, z, z, z, tau)).all()
    A.ipo(tau=V.IPO_TAU_MIN)
    below = float(np.nextafter(np.float32(V.IPO_TAU_MIN), np.float32(0.0)))
    with pytest.raises(ValueError, match="tau"):
        A.ipo(tau=below)


def test_a_minibatch_of_padding_weighs_nothing_instead_of_nan():
    """An exact batch padded to a fixed size, or an empirical batch, has rows of zero weight; a minibatch of only
    those has weight 0 (a loss of 0), and a run that meets one stays finite."""
    padded = data.exact_batch(env.rho_X, PAIR, PREF, size=8)
    np.testing.assert_array_equal(data.take(padded, np.array([6, 7])).weight_B, [0.0, 0.0])
    np.testing.assert_allclose(data.take(padded, np.array([0, 7])).weight_B, [1.0, 0.0])
    counts = np.zeros((1, 3, 3))
    counts[0, 0, 1], counts[0, 1, 0] = 3, 1
    opts = dict(key=KEY, rm_key=KEY, exact=False, steps=6, reward_steps=1, learning_rate=0.1, batch_size=2)
    params, _ = cl.simulation.train_on_data(env, A.dpo(), data.empirical_batch(counts), {"beta": 0.1}, **opts)
    assert not np.isnan(params).any()


def test_padding_rows_and_absent_prompts_do_not_turn_inf_into_nan():
    padded = data.exact_batch(env.rho_X, PAIR, PREF, size=8)
    out = metrics.data_metrics(np.log([[[0.0, 1.0, 0.0]]]), padded, 1, 3)  # the chosen responses have no mass
    assert out["logp_chosen"][0] == -np.inf and out["logp_rejected"][0] == -np.inf
    pi_ref = np.array([[1.0, 0.0], [0.5, 0.5]])  # infinite KL at a prompt of probability 0
    kl = metrics.sampled_kl(KEY, np.log(np.full((1, 2, 2), 0.5)), pi_ref, np.array([0.0, 1.0]), 16)
    assert kl["kl_k1"][0] == 0.0 and kl["kl_k3"][0] == 0.0
    assert exact.reverse_kl(np.full((2, 2), 0.5), pi_ref, np.array([0.0, 1.0])) == 0.0


def test_scale_free_quantities_do_not_depend_on_a_finite_scale():
    """Feature coverage is a ratio of quadratic forms in phi, and the minimiser set reads only the pair weights'
    ratios: extreme but finite scales give the values of scale 1."""
    mu2 = np.array([[0.5, 0.5, 0.0]])
    base = coverage.feature_coverage(PHI, GOOD_REF, mu2, ONE)
    for s in (1e-160, 1e154, 1e160):
        np.testing.assert_allclose(coverage.feature_coverage(PHI * s, GOOD_REF, mu2, ONE), base, rtol=1e-12)
    pi_ref, pair, *rest = MIN_SET
    a, b = (
        minimisers.minimiser_set(pi_ref, pair, *rest, 0.1),
        minimisers.minimiser_set(pi_ref, pair * 1e308, *rest, 0.1),
    )
    assert (a.worst_value, a.max_kl, a.best_value) == (b.worst_value, b.max_kl, b.best_value)


def test_a_slope_ignores_infinite_n():
    slope = plotting.loglog_fit([1, 2, np.inf, 4, 8], [1.0, 0.5, 0.3, 0.25, 0.125])
    np.testing.assert_allclose(slope[0], -1.0, rtol=1e-12)


def test_bfloat16_log_probabilities_and_stacked_environments_are_taken():
    half = jax.numpy.zeros(3, jax.numpy.bfloat16)
    assert losses.dpo(half, half, half, half, 0.1).dtype == jax.numpy.bfloat16
    env_lin, _ = bandits.linear_extrapolation()
    stacked = jax.tree.map(lambda *a: np.stack(a), *[env_lin] * 3)  # a batch of environments, one per row
    fields = (getattr(stacked, f) for f in ("rho_X", "phi_XxYxD", "theta_star_D", "theta_ref_D"))
    assert bandits.LinearBandit(*fields).phi_XxYxD.shape == (3, 1, 3, 2)  # built (vmapped over its rows later)
    A.check_hparams(A.hypo(), {"beta": 0.1, "lam": np.array([0.0, 0.1, 1.0])})  # a sweep's values


def test_exact_kl_is_inf_where_pi_has_mass_too_small_for_float32_and_pi_ref_none():
    assert TE.exact_kl(np.array([[0.0, -200.0]]), np.array([[0.0, -np.inf]])) == np.inf
    assert TE.exact_kl(np.array([[0.0, -np.inf]]), np.array([[-200.0, 0.0]])) > 0  # pi_ref's mass elsewhere: finite


def test_sampled_kl_of_a_reference_mass_float32_cannot_hold_is_finite():
    """pi_ref = 1e-50 is log 0 in float32: its log is taken in float64, so the k1 and k3 estimates stay near the exact
    KL (57) instead of inf."""
    pi_ref = np.array([[1 - 1e-50, 1e-50]])
    kl = metrics.sampled_kl(KEY, np.log(np.full((1, 1, 2), 0.5)), pi_ref, ONE, 4096)
    truth = exact.reverse_kl(np.full((1, 2), 0.5), pi_ref, ONE)
    for name in ("kl_k1", "kl_k3"):
        assert np.isfinite(kl[name][0]) and abs(kl[name][0] - truth) < 5, (name, kl[name], truth)
    assert metrics.sampled_kl(KEY, np.log(np.full((1, 1, 2), 0.5)), np.array([[1.0, 0.0]]), ONE)["kl_k1"][0] == np.inf


def test_a_log_linear_pi_ref_below_float32s_smallest_mass_still_simulates():
    """The float32 check on pi_ref is the tabular policy's (it starts at log pi_ref); a log-linear policy takes the
    logits, so a pi_ref mass of 1e-42 is no obstacle there."""
    env = bandits.LinearBandit(np.ones(1), np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]), [1.0, 0.5], [0.0, -95.0])
    assert 0 < np.asarray(env.pi_ref_XxY).min() < np.finfo(np.float32).tiny
    df = cl.simulate(
        env, A.dpo(0.1), mu=np.full((1, 3), 1 / 3), n_pairs=None, steps=20, seeds=1, key=KEY, metrics=["kl"]
    )
    assert np.isfinite(df["value"]).all()


def test_ppo_clip_with_an_overflowing_ratio_and_no_advantage_is_finite():
    """exp(100) overflows float32; a sample whose advantage is 0 must still add 0 to the loss and its gradient."""
    logp, behaviour, adv = jnp.array([[0.0, -1.0]]), jnp.array([[-100.0, -1.0]]), jnp.array([[0.0, 1.0]])
    loss, grad = jax.value_and_grad(lambda lp: losses.ppo_clip(lp, behaviour, adv, 0.2).sum())(logp)
    assert loss == pytest.approx(-0.5) and np.isfinite(grad).all() and grad[0, 0] == 0.0
    assert losses.ppo_clip(logp, behaviour, jnp.array([[-1.0, 1.0]]), 0.2)[0] == np.inf  # unbounded, not NaN


def test_validation_loss_of_a_policy_without_mass_where_mu_has_none_is_finite():
    """Pairs mu never draws count for nothing, so -inf log-probabilities there (0 x NaN before) leave it finite."""
    pi = np.where(_RK_MU > 0, np.asarray(_RK_ENV.pi_ref_XxY, np.float64), 0.0)
    with np.errstate(divide="ignore"):
        logp = np.log(pi / pi.sum(-1, keepdims=True))[None]
    loss = RK.validation_loss(logp, _RK_ENV, _RK_MU, 0.5)
    assert np.isfinite(loss).all() and loss[0] > 0

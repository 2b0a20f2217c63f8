"""Figure 1 in the transformer: DPO's reverse KL keeps climbing over training; HyPO's stays far lower.

arXiv:2406.01462, Figure 1 (SPEC §5, §6), in miniature. A decoder-only transformer ``pi_ref``, trained by the
project's own supervised loop on a corpus where some tokens are rare (``coverage_lab.transformer``), is
fine-tuned on ``N`` offline pairs from a ``mu`` that never shows the rare tokens (``MU_RARE = 0``), labelled
by Bradley–Terry on the gold reward. Most rare tokens are bad (gold score 0), one is good (score 1): as most
unseen text is worse than what the corpus shows. Every algorithm of a seed sees the same pairs (one key per
setting), constant-step Adam, ``BETA = 0.1`` throughout.

- DPO: its implicit reward ``beta log(pi/pi_ref)`` is unbounded; on a finite dataset it keeps widening the
  margins, lowering the likelihood of chosen and rejected responses alike, and the policy drifts far from
  ``pi_ref``. Where the mass goes is measured, not assumed (``ood_mass_mc``, ``bad_token_rate`` in the CSV): in
  the committed ``small`` run DPO's mass on responses ``mu`` never shows rises above ``pi_ref``'s early on and
  ends below it (median over seeds) while HyPO's rises, with more bad rare tokens, so HyPO's lower KL is a
  smaller move overall, not less mass on unseen text (README, Reproductions).
- HyPO (Algorithm 1): the same DPO term plus ``LAM * KL(pi || pi_ref)`` estimated by RLOO on ``K`` unlabelled
  samples per prompt from the current policy. ``LAM`` is fixed, not tuned: it was set by hand when the track
  was built (commit ``ed7e932``), and no selection rule was recorded. A setting's ``lams`` runs HyPO at several
  values on the same pairs (the README shows such a sweep on ``small``); the committed figure is ``LAM`` alone.
- Online RLHF: a transformer reward model bounded in ``[0, R_max]``, fitted by Bradley–Terry on the same pairs,
  then RLOO with the sequence-level KL in the reward.

Metrics (``coverage_lab.transformer.evaluate``): on the enumerable ``toy`` size ``kl`` is the exact
``E_x KL(pi || pi_ref)``; on the others the reverse KL is the k1 Monte Carlo estimate ``kl_k1`` (unbiased) on
``eval_samples`` fresh samples per prompt (``kl_k3`` is in the CSV too). Every algorithm also gets a reward
model fitted on its seed's pairs, for ``rm_score`` (so the two transformer experiments share compiled programs).
"""

from __future__ import annotations

import jax
import matplotlib
import numpy as np
import pandas as pd

from coverage_lab import _validate as V
from coverage_lab import algorithms as A
from coverage_lab import plotting
from coverage_lab.transformer import sizes as S
from coverage_lab.transformer.run import simulate_many
from experiments import check_frame, check_setting, each, integer, one_of, seed_ids

SETTINGS = [{"size": "small", "seeds": 3}]
SMOKE = [{"size": "toy", "seeds": 2, "steps": 20}]

BETA = 0.1
LAM = 0.01  # HyPO's KL weight
K = 4  # on-policy samples per prompt (HyPO and RLHF)
LEARNING_RATE = 3e-3
MU_RARE = 0.0  # mu never shows a rare token
ALGORITHMS = ("dpo", "hypo", "rlhf")
KEYS = {  # what run() reads, with the check of each value (experiments.check_setting)
    "size": one_of(*S.SIZES),
    "seeds": seed_ids,  # default 3
    "steps": integer(1),  # default: the size's
    "lams": each(V.positive, unique=True),  # HyPO's lam, one run each; default [LAM]
}
REQUIRED = ("size",)


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = ("algorithm", "seed", "step", "metric", "value", "lam", "size", "n_pairs")


def cross_check(setting: dict) -> None:
    """``steps`` is a multiple of the size's logging interval."""
    every = S.get(setting["size"]).log_every
    if setting.get("steps", every) % every:
        raise ValueError(
            f"setting['steps'] must be a multiple of the {setting['size']} size's log_every ({every}), "
            f"got {setting['steps']}"
        )


def algorithms(size: str, lams=(LAM,)) -> list[A.Algorithm]:
    """DPO, HyPO at each of ``lams`` and RLHF with this experiment's hyper-parameters (``R_max`` from the size's
    task)."""
    r_max = S.get(size).task.r_max
    return [A.dpo(BETA), *(A.hypo(BETA, lam=lam, k=K) for lam in lams), A.rlhf(BETA, r_max=r_max, k=K)]


_RUNS: dict[tuple, pd.DataFrame] = {}  # run_algorithms' results in this process


def run_algorithms(size: str, key, *, seeds: int, steps: int | None = None, lams=(LAM,)) -> pd.DataFrame:
    """Every algorithm on ``size`` from the same key (the same offline pairs per seed); tidy rows.

    A pure function of its arguments, remembered for the process: ``transformer_table`` asks for this
    experiment's run again at the ``small`` size (about 20 s on the CPU) and gets a copy instead."""
    ids = tuple(V.seed_ids(seeds))
    lams = tuple(float(lam) for lam in lams)
    memo = (size, tuple(np.asarray(jax.random.key_data(key)).ravel().tolist()), ids, steps, lams)
    if memo not in _RUNS:
        opts = dict(seeds=seeds, steps=steps, learning_rate=LEARNING_RATE, mu_rare=MU_RARE, rm_eval=True)
        _RUNS[memo] = simulate_many(size, algorithms(size, lams), key=key, **opts)
    return _RUNS[memo].copy()


def run(setting: dict, key) -> pd.DataFrame:
    """DPO, HyPO and RLHF on ``setting["size"]``; tidy rows (``coverage_lab.transformer.run.simulate``)."""
    check_setting(__name__, setting, key)
    lams = setting.get("lams", (LAM,))
    return run_algorithms(setting["size"], key, seeds=setting.get("seeds", 3), steps=setting.get("steps"), lams=lams)


def kl_metric(df: pd.DataFrame) -> str:
    """``kl`` (exact) where the run has it, else ``kl_k1`` (Monte Carlo)."""
    check_frame(df, ("metric",))
    return "kl" if (df["metric"] == "kl").any() else "kl_k1"


def plot(df: pd.DataFrame):
    """(a) reverse KL, (b) mass on responses mu never shows, (c) gold reward, (d) log-likelihood of the chosen
    responses, over training: median and min–max over seeds."""
    check_frame(df, PLOT_COLUMNS)
    kl = kl_metric(df)
    exact = kl == "kl"
    panels = (
        (kl, "reverse KL(π‖π_ref)" + ("" if exact else " (k1 Monte Carlo)"), "(a) reverse KL"),
        ("ood_mass" if exact else "ood_mass_mc", "π(y : μ(y|x) = 0)", "(b) mass on responses μ never shows"),
        ("reward" if exact else "gold_reward", "E_π r*(x, y)", "(c) gold reward"),
        ("logp_chosen", "mean log π(y_w|x)", "(d) log-likelihood of the chosen responses"),
    )
    lams = sorted(df.loc[df["algorithm"] == "hypo", "lam"].unique())
    fig, axes = plotting.figure(4, 1, width=3.4, height=2.9)
    for ax, (metric, ylabel, title) in zip(axes, panels, strict=True):
        rows = df[df["metric"] == metric]
        if len(lams) <= 1:
            plotting.band(ax, rows)
        else:  # a lam sweep: one HyPO line per lam, lighter green for a smaller lam
            greens = matplotlib.colormaps["Greens"](np.linspace(0.35, 0.95, len(lams)))
            for name in ("dpo", "rlhf"):
                plotting.band(ax, rows[rows["algorithm"] == name])
            for lam, c in zip(lams, greens, strict=True):
                hypo = rows[(rows["algorithm"] == "hypo") & np.isclose(rows["lam"], lam)]
                plotting.band(ax, hypo, color=c, label_fmt=f"{{}} (λ={lam:g})")
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=8)
    axes[0].legend(fontsize=7)
    n_seeds = df["seed"].nunique()
    size = df["size"].iloc[0]
    fig.suptitle(
        f"Transformer ({size}), {df['n_pairs'].iloc[0]:g} offline pairs, rare tokens never in the data: "
        f"DPO vs HyPO (λ={', '.join(f'{lam:g}' for lam in lams)}) vs RLHF, β={BETA:g}; "
        f"median and min–max over {n_seeds} seeds",
        fontsize=9,
    )
    return fig

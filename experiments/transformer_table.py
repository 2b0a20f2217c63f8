"""Table 1 in the transformer: DPO, HyPO and RLHF at two model sizes — win rate, RM score, reverse KL, gold reward.

arXiv:2406.01462, Table 1 (SPEC §5), in miniature: the setting of ``transformer_reverse_kl`` (same task,
algorithms and hyper-parameters) at two model sizes (column ``model_size``: ``small``, d_model 32, 2 layers,
27k parameters; ``medium``, d_model 64, 2 layers, 102k parameters), each with its own supervised ``pi_ref``.
At the end of training, mean ± std over seeds of:

- ``win_rate``: the share of prompts-and-samples where a response of the policy beats a response of ``pi_ref``
  under the gold reward (ties count half), on ``eval_samples`` pairs per prompt;
- ``rm_score``: the mean score of a reward model fitted by Bradley–Terry on the seed's offline pairs (the one
  RLHF optimises, so RLHF's own score flatters it);
- reverse KL: exact ``kl`` on an enumerable size, else the k1 Monte Carlo estimate ``kl_k1``;
- ``gold_reward``: the mean gold reward of the policy's samples.

The paper reports HyPO beating DPO on reward at lower KL; whether that holds here is what the table measures.
``report(df)`` renders the Markdown table; ``python -m experiments.transformer_table [CSV]`` writes it beside
the CSV (``figures/transformer_table.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from coverage_lab import plotting
from experiments import check_frame, check_setting
from experiments import transformer_reverse_kl as figure
from experiments.transformer_reverse_kl import kl_metric, run_algorithms

# The settings are transformer_reverse_kl's, size for size: the same setting gives the same key, so the ``small``
# row is the run of that figure, computed once per process (``run_algorithms`` remembers it).
SETTINGS = [{"size": "small", "seeds": 3}, {"size": "medium", "seeds": 3}]
SMOKE = [{"size": "toy", "seeds": 2, "steps": 20}]
# the figure's settings and checks, less its lam sweep (the table is one HyPO per model size)
KEYS = {k: check for k, check in figure.KEYS.items() if k != "lams"}
REQUIRED, cross_check = figure.REQUIRED, figure.cross_check

COLUMNS = {"win_rate": "win rate vs π_ref", "rm_score": "RM score", "kl": "reverse KL", "gold_reward": "gold reward"}


# the columns plot() reads (experiments.check_frame)
PLOT_COLUMNS = ("algorithm", "seed", "step", "metric", "value", "model_size")


def run(setting: dict, key) -> pd.DataFrame:
    """DPO, HyPO and RLHF on ``setting["size"]``; tidy rows over training, with ``model_size``."""
    check_setting(__name__, setting, key)
    size = setting["size"]
    df = run_algorithms(size, key, seeds=setting.get("seeds", 3), steps=setting.get("steps"))
    return df.assign(model_size=size)


def final(df: pd.DataFrame) -> pd.DataFrame:
    """Per ``model_size``, ``algorithm`` and seed, the table's metrics at the last step (``kl``: the exact or the
    k1 reverse KL), plus ``pi_ref`` (the step-0 values of the first algorithm) as algorithm ``reference``."""
    check_frame(df, PLOT_COLUMNS)
    kl = kl_metric(df)
    keep = df[df["metric"].isin(["win_rate", "rm_score", "gold_reward", kl])].replace({"metric": {kl: "kl"}})
    if keep.empty:
        raise ValueError(f"df has none of the table's metrics (win_rate, rm_score, gold_reward, {kl})")
    last = keep[keep["step"] == keep.groupby("model_size")["step"].transform("max")]
    first_alg = keep["algorithm"].iloc[0]
    ref = keep[(keep["step"] == 0) & (keep["algorithm"] == first_alg)].assign(algorithm="reference")
    both = pd.concat([ref, last], ignore_index=True)
    return both.pivot_table(index=["model_size", "algorithm", "seed"], columns="metric", values="value").reset_index()


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the final metrics, one row per ``model_size`` and ``algorithm``."""
    f = final(df)
    order = {name: i for i, name in enumerate(["reference", "dpo", "hypo", "rlhf"])}
    f = f.assign(_order=f["algorithm"].map(lambda a: order.get(a, 99)))
    sizes = {size: i for i, size in enumerate(dict.fromkeys(df["model_size"]))}
    f = f.assign(_size=f["model_size"].map(sizes)).sort_values(["_size", "_order"])
    cols = [c for c in COLUMNS if c in f]
    return f.groupby(["model_size", "algorithm"], sort=False)[cols].agg(["mean", "std"]).reset_index()


def report(df: pd.DataFrame) -> str:
    """The table as Markdown: mean ± std over seeds at the end of training."""
    s = summary(df)
    kl_name = "reverse KL (exact)" if kl_metric(df) == "kl" else "reverse KL (k1 MC)"
    cols = [c for c in COLUMNS if (c, "mean") in s.columns]
    heads = [kl_name if c == "kl" else COLUMNS[c] for c in cols]
    n = df["seed"].nunique()
    lines = [
        f"Final step, mean ± std over {n} seeds (reference: pi_ref itself, step 0).",
        "",
        "| model size | algorithm | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for _, row in s.iterrows():
        cells = [f"{row[(c, 'mean')]:.3f} ± {np.nan_to_num(row[(c, 'std')]):.3f}" for c in cols]
        lines.append(f"| {row['model_size'].iloc[0]} | {row['algorithm'].iloc[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame):
    """One panel per column of the table: bars (mean over seeds, std as error bars) per model size and
    algorithm; the dashed line is ``pi_ref``."""
    f = final(df)
    sizes = list(dict.fromkeys(df["model_size"]))
    algs = [a for a in ("dpo", "hypo", "rlhf") if a in set(f["algorithm"])]
    cols = [c for c in COLUMNS if c in f]
    fig, axes = plotting.figure(len(cols), 1, width=3.2, height=2.8)
    width = 0.8 / len(algs)
    kl_name = "reverse KL (exact)" if kl_metric(df) == "kl" else "reverse KL (k1 MC)"
    for ax, c in zip(axes, cols, strict=True):
        for j, a in enumerate(algs):
            g = f[f["algorithm"] == a].groupby("model_size")[c].agg(["mean", "std"]).reindex(sizes)
            x = np.arange(len(sizes)) + (j - (len(algs) - 1) / 2) * width
            ax.bar(x, g["mean"], width, yerr=g["std"].fillna(0), color=plotting.color(a), label=a, capsize=2)
        ref = f[f["algorithm"] == "reference"].groupby("model_size")[c].mean().reindex(sizes)
        for i, v in enumerate(ref):
            ax.hlines(v, i - 0.45, i + 0.45, color=plotting.color("reference"), ls="--", lw=1)
        ax.set_ylim(0, 1.3 * ax.get_ylim()[1])  # headroom for the legend
        ax.set_xticks(np.arange(len(sizes)), sizes)
        ax.set_xlabel("model size")
        ax.set_title(kl_name if c == "kl" else COLUMNS[c], loc="left", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left", ncol=len(algs))
    fig.suptitle(
        f"Transformer: DPO vs HyPO vs RLHF at the end of training, mean ± std over {df['seed'].nunique()} seeds "
        "(dashed: π_ref)",
        fontsize=9,
    )
    return fig


def main(argv: list[str] | None = None) -> Path:
    """Write the Markdown table beside the CSV (default ``figures/transformer_table.csv``)."""
    argv = sys.argv[1:] if argv is None else argv
    csv = Path(argv[0] if argv else "figures/transformer_table.csv")
    if not csv.exists():
        raise SystemExit(f"no CSV at {csv}; run 'coverage-lab reproduce transformer_table' first")
    md = csv.with_suffix(".md")
    md.write_text(report(pd.read_csv(csv)))
    print(md)
    return md


if __name__ == "__main__":
    main()

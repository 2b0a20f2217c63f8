"""House style and figure helpers that draw from tidy DataFrames. Never imports JAX."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

COLORS = {
    "dpo": "#d62728",
    "ipo": "#ff7f0e",
    "rlhf": "#1f77b4",
    "hypo": "#2ca02c",
    "online_dpo": "#9467bd",
    "reference": "#7f7f7f",
}

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.frameon": False,
        "font.size": 9,
    }
)


def color(name: str) -> str:
    return COLORS.get(name, "#333333")


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 3.6, height: float = 2.8, **kw):
    """A figure of ``nrows x ncols`` panels in the house size; returns ``(fig, axes as a flat array)``."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    return fig, axes.ravel()


def band(ax, df: pd.DataFrame, *, x: str = "step", by: str = "algorithm", label_fmt: str = "{}", **kw):
    """Median over seeds as a line with a min–max band, one line per value of ``by`` (a tidy frame of one metric)."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    missing = sorted({x, by, "value"} - set(df.columns))
    if missing:
        raise ValueError(f"df lacks the columns {missing} (x={x!r}, by={by!r} and 'value' are needed)")
    for name, g in df.groupby(by, sort=False):
        stats = g.groupby(x)["value"].agg(["median", "min", "max"])
        c = kw["color"] if kw.get("color") is not None else color(str(name))  # a name or an RGBA array
        ax.plot(stats.index, stats["median"], color=c, label=label_fmt.format(name), lw=1.6)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=c, alpha=0.2, lw=0)
    return ax


def loglog_fit(n, err) -> tuple[float, float, float]:
    """Least-squares slope of ``log err`` on ``log n`` with a 95% interval: ``(slope, lo, hi)``, over the points
    with a positive finite ``n`` and ``err`` (at least 3, and two distinct ``n``, for an interval)."""
    from scipy import stats

    n, err = np.asarray(n, float), np.asarray(err, float)
    if n.ndim != 1 or n.shape != err.shape:
        raise ValueError(f"n and err must be 1-D of the same length, got shapes {n.shape} and {err.shape}")
    ok = (n > 0) & np.isfinite(n) & (err > 0) & np.isfinite(err)
    if ok.sum() < 3:
        raise ValueError(f"err needs at least 3 positive finite points for a slope and its interval, got {ok.sum()}")
    if np.unique(n[ok]).size < 2:
        raise ValueError(f"n needs at least two distinct values for a slope, got {np.unique(n[ok]).tolist()}")
    res = stats.linregress(np.log(n[ok]), np.log(err[ok]))
    t = stats.t.ppf(0.975, max(ok.sum() - 2, 1))
    return res.slope, res.slope - t * res.stderr, res.slope + t * res.stderr


def loglog_fit_seeds(n, err, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Slope of ``log mean(err)`` on ``log n`` with a 95% interval over seeds: ``(slope, lo, hi)``.

    ``n`` and ``err`` are one row per run (several runs, i.e. seeds, at each ``n``). The slope is the least-squares
    fit to the per-``n`` means (as :func:`loglog_fit`); the interval is the 2.5–97.5% percentile range of the same
    fit over ``n_boot`` resamplings of each ``n``'s runs with replacement (a seed bootstrap, drawn from
    ``numpy.random.default_rng(seed)``), so it carries the spread between seeds that a fit to the means alone
    ignores. Every ``err`` must be positive and finite; at least 3 distinct ``n``, each with at least 2 runs.
    """
    n, err = np.asarray(n, float), np.asarray(err, float)
    if n.ndim != 1 or n.shape != err.shape:
        raise ValueError(f"n and err must be 1-D of the same length, got shapes {n.shape} and {err.shape}")
    if not (np.isfinite(n) & (n > 0)).all():
        raise ValueError("n must be positive and finite")
    if not (np.isfinite(err) & (err > 0)).all():
        raise ValueError("err must be positive and finite (a log-log fit)")
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (numpy.random.default_rng's seed), got {seed!r}")
    levels = np.unique(n)
    groups = [err[n == level] for level in levels]
    if levels.size < 3 or min(g.size for g in groups) < 2:
        sizes = {float(level): g.size for level, g in zip(levels, groups, strict=True)}
        raise ValueError(f"err needs at least 3 distinct n with at least 2 runs each, got runs per n {sizes}")
    x = np.log(levels) - np.log(levels).mean()
    rng = np.random.default_rng(seed)
    means = np.stack([g[rng.integers(0, g.size, (n_boot, g.size))].mean(-1) for g in groups], axis=-1)
    boot = np.log(means) @ x / (x @ x)  # (n_boot,) least-squares slopes
    slope = float(np.log([g.mean() for g in groups]) @ x / (x @ x))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return slope, float(lo), float(hi)


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

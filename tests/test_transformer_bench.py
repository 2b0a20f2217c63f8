"""The transformer benchmark runs on a CPU at the toy size and reports what it promises."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

# loaded from its file: ``benchmarks`` is importable as a package only from the repository root (python -m pytest)
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "transformer_bench.py"
_spec = importlib.util.spec_from_file_location("transformer_bench", _PATH)
tb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb)

COLUMNS = {"step_s", "tokens_per_s", "sample_share", "peak_bytes", "peak_rss_bytes", "xla_temp_bytes"}


def test_benchmark_runs_on_cpu_at_the_toy_size(tmp_path, capsys):
    df = tb.main(["--size", "toy", "--steps", "2", "--batch-size", "4", "--csv", str(tmp_path / "bench.csv")])
    assert list(df["algorithm"]) == ["dpo", "hypo", "rlhf"] and COLUMNS <= set(df.columns)
    assert (df["step_s"] > 0).all() and (df["tokens_per_s"] > 0).all() and (df["batch_size"] == 4).all()
    assert df.set_index("algorithm").loc["dpo", "sample_share"] == 0.0  # DPO never samples
    assert (df.set_index("algorithm").loc[["hypo", "rlhf"], "sample_share"] > 0).all()
    assert np.isnan(df["peak_bytes"]).all() or (df["peak_bytes"] > 0).all()
    assert (tmp_path / "bench.csv").exists() and "tokens_per_s" in capsys.readouterr().out


def test_benchmark_validation():
    with pytest.raises(ValueError, match="algorithm"):
        tb.measure("toy", "ppo", steps=1)
    with pytest.raises(ValueError, match="steps"):
        tb.measure("toy", "dpo", steps=0)
    with pytest.raises(ValueError, match="size"):
        tb.measure("tiny", "dpo", steps=1)

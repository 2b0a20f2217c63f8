#!/usr/bin/env bash
# The GPU numbers of the transformer track (issue 5) in one prepared call, sized for a short lease of a GPU machine:
# DPO, HyPO and RLHF at the `gpu` size, each in a fresh process (its own peak memory) under its own time limit,
# so one that fails or overruns still leaves the others' rows. Writes into $OUT (default /tmp/gpu_check):
# env.txt (date, GPU, JAX), ALG.json and ALG.err per algorithm, transformer_bench.csv (the table, also printed).
#
#   bash benchmarks/gpu_check.sh                            # on the GPU machine, from the repository root
#   SIZE=toy PY=.venv/bin/python bash benchmarks/gpu_check.sh  # the same script on a CPU, in seconds (a dry run)
#
# PY: the Python that has JAX's CUDA build (default python3; the package is taken from this checkout through
# PYTHONPATH, nothing is installed). SIZE (gpu), STEPS (10) and PER_ALG (seconds per algorithm, 150) as named.
# Exit status 1 if the environment check fails or no algorithm finishes.
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu_check}
SIZE=${SIZE:-gpu}
STEPS=${STEPS:-10}
PER_ALG=${PER_ALG:-150}
PY=${PY:-python3}
mkdir -p "$OUT"
rm -f "$OUT/transformer_bench.csv" "$OUT"/{dpo,hypo,rlhf}.{json,err}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import jax, optax, pandas, coverage_lab; print('jax', jax.__version__, jax.devices())"
} 2>&1 | tee "$OUT/env.txt"
grep -q "^jax " "$OUT/env.txt" || { echo "the environment check failed (see above)"; exit 1; }

for alg in dpo hypo rlhf; do
  start=$(date +%s)
  timeout -k 10 "$PER_ALG" "$PY" -m benchmarks.transformer_bench --size "$SIZE" --steps "$STEPS" --algorithms "$alg" --json \
    >"$OUT/$alg.json" 2>"$OUT/$alg.err"
  status=$?
  echo "$alg: exit $status in $(($(date +%s) - start)) s"
  [ "$status" -eq 0 ] || tail -5 "$OUT/$alg.err"
done

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
import pandas as pd

out = Path(sys.argv[1])
rows = [json.loads(lines[-1]) for a in ("dpo", "hypo", "rlhf") if (lines := (out / f"{a}.json").read_text().splitlines())]
if rows:
    df = pd.DataFrame(rows)
    df.to_csv(out / "transformer_bench.csv", index=False)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(df.to_string(index=False))
else:
    sys.exit("no algorithm finished")
EOF

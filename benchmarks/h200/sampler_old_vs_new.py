"""The one-off comparison whose output ``device_log.txt`` holds (call 3): the transformer's sampler before the
in-place KV cache (the model of ``6f8c8d0``) against the current one, compiled and timed alternately in one
process, same key, same samples?

    git show 6f8c8d0:coverage_lab/transformer/model.py > /tmp/old/old_model.py
    PYTHONPATH=$PWD:/tmp/old python benchmarks/h200/sampler_old_vs_new.py D_MODEL LAYERS BATCH PROMPT LENGTH REPS HEADS

On the H200 (``device_log.txt``): ``768 12 512 32 96 3 12``, the ``gpu`` size's policy and HyPO's 512 responses.
"""

import sys
import time

import jax
import old_model as old

from coverage_lab.transformer import model as new

d_model, n_layers, batch, prompt_len, length, reps, heads = map(int, sys.argv[1:8])
cfg = new.Config(vocab_size=64, max_len=prompt_len + length, d_model=d_model, n_layers=n_layers, n_heads=heads)
params = jax.jit(new.init, static_argnames="config")(jax.random.key(0), cfg)
prompt = jax.random.randint(jax.random.key(1), (batch, prompt_len), 0, 64)
samples = {}
for name, module in (("old", old), ("new", new), ("old", old), ("new", new)):
    fn = jax.jit(lambda p, k, x, m=module: m.sample(p, k, x, cfg, length=length))
    start = time.perf_counter()
    compiled = fn.lower(params, jax.random.key(2), prompt).compile()
    compile_s = time.perf_counter() - start
    y = jax.block_until_ready(compiled(params, jax.random.key(2), prompt))
    start = time.perf_counter()
    for _ in range(reps):
        y = jax.block_until_ready(compiled(params, jax.random.key(2), prompt))
    samples.setdefault(name, y)
    print(name, f"compile {compile_s:.2f}s run {(time.perf_counter() - start) / reps * 1e3:.1f} ms", flush=True)
print("identical:", bool((samples["old"] == samples["new"]).all()))

"""Seconds per HF update over 1, 2, 4, 8 devices (simulated CPU devices unless a real mesh is
present).  Each device count runs in its own process, because XLA fixes the number of host devices
at start-up."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp
from hflab.core import hf, parallel
from hflab import tasks
from hflab.core.losses import get_loss
from hflab.core.models import Model
n = int(sys.argv[1])
t = tasks.load_task("addition", seed=0, seq_len=20, n_train=1000, n_test=10)
model = Model("rnn", (2, 64, 1), ("tanh",))
opt = hf.hessian_free(model, get_loss("squared"), damping=1.0, max_cg_iters=50, cg_eps=0.0,
                      cg_tol=0.0)
params = model.init_params(jax.random.PRNGKey(0), jnp.float32)
state = opt.init(params)
place = parallel.placer(str(n))
batch = t.train
if place is not None:
    params, state, batch, _ = place(params, state, batch, batch)
jax.block_until_ready(opt.update(params, state, batch, batch))
times = []
for _ in range(3):
    t0 = time.perf_counter(); jax.block_until_ready(opt.update(params, state, batch, batch))
    times.append(time.perf_counter() - t0)
print(json.dumps({"devices": n, "seconds_per_update": sorted(times)[1]}))
"""


def run(full: bool):
    import jax
    real = len(jax.devices())
    counts = [1, 2, 4, 8]
    for n in counts:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if jax.devices()[0].platform == "cpu":
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
        elif n > real:
            continue
        out = subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode != 0:
            yield {"benchmark": "scaling", "devices": n, "error": out.stderr[-500:]}
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        yield {"benchmark": "scaling", "case": "addition RNN 64 tanh T=20 batch 1000, 50 CG iters",
               **r, "simulated": jax.devices()[0].platform == "cpu"}

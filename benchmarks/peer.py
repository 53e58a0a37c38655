"""The peer in the same run: ``hessianfree`` 0.4.0 (D. Rasmussen; NumPy) against HF Lab.

The problem both solve: the digits autoencoder 64-32-16-32-64 (logistic hidden units, linear
output), the full batch of all 1,797 images / 16, squared error ½·Σ err² averaged over cases,
λ₀ = 1, at most 250 CG iterations, float32, 60 updates (full batch: one update per epoch; the
peer uses the same batch for gradient and curvature, so do we).  Both use Martens' CG
backtracking, Levenberg–Marquardt λ and an Armijo line search.

The peer is installed into its own virtual environment (``HFLAB_PEER_ENV``, default
``.peer-env`` — PyPI's ``hessianfree==0.4.0`` with NumPy and the matplotlib its package imports)
and run in a subprocess; the runs alternate (ours, peer, ours, peer, …) in one invocation and the
medians are compared.  Timed for both: the update calls only (no data loading, no compilation —
ours is compiled once before timing and its compile time reported apart), divided by the CG
iterations the updates ran: milliseconds per CG iteration.

Where the time goes is measured against the matmul roofline: one Gauss-Newton product is a
tangent pass ``Jv`` and a transpose pass ``Jᵀu``, together about ``4·F`` flops for the forward
pass's ``F = 2·N·Σ fan_in·fan_out``.  Two roofs: the machine's float32 peak (one large square
matmul) — the arithmetic limit — and the rate of the problem's own matmul shapes dispatched one by
one (small shapes run far below peak), which a fused CG iteration can beat.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hflab.core import hf
from hflab import tasks
from hflab.core.losses import Batch, get_loss
from hflab.core.models import Model

SIZES = (64, 32, 16, 32, 64)
UPDATES = 60
MAX_CG = 250
PEER_ENV = Path(os.environ.get("HFLAB_PEER_ENV") or
                Path(__file__).resolve().parent.parent / ".peer-env")

PEER_SCRIPT = r'''
import json, sys, time
import numpy as np
import hessianfree as hf

x = np.load(sys.argv[1])["x"].astype(np.float32)
updates, max_cg, seed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
net = hf.FFNet([64, 32, 16, 32, 64],
               layers=[hf.nl.Linear(), hf.nl.Logistic(), hf.nl.Logistic(), hf.nl.Logistic(),
                       hf.nl.Linear()],
               loss_type=hf.loss_funcs.SquaredError(), rng=np.random.RandomState(seed))
opt = hf.opt.HessianFree(CG_iter=max_cg, init_damping=1.0, plotting=False)
stats = {"seconds": 0.0, "cg_iterations": 0, "cg_seconds": 0.0}
cg = opt.conjugate_gradient
def counted_cg(*a, **k):
    t0 = time.perf_counter()
    out = cg(*a, **k)
    stats["cg_seconds"] += time.perf_counter() - t0
    stats["cg_iterations"] += int(out[-1][0])
    return out
opt.conjugate_gradient = counted_cg
update = opt.compute_update
def timed_update(*a, **k):
    t0 = time.perf_counter()
    out = update(*a, **k)
    stats["seconds"] += time.perf_counter() - t0
    return out
opt.compute_update = timed_update
net.run_epochs(x, x, optimizer=opt, max_epochs=updates, print_period=None, target_err=-1.0)
stats["loss"] = float(net.error(inputs=x, targets=x))
print(json.dumps(stats))
'''


def ensure_peer_env() -> Path:
    """The peer's interpreter, creating its environment on first use."""
    python = PEER_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "hessianfree==0.4.0", "numpy", "matplotlib"], check=True)
    return python


def run_peer(python: Path, data_path: str, seed: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PEER_SCRIPT)
    try:
        out = subprocess.run([str(python), f.name, data_path, str(UPDATES), str(MAX_CG),
                              str(seed)], capture_output=True, text=True, check=True,
                             env={**os.environ, "MPLBACKEND": "Agg"})
    finally:
        os.remove(f.name)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(x: np.ndarray, seed: int) -> dict:
    model = Model("mlp", SIZES, ("logistic",) * 3)
    xb = jnp.asarray(x, jnp.float32)
    batch = Batch(xb, xb, jnp.ones((x.shape[0],), jnp.float32))
    opt = hf.hessian_free(model, get_loss("squared"), damping=1.0, max_cg_iters=MAX_CG)
    params = model.init_params(jax.random.PRNGKey(seed), jnp.float32)
    state = opt.init(params)
    t0 = time.perf_counter()
    compiled = jax.jit(opt._update).lower(params, state, batch, batch).compile()
    compile_s = time.perf_counter() - t0
    seconds, cg_iterations = 0.0, 0
    for _ in range(UPDATES):
        t0 = time.perf_counter()
        params, state, info = compiled(params, state, batch, batch)
        jax.block_until_ready(params)
        seconds += time.perf_counter() - t0
        cg_iterations += int(info.cg_iters)
    loss = float(get_loss("squared").value(model.apply(params, xb), xb, batch.mask))
    return {"seconds": seconds, "cg_iterations": cg_iterations, "loss": loss,
            "compile_seconds": compile_s}


def matmul_roofline_ms(n_cases: int) -> tuple[float, float]:
    """(measured float32 GFLOP/s at the problem's matmul shapes, roofline ms of one Gv)."""
    rng = np.random.default_rng(0)
    pairs = list(zip(SIZES[:-1], SIZES[1:]))
    mats = [(jnp.asarray(rng.normal(size=(n_cases, a)), jnp.float32),
             jnp.asarray(rng.normal(size=(a, b)), jnp.float32)) for a, b in pairs]
    forward = jax.jit(lambda ms: [a @ w for a, w in ms])
    jax.block_until_ready(forward(mats))
    t0, reps = time.perf_counter(), 200
    for _ in range(reps):
        jax.block_until_ready(forward(mats))
    secs = (time.perf_counter() - t0) / reps
    flops = 2 * n_cases * sum(a * b for a, b in pairs)
    gflops = flops / secs / 1e9
    return gflops, 1e3 * 4 * flops / (gflops * 1e9)


def peak_gflops(size: int | None = None) -> float:
    """float32 matmul rate of one large square product: this machine's arithmetic roof.  On a
    GPU the product is 4096² (a 1024² one is too short there to hide launch latency); random
    data, not constants, so the rate is the one real operands get."""
    size = size or (1024 if jax.devices()[0].platform == "cpu" else 4096)
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    mm = jax.jit(lambda m: m @ m)
    jax.block_until_ready(mm(a))
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        jax.block_until_ready(mm(a))
    return 2 * size ** 3 / ((time.perf_counter() - t0) / reps) / 1e9


def run(full: bool):
    python = ensure_peer_env()
    x, _ = tasks._digits_data()
    x = np.asarray(x, np.float32)
    rounds = 3 if full else 2
    ours, peer = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "digits.npz")
        np.savez(data_path, x=x)
        for r in range(rounds):                       # alternate, same machine, same invocation
            ours.append(run_ours(x, seed=r))
            peer.append(run_peer(python, data_path, seed=r))
    ms = {name: statistics.median(1e3 * o["seconds"] / max(o["cg_iterations"], 1) for o in runs)
          for name, runs in (("ours", ours), ("peer", peer))}
    gflops, roofline_ms = matmul_roofline_ms(x.shape[0])
    peak = peak_gflops()
    gv_flops = 4 * 2 * x.shape[0] * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
    yield {"benchmark": "peer_hessianfree", "case": "digits-ae 64-32-16-32-64 full batch 1797",
           "ours_ms_per_cg_iteration": ms["ours"], "peer_ms_per_cg_iteration": ms["peer"],
           "speedup": ms["peer"] / ms["ours"],
           "ours_loss_at_60": statistics.median(o["loss"] for o in ours),
           "peer_loss_at_60": statistics.median(o["loss"] for o in peer),
           "ours_cg_iterations": [o["cg_iterations"] for o in ours],
           "peer_cg_iterations": [o["cg_iterations"] for o in peer],
           "peer_cg_share": statistics.median(o["cg_seconds"] / o["seconds"] for o in peer),
           "ours_compile_seconds": statistics.median(o["compile_seconds"] for o in ours),
           "matmul_gflops": gflops, "gv_roofline_ms": roofline_ms,
           "ours_over_roofline": ms["ours"] / roofline_ms, "peak_gflops": peak,
           "gv_peak_roofline_ms": 1e3 * gv_flops / (peak * 1e9),
           "ours_over_peak_roofline": ms["ours"] / (1e3 * gv_flops / (peak * 1e9)),
           "rounds": rounds,
           "peer_version": "hessianfree 0.4.0"}

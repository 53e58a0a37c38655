"""Where an RNN CG iteration's time goes, against the matmul roofline (``--only rnn_cost``).

The case of issue's record: the addition RNN, 64 tanh units, batch 1,000, float32 (4,353
parameters), at T = 20 (the loop fully unrolled) and T = 100 (rolled, see
``hflab.core.models.FULL_UNROLL_MAX_STEPS``), with and without structural damping.

Measured, each as the slope between two run lengths so that set-up, gradient, line search and
compilation drop out:

* ``ms_per_cg_iteration`` — one HF update with 40 and with 120 CG iterations (the relative-progress
  stop disabled): (t₁₂₀ − t₄₀) / 80.
* ``gv_ms`` — K Gauss-Newton products on the linearisation CG uses (a ``fori_loop``): the slope
  between K = 10 and 40 (the plain product: with structural damping CG adds the ``J_hᵀ J_h`` term).
* ``step_matmul_us`` — one ``(batch × H)·(H × H)`` product followed by tanh, chained T times in a
  ``lax.scan`` unrolled as the model's is (each needs the last, as in the recurrence): the fastest
  this machine runs the sequential part of the net, per step.

The arithmetic of one Gv: a tangent pass (per step ``ḣ_{t-1} W_rec`` and ``h_{t-1} Ẇ_rec``) and a
transpose pass (``δ_t W_recᵀ`` and ``h_{t-1}ᵀ δ_t``): four ``B·H·H`` products per step, plus the
input and output layers — ``gv_flops = 4·T·2·B·(H·H + n_in·H + H·n_out)``.  Two roofs:
``peak_roof_ms`` (those flops at the float32 peak of one large square matmul) and
``sequential_roof_ms`` (four chained step-shaped products per step at the measured
``step_matmul_us``) — the second is what a dependent chain of small matmuls can reach here.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from hflab.core import hf
from hflab import tasks
from hflab.core.losses import BoundLoss, get_loss
from hflab.core.models import FULL_UNROLL_MAX_STEPS, Model

from .common import timeit
from .gv_cost import gv_seconds

BATCH, HIDDEN = 1000, 64
CG_SHORT, CG_LONG = 40, 120



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

def cg_iteration_ms(model, batch, structural: float) -> float:
    times = {}
    for iters in (CG_SHORT, CG_LONG):
        opt = hf.hessian_free(model, get_loss("squared"), damping=1.0, max_cg_iters=iters,
                              cg_eps=0.0, cg_tol=0.0, structural_damping=structural)
        params = model.init_params(jax.random.PRNGKey(0), jnp.float32)
        state = opt.init(params)
        times[iters] = timeit(lambda: opt.update(params, state, batch, batch)[2], repeats=3)
    return 1e3 * (times[CG_LONG] - times[CG_SHORT]) / (CG_LONG - CG_SHORT)


def gv_ms(model, batch, k_short: int = 10, k_long: int = 40) -> float:
    params = model.init_params(jax.random.PRNGKey(0), jnp.float32)
    loss = BoundLoss(get_loss("squared"), batch.y, batch.mask)
    v = ravel_pytree(params)[0] * 1e-3
    return 1e3 * gv_seconds(lambda q: model.apply(q, batch.x), loss, params, v, k_short, k_long)


def step_matmul_us(steps: int) -> float:
    """Microseconds per step of a chain of ``steps`` dependent (B×H)·(H×H) products + tanh."""
    key = jax.random.PRNGKey(1)
    w = jax.random.normal(key, (HIDDEN, HIDDEN), jnp.float32) / HIDDEN ** 0.5
    xs = jax.random.normal(key, (steps, BATCH, HIDDEN), jnp.float32)
    unroll = steps if steps <= FULL_UNROLL_MAX_STEPS else 1       # as the model's own scan
    chain = jax.jit(lambda w, xs: jax.lax.scan(
        lambda h, x: (jnp.tanh(x + h @ w), None), jnp.zeros((BATCH, HIDDEN)), xs,
        unroll=unroll)[0])
    return 1e6 * timeit(chain, w, xs, repeats=7) / steps


def run(full: bool):
    peak = peak_gflops()
    for steps in (20, 100):
        data = tasks.load_task("addition", seed=0, seq_len=steps, n_train=BATCH, n_test=10)
        n_in, n_out = data.train.x.shape[-1], data.train.y.shape[-1]
        model = Model("rnn", (n_in, HIDDEN, n_out), ("tanh",))
        t_max = data.train.x.shape[1]                       # lengths run to 1.1·T
        flops = 4 * t_max * 2 * BATCH * (HIDDEN * HIDDEN + n_in * HIDDEN + HIDDEN * n_out)
        step_us = step_matmul_us(t_max)
        t0 = time.perf_counter()
        gv = gv_ms(model, data.train)
        for structural in (0.0, 0.03):
            cg_ms = cg_iteration_ms(model, data.train, structural)
            peak_roof = 1e3 * flops / (peak * 1e9)
            seq_roof = 4 * t_max * step_us / 1e3
            yield {"benchmark": "rnn_cg_cost",
                   "case": f"addition RNN {HIDDEN} tanh T={steps} batch {BATCH}"
                           + (" + structural damping" if structural else ""),
                   "T": steps, "steps": t_max, "n_params": model.n_params,
                   "structural_damping": structural, "ms_per_cg_iteration": cg_ms,
                   "gv_ms": gv, "gv_share": gv / cg_ms if cg_ms > 0 else None,
                   "gv_flops": flops, "gv_gflops": flops / (gv * 1e6),
                   "peak_gflops": peak, "peak_roof_ms": peak_roof,
                   "step_matmul_us": step_us, "sequential_roof_ms": seq_roof,
                   "cg_over_peak_roof": cg_ms / peak_roof,
                   "cg_over_sequential_roof": cg_ms / seq_roof,
                   "measure_seconds": time.perf_counter() - t0}

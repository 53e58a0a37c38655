"""The curvature instrument: what a spectral density costs, and the edge of stability.

* ``density_cost`` — SLQ density of the Hessian (10 probes × 50 Lanczos steps, the issue's
  setting) of MLPs of about 10³, 10⁴, 10⁵ and 10⁶ parameters on 64 cases, through the public API
  (:func:`hflab.slq_quadrature` on the lab's curvature operator): seconds of the first call
  (tracing + compiling + running) and of a second call (running), and the Hutchinson trace
  (100 probes) beside it.  The target: ≤ 30 s for 10⁵ parameters on 2 cores.
* ``edge_of_stability`` — full-batch gradient descent on a small tanh MLP (squared error, 512
  digits images, one-hot targets) at two step sizes η, with λ_max(H) of the full-batch loss every
  few updates (Lanczos, :func:`hflab.block_statistics` on one block): Cohen et al. (2021) found
  that λ_max rises until it reaches about 2/η and then hovers there.  The record holds the
  series and λ_max / (2/η) at the end.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import hflab
from hflab.core.curvature import CurvatureOperator
from hflab.core.losses import Batch, get_loss
from hflab.core.models import Model

SIZES = {1_000: (32, 24, 8), 10_000: (64, 128, 16), 100_000: (256, 320, 64, 10),
         1_000_000: (784, 1000, 200, 10)}
EOS_STEPS = {False: 4000, True: 12000}
EOS_RATES = (0.03, 0.06)


def _mlp(sizes, cases: int, seed: int = 0):
    model = Model("mlp", tuple(sizes), ("tanh",) * (len(sizes) - 2), "gaussian", 1.0)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init_params(k1, jnp.float32)
    x = jax.random.normal(k2, (cases, sizes[0]), jnp.float32)
    y = jax.random.normal(k3, (cases, sizes[-1]), jnp.float32)
    return model, params, Batch(x, y, jnp.ones(cases, jnp.float32))


def density_cost(full: bool):
    loss = get_loss("squared")
    for target, sizes in SIZES.items():
        model, params, batch = _mlp(sizes, 64)
        op = CurvatureOperator(model.apply, loss, params, batch, kind="hessian")
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            quad = hflab.slq_quadrature(op, num_probes=10, num_steps=50, seed=0)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trace, err = hflab.hutchinson_trace(op, num_probes=100, return_error=True)
        t_trace = time.perf_counter() - t0
        yield {"benchmark": "density_cost", "n_params": int(model.n_params),
               "target_params": target, "sizes": list(sizes), "cases": 64, "probes": 10,
               "lanczos_steps": 50, "seconds_first": round(times[0], 3),
               "seconds": round(times[1], 3), "hutchinson_seconds_first": round(t_trace, 3),
               "trace": trace, "trace_error": err, "mean_eigenvalue_slq": quad.moment(1),
               "dtype": "float32"}


def _digits(cases: int = 512):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = jnp.asarray(d.data[:cases] / 16.0, jnp.float32)
    y = jax.nn.one_hot(jnp.asarray(d.target[:cases]), 10, dtype=jnp.float32)
    return Batch(x, y, jnp.ones(cases, jnp.float32))


def edge_of_stability(full: bool):
    batch = _digits()
    model = Model("mlp", (64, 64, 64, 10), ("tanh", "tanh"), "gaussian", 1.0)
    loss = get_loss("squared")
    steps, every = EOS_STEPS[full], 100

    def objective(p):
        return loss.value(model.apply(p, batch.x), batch.y, batch.mask)

    for lr in EOS_RATES:
        params = model.init_params(jax.random.PRNGKey(0), jnp.float32)

        @jax.jit
        def descend(p):
            def body(_, q):
                g = jax.grad(objective)(q)
                return jax.tree_util.tree_map(lambda a, b: a - lr * b, q, g)
            return jax.lax.fori_loop(0, every, body, p)

        series, t0 = [], time.perf_counter()
        for step in range(0, steps + 1, every):
            if step:
                params = descend(params)
            op = CurvatureOperator(model.apply, loss, params, batch, kind="hessian")
            (top,) = hflab.block_statistics(op, [("all", 0, op.n)], num_probes=1,
                                            num_steps=40)
            series.append({"step": step, "loss": float(objective(params)),
                           "lambda_max": top.top_eigenvalue})
        yield {"benchmark": "edge_of_stability", "learning_rate": lr, "threshold": 2.0 / lr,
               "n_params": int(model.n_params), "cases": int(batch.x.shape[0]), "steps": steps,
               "final_lambda_max": series[-1]["lambda_max"],
               "peak_lambda_max": max(s["lambda_max"] for s in series),
               "final_ratio_to_threshold": series[-1]["lambda_max"] * lr / 2.0,
               "final_loss": series[-1]["loss"], "series": series,
               "seconds": round(time.perf_counter() - t0, 1)}


def run(full: bool):
    yield from density_cost(full)
    yield from edge_of_stability(full)

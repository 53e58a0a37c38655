"""Gv cost: one Gauss-Newton-vector product inside CG (linearisation reused) ÷ one gradient.

The Gv time is the slope of (linearise once + K products) in K, measured inside one jitted
``fori_loop`` — exactly how CG uses it.  FLOP counts are the matmul work of the dense layers:
forward 2·B·Σ n_in·n_out; gradient = 3× that (forward + two backward products per layer);
Gv = 4× (tangent pass: two products per layer; transpose pass: two) — so ≈ 1.33 is the
arithmetic limit of the ratio.  GFLOP/s are compared with a plain float32 matmul of the largest
layer's shape on the same machine.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from hflab.core import curvature
from hflab.core.losses import BoundLoss, get_loss
from hflab.core.models import Model

from .common import timeit

CASES = [
    ("mnist-autoencoder 784-1000-500-250-30 mirrored", "mlp",
     (784, 1000, 500, 250, 30, 250, 500, 1000, 784), ("logistic",) * 3 + ("linear",) +
     ("logistic",) * 3, "logistic", 1000),
    ("mlp 784-500-500-10 softmax", "mlp", (784, 500, 500, 10), ("logistic", "logistic"),
     "softmax", 1000),
    ("rnn 64 tanh units T=20", "rnn", (2, 64, 1), ("tanh",), "squared", 1000),
    ("digits-autoencoder 64-32-16-32-64", "mlp", (64, 32, 16, 32, 64), ("logistic",) * 3,
     "squared", 1797),
]


def _data(kind, sizes, loss_name, batch, key):
    if kind == "mlp":
        x = jax.random.uniform(key, (batch, sizes[0]), jnp.float32)
        out = (batch, sizes[-1])
        mask = jnp.ones((batch,), jnp.float32)
    else:
        x = jax.random.uniform(key, (batch, 20, sizes[0]), jnp.float32)
        out = (batch, 20, sizes[-1])
        mask = jnp.ones((batch, 20), jnp.float32)
    if loss_name == "softmax":
        y = jax.nn.one_hot(jnp.arange(batch) % out[-1], out[-1], dtype=jnp.float32)
    else:
        y = jax.random.uniform(jax.random.fold_in(key, 1), out, jnp.float32)
    return x, y, mask


def forward_flops(kind, sizes, batch):
    if kind == "mlp":
        return 2 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    n_in, h, n_out = sizes
    return 2 * batch * 20 * (n_in * h + h * h + h * n_out)


def gv_seconds(f, loss, params, v, k_short: int, k_long: int, repeats: int = 3) -> float:
    """Seconds per Gauss-Newton product as CG runs them: the slope of (linearise ``f`` once + K
    chained products inside one jitted ``fori_loop``) between K = ``k_short`` and ``k_long``, so
    the linearisation and the call overhead drop out.  ``v`` is a flat vector."""
    _, unravel = ravel_pytree(params)

    def products(p, u, n):
        _, gv = curvature.linearize_gauss_newton(f, loss, p)
        # normalised to keep values bounded; the product count is what is measured
        body = lambda i, w: ravel_pytree(gv(unravel(w)))[0] * 1e-3 + w  # noqa: E731
        return jax.lax.fori_loop(0, n, body, u)
    times = [timeit(jax.jit(lambda p, u, n=n: products(p, u, n)), params, v, repeats=repeats)
             for n in (k_short, k_long)]
    return max(times[1] - times[0], 1e-9) / (k_long - k_short)


def measure(name, kind, sizes, acts, loss_name, batch, k: int = 10) -> dict:
    model = Model(kind, sizes, acts, "sparse")
    key = jax.random.PRNGKey(0)
    params = model.init_params(key, jnp.float32)
    x, y, mask = _data(kind, sizes, loss_name, batch, key)
    loss = BoundLoss(get_loss(loss_name), y, mask)
    f = lambda p: model.apply(p, x)  # noqa: E731
    flat, _ = ravel_pytree(params)

    grad = jax.jit(lambda p: jax.grad(lambda q: loss(f(q)))(p))
    v = jax.random.normal(key, flat.shape, jnp.float32) * 1e-3
    t_grad = timeit(grad, params, repeats=5)
    t_gv = gv_seconds(f, loss, params, v, 1, k + 1)
    fwd = forward_flops(kind, sizes, batch)
    widest = max(zip(sizes[:-1], sizes[1:]), key=lambda ab: ab[0] * ab[1]) if kind == "mlp" \
        else (sizes[1], sizes[1])
    rows = batch if kind == "mlp" else batch * 20
    a = jax.random.normal(key, (rows, widest[0]), jnp.float32)
    b = jax.random.normal(key, (widest[0], widest[1]), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    t_mm = timeit(mm, a, b, repeats=10)
    return {"benchmark": "gv_cost", "case": name, "batch": batch, "n_params": int(flat.size),
            "grad_seconds": t_grad, "gv_seconds": t_gv, "gv_over_grad": t_gv / t_grad,
            "grad_gflops": 3 * fwd / t_grad / 1e9, "gv_gflops": 4 * fwd / t_gv / 1e9,
            "matmul_gflops": 2 * rows * widest[0] * widest[1] / t_mm / 1e9,
            "target_ratio": 1.35 if "autoencoder" in name else None}


def run(full: bool):
    for case in CASES:
        yield measure(*case, k=20 if full else 8)

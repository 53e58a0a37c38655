"""Loss slices: the objective along a direction and over a plane of two, and HF's quadratic model
along its step — so that ρ is seen as the gap between two curves at α = 1.

``f(θ + α d)`` for a grid of α (1-D) and ``f(θ + α d₁ + β d₂)`` (2-D), every point one forward
pass, all of a grid in one vmapped, jitted program.  The directions the lab offers
(:func:`slice_directions`): the top-k eigenvectors of the Hessian (ARPACK Lanczos on the
operator, :func:`hflab.core.curvature.extreme_eigenpairs`), the descent direction −g/‖g‖, and a
step p as given (HF's, unnormalised, so α = 1 is the step).  HF's model along p is
``q(αp) − q(0) = α gᵀp + ½ α² pᵀCp`` with C undamped, as in HF's ρ (:mod:`hflab.core.hf`).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .curvature import extreme_eigenpairs


def _flat(tree_or_flat, like: jax.Array) -> jax.Array:
    flat = tree_or_flat if isinstance(tree_or_flat, (jax.Array, np.ndarray)) and \
        np.ndim(tree_or_flat) == 1 else ravel_pytree(tree_or_flat)[0]
    flat = jnp.asarray(flat, like.dtype)
    if flat.shape != like.shape:
        raise ValueError(f"a direction of {flat.size} entries for {like.size} parameters")
    return flat


def loss_slice(loss_fn: Callable, params, direction, alphas, *args) -> np.ndarray:
    """``f(θ + α d)`` for each α: ``loss_fn(params_pytree, *args) -> scalar``, ``direction`` a
    pytree like the parameters or a flat vector in ``ravel_pytree`` order.  ``loss_fn`` is a jit
    static argument: one that hashes equal across calls (a module-level function, a frozen
    dataclass) with the data in ``args`` is compiled once for every parameter vector."""
    flat = ravel_pytree(params)[0]
    d = _flat(direction, flat)
    return np.asarray(_along(loss_fn, params, d, jnp.asarray(alphas, flat.dtype), args),
                      np.float64)


def loss_plane(loss_fn: Callable, params, d1, d2, alphas, betas, *args) -> np.ndarray:
    """``f(θ + α d₁ + β d₂)`` as a ``(len(betas), len(alphas))`` array (rows: β); ``loss_fn`` and
    ``args`` as in :func:`loss_slice`."""
    flat = ravel_pytree(params)[0]
    u, v = _flat(d1, flat), _flat(d2, flat)
    return np.asarray(_plane(loss_fn, params, u, v, jnp.asarray(alphas, flat.dtype),
                             jnp.asarray(betas, flat.dtype), args), np.float64)


@partial(jax.jit, static_argnums=0)
def _along(loss_fn, params, d, alphas, args):
    flat, unravel = ravel_pytree(params)
    return jax.vmap(lambda a: loss_fn(unravel(flat + a * d), *args))(alphas)


@partial(jax.jit, static_argnums=0)
def _plane(loss_fn, params, u, v, alphas, betas, args):
    flat, unravel = ravel_pytree(params)

    def row(beta):
        return jax.vmap(lambda alpha: loss_fn(unravel(flat + alpha * u + beta * v), *args))(
            alphas)
    return jax.lax.map(row, betas)


def quadratic_model(grad, step, curvature_step, alphas) -> np.ndarray:
    """``q(αp) − q(0) = α gᵀp + ½ α² pᵀ(Cp)`` for each α (flat vectors)."""
    g, p, cp = (np.asarray(x, np.float64).ravel() for x in (grad, step, curvature_step))
    alphas = np.asarray(alphas, np.float64)
    return alphas * float(g @ p) + 0.5 * alphas ** 2 * float(p @ cp)


def slice_directions(hessian_matvec: Callable, grad, k: int = 2, seed: int = 0,
                     compiled: bool = False) -> dict[str, tuple[np.ndarray, float | None]]:
    """Unit directions ``{name: (d, eigenvalue or None)}``: the top-k Hessian eigenvectors
    (largest algebraic, signs fixed so that gᵀd ≤ 0: the slice starts downhill) and −g/‖g‖.
    ``compiled`` as in :func:`hflab.core.curvature.extreme_eigenpairs`."""
    g = np.asarray(grad, np.float64).ravel()
    n = g.size
    out: dict[str, tuple[np.ndarray, float | None]] = {}
    k = min(int(k), max(n - 1, 1))
    if k > 0:
        w, vecs = extreme_eigenpairs(hessian_matvec, n, k=k, which="LA",
                                     dtype=np.asarray(grad).dtype, tol=1e-6, seed=seed,
                                     compiled=compiled)
        for i, (lam, v) in enumerate(zip(w, vecs.T)):
            v = v / np.linalg.norm(v)
            out[f"eigenvector {i + 1}"] = (-v if v @ g > 0 else v, float(lam))
    norm = np.linalg.norm(g)
    if norm > 0:
        out["−gradient"] = (-g / norm, None)
    return out

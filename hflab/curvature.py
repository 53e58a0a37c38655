"""Model-agnostic derivative products on parameter pytrees.

Notation: ``f: params -> z`` (any JAX function, e.g. a network's pre-activation outputs),
``L: z -> scalar`` (a loss; a :class:`hflab.losses.BoundLoss` or any callable), ``J = ∂z/∂θ``.

* ``grad``:            ∇(L∘f)
* ``hvp``:             ∇²fun · v, forward-over-reverse (Pearlmutter 1994), one jvp of the grad.
* ``gauss_newton_vp``: G v = Jᵀ H_L J v (Schraudolph 2002): a tangent pass ``J v``, the output-space
  Hessian product, and a transpose pass ``Jᵀ u``.  :func:`linearize_gauss_newton` linearises ``f``
  once with :func:`jax.linearize` and reuses the stored residuals for every product — inside CG
  that removes the forward pass from each of the hundreds of products of one HF update.
* empirical Fisher: F v = (1/N) Σ_i g_i (g_iᵀ v) from per-example gradients (vmap).
* dense matrices over ``ravel_pytree(params)`` for small models, and finite-difference references.
* spectra: extreme eigenvalues of H or G through ``scipy.sparse.linalg.eigsh`` (ARPACK Lanczos)
  on a jitted matvec — the dense matrix is never formed.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def _loss_hvp(loss) -> Callable:
    """Output-space Hessian product of ``loss`` at ``z``: exact formula if the loss knows it."""
    if hasattr(loss, "hessian_vp"):
        return loss.hessian_vp
    return lambda z, u: jax.jvp(jax.grad(loss), (z,), (u,))[1]


def grad(fun: Callable, params):
    return jax.grad(fun)(params)


def hvp(fun: Callable, params, v):
    """∇²fun(params) v (forward-over-reverse)."""
    return jax.jvp(jax.grad(fun), (params,), (v,))[1]


def linearize_hessian(fun: Callable, params):
    """Return ``(grad, v -> H v)`` with the gradient's linearisation computed once."""
    g, hvp_lin = jax.linearize(jax.grad(fun), params)
    return g, hvp_lin


def linearize_gauss_newton(f: Callable, loss, params):
    """Linearise ``f`` at ``params`` once; return ``(z, gv)`` where ``gv(v) = Jᵀ H_L J v``.

    ``jax.linearize`` stores the residuals of one forward pass; ``jax.linear_transpose`` of the
    same linear map gives ``Jᵀ`` without another forward pass.
    """
    z, jvp_fn = jax.linearize(f, params)
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    loss_hvp = _loss_hvp(loss)

    def gv(v):
        (out,) = vjp_fn(loss_hvp(z, jvp_fn(v)))
        return out

    return z, gv


def gauss_newton_vp(f: Callable, loss, params, v):
    """Jᵀ ∇²loss J v at ``params`` (a pytree like ``params``)."""
    return linearize_gauss_newton(f, loss, params)[1](v)


def jacobian_vp(f: Callable, params, v):
    return jax.jvp(f, (params,), (v,))[1]


def jacobian_tvp(f: Callable, params, u):
    return jax.vjp(f, params)[1](u)[0]


# ----------------------------------------------------------------------------- empirical Fisher
def per_example_grads(case_loss: Callable, params, xs, ys, masks):
    """Gradients of ``case_loss(params, x, y, mask)`` for each case, raveled: (N, n)."""
    def one(x, y, m):
        return ravel_pytree(jax.grad(case_loss)(params, x, y, m))[0]
    return jax.vmap(one)(xs, ys, masks)


def empirical_fisher_vp(case_loss: Callable, params, xs, ys, masks, v):
    """F v = (1/N) Σ_i g_i g_iᵀ v with g_i the gradient of case i's loss."""
    flat_v, unravel = ravel_pytree(v)
    g = per_example_grads(case_loss, params, xs, ys, masks)
    return unravel(g.T @ (g @ flat_v) / g.shape[0])


# ----------------------------------------------------------------------------- dense matrices
DENSE_PARAM_CAP = 3000   # n² float64 entries: 3000 parameters → 72 MB per matrix


def require_dense_size(n_params: int, cap: int = DENSE_PARAM_CAP, what: str = "Hessian"):
    """Refuse a dense n×n matrix beyond the cap (with a message a person can act on)."""
    from .experiment import ConfigError
    if n_params > cap:
        raise ConfigError("layers", n_params, f"a dense {what} is limited to {cap:,} parameters "
                          f"(this model has {n_params:,}; a {n_params}×{n_params} matrix would "
                          f"need {n_params ** 2 * 8 / 2**30:.1f} GiB) — use a smaller model, or "
                          "the spectrum (Lanczos), which needs no dense matrix")

def _flat_fun(fun: Callable, params):
    flat, unravel = ravel_pytree(params)
    return (lambda p: fun(unravel(p))), flat


def hessian_matrix(fun: Callable, params):
    """(n, n) Hessian of a scalar ``fun`` over ``ravel_pytree(params)``."""
    flat_fun, flat = _flat_fun(fun, params)
    return jax.hessian(flat_fun)(flat)


def jacobian_matrix(f: Callable, params):
    """(m, n) Jacobian, m = outputs.size, n = number of parameters."""
    flat_f, flat = _flat_fun(f, params)
    return jax.jacfwd(lambda p: jnp.ravel(flat_f(p)))(flat)


def output_hessian_matrix(loss, z):
    """(m, m) Hessian of the loss in output space, built column by column from its product."""
    loss_hvp = _loss_hvp(loss)
    m = z.size
    basis = jnp.eye(m, dtype=z.dtype).reshape((m,) + z.shape)
    return jax.vmap(lambda e: jnp.ravel(loss_hvp(z, e)))(basis).T


def gauss_newton_matrix(f: Callable, loss, params):
    """(n, n) Gauss-Newton matrix Jᵀ H_L J, built densely (an independent route to Gv)."""
    z = f(params)
    jac = jacobian_matrix(f, params)
    return jac.T @ output_hessian_matrix(loss, z) @ jac


# ----------------------------------------------------------------------------- finite differences
def fd_gradient(fun: Callable, params, eps: float = 1e-6):
    """Central differences of a scalar ``fun``; returns a flat vector."""
    flat_fun, flat = _flat_fun(fun, params)
    basis = eps * jnp.eye(flat.size, dtype=flat.dtype)
    # each entry is its own central difference; vmap only batches the independent evaluations
    diff = jax.jit(jax.vmap(lambda e: (flat_fun(flat + e) - flat_fun(flat - e)) / (2 * eps)))
    return np.asarray(diff(basis))


def fd_hvp(fun: Callable, params, v, eps: float = 1e-5):
    """(∇fun(θ + εv) − ∇fun(θ − εv)) / 2ε as a flat vector."""
    flat_fun, flat = _flat_fun(fun, params)
    flat_v = ravel_pytree(v)[0]
    g = jax.grad(flat_fun)
    return (g(flat + eps * flat_v) - g(flat - eps * flat_v)) / (2 * eps)


def fd_jvp(f: Callable, params, v, eps: float = 1e-6):
    flat_f, flat = _flat_fun(f, params)
    flat_v = ravel_pytree(v)[0]
    return (flat_f(flat + eps * flat_v) - flat_f(flat - eps * flat_v)) / (2 * eps)


def fd_jacobian_matrix(f: Callable, params, eps: float = 1e-6):
    """(m, n) Jacobian by central differences, one column per parameter."""
    flat_f, flat = _flat_fun(f, params)
    basis = eps * jnp.eye(flat.size, dtype=flat.dtype)
    cols = jax.jit(jax.vmap(lambda e: jnp.ravel(flat_f(flat + e) - flat_f(flat - e)) / (2 * eps)))
    return cols(basis).T


def fd_hessian_matrix(fun: Callable, params, eps: float = 1e-5):
    """Dense Hessian by central differences of the gradient, column by column."""
    flat_fun, flat = _flat_fun(fun, params)
    g = jax.jit(jax.grad(flat_fun))
    n = flat.size
    cols = []
    for i in range(n):
        e = jnp.zeros(n, flat.dtype).at[i].set(eps)
        cols.append((g(flat + e) - g(flat - e)) / (2 * eps))
    h = jnp.stack(cols, axis=1)
    return 0.5 * (h + h.T)


# ----------------------------------------------------------------------------- spectra
def extreme_eigenvalues(matvec: Callable, n: int, k: int = 6, which: str = "LA",
                        dtype=np.float64, tol: float = 1e-8, seed: int = 0) -> np.ndarray:
    """k eigenvalues of a symmetric operator given by ``matvec`` on flat vectors of length n.

    ``which`` as in :func:`scipy.sparse.linalg.eigsh`: ``"LA"`` largest algebraic,
    ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.  Uses ARPACK's implicitly restarted
    Lanczos; for ``k >= n - 1`` (ARPACK's limit) the operator is materialised column by column and
    ``numpy.linalg.eigvalsh`` is used instead.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh
    mv = jax.jit(matvec)
    if k >= n - 1:
        cols = [np.asarray(mv(jnp.zeros(n, dtype).at[i].set(1.0)), np.float64) for i in range(n)]
        mat = np.stack(cols, axis=1)
        w = np.linalg.eigvalsh(0.5 * (mat + mat.T))
        return w[::-1][:k] if which in ("LA", "LM") else w[:k]
    op = LinearOperator((n, n), matvec=lambda x: np.asarray(mv(jnp.asarray(x.ravel(), dtype)),
                                                               np.float64), dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    w = eigsh(op, k=k, which=which, tol=tol, v0=v0, return_eigenvectors=False)
    return np.sort(w)[::-1] if which in ("LA", "LM") else np.sort(w)


def flat_operator(product: Callable, params):
    """Wrap a pytree product ``v -> A v`` as a flat-vector matvec (for eigsh and dense checks)."""
    flat, unravel = ravel_pytree(params)
    return lambda x: ravel_pytree(product(unravel(x)))[0], flat.size

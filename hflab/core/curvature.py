"""One curvature operator for any JAX model, linearised once (Martens 2010 §4; Schraudolph 2002).

Notation: ``apply_fn(params, x) -> z`` pre-activation outputs (any JAX function), a matching loss
``L(z, y, mask)`` (:mod:`hflab.core.losses`), ``J = ∂z/∂θ`` at the current parameters θ, the objective
``f(θ) = L(z(θ)) + ½·weight_cost·‖θ‖²``.  :class:`CurvatureOperator` is the matrix ``C`` of one
kind, at θ, on one batch:

* ``"gauss_newton"``  ``G = Jᵀ H_L J + weight_cost·I``: a tangent pass ``J v``, the exact output-space
  Hessian product ``H_L``, a transpose pass ``Jᵀ u``.  ``jax.linearize`` stores one forward pass
  and ``jax.linear_transpose`` of the same linear map gives ``Jᵀ`` — so inside CG no product
  repeats the forward pass.  PSD with a matching loss.
* ``"hessian"``       ``H = ∇²f`` (Pearlmutter 1994): the gradient linearised once, forward over reverse.
* ``"fisher"``        the empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ + weight_cost·I`` from per-case
  gradients ``g_i`` (vmap), ``N`` the number of *real* (unmasked) cases.

plus, for recurrent nets, the structural-damping matrix (Martens & Sutskever 2011 §3)
``S = J_hᵀ H_D J_h`` on the hidden states ``h`` (``H_D = I`` for tanh/relu/linear units, the
cross-entropy Hessian ``diag(1/(h(1−h)))`` for logistic ones), each case weighted ``1/N``.
HF's CG system matrix is ``A = C + λ I + λ μ S`` (:meth:`CurvatureOperator.damped`).

Every product exists once, here; :mod:`hflab.core.hf`, the Curvature page and the function-level
helpers (:func:`hvp`, :func:`gauss_newton_vp`, …) all go through the operator.  Dense matrices
(``jax.hessian``, ``jax.jacfwd``) and central finite differences below share no code with the
products: they are the independent references the tests compare against.  Spectra use ARPACK
Lanczos (``scipy.sparse.linalg.eigsh``) on a jitted product, never the dense matrix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from . import cg as cg_lib
from .losses import Batch, MatchingLoss, case_weights, n_cases, pad_batch



@dataclass(frozen=True)
class CurvatureKind:
    """What the lab needs to know of a curvature matrix: its name (``kind=``), a label and symbol
    for the pages and spectra, whether it is positive semi-definite (then λ = 0 is allowed and a
    negative eigenvalue can only be rounding), and whether its spectrum's extremes are tracked at
    every checkpoint of a run (:mod:`hflab.core.spectra`)."""
    name: str
    label: str
    symbol: str
    psd: bool
    description: str
    tracked: bool = True


# Every kind, in the order the pages show them.  Adding a kind: an entry here and a
# ``_setup_<name>`` method of :class:`CurvatureOperator`; the config, the pages and the spectra
# iterate this table.
KIND_INFO: dict[str, CurvatureKind] = {k.name: k for k in (
    CurvatureKind("gauss_newton", "Gauss-Newton", "G", True,
                  "G = Jᵀ H_L J: the loss's curvature through the linearised network"),
    CurvatureKind("hessian", "Hessian", "H", False,
                  "H = ∇²f: the true Hessian, indefinite away from a minimum"),
    CurvatureKind("fisher", "Empirical Fisher", "F", True,
                  "F = (1/N) Σ gᵢgᵢᵀ from per-case gradients", tracked=False),
)}
KINDS = tuple(KIND_INFO)
DENSE_PARAM_CAP = 3000   # n² float64 entries: 3000 parameters → 72 MB per matrix


# ----------------------------------------------------------------------------- losses
class _FunctionLoss:
    """A scalar function of the outputs seen as a loss: its output Hessian by autodiff unless the
    object knows an exact product (:class:`hflab.core.losses.BoundLoss` does)."""

    def __init__(self, fn):
        self.fn = fn

    def value(self, z, y, mask):
        return self.fn(z)

    def hessian_vp(self, z, y, mask, u):
        if hasattr(self.fn, "hessian_vp"):
            return self.fn.hessian_vp(z, u)
        return jax.jvp(jax.grad(self.fn), (z,), (u,))[1]


def hidden_state_hvp(activation: str) -> Callable:
    """``H_D u`` for the structural distance D on hidden states ``h`` (Martens & Sutskever 2011).

    tanh/linear/relu units: squared error, ``H_D = I``.  Logistic units: the cross-entropy between
    ``σ(a)`` and ``σ(a')`` matches the pre-activation ``a`` (Hessian ``σ(1−σ)``); in ``h = σ(a)``
    that is ``diag(1/(h(1−h)))``.
    """
    if activation == "logistic":
        return lambda h, u: u / jnp.clip(h * (1.0 - h), 1e-6, None)
    return lambda h, u: u


def _case_loss(apply_fn, loss, unravel):
    """Unnormalised loss of one case ``(x, y, mask)`` as a function of flat parameters."""
    def case_loss(p, x, y, m):
        return loss.per_case(apply_fn(unravel(p), x[None]), y[None], m[None])[0]
    return case_loss


def per_example_grads(case_loss: Callable, params, xs, ys, masks):
    """Gradients of ``case_loss(params, x, y, mask)`` for each case, raveled: (N, n)."""
    def one(x, y, m):
        return ravel_pytree(jax.grad(case_loss)(params, x, y, m))[0]
    return jax.vmap(one)(xs, ys, masks)


def _hessian_map(objective: Callable, primal):
    """``(∇f(θ), v -> ∇²f(θ) v)``: the gradient linearised once (forward over reverse)."""
    return jax.linearize(jax.grad(objective), primal)


# ----------------------------------------------------------------------------- the operator
class CurvatureOperator:
    """The curvature ``C`` of one kind at ``params`` on ``batch``, linearised once.

    Products act on flat vectors in ``ravel_pytree(params)`` order (what CG works on);
    :meth:`multiply_tree` takes a pytree.  ``hidden_fn(params, x) -> (z, h)`` enables the
    structural-damping term (``hidden_activation`` picks ``H_D``).  Construct it inside ``jit``.
    """

    def __init__(self, apply_fn: Callable, loss, params, batch: Batch | None = None, *,
                 kind: str = "gauss_newton", weight_cost: float = 0.0,
                 hidden_fn: Callable | None = None, hidden_activation: str = "tanh"):
        if kind not in KINDS:
            raise ValueError(f"curvature kind {kind!r} unknown; allowed: {list(KINDS)}")
        batch = batch if batch is not None else Batch(None, None, None)
        if not isinstance(loss, (MatchingLoss, _FunctionLoss)):
            loss = _FunctionLoss(loss)
        self.kind, self.loss, self.batch, self.weight_cost = kind, loss, batch, weight_cost
        self.params = params
        self.flat, self.unravel = ravel_pytree(params)
        self.n = int(self.flat.size)
        x, y, mask = batch
        self._out = lambda p: apply_fn(self.unravel(p), x)  # noqa: E731
        self._objective = lambda p: (loss.value(self._out(p), y, mask)  # noqa: E731
                                     + 0.5 * weight_cost * jnp.vdot(p, p))
        self._structural = None
        if hidden_fn is not None:
            self._structural_setup(lambda p: hidden_fn(self.unravel(p), x), hidden_activation)
        getattr(self, f"_setup_{kind}")(apply_fn)

    # -- set-up per kind (each linearises once) ------------------------------------------
    def _setup_gauss_newton(self, apply_fn):
        if self._structural is not None:      # share the hidden-state linearisation with S
            (z, _), self._jvp, self._vjp = self._structural
        else:
            z, jvp = jax.linearize(self._out, self.flat)
            self._jvp, self._vjp = jvp, jax.linear_transpose(jvp, self.flat)
        self.outputs = z
        self.value = self._objective_at(z)
        self._product = self._gauss_newton_product

    def _setup_hessian(self, apply_fn):
        self.outputs = self._out(self.flat)
        self.value = self._objective(self.flat)
        _, self._hv = _hessian_map(self._objective, self.flat)
        self._product = lambda v, s_scale: self._with_structural(self._hv(v), v, s_scale)

    def _setup_fisher(self, apply_fn):
        if self.batch.mask is None:
            raise ValueError("the empirical Fisher needs per-case losses: give a matching loss "
                             "and a batch")
        self.outputs = self._out(self.flat)
        self.value = self._objective(self.flat)
        gs = per_example_grads(_case_loss(apply_fn, self.loss, self.unravel), self.flat,
                               *self.batch)
        nc = n_cases(self.batch.mask)
        self._product = lambda v, s_scale: self._with_structural(  # noqa: E731
            gs.T @ (gs @ v) / nc + self.weight_cost * v, v, s_scale)

    def _structural_setup(self, fn, activation):
        out, jvp = jax.linearize(fn, self.flat)
        self._structural = (out, jvp, jax.linear_transpose(jvp, self.flat))
        self._h = out[1]
        self._h_hvp = hidden_state_hvp(activation)
        mask = self.batch.mask
        self._h_weights = (case_weights(mask) / n_cases(mask))[:, None, None]

    def _objective_at(self, z):
        x, y, mask = self.batch
        return self.loss.value(z, y, mask) + 0.5 * self.weight_cost * jnp.vdot(self.flat,
                                                                                self.flat)

    # -- the products ---------------------------------------------------------------------
    def _output_hvp(self, jz):
        return self.loss.hessian_vp(self.outputs, self.batch.y, self.batch.mask, jz)

    def _hidden_cotangent(self, jh, s_scale):
        return s_scale * self._h_weights * self._h_hvp(self._h, jh)

    def _gauss_newton_product(self, v, s_scale, c_scale=1.0):
        """``c_scale·Jᵀ H_L J v + s_scale·S v`` (+ weight cost), one tangent and one transpose."""
        if self._structural is None:
            (r,) = self._vjp(self._output_hvp(self._jvp(v)))
            return r + self.weight_cost * v
        jz, jh = self._jvp(v)
        (r,) = self._vjp((c_scale * self._output_hvp(jz), self._hidden_cotangent(jh, s_scale)))
        return r + c_scale * self.weight_cost * v

    def _with_structural(self, cv, v, s_scale):
        if self._structural is None:
            return cv
        _, jvp, vjp = self._structural
        (s,) = vjp((jnp.zeros_like(self.outputs), self._hidden_cotangent(jvp(v)[1], s_scale)))
        return cv + s

    def multiply(self, v):
        """``C v`` on a flat vector (weight cost included, no damping)."""
        return self._product(v, 0.0)

    def structural(self, v):
        """``S v = J_hᵀ H_D J_h v`` (hidden states weighted 1/N per case)."""
        if self._structural is None:
            raise ValueError("no hidden states: build the operator with hidden_fn")
        if self.kind == "gauss_newton":
            return self._gauss_newton_product(v, 1.0, c_scale=0.0)
        return self._with_structural(jnp.zeros_like(v), v, 1.0)

    def damped(self, damping, structural_damping: float = 0.0) -> Callable:
        """``v -> (C + λ I + λ μ S) v``: HF's CG system matrix (μ = 0 leaves S out)."""
        if structural_damping and self._structural is None:
            raise ValueError("structural damping needs hidden states: build with hidden_fn")
        s_scale = damping * structural_damping if structural_damping else 0.0
        return lambda v: self._product(v, s_scale) + damping * v

    def multiply_tree(self, v):
        """``C v`` for a pytree ``v`` shaped like the parameters."""
        return self.unravel(self.multiply(ravel_pytree(v)[0]))

    def multiply_inverse(self, b, damping, **cg_settings):
        """``(C + λ I)⁻¹ b`` by CG (:func:`hflab.core.cg.solve_flat`); returns ``(x, CGInfo)``."""
        return cg_lib.solve_flat(self.damped(damping), b, **cg_settings)

    def to_dense(self, cap: int = DENSE_PARAM_CAP) -> jax.Array:
        """The n × n matrix, column by column from the product (refused above ``cap``)."""
        require_dense_size(self.n, cap, f"{self.kind} matrix")
        eye = jnp.eye(self.n, dtype=self.flat.dtype)
        return jax.vmap(self.multiply)(eye).T

    def eigenvalues(self, k: int = 6, which: str = "LA", **kw) -> np.ndarray:
        """Extreme eigenvalues by Lanczos (see :func:`extreme_eigenvalues`).  Call outside jit."""
        return extreme_eigenvalues(self.multiply, self.n, k, which, **kw)


# ----------------------------------------------------------------------------- helpers on functions
def for_function(f: Callable, loss, params, kind: str = "gauss_newton") -> CurvatureOperator:
    """The operator of ``loss(f(params))`` for a function ``f: params -> z`` and a loss on ``z``
    (a :class:`hflab.core.losses.BoundLoss` or any scalar function)."""
    return CurvatureOperator(lambda p, _: f(p), _FunctionLoss(loss), params, kind=kind)


def grad(fun: Callable, params):
    return jax.grad(fun)(params)


def hvp(fun: Callable, params, v):
    """∇²fun(params) v (forward over reverse), a pytree like ``params``."""
    flat, unravel = ravel_pytree(params)
    _, hv = _hessian_map(lambda p: fun(unravel(p)), flat)
    return unravel(hv(ravel_pytree(v)[0]))


def linearize_gauss_newton(f: Callable, loss, params):
    """Linearise ``f`` at ``params`` once; return ``(z, gv)`` with ``gv(v) = Jᵀ H_L J v``."""
    op = for_function(f, loss, params)
    return op.outputs, op.multiply_tree


def gauss_newton_vp(f: Callable, loss, params, v):
    """Jᵀ ∇²loss J v at ``params`` (a pytree like ``params``)."""
    return for_function(f, loss, params).multiply_tree(v)


def jacobian_vp(f: Callable, params, v):
    return jax.jvp(f, (params,), (v,))[1]


def jacobian_tvp(f: Callable, params, u):
    return jax.vjp(f, params)[1](u)[0]


# ----------------------------------------------------------------------------- dense references
def require_dense_size(n_params: int, cap: int = DENSE_PARAM_CAP, what: str = "Hessian"):
    """Refuse a dense n×n matrix beyond the cap (with a message a person can act on)."""
    if n_params > cap:
        raise ValueError(f"a dense {what} is limited to {cap:,} parameters (this model has "
                         f"{n_params:,}; the matrix would need {n_params ** 2 * 8 / 2**30:.1f} "
                         "GiB) — inspect a weight block or the Lanczos spectrum instead")


def _flat_fun(fun: Callable, params):
    flat, unravel = ravel_pytree(params)
    return (lambda p: fun(unravel(p))), flat


def hessian_matrix(fun: Callable, params):
    """(n, n) Hessian of a scalar ``fun`` over ``ravel_pytree(params)`` (``jax.hessian``)."""
    flat_fun, flat = _flat_fun(fun, params)
    return jax.hessian(flat_fun)(flat)


def jacobian_matrix(f: Callable, params):
    """(m, n) Jacobian, m = outputs.size, n = number of parameters."""
    flat_f, flat = _flat_fun(f, params)
    return jax.jacfwd(lambda p: jnp.ravel(flat_f(p)))(flat)


def output_hessian_matrix(loss: Callable, z):
    """(m, m) Hessian of the loss *value* in output space by ``jax.hessian`` — independent of
    the losses' hand-written Hessian products."""
    m = z.size
    return jax.hessian(lambda flat_z: loss(flat_z.reshape(z.shape)))(jnp.ravel(z)).reshape(m, m)


def gauss_newton_matrix(f: Callable, loss: Callable, params):
    """(n, n) Gauss-Newton matrix Jᵀ H_L J, built densely (an independent route to Gv)."""
    z = f(params)
    jac = jacobian_matrix(f, params)
    return jac.T @ output_hessian_matrix(loss, z) @ jac


def fd_gradient(fun: Callable, params, eps: float = 1e-6):
    """Central differences of a scalar ``fun``; returns a flat vector."""
    flat_fun, flat = _flat_fun(fun, params)
    basis = eps * jnp.eye(flat.size, dtype=flat.dtype)
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
def _order(w: np.ndarray, which: str, k: int) -> np.ndarray:
    """Indices of the ``k`` eigenvalues ``which`` picks, in its order."""
    if which == "LM":
        return np.argsort(-np.abs(w), kind="stable")[:k]
    up = np.argsort(w, kind="stable")
    return up[::-1][:k] if which == "LA" else up[:k]


def extreme_eigenpairs(matvec: Callable, n: int, k: int = 6, which: str = "LA",
                       dtype=np.float64, tol: float = 1e-8, seed: int = 0,
                       maxiter: int | None = None, ncv: int | None = None,
                       compiled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k eigenpairs ``(w, V)`` of a symmetric operator given by ``matvec`` on flat vectors of
    length n: ``V[:, i]`` is the unit eigenvector of ``w[i]``.

    ``which`` as in :func:`scipy.sparse.linalg.eigsh`: ``"LA"`` largest algebraic (descending),
    ``"SA"`` smallest algebraic (ascending), ``"LM"`` largest magnitude (by |λ|, descending).
    ARPACK's implicitly restarted Lanczos; for ``k >= n − 1`` (ARPACK's limit) the operator is
    materialised and ``numpy.linalg.eigh`` is used.  When ARPACK does not converge, the pairs it
    did converge are returned (possibly fewer than k); none at all raises.  ``compiled=True``
    calls ``matvec`` as given (a jitted function whose arguments carry the parameters: jitting a
    closure again would compile it once per call).
    """
    if which not in ("LA", "SA", "LM"):
        raise ValueError(f"which={which!r}; allowed: 'LA', 'SA', 'LM'")
    mv = matvec if compiled else jax.jit(matvec)
    if k >= n - 1:
        mat = np.asarray(jax.vmap(mv)(jnp.eye(n, dtype=dtype)), np.float64).T
        w, v = np.linalg.eigh(0.5 * (mat + mat.T))
    else:
        op = LinearOperator((n, n), dtype=np.float64, matvec=lambda x: np.asarray(
            mv(jnp.asarray(x.ravel(), dtype)), np.float64))
        v0 = np.random.default_rng(seed).standard_normal(n)
        try:
            w, v = eigsh(op, k=k, which=which, tol=tol, v0=v0, maxiter=maxiter, ncv=ncv)
        except ArpackNoConvergence as e:
            w, v = np.asarray(e.eigenvalues), np.asarray(e.eigenvectors)
            if w.size == 0:
                raise
    idx = _order(np.asarray(w), which, k)
    return np.asarray(w)[idx], np.asarray(v)[:, idx]


def extreme_eigenvalues(matvec: Callable, n: int, k: int = 6, which: str = "LA",
                        **kw) -> np.ndarray:
    """The eigenvalues of :func:`extreme_eigenpairs` (same arguments)."""
    return extreme_eigenpairs(matvec, n, k, which, **kw)[0]


def empirical_fisher_diagonal(apply_fn: Callable, loss, flat, unravel, batch: Batch,
                              chunk: int = 128):
    """``diag(F̂) = (1/N) Σ_i g_i ⊙ g_i`` from per-case gradients (Martens' preconditioner).

    Computed in blocks of ``chunk`` cases (vmap inside a scan), so memory holds one block of
    per-example gradients; zero-mask padding cases have zero loss and hence zero gradient.
    """
    chunk = min(chunk, batch.x.shape[0])
    blocks = jax.tree_util.tree_map(lambda a: a.reshape((-1, chunk) + a.shape[1:]),
                                    pad_batch(batch, chunk))
    case_loss = _case_loss(apply_fn, loss, unravel)

    def block(acc, data):
        g = per_example_grads(case_loss, flat, *data)
        return acc + jnp.sum(g * g, axis=0), None

    sq, _ = jax.lax.scan(block, jnp.zeros_like(flat), tuple(blocks))
    return sq / n_cases(batch.mask)

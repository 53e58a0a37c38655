"""The curvature instrument's estimators: a spectral density by stochastic Lanczos quadrature,
Hutchinson trace and diagonal, and the top eigenvalue and trace of every weight block.

Everything takes an operator ``C`` of n parameters — a :class:`hflab.core.curvature.CurvatureOperator`
(its ``multiply``), or ``(matvec, n)`` for any symmetric product on flat vectors — and never forms
the n × n matrix.  The Monte-Carlo trace and diagonal estimators are matfree's ``stochtrace``;
the Lanczos tridiagonalisation is :func:`lanczos` here (why: its docstring — matfree's breaks
down on the invariant Krylov spaces the lab's low-rank matrices produce).

* **SLQ** (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019): for each of P Rademacher
  probes v (‖v‖² = n), m Lanczos steps from v give a tridiagonal T whose eigenpairs (θⱼ, uⱼ) are a
  Gauss quadrature of the spectral measure seen from v: nodes θⱼ, weights wⱼ = (u_j)₁².  Then
  ``vᵀ f(C) v / n ≈ Σⱼ wⱼ f(θⱼ)``, exactly for polynomials of degree < 2m, and averaging over the
  probes estimates ``tr f(C) / n``.  The density ``φ(t) = (1/n) Σᵢ δ(t − λᵢ)`` is drawn by putting
  a Gaussian of width σ on every node; it integrates to 1.
* **Hutchinson** (1989): ``tr C ≈ mean vᵀCv`` over Rademacher probes, with its standard error;
  ``"xtrace"`` is Epperly, Tropp & Webber's (2024) exchangeable estimator (a low-rank part taken
  exactly — the successor of Hutch++), with Gaussian probes.
* **Blocks**: the top eigenvalue of a diagonal block ``C_bb`` by Lanczos on ``v_b ↦ (C E_b v_b)_b``,
  and its trace by Hutchinson with probes living on the block (``v_bᵀ C_bb v_b``: no noise from
  the other blocks, and never negative for a PSD C); their sum estimates the whole trace.

All estimators are jitted as a whole (probes in a ``lax.map``, so memory holds one Krylov basis
of m × n at a time, not P of them).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matfree import stochtrace


class Quadrature(NamedTuple):
    """SLQ's Gauss quadrature: ``nodes[p, j]`` (Ritz values of probe p) and ``weights[p, j]``
    (each row sums to 1)."""
    nodes: np.ndarray
    weights: np.ndarray

    def moment(self, k: int) -> float:
        """The estimate of ``tr(Cᵏ) / n``."""
        return float(np.mean(np.sum(self.weights * self.nodes ** k, axis=1)))


class BlockStatistics(NamedTuple):
    name: str
    size: int
    top_eigenvalue: float
    trace: float
    trace_error: float       # the standard error of ``trace`` over the probes


def as_matvec(op) -> tuple[Callable, int, jnp.dtype]:
    """``(matvec, n, dtype)`` of a curvature operator, a ``(matvec, n[, dtype])`` pair or a dense
    symmetric matrix."""
    if hasattr(op, "multiply") and hasattr(op, "n"):
        return op.multiply, int(op.n), op.flat.dtype
    if isinstance(op, tuple):
        matvec, n, *dtype = op
        return matvec, int(n), jnp.dtype(dtype[0] if dtype else jnp.float64)
    mat = jnp.asarray(op)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"a dense operator must be a square matrix (got shape {mat.shape})")
    return (lambda v: mat @ v), int(mat.shape[0]), mat.dtype


def _check_counts(num_probes: int, num_steps: int | None = None):
    if int(num_probes) < 1:
        raise ValueError(f"num_probes = {num_probes}: at least 1 probe is needed")
    if num_steps is not None and int(num_steps) < 1:
        raise ValueError(f"num_steps = {num_steps}: at least 1 Lanczos step is needed")


def _rademacher(key, n, dtype):
    return jax.random.rademacher(key, (n,), dtype=dtype)


def lanczos(matvec, start, num_steps: int, key, mask=None):
    """``(α, β, valid)`` of ``num_steps`` Lanczos steps from ``start`` with full
    reorthogonalisation (twice, against every basis vector): ``T = tridiag(β, α, β)``; with
    ``mask`` the iteration lives on the masked coordinates (``start`` must be masked).

    Written here rather than taken from matfree (``decomp.tridiag_sym``) because of breakdown:
    when the Krylov space becomes invariant — the common case for the lab's matrices, e.g. G on
    16 cases has rank ≤ 16 × outputs, and a bias block of a squared-error output is a multiple
    of the identity — matfree 0.6.3 divides by a zero residual and returns NaN or wrong Ritz
    values (on the 2 × 2 identity it gives [[1, .5], [.5, 1]], Ritz values 0.5 and 1.5).  Here a
    breakdown (residual ≤ 100 ε ‖Cq‖) sets β = 0 and continues from a random vector orthogonal
    to the basis: T splits into blocks, and the later blocks carry zero quadrature weight for
    this probe, as they should.  Once the space is exhausted the remaining steps are marked
    not ``valid`` (their rows of T are zero and stand for no eigenvalue)."""
    n, dtype = start.shape[0], start.dtype
    eps = jnp.finfo(dtype).eps
    mask = jnp.ones(n, dtype) if mask is None else mask

    def orthogonalise(basis, w):
        w = w - basis.T @ (basis @ w)
        return w - basis.T @ (basis @ w)

    def step(j, state):
        basis, alpha, beta, valid = state
        q = basis[j]
        raw = mask * matvec(q)
        a = jnp.vdot(q, raw)
        w = orthogonalise(basis, raw)
        b = jnp.linalg.norm(w)
        fresh = orthogonalise(basis, mask * jax.random.normal(jax.random.fold_in(key, j), (n,),
                                                              dtype))
        broke = b <= 100 * eps * jnp.linalg.norm(raw)
        size = jnp.linalg.norm(fresh)
        nxt = jnp.where(broke, jnp.where(size > 1e-3, fresh / jnp.maximum(size, eps), 0.0),
                        w / jnp.where(broke, 1.0, b))
        return (basis.at[j + 1].set(nxt), alpha.at[j].set(a),
                beta.at[j].set(jnp.where(broke, 0.0, b)), valid.at[j].set(jnp.vdot(q, q) > 0.5))

    basis = jnp.zeros((num_steps + 1, n), dtype).at[0].set(start / jnp.linalg.norm(start))
    zeros = jnp.zeros(num_steps, dtype)
    _, alpha, beta, valid = jax.lax.fori_loop(0, num_steps, step, (
        basis, zeros, zeros, jnp.zeros(num_steps, bool)))
    return alpha, beta[:-1], valid


def _ritz(matvec, start, num_steps, key, mask=None):
    """Ritz values, quadrature weights ``(u_j)₁²`` and whether each Ritz value stands for an
    eigenvalue (not for an exhausted step) of ``num_steps`` Lanczos steps."""
    alpha, beta, valid = lanczos(matvec, start, num_steps, key, mask)
    t = jnp.diag(alpha) + jnp.diag(beta, 1) + jnp.diag(beta, -1)
    theta, vecs = jnp.linalg.eigh(t)
    real = jnp.sum(jnp.where(valid[:, None], vecs ** 2, 0.0), axis=0) > 0.5
    return theta, vecs[0, :] ** 2, real


# ----------------------------------------------------------------------------- SLQ
def slq_kernel(matvec, n: int, dtype, num_probes: int, num_steps: int, key):
    """Traceable SLQ: ``(nodes, weights)`` each ``(num_probes, num_steps)`` (jit it around a
    product that closes over the parameters, as :mod:`hflab.core.spectra` does per run)."""
    keys = jax.random.split(key, int(num_probes))
    return jax.lax.map(lambda k: _ritz(matvec, _rademacher(k, n, dtype), num_steps,
                                       jax.random.fold_in(k, 1))[:2], keys)


def slq_quadrature(op, num_probes: int = 10, num_steps: int = 50, seed: int = 0) -> Quadrature:
    """The SLQ nodes and weights of ``op`` (``num_steps`` is capped at n: the Krylov space is
    then the whole space and each probe's quadrature is exact)."""
    _check_counts(num_probes, num_steps)
    matvec, n, dtype = as_matvec(op)
    steps = min(int(num_steps), n)
    nodes, weights = jax.jit(lambda key: slq_kernel(matvec, n, dtype, num_probes, steps, key))(
        jax.random.PRNGKey(seed))
    return Quadrature(np.asarray(nodes, np.float64), np.asarray(weights, np.float64))


def density_on_grid(quad: Quadrature, grid=None, num_points: int = 400,
                    sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, φ(grid))``: a Gaussian of width σ on every node (σ defaults to 1 % of the node
    range), averaged over probes — a density that integrates to 1 over the real line."""
    nodes, weights = quad.nodes.ravel(), quad.weights.ravel() / quad.nodes.shape[0]
    lo, hi = float(nodes.min()), float(nodes.max())
    span = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    sigma = float(sigma) if sigma is not None else 0.01 * span
    if not sigma > 0:
        raise ValueError(f"sigma = {sigma}: the smoothing width must be positive")
    if grid is None:
        grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(num_points))
    grid = np.asarray(grid, np.float64)
    z = (grid[:, None] - nodes[None, :]) / sigma
    dens = (np.exp(-0.5 * z * z) * weights[None, :]).sum(axis=1) / (sigma * np.sqrt(2 * np.pi))
    return grid, dens


def spectral_density(op, num_probes: int = 10, num_steps: int = 50, *, grid=None,
                     num_points: int = 400, sigma: float | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, density)`` of the eigenvalues of ``op`` by stochastic Lanczos quadrature:
    ``num_probes`` Rademacher probes × ``num_steps`` Lanczos steps (one product each), nodes
    smoothed by Gaussians of width ``sigma`` (see :func:`density_on_grid`)."""
    quad = slq_quadrature(op, num_probes, num_steps, seed)
    return density_on_grid(quad, grid, num_points, sigma)


# ----------------------------------------------------------------------------- Hutchinson
def hutchinson_trace(op, num_probes: int = 100, seed: int = 0, method: str = "hutchinson",
                     return_error: bool = False):
    """The estimate of ``tr C`` from ``num_probes`` products (with ``return_error``:
    ``(estimate, its standard error)``).

    ``method="hutchinson"``: Rademacher probes, the plain Monte-Carlo mean.  ``"xtrace"``:
    matfree's XTrace (exact on the span of the probes, the rest by exchangeable Hutchinson;
    needs ``2 ≤ num_probes ≤ n``), far lower variance when a few eigenvalues dominate."""
    _check_counts(num_probes)
    matvec, n, dtype = as_matvec(op)
    like = jnp.zeros(n, dtype)
    if method == "hutchinson":
        sampler = stochtrace.sampler_signs(like, num=int(num_probes))
        estimate = stochtrace.estimator_monte_carlo_mean_and_sem(
            stochtrace.monte_carlo_trace(), sampler)
    elif method == "xtrace":
        if not 2 <= int(num_probes) <= n:
            raise ValueError(f"num_probes = {num_probes}: XTrace needs between 2 and n = {n}")
        sampler = stochtrace.sampler_normal(like, num=int(num_probes))
        estimate = stochtrace.estimator_leave_one_out_mean_and_sem(
            stochtrace.leave_one_out_xtrace(), sampler)
    else:
        raise ValueError(f"method = {method!r}; allowed: 'hutchinson', 'xtrace'")
    mean, sem = jax.jit(lambda key: estimate(matvec, key))(jax.random.PRNGKey(seed))
    return (float(mean), float(sem)) if return_error else float(mean)


def hutchinson_diagonal(op, num_probes: int = 100, seed: int = 0, return_error: bool = False):
    """The estimate of ``diag C`` from Rademacher probes (``v ⊙ Cv`` averaged; Bekas,
    Kokiopoulou & Saad 2007); with ``return_error``: ``(estimate, standard error per entry)``."""
    _check_counts(num_probes)
    matvec, n, dtype = as_matvec(op)
    sampler = stochtrace.sampler_signs(jnp.zeros(n, dtype), num=int(num_probes))
    estimate = stochtrace.estimator_monte_carlo_mean_and_sem(
        stochtrace.monte_carlo_diagonal(), sampler)
    mean, sem = jax.jit(lambda key: estimate(matvec, key))(jax.random.PRNGKey(seed))
    mean, sem = np.asarray(mean, np.float64), np.asarray(sem, np.float64)
    return (mean, sem) if return_error else mean


# ----------------------------------------------------------------------------- blocks
def check_blocks(blocks, n: int) -> list[tuple[str, int, int]]:
    blocks = [(str(name), int(a), int(b)) for name, a, b in blocks]
    for name, a, b in blocks:
        if not 0 <= a < b <= n:
            raise ValueError(f"block {name!r} = [{a}, {b}) is not inside the {n} parameters")
    return blocks


def block_kernel(matvec, n: int, dtype, blocks, num_probes: int, num_steps: int, key):
    """Traceable block statistics: ``(top eigenvalue, probe values)`` — ``(B,)`` and ``(P, B)``
    — of the blocks ``(name, start, stop)``.  Every block is the operator masked to its
    coordinates, so one compiled Lanczos and one probe loop serve all blocks (a ``lax.map`` over
    the masks): compiling stays the cost of one block, whatever the number of blocks."""
    masks = jnp.stack([jnp.zeros(n, dtype).at[a:b].set(1.0) for _, a, b in blocks])
    steps = min(int(num_steps), max(b - a for _, a, b in blocks))

    def one_block(args):
        mask, k = args
        k_probe, k_start, k_restart = jax.random.split(k, 3)
        probes = mask * jax.vmap(lambda kk: _rademacher(kk, n, dtype))(
            jax.random.split(k_probe, int(num_probes)))
        values = jax.lax.map(lambda v: jnp.vdot(v, matvec(v)), probes)
        theta, _, real = _ritz(matvec, mask * _rademacher(k_start, n, dtype), steps, k_restart,
                               mask)
        return jnp.max(jnp.where(real, theta, -jnp.inf)), values

    tops, values = jax.lax.map(one_block, (masks, jax.random.split(key, len(blocks))))
    return tops, values.T


def summarise_blocks(blocks, tops, sums) -> list[BlockStatistics]:
    sums = np.asarray(sums, np.float64)
    traces, errors = sums.mean(axis=0), sums.std(axis=0) / np.sqrt(sums.shape[0])
    return [BlockStatistics(name, b - a, float(top), float(t), float(e))
            for (name, a, b), top, t, e in zip(blocks, np.asarray(tops, np.float64), traces,
                                               errors)]


def block_statistics(op, blocks, num_probes: int = 20, num_steps: int = 30,
                     seed: int = 0) -> list[BlockStatistics]:
    """Top eigenvalue and trace of each diagonal block ``(name, start, stop)`` of ``op``
    (``model.parameter_blocks()``: one block per weight matrix and bias vector).

    The top eigenvalue: the largest Ritz value of ``min(num_steps, block size)`` Lanczos steps on
    the block (exact when the steps reach the block's size).  The traces: Hutchinson with
    ``num_probes`` Rademacher probes on each block, with their standard errors."""
    _check_counts(num_probes, num_steps)
    matvec, n, dtype = as_matvec(op)
    blocks = check_blocks(blocks, n)
    tops, sums = jax.jit(lambda key: block_kernel(matvec, n, dtype, blocks, num_probes,
                                                  num_steps, key))(jax.random.PRNGKey(seed))
    return summarise_blocks(blocks, tops, sums)

"""Preconditioned conjugate gradient with Martens' (2010) stopping rule and iterate saving.

Solves ``A x = b`` for a symmetric ``A`` given only as a product ``matvec`` (in HF:
``A = G + λI (+ structural damping)``, ``b = −∇f``), minimising the quadratic model

    φ(x) = ½ xᵀ A x − bᵀ x.

Why not ``jax.scipy.sparse.linalg.cg``: HF needs what it does not expose — the value of φ at every
iterate (for the stopping rule and the lab's quadratic-model curve), iterates saved on a geometric
schedule (for CG-backtracking), a stop on non-positive curvature, and a warm start whose φ is
tracked.  The design is the same: the whole solver is one :func:`jax.lax.while_loop` over a small
named state (:class:`_LoopState`), so a solve is one compiled program with no host round trip per iteration; the
traces live in fixed-size buffers of length ``max_iters + 1`` (index ``i`` = after ``i`` steps).

φ is computed without an extra product: with ``r = b − A x``, ``φ(x) = −½ xᵀ (r + b)``.

Stopping (first that holds, checked after each iteration ``i``):
  * non-positive curvature ``dᵀ A d ≤ 0``: the step along ``d`` is *not* taken (reason 2);
  * relative progress (Martens 2010 §4.4): ``k = max(10, ⌈0.1 i⌉)``, stop when ``i > k``,
    ``φ_i < 0`` and ``(φ_i − φ_{i−k}) / φ_i < k ε`` with ``ε = 5·10⁻⁴`` (reason 1); ``ε ≤ 0``
    turns this rule off;
  * residual tolerance ``‖r‖ ≤ tol ‖b‖`` (SciPy's relative ``rtol`` semantics; the default
    ``1e-12`` only fires on exact convergence in float64) (reason 3);
  * ``i = max_iters`` (reason 0).

Saved iterates: ``x_i`` for ``i ∈ {⌈5·1.3ʲ⌉}`` (≤ max_iters), kept for CG-backtracking.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

STOP_REASONS = ("max_iters", "relative_progress", "negative_curvature", "residual_tolerance")
MARTENS_EPS = 5e-4


class CGInfo(NamedTuple):
    iterations: jax.Array          # number of CG steps taken
    residual_norms: jax.Array      # (max_iters+1,) ‖r_i‖, NaN past `iterations`
    quad_values: jax.Array         # (max_iters+1,) φ(x_i), NaN past `iterations`
    stop_reason: jax.Array         # index into STOP_REASONS
    saved_iterates: jax.Array      # (n_saved, n) flat iterates on the save schedule
    saved_iters: jax.Array         # (n_saved,) the iteration of each slot, −1 if not reached
    n_matvecs: jax.Array


def save_schedule(max_iters: int, base: float = 5.0, gamma: float = 1.3) -> np.ndarray:
    """Iterations ``⌈base·gammaʲ⌉ ≤ max_iters`` (distinct, increasing)."""
    out, j = [], 0
    while True:
        i = math.ceil(base * gamma ** j - 1e-9)
        if i > max_iters:
            break
        if not out or i > out[-1]:
            out.append(i)
        j += 1
    return np.asarray(out or [max_iters], np.int32)


def progress_window(i):
    """k = max(10, ⌈0.1 i⌉) of Martens' relative-progress test."""
    return jnp.maximum(10, jnp.ceil(0.1 * i).astype(jnp.int32))


class _LoopState(NamedTuple):
    """CG's ``while_loop`` carry: iterate, residual, preconditioned residual, direction, traces."""
    i: jax.Array               # iterations done
    x: jax.Array
    r: jax.Array               # b − A x
    y: jax.Array               # M⁻¹ r
    d: jax.Array               # search direction
    ry: jax.Array              # rᵀ M⁻¹ r
    residual_norms: jax.Array  # trace buffers, index i = after i steps
    quad_values: jax.Array
    saved: jax.Array           # (n_saved, n) iterates on the save schedule
    saved_iters: jax.Array
    next_save: jax.Array       # next free slot of ``saved``
    reason: jax.Array          # index into STOP_REASONS
    done: jax.Array


def _initial_state(matvec, b, x0, apply_m, max_iters, n_saved, tol):
    dtype = b.dtype
    r0 = b if x0 is None else b - matvec(x0)
    x0 = jnp.zeros_like(b) if x0 is None else x0
    y0 = apply_m(r0)
    nan_buf = jnp.full((max_iters + 1,), jnp.nan, dtype)
    r_norm = jnp.linalg.norm(r0)
    # a zero right-hand side (or exact warm start) needs no iteration at all
    done0 = r_norm <= jnp.maximum(tol * jnp.linalg.norm(b), jnp.finfo(dtype).tiny)
    return _LoopState(
        i=jnp.int32(0), x=x0, r=r0, y=y0, d=y0, ry=jnp.vdot(r0, y0),
        residual_norms=nan_buf.at[0].set(r_norm),
        quad_values=nan_buf.at[0].set(-0.5 * jnp.vdot(x0, r0 + b)),
        saved=jnp.zeros((n_saved, b.shape[0]), dtype),
        saved_iters=jnp.full((n_saved,), -1, jnp.int32), next_save=jnp.int32(0),
        reason=jnp.where(done0, 3, 0).astype(jnp.int32), done=done0)


def _relative_progress(i, phi, quad_values, eps):
    """Martens' rule: ``i > k``, ``φ_i < 0`` and ``(φ_i − φ_{i−k}) / φ_i < k ε``."""
    if eps <= 0:            # disabled (fixed-iteration benchmarks, exact solves)
        return jnp.bool_(False)
    k = progress_window(i)
    phi_k = quad_values[jnp.maximum(i - k, 0)]
    return (i > k) & (phi < 0) & ((phi - phi_k) / phi < k * eps)


def _cg_step(s: _LoopState, matvec, b, apply_m, sched, max_iters, eps, tol_abs) -> _LoopState:
    """One preconditioned CG iteration with its stop tests and the iterate save.

    Non-positive curvature along ``d`` (also NaN): the step is not taken — the state is kept and
    CG stops with reason 2.  The select is applied to the n-vectors and scalars only; the trace
    and the save buffer are written at one index each (their old entry kept on that path), so an
    iteration never copies the whole save buffer."""
    ad = matvec(s.d)
    dad = jnp.vdot(s.d, ad)
    negative = ~(dad > 0)                      # also catches NaN curvature

    def keep(old, new):
        return jnp.where(negative, old, new)
    alpha = s.ry / jnp.where(negative, 1.0, dad)
    x = s.x + alpha * s.d
    r = s.r - alpha * ad
    y = apply_m(r)
    ry = jnp.vdot(r, y)
    i = s.i + 1
    phi = -0.5 * jnp.vdot(x, r + b)            # φ(x) = −½ xᵀ(r + b): no extra product
    r_norm = jnp.linalg.norm(r)
    relative = _relative_progress(i, phi, s.quad_values, eps)
    small = r_norm <= tol_abs
    slot = jnp.minimum(s.next_save, sched.shape[0] - 1)
    is_save = (s.next_save < sched.shape[0]) & (sched[slot] == i) & ~negative
    row = jnp.minimum(i, s.residual_norms.shape[0] - 1)
    return _LoopState(
        i=keep(s.i, i), x=keep(s.x, x), r=keep(s.r, r), y=keep(s.y, y),
        d=keep(s.d, y + (ry / s.ry) * s.d), ry=keep(s.ry, ry),
        residual_norms=s.residual_norms.at[row].set(keep(s.residual_norms[row], r_norm)),
        quad_values=s.quad_values.at[row].set(keep(s.quad_values[row], phi)),
        saved=s.saved.at[slot].set(jnp.where(is_save, x, s.saved[slot])),
        saved_iters=s.saved_iters.at[slot].set(jnp.where(is_save, i, s.saved_iters[slot])),
        next_save=s.next_save + is_save.astype(jnp.int32),
        reason=jnp.where(negative, 2, jnp.where(relative, 1, jnp.where(small, 3, 0))
                         ).astype(jnp.int32),
        done=negative | relative | small | (i >= max_iters))


def solve_flat(matvec: Callable, b, x0=None, *, precond: Callable | None = None,
               max_iters: int = 250, eps: float = MARTENS_EPS, tol: float = 1e-12,
               save_base: float = 5.0, save_gamma: float = 1.3):
    """CG on flat vectors. ``precond(r)`` returns ``M⁻¹ r``. Returns ``(x, CGInfo)``."""
    if max_iters < 1:
        raise ValueError(f"max_iters must be at least 1, got {max_iters}")
    sched = jnp.asarray(save_schedule(max_iters, save_base, save_gamma))
    apply_m = precond if precond is not None else (lambda r: r)
    state = _initial_state(matvec, b, x0, apply_m, max_iters, int(sched.shape[0]), tol)
    tol_abs = jnp.maximum(tol * jnp.linalg.norm(b), jnp.finfo(b.dtype).tiny)
    out = jax.lax.while_loop(
        lambda s: ~s.done,
        lambda s: _cg_step(s, matvec, b, apply_m, sched, max_iters, eps, tol_abs), state)
    n_mv0 = 0 if x0 is None else 1
    info = CGInfo(iterations=out.i, residual_norms=out.residual_norms,
                  quad_values=out.quad_values, stop_reason=out.reason,
                  saved_iterates=out.saved, saved_iters=out.saved_iters,
                  n_matvecs=out.i + n_mv0 + (out.reason == 2).astype(jnp.int32))
    return out.x, info


def solve(matvec: Callable, b, x0=None, *, precond: Callable | None = None, max_iters: int = 250,
          eps: float = MARTENS_EPS, tol: float = 1e-12, save_base: float = 5.0,
          save_gamma: float = 1.3):
    """CG for pytrees: ``matvec`` maps a pytree like ``b`` to one; returns ``(x, CGInfo)``.

    ``CGInfo.saved_iterates`` stay flat (``ravel_pytree`` order of ``b``).
    """
    flat_b, unravel = ravel_pytree(b)

    def flat_mv(v):
        return ravel_pytree(matvec(unravel(v)))[0]

    flat_pre = None
    if precond is not None:
        flat_pre = lambda r: ravel_pytree(precond(unravel(r)))[0]  # noqa: E731
    flat_x0 = None if x0 is None else ravel_pytree(x0)[0]
    x, info = solve_flat(flat_mv, flat_b, flat_x0, precond=flat_pre, max_iters=max_iters, eps=eps,
                         tol=tol, save_base=save_base, save_gamma=save_gamma)
    return unravel(x), info


def backtrack_candidates(info: CGInfo, x_final):
    """Saved iterates reached before the final one, then the final one: ``(iterates, iters, count)``.

    Slots past the last valid candidate are padding and must be ignored (``count`` says how many
    are valid).  Used by HF's CG-backtracking, which walks from the last candidate backwards.
    """
    valid = (info.saved_iters >= 0) & (info.saved_iters < info.iterations)
    count = jnp.sum(valid.astype(jnp.int32))
    # valid slots are a prefix (the schedule is increasing): put x_final right after them
    iterates = jnp.concatenate([info.saved_iterates, jnp.zeros_like(x_final)[None]], axis=0)
    iterates = iterates.at[count].set(x_final)
    iters = jnp.concatenate([info.saved_iters, jnp.zeros((1,), jnp.int32)]).at[count].set(
        info.iterations)
    return iterates, iters, count + 1

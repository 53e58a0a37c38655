"""Preconditioned conjugate gradient with Martens' (2010) stopping rule and iterate saving.

Solves ``A x = b`` for a symmetric ``A`` given only as a product ``matvec`` (in HF:
``A = G + λI (+ structural damping)``, ``b = −∇f``), minimising the quadratic model

    φ(x) = ½ xᵀ A x − bᵀ x.

Why not ``jax.scipy.sparse.linalg.cg``: HF needs what it does not expose — the value of φ at every
iterate (for the stopping rule and the lab's quadratic-model curve), iterates saved on a geometric
schedule (for CG-backtracking), a stop on non-positive curvature, and a warm start whose φ is
tracked.  The design is the same: the whole solver is one :func:`jax.lax.while_loop` over a small
tuple state, so a solve is one compiled program with no host round trip per iteration; the
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


def solve_flat(matvec: Callable, b, x0=None, *, precond: Callable | None = None,
               max_iters: int = 250, eps: float = MARTENS_EPS, tol: float = 1e-12,
               save_base: float = 5.0, save_gamma: float = 1.3):
    """CG on flat vectors. ``precond(r)`` returns ``M⁻¹ r``. Returns ``(x, CGInfo)``."""
    dtype = b.dtype
    n = b.shape[0]
    schedule = save_schedule(max_iters, save_base, save_gamma)
    n_saved = len(schedule)
    sched = jnp.asarray(schedule)
    apply_m = precond if precond is not None else (lambda r: r)

    if x0 is None:
        x0 = jnp.zeros_like(b)
        r0 = b
        n_mv0 = 0
    else:
        r0 = b - matvec(x0)
        n_mv0 = 1
    y0 = apply_m(r0)
    ry0 = jnp.vdot(r0, y0)
    b_norm = jnp.linalg.norm(b)
    phi0 = -0.5 * jnp.vdot(x0, r0 + b)
    nan_buf = jnp.full((max_iters + 1,), jnp.nan, dtype)
    res_buf = nan_buf.at[0].set(jnp.linalg.norm(r0))
    phi_buf = nan_buf.at[0].set(phi0)
    saved = jnp.zeros((n_saved, n), dtype)
    saved_iters = jnp.full((n_saved,), -1, jnp.int32)
    # a zero right-hand side (or exact warm start) needs no iteration at all
    done0 = jnp.linalg.norm(r0) <= jnp.maximum(tol * b_norm, jnp.finfo(dtype).tiny)
    reason0 = jnp.where(done0, 3, 0).astype(jnp.int32)

    state = (jnp.int32(0), x0, r0, y0, y0, ry0, res_buf, phi_buf, saved, saved_iters,
             jnp.int32(0), reason0, done0)

    def cond(s):
        return ~s[-1]

    def body(s):
        i, x, r, y, d, ry, res_buf, phi_buf, saved, saved_iters, next_save, _, _ = s
        ad = matvec(d)
        dad = jnp.vdot(d, ad)
        negative = ~(dad > 0)                      # also catches NaN curvature
        alpha = ry / jnp.where(negative, 1.0, dad)
        x_new = x + alpha * d
        r_new = r - alpha * ad
        y_new = apply_m(r_new)
        ry_new = jnp.vdot(r_new, y_new)
        d_new = y_new + (ry_new / ry) * d
        i_new = i + 1
        phi = -0.5 * jnp.vdot(x_new, r_new + b)
        r_norm = jnp.linalg.norm(r_new)

        k = progress_window(i_new)
        phi_k = phi_buf[jnp.maximum(i_new - k, 0)]
        if eps > 0:
            relative = (i_new > k) & (phi < 0) & ((phi - phi_k) / phi < k * eps)
        else:           # eps ≤ 0 disables the rule (fixed-iteration benchmarks, exact solves)
            relative = jnp.bool_(False)
        small = r_norm <= jnp.maximum(tol * b_norm, jnp.finfo(dtype).tiny)
        at_max = i_new >= max_iters
        reason = jnp.where(relative, 1, jnp.where(small, 3, 0)).astype(jnp.int32)
        done = relative | small | at_max

        # save x_{i_new} if it is on the schedule (one row written in place per iteration)
        slot = jnp.minimum(next_save, n_saved - 1)
        is_save = (next_save < n_saved) & (sched[slot] == i_new)
        saved_new = saved.at[slot].set(jnp.where(is_save, x_new, saved[slot]))
        saved_iters_new = saved_iters.at[slot].set(jnp.where(is_save, i_new, saved_iters[slot]))
        next_save_new = next_save + is_save.astype(jnp.int32)

        step = (i_new, x_new, r_new, y_new, d_new, ry_new,
                res_buf.at[i_new].set(r_norm), phi_buf.at[i_new].set(phi),
                saved_new, saved_iters_new, next_save_new, reason, done)
        # non-positive curvature: keep the current iterate, stop with reason 2
        stop = (i, x, r, y, d, ry, res_buf, phi_buf, saved, saved_iters, next_save,
                jnp.int32(2), jnp.bool_(True))
        return jax.tree_util.tree_map(lambda a, c: jnp.where(negative, a, c), stop, step)

    out = jax.lax.while_loop(cond, body, state)
    i, x, *_ = out
    info = CGInfo(iterations=i, residual_norms=out[6], quad_values=out[7], stop_reason=out[11],
                  saved_iterates=out[8], saved_iters=out[9],
                  n_matvecs=i + n_mv0 + (out[11] == 2).astype(jnp.int32))
    return x, info


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

"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2011) as an ``init``/``update`` pair.

One update at parameters θ, with a gradient batch and a curvature batch:

1. ``f₀, g = f(θ), ∇f(θ)`` on the gradient batch (objective = matching loss + ½·weight_cost·‖θ‖²).
2. Curvature on the curvature batch: the Gauss-Newton matrix ``G = Jᵀ H_L J`` (default; PSD with a
   matching loss), the true Hessian ``H``, or the empirical Fisher — linearised *once* and reused
   by every product inside CG.  Damped system ``A = C + (λ + weight_cost) I + λμ·S`` with the
   structural-damping term ``S = J_hᵀ H_D J_h`` on the RNN hidden states (μ = 0 turns it off).
3. Preconditioned CG on ``A p = −g`` warm-started at ``ζ·p_prev`` (ζ = 0.95), stopped by Martens'
   relative-progress rule, saving iterates at ⌈5·1.3ʲ⌉ (:mod:`hflab.cg`).
4. CG-backtracking: from the last iterate, step back through the saved ones while the objective on
   the gradient batch keeps decreasing; take the best.
5. Reduction ratio ``ρ = (f_c(θ+p) − f_c(θ)) / (q(p) − q(0))`` on the curvature batch, with
   ``q(p) − q(0) = gᵀp + ½ pᵀ C p`` (damping left out); Levenberg–Marquardt:
   ``ρ < ¼`` or non-finite ⇒ ``λ ← 3/2 λ``, ``ρ > ¾`` ⇒ ``λ ← 2/3 λ``.
6. Armijo line search along ``p`` on the gradient batch: rate 1, 0.8, 0.8², … (≤ 60 tries),
   ``f(θ + r p) ≤ f₀ + c·r·gᵀp`` with ``c = 10⁻²``; no acceptable rate ⇒ the step is rejected.

Non-finite values never reach the parameters: a non-finite loss, gradient or step makes the update
a rejected one (parameters unchanged, ``p_prev`` reset, λ raised).

The whole update — gradient, linearisation, the CG ``while_loop``, backtracking and line-search
``while_loop``s — is one jitted function, so one HF update is one device program.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from . import cg as cg_lib
from . import curvature
from .losses import Batch, MatchingLoss, case_weights, n_cases
from .models import Model
from .parallel import pad_batch

CURVATURES = ("gauss_newton", "hessian", "fisher")


@dataclass(frozen=True)
class HFConfig:
    """Constants default to Martens (2010) / Martens & Sutskever (2011) (see DESIGN §3)."""
    curvature: str = "gauss_newton"
    damping: float = 45.0                 # initial λ
    structural_damping: float = 0.0       # μ (0.03 in Martens & Sutskever 2011 for RNNs)
    weight_cost: float = 0.0
    max_cg_iters: int = 250
    cg_eps: float = cg_lib.MARTENS_EPS
    cg_tol: float = 1e-12
    cg_decay: float = 0.95                # ζ of the warm start
    backtracking: bool = True
    line_search: bool = True
    ls_decay: float = 0.8
    ls_c: float = 1e-2
    ls_max_tries: int = 60
    preconditioner: bool = False
    precond_alpha: float = 0.75
    precond_chunk: int = 128              # cases per vmap block for per-example gradients
    rho_low: float = 0.25
    rho_high: float = 0.75
    damping_up: float = 1.5
    damping_down: float = 2.0 / 3.0
    min_damping: float = 0.0
    max_damping: float = 1e10

    def __post_init__(self):
        if self.curvature not in CURVATURES:
            raise ValueError(f"curvature {self.curvature!r} unknown; allowed: {list(CURVATURES)}")


class HFState(NamedTuple):
    damping: jax.Array        # λ for the next update
    prev_step: jax.Array      # flat CG solution of the last update (warm start)
    count: jax.Array          # updates done


class HFInfo(NamedTuple):
    loss_before: jax.Array            # objective on the gradient batch at θ
    loss_after: jax.Array             # objective on the gradient batch after the update
    rho: jax.Array
    damping: jax.Array                # λ used in this update
    new_damping: jax.Array
    cg_iters: jax.Array
    cg_stop_reason: jax.Array
    cg_residuals: jax.Array           # (max_cg_iters+1,)
    cg_quad_values: jax.Array         # (max_cg_iters+1,) φ of the damped model
    saved_iters: jax.Array            # CG iterations of the backtracking candidates (−1 = unused)
    backtrack_index: jax.Array        # CG iteration of the chosen iterate
    step_norm: jax.Array              # ‖r·p‖ actually applied (0 if rejected)
    line_search_rate: jax.Array       # r (0 if rejected)
    accepted: jax.Array
    grad_norm: jax.Array
    n_grad: jax.Array                 # gradient evaluations
    n_gv: jax.Array                   # curvature-vector products
    n_forward: jax.Array              # extra forward-only loss evaluations
    n_forward_backward_passes: jax.Array   # 2·n_grad + 2·n_gv + n_forward


def structural_loss_hvp(activation_name: str):
    """Output-space Hessian of the structural distance D on hidden states ``h``.

    tanh/linear/relu units: squared error, ``H_D = I``.  Logistic units: cross-entropy between
    ``σ(a)`` and ``σ(a')`` (matching loss in the pre-activation ``a``) has ``σ(1−σ)`` in ``a``;
    expressed in ``h = σ(a)`` through ``∂a/∂h = 1/(h(1−h))`` that is ``diag(1/(h(1−h)))``.
    """
    if activation_name == "logistic":
        return lambda h, u: u / jnp.clip(h * (1.0 - h), 1e-6, None)
    return lambda h, u: u


def hidden_weights(mask):
    """Per-(case, step) weight for D: 1/n_cases on real cases, 0 on padding."""
    return case_weights(mask) / n_cases(mask)


def structural_damping_vp(model: Model, params, batch: Batch, v):
    """``J_hᵀ H_D J_h v`` (without the λμ factor), for tests and the lab."""
    flat, unravel = ravel_pytree(params)
    flat_v = ravel_pytree(v)[0]
    hfun = lambda p: model.apply_with_hidden(unravel(p), batch.x)[1]  # noqa: E731
    h, jvp = jax.linearize(hfun, flat)
    vjp = jax.linear_transpose(jvp, flat)
    w = hidden_weights(batch.mask)[:, None, None]
    (out,) = vjp(w * structural_loss_hvp(model.activations[0])(h, jvp(flat_v)))
    return unravel(out)


class HessianFree:
    """HF optimiser for a :class:`~hflab.models.Model` and a matching loss."""

    kind = "hf"

    def __init__(self, model: Model, loss: MatchingLoss, config: HFConfig = HFConfig()):
        if config.structural_damping and model.kind != "rnn":
            raise ValueError("structural damping needs an RNN (it acts on hidden states)")
        self.model, self.loss, self.config = model, loss, config
        self.update = jax.jit(self._update)
        self.objective = jax.jit(self._objective_params)

    # -- objective ------------------------------------------------------------------------
    def _objective_flat(self, flat, unravel, batch: Batch):
        z = self.model.apply(unravel(flat), batch.x)
        val = self.loss.value(z, batch.y, batch.mask)
        if self.config.weight_cost:
            val = val + 0.5 * self.config.weight_cost * jnp.vdot(flat, flat)
        return val

    def _objective_params(self, params, batch: Batch):
        flat, unravel = ravel_pytree(params)
        return self._objective_flat(flat, unravel, batch)

    def init(self, params) -> HFState:
        flat = ravel_pytree(params)[0]
        return HFState(jnp.asarray(self.config.damping, flat.dtype), jnp.zeros_like(flat),
                       jnp.zeros((), jnp.int32))

    def _case_loss(self, unravel):
        """Unnormalised loss of one case ``(x, y, mask)`` as a function of flat parameters."""
        def case_loss(p, x, y, m):
            z = self.model.apply(unravel(p), x[None])
            return self.loss.per_case(z, y[None], m[None])[0]
        return case_loss

    # -- curvature ------------------------------------------------------------------------
    def _curvature_ops(self, flat, unravel, batch: Batch, lam):
        """Return ``(f_c(θ), C v, A v)``: objective on the curvature batch, undamped curvature
        product (weight cost included) and damped product (λ, structural damping included)."""
        cfg, model, loss = self.config, self.model, self.loss
        wc = cfg.weight_cost
        mu = cfg.structural_damping
        h_hvp = structural_loss_hvp(model.activations[0]) if model.kind == "rnn" else None
        hw = hidden_weights(batch.mask)[:, None, None] if model.kind == "rnn" else None

        if cfg.curvature == "gauss_newton":
            if mu:
                fn = lambda p: model.apply_with_hidden(unravel(p), batch.x)  # noqa: E731
            else:
                fn = lambda p: model.apply(unravel(p), batch.x)  # noqa: E731
            out, jvp = jax.linearize(fn, flat)
            vjp = jax.linear_transpose(jvp, flat)
            z = out[0] if mu else out
            f_c = loss.value(z, batch.y, batch.mask) + 0.5 * wc * jnp.vdot(flat, flat)

            if mu:
                h = out[1]

                def curv(v):
                    jz, jh = jvp(v)
                    (r,) = vjp((loss.hessian_vp(z, batch.y, batch.mask, jz), jnp.zeros_like(jh)))
                    return r + wc * v

                def damped(v):
                    jz, jh = jvp(v)
                    (r,) = vjp((loss.hessian_vp(z, batch.y, batch.mask, jz),
                                (lam * mu) * hw * h_hvp(h, jh)))
                    return r + (wc + lam) * v
                return f_c, curv, damped

            def curv(v):
                (r,) = vjp(loss.hessian_vp(z, batch.y, batch.mask, jvp(v)))
                return r + wc * v
            return f_c, curv, lambda v: curv(v) + lam * v

        if cfg.curvature == "hessian":
            obj = lambda p: self._objective_flat(p, unravel, batch)  # noqa: E731
            f_c = obj(flat)
            _, hv = jax.linearize(jax.grad(obj), flat)
            curv = hv
        else:  # empirical Fisher
            gs = curvature.per_example_grads(self._case_loss(unravel), flat, *batch)
            nc = n_cases(batch.mask)
            f_c = self._objective_flat(flat, unravel, batch)

            def curv(v):
                return gs.T @ (gs @ v) / nc + wc * v

        if mu:
            hfun = lambda p: model.apply_with_hidden(unravel(p), batch.x)[1]  # noqa: E731
            h, hjvp = jax.linearize(hfun, flat)
            hvjp = jax.linear_transpose(hjvp, flat)

            def damped(v):
                (s,) = hvjp(hw * h_hvp(h, hjvp(v)))
                return curv(v) + lam * v + (lam * mu) * s
            return f_c, curv, damped
        return f_c, curv, lambda v: curv(v) + lam * v

    def _precond_diag(self, flat, unravel, batch: Batch, lam):
        """``(diag((1/N) Σ_i ∇f_i ⊙ ∇f_i) + λ + weight_cost)^α`` from per-case gradients.

        Computed on the curvature batch, in blocks of ``precond_chunk`` cases (vmap inside a
        scan) so memory stays at one block of per-example gradients.
        """
        cfg = self.config
        chunk = min(cfg.precond_chunk, batch.x.shape[0])
        # zero-mask padding cases have zero per-case loss, hence zero gradient
        blocks = jax.tree_util.tree_map(lambda a: a.reshape((-1, chunk) + a.shape[1:]),
                                        pad_batch(batch, chunk))
        case_loss = self._case_loss(unravel)

        def block(acc, data):
            g = curvature.per_example_grads(case_loss, flat, *data)
            return acc + jnp.sum(g * g, axis=0), None

        sq, _ = jax.lax.scan(block, jnp.zeros_like(flat), tuple(blocks))
        diag = sq / n_cases(batch.mask)
        return (diag + lam + cfg.weight_cost) ** cfg.precond_alpha

    # -- the update -----------------------------------------------------------------------
    def _update(self, params, state: HFState, grad_batch: Batch, curv_batch: Batch):
        cfg = self.config
        flat, unravel = ravel_pytree(params)
        dtype = flat.dtype
        lam = state.damping.astype(dtype)
        obj = lambda p: self._objective_flat(p, unravel, grad_batch)  # noqa: E731

        f0, g = jax.value_and_grad(obj)(flat)
        f_c0, curv, damped = self._curvature_ops(flat, unravel, curv_batch, lam)

        precond = None
        if cfg.preconditioner:
            m_diag = self._precond_diag(flat, unravel, curv_batch, lam)
            precond = lambda r: r / m_diag  # noqa: E731

        x0 = cfg.cg_decay * state.prev_step
        p_final, info = cg_lib.solve_flat(damped, -g, x0, precond=precond,
                                          max_iters=cfg.max_cg_iters, eps=cfg.cg_eps,
                                          tol=cfg.cg_tol)

        # -- CG-backtracking over the saved iterates, from the last one backwards
        iterates, iters, count = cg_lib.backtrack_candidates(info, p_final)
        f_last = obj(flat + iterates[count - 1])
        if cfg.backtracking:
            def bt_cond(s):
                j, best, going, _ = s
                return going & (j > 0)

            def bt_body(s):
                j, best, _, n_eval = s
                f_prev = obj(flat + iterates[j - 1])
                better = f_prev < best
                return (jnp.where(better, j - 1, j), jnp.where(better, f_prev, best), better,
                        n_eval + 1)

            j, f_p, _, n_bt = jax.lax.while_loop(
                bt_cond, bt_body, (count - 1, f_last, jnp.isfinite(f_last), jnp.int32(1)))
        else:
            j, f_p, n_bt = count - 1, f_last, jnp.int32(1)
        p = iterates[j]
        chosen_iter = iters[j]

        # -- reduction ratio on the curvature batch, damping left out of q
        f_c1 = self._objective_flat(flat + p, unravel, curv_batch)
        q = jnp.vdot(g, p) + 0.5 * jnp.vdot(p, curv(p))
        rho = (f_c1 - f_c0) / q
        rho = jnp.where(jnp.isfinite(rho), rho, -jnp.inf)
        new_lam = jnp.where(rho < cfg.rho_low, lam * cfg.damping_up,
                            jnp.where(rho > cfg.rho_high, lam * cfg.damping_down, lam))
        new_lam = jnp.clip(new_lam, cfg.min_damping, cfg.max_damping)

        # -- Armijo line search along p on the gradient batch
        slope = jnp.vdot(g, p)
        if cfg.line_search:
            def armijo(rate, f):
                return jnp.isfinite(f) & (f <= f0 + cfg.ls_c * rate * slope)

            def ls_cond(s):
                rate, f, tries = s
                return ~armijo(rate, f) & (tries < cfg.ls_max_tries)

            def ls_body(s):
                rate, _, tries = s
                rate = rate * cfg.ls_decay
                return rate, obj(flat + rate * p), tries + 1

            rate, f_new, n_ls = jax.lax.while_loop(ls_cond, ls_body,
                                                   (jnp.asarray(1.0, dtype), f_p, jnp.int32(0)))
            ok = armijo(rate, f_new)
        else:
            rate, f_new, n_ls = jnp.asarray(1.0, dtype), f_p, jnp.int32(0)
            ok = jnp.isfinite(f_new)
        # a zero step (CG found no usable direction, e.g. non-finite curvature) is no update
        ok = ok & jnp.all(jnp.isfinite(p)) & jnp.isfinite(f0) & jnp.any(p != 0)
        # a rejected step must raise λ even if ρ looked fine (it was measured on another batch)
        new_lam = jnp.where(ok, new_lam, jnp.clip(lam * cfg.damping_up, cfg.min_damping,
                                                  cfg.max_damping))
        step = jnp.where(ok, rate * p, 0.0)
        new_flat = jnp.where(ok, flat + step, flat)
        new_state = HFState(new_lam, jnp.where(ok, p, 0.0).astype(dtype), state.count + 1)

        n_gv = info.n_matvecs + 1
        n_forward = n_bt + 1 + n_ls
        n_grad = jnp.int32(1)
        info_out = HFInfo(
            loss_before=f0, loss_after=jnp.where(ok, f_new, f0), rho=rho, damping=lam,
            new_damping=new_lam, cg_iters=info.iterations, cg_stop_reason=info.stop_reason,
            cg_residuals=info.residual_norms, cg_quad_values=info.quad_values,
            saved_iters=jnp.where(jnp.arange(iters.shape[0]) < count, iters, -1),
            backtrack_index=chosen_iter, step_norm=jnp.linalg.norm(step),
            line_search_rate=jnp.where(ok, rate, 0.0), accepted=ok, grad_norm=jnp.linalg.norm(g),
            n_grad=n_grad, n_gv=n_gv, n_forward=n_forward,
            n_forward_backward_passes=2 * n_grad + 2 * n_gv + n_forward)
        return unravel(new_flat), new_state, info_out


def hessian_free(model: Model, loss: MatchingLoss, **config) -> HessianFree:
    """Build an HF optimiser; keyword arguments are :class:`HFConfig` fields."""
    known = {f.name for f in fields(HFConfig)}
    unknown = set(config) - known
    if unknown:
        raise TypeError(f"unknown HF settings {sorted(unknown)}; allowed: {sorted(known)}")
    return HessianFree(model, loss, HFConfig(**config))

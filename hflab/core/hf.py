"""Hessian-free optimisation (Martens 2010; Martens & Sutskever 2011) as an ``init``/``update`` pair.

One update at parameters θ, with a gradient batch and a curvature batch:

1. ``f₀, g = f(θ), ∇f(θ)`` on the gradient batch (objective = matching loss + ½·weight_cost·‖θ‖²).
2. Curvature on the curvature batch: the Gauss-Newton matrix ``G = Jᵀ H_L J`` (default; PSD with a
   matching loss), the true Hessian ``H``, or the empirical Fisher — linearised *once* and reused
   by every product inside CG.  Damped system ``A = C + (λ + weight_cost) I + λμ·S`` with the
   structural-damping term ``S = J_hᵀ H_D J_h`` on the RNN hidden states (μ = 0 turns it off).
3. Preconditioned CG on ``A p = −g`` warm-started at ``ζ·p_prev`` (ζ = 0.95), stopped by Martens'
   relative-progress rule, saving iterates at ⌈5·1.3ʲ⌉ (:mod:`hflab.core.cg`).
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
import numpy as np
from jax.flatten_util import ravel_pytree

from . import cg as cg_lib
from . import curvature
from .losses import Batch, MatchingLoss, n_cases
from .models import Model, mlp_squared_gradients
from .protocol import scalar_record
from .settings import SettingError, setting

NEGATIVE_CURVATURE = cg_lib.STOP_REASONS.index("negative_curvature")


RHO_BATCHES = ("curvature", "gradient")


@dataclass(frozen=True)
class HFConfig:
    """Constants default to Martens (2010) / Martens & Sutskever (2011) (see the module docstring)."""
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
    # where ρ's actual reduction is measured: "curvature" (Martens' released code: the curvature
    # chunk, against the gradient batch's g) or "gradient" (the gradient batch, the loss the
    # CG-backtracking already evaluated: numerator and gᵀp then estimate the same objective)
    rho_batch: str = "curvature"
    rho_low: float = 0.25
    rho_high: float = 0.75
    damping_up: float = 1.5
    damping_down: float = 2.0 / 3.0
    # λ floor (None: √ε of the working dtype, 3.5e-4 in float32, 1.5e-8 in float64).  Without one
    # λ shrinks geometrically on easy problems (1e-36, then 0 in float32) and Levenberg–Marquardt
    # can never raise it again.  Why tied to the dtype: below √ε, λ is lost in the rounding of G's
    # O(1) entries, the damped system's condition is beyond what float32 CG resolves — its residual
    # goes flat and noisy, and CG spends its whole iteration cap on steps that no longer improve
    # the model (the lab's default run, digits autoencoder: λ → 1e-8 and 250 iterations an update;
    # the measurement is the report's "CG noise floor").  In float64 the floor is about the 1e-8
    # kfac-jax uses.
    min_damping: float | None = None
    max_damping: float = 1e10

    def __post_init__(self):
        if self.curvature not in curvature.KINDS:
            raise ValueError(f"curvature {self.curvature!r} unknown; allowed: "
                             f"{list(curvature.KINDS)}")
        if self.rho_batch not in RHO_BATCHES:
            raise ValueError(f"rho_batch {self.rho_batch!r} unknown; allowed: {list(RHO_BATCHES)}")


@dataclass(frozen=True)
class HFSettings:
    """What a user sets for HF (the rest of :class:`HFConfig` are the papers' constants)."""
    curvature: str = setting("gauss_newton", "curvature matrix of the quadratic model",
                             choices=curvature.KINDS)
    damping: float = setting(45.0, "initial damping λ (Levenberg–Marquardt adapts it)",
                             lo=0.0, hi=1e10)
    structural_damping: float = setting(0.0, "structural damping μ (RNNs; Martens & Sutskever "
                                        "2011 use 0.03)", lo=0.0, hi=1e4)
    max_cg_iters: int = setting(250, "CG iterations at most", lo=1, hi=5000)
    cg_decay: float = setting(0.95, "warm-start decay ζ", lo=0.0, hi=1.0)
    n_chunks: int = setting(1, "curvature chunks of the gradient batch (update k uses chunk "
                            "k mod n_chunks)", lo=1, hi=10_000)
    preconditioner: bool = setting(False, "diagonal preconditioner (Martens 2010 §4.7)")
    backtracking: bool = setting(True, "CG backtracking")
    line_search: bool = setting(True, "Armijo line search")
    rho_batch: str = setting("curvature", "batch on which ρ's actual reduction is measured",
                             choices=RHO_BATCHES)
    min_damping: float = setting(0.0, "floor of λ (0 = √ε of the dtype: 3.5e-4 in float32, "
                                 "1.5e-8 in float64)", lo=0.0, hi=1e10)

    def check_fields(self):
        """λ = 0 only with the Gauss-Newton matrix: H and the empirical Fisher may be singular
        or indefinite, and CG then needs the damping to make the system positive definite."""
        if self.damping == 0 and not curvature.KIND_INFO[self.curvature].psd:
            raise SettingError("damping", self.damping, "a number in (0.0, 10000000000.0] with "
                               f"the {self.curvature} curvature (not positive semi-definite)")

    def hf_config(self, weight_cost: float = 0.0) -> "HFConfig":
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "n_chunks"}
        return HFConfig(weight_cost=weight_cost,
                        **{**values, "min_damping": self.min_damping or None})


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


def levenberg_marquardt(rho, damping, config: HFConfig):
    """Martens (2010) §4.1: ``ρ < ¼`` (or non-finite) ⇒ ``λ ← 3/2 λ``; ``ρ > ¾`` ⇒ ``λ ← 2/3 λ``;
    otherwise λ stays.  The result is clipped to ``[min_damping, max_damping]``."""
    new = jnp.where(rho < config.rho_low, damping * config.damping_up,
                    jnp.where(rho > config.rho_high, damping * config.damping_down, damping))
    return jnp.clip(new, damping_floor(config, damping.dtype), config.max_damping)


def damping_floor(config: HFConfig, dtype) -> float:
    """The λ floor: ``config.min_damping``, or √ε of ``dtype`` when that is None."""
    if config.min_damping is not None:
        return config.min_damping
    return float(np.sqrt(np.finfo(dtype).eps))


def reduction_ratio(f_new, f_old, grad, step, curvature_step):
    """``ρ = (f(θ+p) − f(θ)) / (gᵀp + ½ pᵀCp)``: actual over predicted reduction, with the
    *undamped* quadratic model; non-finite ρ becomes −∞ (it then raises λ)."""
    rho = (f_new - f_old) / (jnp.vdot(grad, step) + 0.5 * jnp.vdot(step, curvature_step))
    return jnp.where(jnp.isfinite(rho), rho, -jnp.inf)


class HessianFree:
    """HF optimiser for a :class:`~hflab.core.models.Model` and a matching loss."""

    def __init__(self, model: Model, loss: MatchingLoss, config: HFConfig = HFConfig()):
        if config.structural_damping and model.kind != "rnn":
            raise ValueError("structural damping needs an RNN (it acts on hidden states)")
        self.model, self.loss, self.config = model, loss, config
        self.update = jax.jit(self._update)

    def init(self, params) -> HFState:
        flat = ravel_pytree(params)[0]
        return HFState(jnp.asarray(self.config.damping, flat.dtype), jnp.zeros_like(flat),
                       jnp.zeros((), jnp.int32))

    # -- stages ---------------------------------------------------------------------------
    def _objective(self, unravel, batch: Batch):
        """``p ↦ L(z(p)) + ½·weight_cost·‖p‖²`` on flat parameters."""
        wc = self.config.weight_cost

        def objective(p):
            return (self.loss.value(self.model.apply(unravel(p), batch.x), batch.y, batch.mask)
                    + 0.5 * wc * jnp.vdot(p, p))
        return objective

    def _curvature(self, params, batch: Batch) -> curvature.CurvatureOperator:
        """Stage 2: the curvature operator on the curvature batch, linearised once."""
        cfg, model = self.config, self.model
        structural = bool(cfg.structural_damping)       # only RNNs (checked in __init__)
        return curvature.CurvatureOperator(
            model.apply, self.loss, params, batch, kind=cfg.curvature,
            weight_cost=cfg.weight_cost,
            hidden_fn=model.apply_with_hidden if structural else None,
            hidden_activation=model.activations[0] if structural else "tanh")

    def _preconditioner(self, op, damping):
        """Martens' diagonal ``M = (diag(F̂) + λ + weight_cost)^α``; CG applies ``r / M``."""
        cfg = self.config
        if not cfg.preconditioner:
            return None
        x, y, mask = op.batch
        if self.model.kind == "mlp" and x.ndim == 2:      # one backward pass (see the function)
            sq = mlp_squared_gradients(op.params, x, self.model.activations,
                                       lambda z: self.loss.per_case(z, y, mask))
            diag = ravel_pytree(sq)[0] / n_cases(mask)
        else:                                             # weights shared over time: per case
            diag = curvature.empirical_fisher_diagonal(self.model.apply, self.loss, op.flat,
                                                       op.unravel, op.batch, cfg.precond_chunk)
        m_diag = (diag + damping + cfg.weight_cost) ** cfg.precond_alpha
        return lambda r: r / m_diag

    def _solve(self, op, grad, damping, prev_step):
        """Stage 3: CG on ``(C + λI + λμS) p = −g`` from ``ζ·p_prev``."""
        cfg = self.config
        return cg_lib.solve_flat(op.damped(damping, cfg.structural_damping), -grad,
                                 cfg.cg_decay * prev_step,
                                 precond=self._preconditioner(op, damping),
                                 max_iters=cfg.max_cg_iters, eps=cfg.cg_eps, tol=cfg.cg_tol)

    def _backtrack(self, objective, flat, iterates, iters, count):
        """Stage 4 (CG-backtracking): from the last iterate step back through the saved ones
        while the objective keeps decreasing.  Returns ``(p, f(θ+p), its CG iteration, evals)``."""
        f_last = objective(flat + iterates[count - 1])
        if not self.config.backtracking:
            return iterates[count - 1], f_last, iters[count - 1], jnp.int32(1)

        def body(s):
            j, best, _, n_eval = s
            f_prev = objective(flat + iterates[j - 1])
            better = f_prev < best
            return (jnp.where(better, j - 1, j), jnp.where(better, f_prev, best), better,
                    n_eval + 1)

        j, f_p, _, n_eval = jax.lax.while_loop(
            lambda s: s[2] & (s[0] > 0), body,
            (count - 1, f_last, jnp.isfinite(f_last), jnp.int32(1)))
        return iterates[j], f_p, iters[j], n_eval

    def _armijo(self, objective, flat, p, f0, slope, f_p):
        """Stage 6: rates 1, 0.8, 0.8², … until ``f(θ + r p) ≤ f₀ + c·r·gᵀp`` (≤ 60 tries).
        Returns ``(rate, f(θ + r p), tries, accepted)``."""
        cfg = self.config
        one = jnp.asarray(1.0, flat.dtype)
        if not cfg.line_search:
            return one, f_p, jnp.int32(0), jnp.isfinite(f_p)

        def sufficient(rate, f):
            return jnp.isfinite(f) & (f <= f0 + cfg.ls_c * rate * slope)

        def body(s):
            rate = s[0] * cfg.ls_decay
            return rate, objective(flat + rate * p), s[2] + 1

        rate, f_new, tries = jax.lax.while_loop(
            lambda s: ~sufficient(s[0], s[1]) & (s[2] < cfg.ls_max_tries), body,
            (one, f_p, jnp.int32(0)))
        return rate, f_new, tries, sufficient(rate, f_new)

    def _reduction_ratio(self, unravel, curv_batch, op, flat, g, p, f0, f_p):
        """Stage 5: ρ with the undamped model ``gᵀp + ½pᵀCp`` (C from the curvature batch).

        ``rho_batch="curvature"`` measures the actual reduction on the curvature batch (one more
        forward pass), as Martens' code does.  ``"gradient"`` measures it on the gradient batch,
        whose loss at θ + p the backtracking already has (no extra pass).  Why the choice: with
        one output per sequence (the RNN problems) C from ``b`` cases has rank ≤ b, and the parts
        of g outside the curvature cases' output span promise reductions in ``gᵀp`` that the
        curvature batch's loss cannot show (its own gradient has no component there), so ρ on it
        reads low when g is mostly noise and λ climbs.  The same happens near a solution, where
        the loss left sits on a few hard cases and a small curvature batch holds few of them, so
        ρ on it is noisy and λ can climb while the net is stuck.  Returns
        ``(ρ, forward passes)``."""
        if self.config.rho_batch == "gradient":
            f_old, f_new, n_forward = f0, f_p, 0
        else:
            f_old, f_new, n_forward = op.value, self._objective(unravel, curv_batch)(flat + p), 1
        return reduction_ratio(f_new, f_old, g, p, op.multiply(p)), jnp.int32(n_forward)

    # -- the update -----------------------------------------------------------------------
    def _propose(self, params, state: HFState, grad_batch: Batch, curv_batch: Batch):
        """Stages 1–5: the step HF proposes from ``params`` and what it measured of it."""
        flat, unravel = ravel_pytree(params)
        lam = state.damping.astype(flat.dtype)
        objective = self._objective(unravel, grad_batch)
        f0, g = jax.value_and_grad(objective)(flat)                          # 1. gradient
        op = self._curvature(params, curv_batch)                             # 2. curvature
        p_final, cg_info = self._solve(op, g, lam, state.prev_step)          # 3. CG
        iterates, iters, count = cg_lib.backtrack_candidates(cg_info, p_final)
        p, f_p, chosen_iter, n_bt = self._backtrack(objective, flat, iterates, iters, count)  # 4.
        rho, n_rho = self._reduction_ratio(unravel, curv_batch, op, flat, g, p, f0, f_p)  # 5.
        return flat, unravel, lam, objective, f0, g, op, cg_info, iters, count, p, f_p, \
            chosen_iter, n_bt, rho, n_rho

    def proposal(self, params, state: HFState, batch: Batch) -> dict:
        """The step HF would take from ``params`` with ``state`` (λ, warm start), with ``batch``
        as both its gradient and curvature batch, without taking it: ``{"grad", "step",
        "curvature_step", "rho", "loss", "damping"}`` (flat arrays; ``curvature_step = Cp`` with
        C undamped, so the model along p is ``α gᵀp + ½α² pᵀCp`` and ρ its gap at α = 1).
        Jit it."""
        flat, _, lam, _, f0, g, op, *_, p, _, _, _, rho, _ = self._propose(params, state,
                                                                         batch, batch)
        return {"grad": g, "step": p, "curvature_step": op.multiply(p), "rho": rho, "loss": f0,
                "damping": lam}

    def _update(self, params, state: HFState, grad_batch: Batch, curv_batch: Batch):
        cfg = self.config
        (flat, unravel, lam, objective, f0, g, op, cg_info, iters, count, p, f_p, chosen_iter,
         n_bt, rho, n_rho) = self._propose(params, state, grad_batch, curv_batch)
        new_lam = levenberg_marquardt(rho, lam, cfg)
        rate, f_new, n_ls, ok = self._armijo(objective, flat, p, f0, jnp.vdot(g, p), f_p)  # 6.
        # a zero or non-finite step (CG found no usable direction) is no update; a rejected
        # step raises λ even if ρ looked fine (ρ was measured on another batch).  Nor is the
        # warm start alone when CG could not take one iteration because the curvature along its
        # first direction was not positive — impossible for C + λI with λ > 0 unless the
        # product overflowed (float32 on an RNN whose gradient explodes): ζ·p_prev then carries
        # no information about this batch, and re-applying it compounds the last step.
        no_curvature = (cg_info.iterations == 0) & (cg_info.stop_reason == NEGATIVE_CURVATURE)
        ok = ok & jnp.all(jnp.isfinite(p)) & jnp.isfinite(f0) & jnp.any(p != 0) & ~no_curvature
        new_lam = jnp.where(ok, new_lam, jnp.clip(lam * cfg.damping_up,
                                                  damping_floor(cfg, lam.dtype), cfg.max_damping))
        step = jnp.where(ok, rate * p, 0.0)
        new_state = HFState(new_lam, jnp.where(ok, p, 0.0).astype(flat.dtype), state.count + 1)
        n_gv = cg_info.n_matvecs + 1
        n_forward = n_bt + n_rho + n_ls
        info = HFInfo(
            loss_before=f0, loss_after=jnp.where(ok, f_new, f0), rho=rho, damping=lam,
            new_damping=new_lam, cg_iters=cg_info.iterations, cg_stop_reason=cg_info.stop_reason,
            cg_residuals=cg_info.residual_norms, cg_quad_values=cg_info.quad_values,
            saved_iters=jnp.where(jnp.arange(iters.shape[0]) < count, iters, -1),
            backtrack_index=chosen_iter, step_norm=jnp.linalg.norm(step),
            line_search_rate=jnp.where(ok, rate, 0.0), accepted=ok, grad_norm=jnp.linalg.norm(g),
            n_grad=jnp.int32(1), n_gv=n_gv, n_forward=n_forward,
            n_forward_backward_passes=2 + 2 * n_gv + n_forward)
        return unravel(flat + step), new_state, info

    # -- what the run loop stores ---------------------------------------------------------
    retries_rejected = True      # a rejected HF step raises λ and tries again

    @staticmethod
    def record(info: HFInfo) -> tuple[dict, dict]:
        """Scalars for the metrics table, and the CG trace of this update."""
        d = info._asdict()
        iters = int(d["cg_iters"])
        trace = {"residual_norms": np.asarray(d.pop("cg_residuals"))[:iters + 1].astype(float),
                 "quad_values": np.asarray(d.pop("cg_quad_values"))[:iters + 1].astype(float),
                 "saved_iters": [int(i) for i in np.asarray(d.pop("saved_iters")) if i >= 0],
                 "backtrack_index": int(d["backtrack_index"]),
                 "stop_reason": cg_lib.STOP_REASONS[int(d["cg_stop_reason"])]}
        scalars = scalar_record(d)
        scalars["cg_stop_reason"] = trace["stop_reason"]
        return scalars, trace


def hessian_free(model: Model, loss: MatchingLoss, **config) -> HessianFree:
    """Build an HF optimiser; keyword arguments are :class:`HFConfig` fields."""
    known = {f.name for f in fields(HFConfig)}
    unknown = set(config) - known
    if unknown:
        raise TypeError(f"unknown HF settings {sorted(unknown)}; allowed: {sorted(known)}")
    return HessianFree(model, loss, HFConfig(**config))

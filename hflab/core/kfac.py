"""K-FAC (Martens & Grosse 2015) for the lab's MLPs, written on the project's own code.

Why not kfac-jax: its latest release (0.0.8) fails on the first step under the JAX this project
pins (0.10.2) — its graph matcher unpacks ``Primitive.get_bind_params(params)`` into
``(subfuns, params)``, while JAX 0.10 returns the parameters alone ("too many values to
unpack").  So the algorithm is implemented here, following the paper:

* Per dense layer ``s = ā W̄`` (``ā`` the layer's input with a 1 appended, ``W̄ = [W; b]``), the
  Fisher block is approximated as ``A ⊗ G`` with ``A = E[ā āᵀ]`` and ``G = E[g gᵀ]``, ``g`` the
  back-propagated derivative of the loss w.r.t. the pre-activation ``s`` (§3).  ``g`` comes from
  targets sampled from the model's own predictive distribution (``estimator="sampled"``, one
  sample per case, the true Fisher as in the paper), or from the exact expectation: the output
  Hessian's square-root columns back-propagated (``"exact"``; ``E[g gᵀ] = J_sᵀ H_L J_s``).
  Both factors are exponential moving averages (decay ``min(1 − 1/k, factor_decay)``, §5).
* Factored Tikhonov damping (§6.3): ``(A + π γ I)⁻¹ ⊗ (G + γ/π I)⁻¹`` with ``γ = √(λ + η)`` and
  ``π = √((tr A / dim A) / (tr G / dim G))``; the inverses are recomputed every
  ``inverse_update_period`` updates (§8).
* The proposal ``Δ = −F̆⁻¹∇h`` becomes the update ``δ = αΔ + μδ₀`` with ``α, μ`` minimising the
  quadratic model ``½δᵀ(F + (λ + η)I)δ + ∇hᵀδ`` with the exact Fisher (the Gauss-Newton matrix of
  the matching loss, two products) on the batch (§7: "automatic learning rate and momentum"),
  or fixed ``α = learning_rate``, ``μ = momentum``.
* λ adapts by the Levenberg–Marquardt rule on ``ρ = (h(θ+δ) − h(θ)) / (∇hᵀδ + ½δᵀFδ)``:
  ρ > ¾ ⇒ λ ← ωλ, ρ < ¼ ⇒ λ ← λ/ω, ``ω = (19/20)^T₁``, every ``T₁ = damping_interval`` updates
  (§6.5).  η is the objective's weight cost.

Cost per update, counted: the gradient (2 passes), the factors' forward (1) and one backward per
probe (1 sampled, or one per output for ``"exact"``), two Fisher-vector products with the
adaptive step (2 passes each), and the loss at the new parameters (1).  Recurrent weights, shared
across time steps, have no Kronecker factors here: the registry refuses K-FAC for RNN tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .baselines import FirstOrder
from .curvature import CurvatureOperator
from .losses import Batch, MatchingLoss, case_weights, n_cases
from .models import Model, activation
from .protocol import scalar_record
from .settings import setting

ESTIMATORS = ("sampled", "exact")


@dataclass(frozen=True)
class KFACSettings:
    damping: float = setting(150.0, "initial damping λ (Martens & Grosse 2015 use 150 on the "
                             "autoencoders)", lo=0.0, hi=1e10, open_low=True)
    adaptive_damping: bool = setting(True, "adapt λ by the ρ-based Levenberg–Marquardt rule")
    adaptive_step: bool = setting(True, "choose the learning rate α and momentum μ by the "
                                  "quadratic model each update (§7)")
    learning_rate: float = setting(1.0, "α when the step is not adaptive", lo=0.0, hi=100.0,
                                   open_low=True)
    momentum: float = setting(0.0, "μ when the step is not adaptive", lo=0.0, hi=1.0,
                              open_high=True)
    inverse_update_period: int = setting(20, "recompute the factors' inverses every T₃ updates",
                                         lo=1, hi=100_000)
    damping_interval: int = setting(5, "adapt λ every T₁ updates", lo=1, hi=100_000)
    factor_decay: float = setting(0.95, "largest decay of the factors' moving averages", lo=0.0,
                                  hi=1.0, open_high=True)
    estimator: str = setting("sampled", "G from sampled targets (true Fisher) or the exact "
                             "expectation over the model's distribution", choices=ESTIMATORS)


class KFACState(NamedTuple):
    A: tuple                   # per layer (in+1, in+1)
    G: tuple                   # per layer (out, out)
    A_inv: tuple
    G_inv: tuple
    damping: jax.Array         # λ
    prev_step: jax.Array       # δ₀, flat
    count: jax.Array
    key: jax.Array


class KFACInfo(NamedTuple):
    loss_before: jax.Array
    loss_after: jax.Array
    rho: jax.Array
    damping: jax.Array
    new_damping: jax.Array
    learning_rate: jax.Array      # α
    momentum: jax.Array           # μ
    predicted_reduction: jax.Array
    actual_reduction: jax.Array
    grad_norm: jax.Array
    step_norm: jax.Array
    accepted: jax.Array
    n_grad: jax.Array
    n_gv: jax.Array
    n_forward: jax.Array
    n_forward_backward_passes: jax.Array


def output_probes(loss: MatchingLoss, z, y, key, estimator: str):
    """Output-space vectors ``r`` (probes, cases, outputs) whose back-propagation gives ``g``:
    ``E[r rᵀ] = H_ℓ`` per case.  Sampled: the loss gradient at a target drawn from the model's
    distribution; exact: the columns of the output Hessian's square root."""
    name = loss.name
    if estimator == "sampled":
        if name == "squared":                       # ℓ = ½‖z − y‖², y ~ N(z, I)
            return -jax.random.normal(key, z.shape, z.dtype)[None]
        if name == "logistic":                      # y ~ Bernoulli(σ(z))
            p = jax.nn.sigmoid(z)
            return (p - jax.random.bernoulli(key, p).astype(z.dtype))[None]
        p = jax.nn.softmax(z, axis=-1)              # y ~ Categorical(softmax(z))
        sample = jax.random.categorical(key, z, axis=-1)
        return (p - jax.nn.one_hot(sample, z.shape[-1], dtype=z.dtype))[None]
    eye = jnp.eye(z.shape[-1], dtype=z.dtype)
    if name == "squared":
        return jnp.broadcast_to(eye[:, None, :], (z.shape[-1],) + z.shape)
    if name == "logistic":
        p = jax.nn.sigmoid(z)
        return eye[:, None, :] * jnp.sqrt(p * (1 - p))[None]
    p = jax.nn.softmax(z, axis=-1)                  # H = diag p − ppᵀ = Σ_k c_k c_kᵀ
    return jnp.sqrt(p).T[:, :, None] * (eye[:, None, :] - p[None])


def layer_statistics(params, x, activations, loss: MatchingLoss, y, mask, key, estimator):
    """Per layer ``(A, G)`` on a batch: ``A = Σ wᵢ āᵢāᵢᵀ / N``, ``G = Σ wᵢ Σ_r gᵢgᵢᵀ / N`` with
    ``w`` the case weights (0 for padding) and ``N`` the real cases."""
    n_layers = len(params)

    def forward(taps):
        a, inputs = x, []
        for k, (layer, tap) in enumerate(zip(params, taps)):
            inputs.append(a)
            s = a @ layer["W"] + layer["b"] + tap
            a = activation(activations[k])(s) if k < n_layers - 1 else s
        return a, inputs
    taps = [jnp.zeros((x.shape[0], layer["W"].shape[1]), x.dtype) for layer in params]
    z, vjp, inputs = jax.vjp(forward, taps, has_aux=True)
    probes = output_probes(loss, z, y, key, estimator)
    gs = jax.vmap(lambda r: vjp(r)[0])(probes)        # per layer (probes, cases, out)
    w = case_weights(mask)
    n = n_cases(mask)
    A, G = [], []
    for a, g in zip(inputs, gs):
        abar = jnp.concatenate([a, jnp.ones((a.shape[0], 1), a.dtype)], axis=1) * \
            jnp.sqrt(w)[:, None]
        gw = g * jnp.sqrt(w)[None, :, None]
        A.append(abar.T @ abar / n)
        G.append(jnp.einsum("rni,rnj->ij", gw, gw) / n)
    return tuple(A), tuple(G), probes.shape[0]


def damped_inverses(A, G, damping, weight_cost):
    """``(A + πγI)⁻¹`` and ``(G + γ/π I)⁻¹`` per layer, γ = √(λ + η) (factored Tikhonov)."""
    gamma = jnp.sqrt(damping + weight_cost)
    A_inv, G_inv = [], []
    for a, g in zip(A, G):
        pi = jnp.sqrt((jnp.trace(a) / a.shape[0]) / jnp.maximum(jnp.trace(g) / g.shape[0],
                                                                 1e-30))
        pi = jnp.where(jnp.isfinite(pi) & (pi > 0), pi, 1.0)
        A_inv.append(jnp.linalg.inv(a + pi * gamma * jnp.eye(a.shape[0], dtype=a.dtype)))
        G_inv.append(jnp.linalg.inv(g + gamma / pi * jnp.eye(g.shape[0], dtype=g.dtype)))
    return tuple(A_inv), tuple(G_inv)


def natural_gradient(grads, A_inv, G_inv):
    """``−F̆⁻¹∇h`` layer by layer: ``−(A+πγI)⁻¹ [∇W; ∇b] (G+γ/πI)⁻¹``."""
    out = []
    for g, a_inv, g_inv in zip(grads, A_inv, G_inv):
        bar = jnp.concatenate([g["W"], g["b"][None]], axis=0)
        step = -(a_inv @ bar @ g_inv)
        out.append({"W": step[:-1], "b": step[-1]})
    return out


class KFAC:
    """K-FAC behind the optimiser protocol (MLPs; the curvature batch is the gradient batch)."""

    retries_rejected = False          # a non-finite step leaves θ and raises λ; no retry

    def __init__(self, model: Model, loss: MatchingLoss, settings: KFACSettings,
                 weight_cost: float = 0.0):
        if model.kind != "mlp":
            raise ValueError("K-FAC here has Kronecker factors for dense layers only (MLPs)")
        self.model, self.loss, self.settings, self.weight_cost = model, loss, settings, weight_cost
        self.omega = (19.0 / 20.0) ** settings.damping_interval
        self.update = jax.jit(self._update)

    # the objective every optimiser of the lab sees: the matching loss plus ½·weight_cost·‖θ‖²
    objective = FirstOrder.objective

    def init(self, params) -> KFACState:
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        A = tuple(jnp.eye(layer["W"].shape[0] + 1, dtype=dtype) for layer in params)
        G = tuple(jnp.eye(layer["W"].shape[1], dtype=dtype) for layer in params)
        flat = ravel_pytree(params)[0]
        return KFACState(A, G, A, G, jnp.asarray(self.settings.damping, dtype),
                         jnp.zeros_like(flat), jnp.int32(0), jax.random.PRNGKey(0))

    def _factors(self, params, state, batch):
        s = self.settings
        key, sub = jax.random.split(state.key)
        A_new, G_new, n_probes = layer_statistics(params, batch.x, self.model.activations,
                                                  self.loss, batch.y, batch.mask, sub,
                                                  s.estimator)
        k = state.count.astype(A_new[0].dtype)
        decay = jnp.minimum(1.0 - 1.0 / (k + 1.0), s.factor_decay)   # 0 at the first update
        A = tuple(decay * old + (1 - decay) * new for old, new in zip(state.A, A_new))
        G = tuple(decay * old + (1 - decay) * new for old, new in zip(state.G, G_new))
        due = (state.count % s.inverse_update_period) == 0
        A_inv, G_inv = jax.lax.cond(
            due, lambda: damped_inverses(A, G, state.damping, self.weight_cost),
            lambda: (state.A_inv, state.G_inv))
        return A, G, A_inv, G_inv, key, n_probes

    def _step_sizes(self, op, flat_delta, prev, g_flat, damping):
        """(α, μ, Fδ-parts): the quadratic model's minimiser over ``αΔ + μδ₀`` (§7), or the
        fixed values."""
        s = self.settings
        f_delta, f_prev = op.multiply(flat_delta), op.multiply(prev)
        if not s.adaptive_step:
            return jnp.asarray(s.learning_rate, g_flat.dtype), \
                jnp.asarray(s.momentum, g_flat.dtype), f_delta, f_prev
        lam = damping
        m11 = jnp.vdot(flat_delta, f_delta) + lam * jnp.vdot(flat_delta, flat_delta)
        m12 = jnp.vdot(flat_delta, f_prev) + lam * jnp.vdot(flat_delta, prev)
        m22 = jnp.vdot(prev, f_prev) + lam * jnp.vdot(prev, prev)
        b1, b2 = jnp.vdot(g_flat, flat_delta), jnp.vdot(g_flat, prev)
        det = m11 * m22 - m12 * m12
        has_prev = jnp.vdot(prev, prev) > 0
        two = has_prev & (jnp.abs(det) > 1e-30 * jnp.abs(m11 * m22))
        alpha = jnp.where(two, -(m22 * b1 - m12 * b2) / jnp.where(two, det, 1.0),
                          -b1 / jnp.where(m11 != 0, m11, 1.0))
        mu = jnp.where(two, -(m11 * b2 - m12 * b1) / jnp.where(two, det, 1.0), 0.0)
        return alpha, mu, f_delta, f_prev

    def _update(self, params, state: KFACState, grad_batch: Batch,
                curv_batch: Batch | None = None):
        s = self.settings
        flat, unravel = ravel_pytree(params)
        f0, grads = jax.value_and_grad(self.objective)(params, grad_batch)
        g_flat = ravel_pytree(grads)[0]
        A, G, A_inv, G_inv, key, n_probes = self._factors(params, state, grad_batch)
        delta = ravel_pytree(natural_gradient(grads, A_inv, G_inv))[0]
        op = CurvatureOperator(self.model.apply, self.loss, params, grad_batch,
                               kind="gauss_newton", weight_cost=self.weight_cost)
        alpha, mu, f_delta, f_prev = self._step_sizes(op, delta, state.prev_step, g_flat,
                                                      state.damping)
        step = alpha * delta + mu * state.prev_step
        f_step = alpha * f_delta + mu * f_prev
        predicted = jnp.vdot(g_flat, step) + 0.5 * jnp.vdot(step, f_step)
        f_new = self.objective(unravel(flat + step), grad_batch)
        actual = f_new - f0
        rho = jnp.where(jnp.isfinite(actual) & (predicted < 0), actual / predicted, -jnp.inf)
        ok = jnp.isfinite(f0) & jnp.isfinite(f_new) & jnp.all(jnp.isfinite(step))
        due = ((state.count + 1) % s.damping_interval) == 0
        adapted = jnp.where(rho > 0.75, state.damping * self.omega,
                            jnp.where(rho < 0.25, state.damping / self.omega, state.damping))
        new_damping = state.damping
        if s.adaptive_damping:
            new_damping = jnp.where(~ok, state.damping / self.omega,
                                    jnp.where(due, adapted, state.damping))
        new_damping = jnp.clip(new_damping, 1e-8, 1e10)
        new_flat = jnp.where(ok, flat + step, flat)
        new_state = KFACState(A, G, A_inv, G_inv, new_damping,
                              jnp.where(ok, step, jnp.zeros_like(step)), state.count + 1, key)
        info = KFACInfo(
            loss_before=f0, loss_after=jnp.where(ok, f_new, f0), rho=rho, damping=state.damping,
            new_damping=new_damping, learning_rate=alpha, momentum=mu,
            predicted_reduction=predicted, actual_reduction=actual,
            grad_norm=jnp.linalg.norm(g_flat), step_norm=jnp.linalg.norm(step) * ok,
            accepted=ok, n_grad=jnp.int32(1), n_gv=jnp.int32(2), n_forward=jnp.int32(2),
            n_forward_backward_passes=jnp.int32(2 + 2 * 2 + 2 + n_probes))
        return unravel(new_flat), new_state, info

    @staticmethod
    def record(info) -> tuple[dict, None]:
        return scalar_record(info._asdict()), None


def kronecker_blocks(state: KFACState) -> list:
    """Each layer's ``A ⊗ G`` from the optimiser's current (undamped) factors, in the layer's
    parameter order as ``ravel_pytree`` lays it out (``W`` row-major, then ``b``: the rows of
    ``W̄ = [W; b]``)."""
    return [jnp.kron(a, g) for a, g in zip(state.A, state.G)]


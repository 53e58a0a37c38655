"""First-order baselines from optax — SGD, Nesterov momentum (constant or on Sutskever et al.'s
schedule), Adam — behind the optimiser protocol.

``opt.update(params, state, grad_batch, curv_batch)`` returns ``(params, state, info)`` exactly
like :class:`hflab.core.hf.HessianFree`; the curvature batch is ignored.  Each baseline is an optax
``GradientTransformation`` applied to the gradient of the objective ``L + ½·weight_cost·‖θ‖²``.
A non-finite loss or gradient leaves the parameters unchanged and is reported
(``accepted = False``); the run loop then marks the run ``diverged`` (``retries_rejected`` is
False).  :mod:`hflab.core.lbfgs` extends :class:`FirstOrder` with optax's L-BFGS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from .losses import Batch, MatchingLoss
from .models import Model
from .protocol import scalar_record
from .settings import setting


class FirstOrderInfo(NamedTuple):
    loss_before: jax.Array
    loss_after: jax.Array       # objective at the new parameters when known (else NaN)
    grad_norm: jax.Array
    step_norm: jax.Array
    accepted: jax.Array
    n_grad: jax.Array
    n_gv: jax.Array
    n_forward: jax.Array
    n_forward_backward_passes: jax.Array


def _learning_rate(default: float):
    return setting(default, "learning rate (per preset from the recorded sweep)", lo=0.0,
                   hi=100.0, open_low=True)


@dataclass(frozen=True)
class SGDSettings:
    learning_rate: float = _learning_rate(0.05)


MOMENTUM_SCHEDULES = ("constant", "sutskever2013")
SCHEDULE_PERIOD = 250          # updates between rises of Sutskever et al.'s μ_t


@dataclass(frozen=True)
class MomentumSettings:
    learning_rate: float = _learning_rate(0.01)
    momentum: float = setting(0.9, "momentum coefficient μ (the cap μ_max under a schedule)",
                              lo=0.0, hi=1.0, open_high=True)
    schedule: str = setting("constant", "μ over updates: constant, or Sutskever et al. (2013)'s "
                            "0.5, 0.75, 0.83, … rising every 250 updates up to μ",
                            choices=MOMENTUM_SCHEDULES)


@dataclass(frozen=True)
class AdamSettings:
    learning_rate: float = _learning_rate(0.003)


def sgd(settings: SGDSettings) -> optax.GradientTransformation:
    return optax.sgd(settings.learning_rate)


def sutskever_momentum(step, max_momentum: float):
    """Sutskever, Martens, Dahl & Hinton (2013):
    μ_t = min(1 − 2^(−1 − log₂(⌊t/250⌋ + 1)), μ_max) for update t (from 0) — 0.5 for the first
    250 updates, then 0.75, 0.833, 0.875, …, i.e. 1 − 1/(2k) in the k-th period of 250, capped
    at μ_max (the paper's 0.9 … 0.999)."""
    k = step // SCHEDULE_PERIOD + 1
    return jnp.minimum(1.0 - 0.5 / k, max_momentum)


class ScheduledTraceState(NamedTuple):
    count: jax.Array          # updates made (int32)
    trace: optax.Params       # the velocity, in the parameters' dtype


def scheduled_nesterov_trace(max_momentum: float) -> optax.GradientTransformation:
    """optax's Nesterov ``trace`` with μ_t = :func:`sutskever_momentum` (velocity
    v ← g + μ_t v, update g + μ_t v).  Written here rather than through
    ``optax.inject_hyperparams(optax.sgd)`` because that evaluates the schedule once, in the
    default float dtype (float64 in the lab), and a float32 run's velocity and updates then
    come out float64; here μ_t is cast to each leaf's dtype."""
    def init(params):
        return ScheduledTraceState(jnp.zeros([], jnp.int32),
                                   jax.tree_util.tree_map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        mu = sutskever_momentum(state.count, max_momentum)

        def g_plus_mu_v(g, v):
            return g + mu.astype(g.dtype) * v
        trace = jax.tree_util.tree_map(g_plus_mu_v, grads, state.trace)
        updates = jax.tree_util.tree_map(g_plus_mu_v, grads, trace)
        return updates, ScheduledTraceState(optax.safe_increment(state.count), trace)

    return optax.GradientTransformation(init, update)


def nesterov(settings: MomentumSettings) -> optax.GradientTransformation:
    """Nesterov momentum (optax.sgd), μ constant or on Sutskever et al.'s schedule."""
    if settings.schedule == "sutskever2013":
        return optax.chain(scheduled_nesterov_trace(settings.momentum),
                           optax.scale_by_learning_rate(settings.learning_rate))
    return optax.sgd(settings.learning_rate, momentum=settings.momentum, nesterov=True)


def adam(settings: AdamSettings) -> optax.GradientTransformation:
    return optax.adam(settings.learning_rate)


def keep_if(ok, new, old):
    """``new`` where ``ok`` else ``old``, leaf by leaf (a rejected update changes nothing)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


class FirstOrder:
    """An optax transformation on the objective's gradient, one update per gradient batch."""

    retries_rejected = False     # a non-finite loss or gradient means the run diverged

    def __init__(self, model: Model, loss: MatchingLoss, tx: optax.GradientTransformation,
                 weight_cost: float = 0.0):
        self.model, self.loss, self.tx, self.weight_cost = model, loss, tx, weight_cost
        self.update = jax.jit(self._update)

    def objective(self, params, batch: Batch):
        val = self.loss.value(self.model.apply(params, batch.x), batch.y, batch.mask)
        if self.weight_cost:
            flat = ravel_pytree(params)[0]
            val = val + 0.5 * self.weight_cost * jnp.vdot(flat, flat)
        return val

    def init(self, params):
        return self.tx.init(params)

    def _update(self, params, state, grad_batch: Batch, curv_batch: Batch | None = None):
        f0, g = jax.value_and_grad(self.objective)(params, grad_batch)
        updates, new_state = self.tx.update(g, state, params)
        return self._finish(params, state, f0, g, updates, new_state)

    def _finish(self, params, state, f0, g, updates, new_state, n_grad=1,
                loss_after=jnp.nan, n_gv=0):
        g_flat = ravel_pytree(g)[0]
        ok = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g_flat))
        new_params = keep_if(ok, optax.apply_updates(params, updates), params)
        n_grad = jnp.asarray(n_grad, jnp.int32)
        info = FirstOrderInfo(loss_before=f0, loss_after=jnp.asarray(loss_after, f0.dtype),
                              grad_norm=jnp.linalg.norm(g_flat),
                              step_norm=jnp.linalg.norm(ravel_pytree(updates)[0]) * ok,
                              accepted=ok, n_grad=n_grad, n_gv=jnp.asarray(n_gv, jnp.int32),
                              n_forward=jnp.int32(0),
                              n_forward_backward_passes=2 * n_grad + 2 * jnp.asarray(n_gv,
                                                                                     jnp.int32))
        return new_params, keep_if(ok, new_state, state), info

    @staticmethod
    def record(info) -> tuple[dict, None]:
        return scalar_record(info._asdict()), None

"""First-order baselines from optax — SGD, Nesterov momentum, Adam — behind the optimiser protocol.

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


@dataclass(frozen=True)
class MomentumSettings:
    learning_rate: float = _learning_rate(0.01)
    momentum: float = setting(0.9, "momentum coefficient", lo=0.0, hi=1.0, open_high=True)


@dataclass(frozen=True)
class AdamSettings:
    learning_rate: float = _learning_rate(0.003)


def sgd(settings: SGDSettings) -> optax.GradientTransformation:
    return optax.sgd(settings.learning_rate)


def nesterov(settings: MomentumSettings) -> optax.GradientTransformation:
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

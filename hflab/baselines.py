"""First-order baselines (SGD, Nesterov momentum, Adam) from optax behind HF's interface.

``opt.update(params, state, grad_batch, curv_batch)`` returns ``(params, state, info)`` exactly
like :class:`hflab.hf.HessianFree`, so the run loop treats every optimiser alike; the curvature
batch is ignored.  A non-finite loss or gradient leaves the parameters unchanged and is reported
(``accepted = False``); the run loop marks such a run ``diverged``.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from .losses import Batch, MatchingLoss
from .models import Model

OPTIMIZERS = ("sgd", "momentum", "adam")


class FirstOrderInfo(NamedTuple):
    loss_before: jax.Array
    loss_after: jax.Array       # objective at the new parameters is not evaluated (NaN)
    grad_norm: jax.Array
    step_norm: jax.Array
    accepted: jax.Array
    n_grad: jax.Array
    n_gv: jax.Array
    n_forward: jax.Array
    n_forward_backward_passes: jax.Array


def make_transform(name: str, learning_rate: float, momentum: float = 0.9) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.sgd(learning_rate)
    if name == "momentum":
        return optax.sgd(learning_rate, momentum=momentum, nesterov=True)
    if name == "adam":
        return optax.adam(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {list(OPTIMIZERS)} and 'hf'")


class FirstOrder:
    kind = "first_order"

    def __init__(self, model: Model, loss: MatchingLoss, name: str, learning_rate: float,
                 momentum: float = 0.9, weight_cost: float = 0.0):
        self.model, self.loss, self.name = model, loss, name
        self.weight_cost = weight_cost
        self.tx = make_transform(name, learning_rate, momentum)
        self.update = jax.jit(self._update)
        self.objective = jax.jit(self._objective)

    def _objective(self, params, batch: Batch):
        val = self.loss.value(self.model.apply(params, batch.x), batch.y, batch.mask)
        if self.weight_cost:
            flat = ravel_pytree(params)[0]
            val = val + 0.5 * self.weight_cost * jnp.vdot(flat, flat)
        return val

    def init(self, params):
        return self.tx.init(params)

    def _update(self, params, state, grad_batch: Batch, curv_batch: Batch | None = None):
        f0, g = jax.value_and_grad(self._objective)(params, grad_batch)
        updates, new_state = self.tx.update(g, state, params)
        new_params = optax.apply_updates(params, updates)
        g_flat = ravel_pytree(g)[0]
        ok = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g_flat))
        new_params = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new_params, params)
        new_state = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new_state, state)
        one = jnp.int32(1)
        info = FirstOrderInfo(loss_before=f0, loss_after=jnp.asarray(jnp.nan, f0.dtype),
                              grad_norm=jnp.linalg.norm(g_flat),
                              step_norm=jnp.linalg.norm(ravel_pytree(updates)[0]) * ok,
                              accepted=ok, n_grad=one, n_gv=jnp.int32(0), n_forward=jnp.int32(0),
                              n_forward_backward_passes=2 * one)
        return new_params, new_state, info


def first_order(model: Model, loss: MatchingLoss, name: str, learning_rate: float, **kw) -> FirstOrder:
    return FirstOrder(model, loss, name, learning_rate, **kw)

"""Sophia (Liu, Li, Hall, Liang & Ma 2024) from ``optax.contrib.sophia``, behind the optimiser
protocol.

Sophia preconditions an EMA of the gradient by an EMA of the Hessian's diagonal, estimated every
``update_interval`` updates by Hutchinson's estimator ``diag(H) ≈ u ⊙ (H u)`` with a Rademacher
``u`` (one Hessian-vector product, forward over reverse), and clips each coordinate of the step
to ``[−clip, clip]``: ``θ ← θ − η·clip(m / max(γ·h, ε), 1)``.  The Hessian-vector products are
counted honestly: an update that refreshes the diagonal costs one more product (``n_gv``), i.e.
two more passes on the passes axis.

The objective's weight cost is the lab's (``weight_cost``, part of the loss every optimiser
sees), so optax's decoupled weight decay is set to 0: otherwise Sophia would minimise another
objective than the optimisers beside it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from optax import contrib

from .baselines import FirstOrder
from .losses import Batch
from .settings import setting


@dataclass(frozen=True)
class SophiaSettings:
    learning_rate: float = setting(1e-3, "learning rate η (per preset from the recorded sweep)",
                                   lo=0.0, hi=100.0, open_low=True)
    b1: float = setting(0.965, "EMA decay of the gradient", lo=0.0, hi=1.0, open_high=True)
    b2: float = setting(0.99, "EMA decay of the Hessian diagonal", lo=0.0, hi=1.0,
                        open_high=True)
    gamma: float = setting(0.01, "γ: scale of the Hessian diagonal in the denominator", lo=0.0,
                           hi=1e3, open_low=True)
    clip_threshold: float = setting(1.0, "per-coordinate clip of the preconditioned step",
                                    lo=0.0, hi=1e6, open_low=True)
    update_interval: int = setting(10, "estimate the Hessian diagonal every k updates", lo=1,
                                   hi=10_000)


def transformation(settings: SophiaSettings, seed: int = 0) -> optax.GradientTransformationExtraArgs:
    """``optax.contrib.sophia`` with the lab's settings (seeded Hutchinson probes)."""
    return contrib.sophia(
        settings.learning_rate, b1=settings.b1, b2=settings.b2, gamma=settings.gamma,
        clip_threshold=settings.clip_threshold, update_interval=settings.update_interval,
        weight_decay=0.0,
        hessian_diagonal_fn=contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(seed)))


class Sophia(FirstOrder):
    """optax's Sophia on the objective of the gradient batch (curvature batch ignored)."""

    def __init__(self, model, loss, settings: SophiaSettings, weight_cost: float = 0.0):
        self.interval = settings.update_interval
        super().__init__(model, loss, transformation(settings), weight_cost)

    def _update(self, params, state, grad_batch: Batch, curv_batch: Batch | None = None):
        value_fn = functools.partial(self.objective, batch=grad_batch)
        f0, g = jax.value_and_grad(value_fn)(params)
        count = optax.tree_utils.tree_get(state, "count")     # before this update
        updates, new_state = self.tx.update(g, state, params, obj_fn=value_fn)
        refreshed = jnp.equal(count % self.interval, 0)      # Hutchinson ran: one H·u more
        return self._finish(params, state, f0, g, updates, new_state, n_gv=refreshed)

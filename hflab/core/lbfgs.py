"""L-BFGS (Nocedal 1980; Liu & Nocedal 1989) from optax, with its zoom line search.

``optax.lbfgs`` = ``scale_by_lbfgs`` (the two-loop recursion over the last ``memory_size = 10``
curvature pairs) chained with ``scale_by_zoom_linesearch`` (strong Wolfe conditions, Nocedal &
Wright 2006, Alg. 3.5–3.6).  The line search evaluates the objective and its gradient on the
gradient batch at every trial step, so one update costs ``1 + num_linesearch_steps`` gradient
evaluations — counted in ``n_grad`` and hence in the forward+backward pass axis.
``learning_rate`` scales the step the line search chose (1 = plain L-BFGS).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import optax

from .baselines import FirstOrder
from .losses import Batch
from .settings import setting


@dataclass(frozen=True)
class LBFGSSettings:
    learning_rate: float = setting(1.0, "scale of the step the line search chose (1 = plain "
                                   "L-BFGS)", lo=0.0, hi=100.0, open_low=True)


class LBFGS(FirstOrder):
    """optax L-BFGS behind the optimiser protocol (curvature batch ignored)."""

    def __init__(self, model, loss, learning_rate: float = 1.0, weight_cost: float = 0.0):
        super().__init__(model, loss, optax.lbfgs(learning_rate=learning_rate), weight_cost)

    def _update(self, params, state, grad_batch: Batch, curv_batch: Batch | None = None):
        value_fn = functools.partial(self.objective, batch=grad_batch)
        f0, g = jax.value_and_grad(value_fn)(params)
        updates, new_state = self.tx.update(g, state, params, value=f0, grad=g,
                                            value_fn=value_fn)
        search = optax.tree_utils.tree_get(new_state, "info")
        loss_after = optax.tree_utils.tree_get(new_state, "value")
        return self._finish(params, state, f0, g, updates, new_state,
                            n_grad=1 + search.num_linesearch_steps, loss_after=loss_after)

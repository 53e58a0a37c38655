"""The optimiser protocol: what the run loop, the store and the pages rely on.

An optimiser is an object with

* ``init(params) -> state``;
* ``update(params, state, grad_batch, curv_batch) -> (params, state, info)`` — one jitted
  program (the run loop compiles it ahead of time); ``curv_batch`` is the curvature chunk for
  optimisers that use one and the gradient batch otherwise;
* ``record(info) -> (scalars, trace)`` — the info record as plain Python scalars for the metrics
  table, and an optional CG trace (``residual_norms``, ``quad_values``, ``saved_iters``,
  ``backtrack_index``, ``stop_reason``) for the CG inspector;
* ``retries_rejected`` — whether a rejected update is retried (HF raises λ) or ends the run as
  diverged (first-order methods).

``info`` must carry :data:`REQUIRED_INFO`: the loss before the update, whether it was accepted,
and the cost counters of this update (gradient evaluations, curvature-vector products, extra
forward passes, and forward+backward passes in all).  Anything else it carries is stored too.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

REQUIRED_INFO = ("loss_before", "accepted", "n_grad", "n_gv", "n_forward",
                 "n_forward_backward_passes")


class Optimizer(Protocol):
    update: Callable
    retries_rejected: bool

    def init(self, params) -> Any: ...

    def record(self, info) -> tuple[dict, dict | None]: ...


def scalar_record(fields: dict) -> dict:
    """JAX scalars as Python bool / int / float (for the store)."""
    out = {}
    for k, v in fields.items():
        a = np.asarray(v)
        out[k] = (bool(a) if a.dtype == bool else int(a) if np.issubdtype(a.dtype, np.integer)
                  else float(a))
    return out

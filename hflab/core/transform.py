"""Hessian-free optimisation as an optax transformation, for any JAX function and any pytree.

::

    tx = hflab.hessian_free_transform(apply_fn, "softmax", damping=1.0, max_cg_iters=100)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params, batch=(x, y))
    params = optax.apply_updates(params, updates)
    state.damping, state.info.rho, state.info.cg_iters, state.info.cg_residuals

``apply_fn(params, x)`` is any JAX function of a parameter pytree (nested dicts, a Flax NNX
``State``, the arrays of an Equinox module from ``eqx.partition(model, eqx.is_array)``) that
returns *pre-activation* outputs ``z`` with a leading case axis; ``loss`` is one of the matching
output/loss pairs ``"squared"``, ``"logistic"``, ``"softmax"`` (:mod:`hflab.core.losses`) or a
:class:`hflab.core.losses.MatchingLoss` object.  ``y`` has the shape of ``z`` (one-hot for softmax).

The update is exactly the lab's own :class:`hflab.core.hf.HessianFree` update — the same stages
(gradient, Gauss-Newton/Hessian/Fisher curvature linearised once, CG in one ``while_loop``,
CG-backtracking, reduction ratio and Levenberg–Marquardt λ, Armijo line search) run on a small
adapter that gives the function the shape of a lab model, so the trajectory is the lab's
trajectory (``tests/test_transform.py`` checks it on an equivalent MLP).

Why the incoming ``updates`` (the gradient) are not used: HF's gradient must be the gradient of
*its* objective (the matching loss with Martens' per-case normalisation plus the weight cost), and
the same objective is evaluated again by backtracking and the line search; taking a gradient
computed elsewhere would silently mix two objectives.  It is recomputed inside the same compiled
program, so a caller may pass ``None``.

Structural damping needs hidden states: give ``hidden_fn(params, x) -> (z, h)`` (and
``hidden_activation``) to use ``structural_damping=μ``; without it the setting is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from . import cg as cg_lib
from . import hf as hf_lib
from .losses import Batch, MatchingLoss, get_loss


@dataclass(frozen=True, eq=False)
class FunctionModel:
    """The part of :class:`hflab.core.models.Model` the HF stages use, for an arbitrary function."""
    apply_fn: Callable
    hidden_fn: Callable | None = None
    hidden_activation: str = "tanh"

    @property
    def kind(self) -> str:
        return "rnn" if self.hidden_fn is not None else "mlp"

    @property
    def activations(self) -> tuple:
        return (self.hidden_activation,)

    def apply(self, params, x):
        return self.apply_fn(params, x)

    def apply_with_hidden(self, params, x):
        return self.hidden_fn(params, x)


class HessianFreeState(NamedTuple):
    """λ for the next update, the warm start, the update count and the last update's info
    (:class:`hflab.core.hf.HFInfo`: ``rho``, ``cg_iters``, ``cg_residuals``, ``loss_before``, …)."""
    damping: jax.Array
    prev_step: jax.Array
    count: jax.Array
    info: hf_lib.HFInfo


_INT_FIELDS = {"cg_iters", "cg_stop_reason", "saved_iters", "backtrack_index", "n_grad", "n_gv",
               "n_forward", "n_forward_backward_passes"}


def _initial_info(config: hf_lib.HFConfig, dtype) -> hf_lib.HFInfo:
    """An all-zero info with the shapes and dtypes an update produces (so the state's pytree
    is the same before and after an update, as ``lax.scan`` and ``jit`` need)."""
    n_trace = config.max_cg_iters + 1
    n_saved = len(cg_lib.save_schedule(config.max_cg_iters)) + 1    # + the final iterate
    shapes = {"cg_residuals": (n_trace,), "cg_quad_values": (n_trace,), "saved_iters": (n_saved,)}
    out = {}
    for name in hf_lib.HFInfo._fields:
        kind = (jnp.int32 if name in _INT_FIELDS else jnp.bool_ if name == "accepted" else dtype)
        out[name] = jnp.zeros(shapes.get(name, ()), kind)
    return hf_lib.HFInfo(**out)


def _as_batch(batch, mask, dtype) -> Batch:
    """``(x, y)``, ``(x, y, mask)`` or a :class:`Batch`; targets cast to the parameters' dtype."""
    if batch is None:
        raise ValueError("hessian_free_transform.update needs batch=(x, y): HF evaluates the "
                         "objective and its curvature itself")
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f"batch must be (x, y) or (x, y, mask), got {type(batch).__name__}")
    x, y = batch[0], jnp.asarray(batch[1]).astype(dtype)
    mask = mask if mask is not None else (batch[2] if len(batch) == 3 else None)
    mask = jnp.ones(y.shape[:-1], dtype) if mask is None else jnp.asarray(mask).astype(dtype)
    if mask.shape != y.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape} must be the targets' shape without the output "
                         f"axis, {y.shape[:-1]}")
    return Batch(x, y, mask)


def hessian_free_transform(apply_fn: Callable, loss: str | MatchingLoss = "squared", *,
                           hidden_fn: Callable | None = None, hidden_activation: str = "tanh",
                           **settings: Any) -> optax.GradientTransformationExtraArgs:
    """HF (Martens 2010) as an ``optax.GradientTransformationExtraArgs``.

    ``settings`` are :class:`hflab.core.hf.HFConfig` fields: ``damping`` (λ₀), ``curvature``
    (``"gauss_newton"``, ``"hessian"``, ``"fisher"``), ``weight_cost``, ``max_cg_iters``,
    ``cg_eps``, ``backtracking``, ``line_search``, ``preconditioner``, ``min_damping``, … and
    ``structural_damping`` (with ``hidden_fn``).  ``update(updates, state, params, *, batch,
    mask=None, curvature_batch=None)``: ``batch`` is the gradient batch; ``curvature_batch``
    (default: ``batch``) the one the curvature products and ρ use.
    """
    known = {f.name for f in fields(hf_lib.HFConfig)}
    unknown = set(settings) - known
    if unknown:
        raise TypeError(f"unknown HF settings {sorted(unknown)}; allowed: {sorted(known)}")
    config = hf_lib.HFConfig(**settings)
    loss_obj = get_loss(loss) if isinstance(loss, str) else loss
    if not isinstance(loss_obj, MatchingLoss):
        raise TypeError(f"loss must be one of 'squared', 'logistic', 'softmax' or a MatchingLoss,"
                        f" got {type(loss).__name__}")
    optimizer = hf_lib.HessianFree(FunctionModel(apply_fn, hidden_fn, hidden_activation),
                                   loss_obj, config)

    def init(params) -> HessianFreeState:
        flat = ravel_pytree(params)[0]
        base = optimizer.init(params)
        return HessianFreeState(base.damping, base.prev_step, base.count,
                                _initial_info(config, flat.dtype))

    def update(updates, state: HessianFreeState, params=None, *, batch=None, mask=None,
               curvature_batch=None, **extra_args):
        del updates, extra_args       # HF recomputes the gradient of its own objective (above)
        if params is None:
            raise ValueError("hessian_free_transform.update needs params")
        dtype = ravel_pytree(params)[0].dtype
        grad_batch = _as_batch(batch, mask, dtype)
        curv_batch = grad_batch if curvature_batch is None else _as_batch(curvature_batch, None,
                                                                          dtype)
        new_params, new, info = optimizer.update(
            params, hf_lib.HFState(state.damping, state.prev_step, state.count),
            grad_batch, curv_batch)
        info = jax.tree.map(lambda a, t: jnp.asarray(a).astype(t.dtype), info, state.info)
        step = jax.tree.map(lambda new_p, p: new_p - p, new_params, params)
        return step, HessianFreeState(new.damping, new.prev_step, new.count, info)

    return optax.GradientTransformationExtraArgs(init, update)


def curvature_operator(apply_fn: Callable, loss: str | MatchingLoss, params, batch, *,
                       kind: str = "gauss_newton", weight_cost: float = 0.0, mask=None,
                       hidden_fn: Callable | None = None, hidden_activation: str = "tanh"):
    """The curvature of ``loss(apply_fn(params, x), y)`` at ``params``, linearised once
    (:class:`hflab.core.curvature.CurvatureOperator`), for any JAX function and parameter pytree.

    ``kind`` is ``"gauss_newton"`` (``Jᵀ H_L J``), ``"hessian"`` or ``"fisher"`` (empirical);
    ``batch`` is ``(x, y)`` or ``(x, y, mask)``.  The operator offers ``multiply(v)`` (flat, in
    ``ravel_pytree(params)`` order), ``multiply_tree(v)`` (a pytree), ``damped(λ)``,
    ``multiply_inverse(b, λ)`` by CG, ``to_dense()`` (refused above
    :data:`hflab.core.curvature.DENSE_PARAM_CAP` parameters) and ``eigenvalues(k, which)`` (Lanczos).
    Construct it inside ``jax.jit`` for repeated products; ``eigenvalues`` runs outside jit.
    """
    from .curvature import CurvatureOperator
    loss_obj = get_loss(loss) if isinstance(loss, str) else loss
    dtype = ravel_pytree(params)[0].dtype
    return CurvatureOperator(apply_fn, loss_obj, params, _as_batch(batch, mask, dtype), kind=kind,
                             weight_cost=weight_cost, hidden_fn=hidden_fn,
                             hidden_activation=hidden_activation)

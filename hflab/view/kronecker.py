"""K-FAC's Kronecker-factored Fisher beside the exact Gauss-Newton matrix, for the Curvature page.

On the same cases as the page's other matrices, each dense layer's Fisher block is approximated
as ``A ⊗ G`` (Martens & Grosse 2015; :func:`hflab.core.kfac.layer_statistics`, exact expectation
over the model's predictive distribution, no damping, no moving average), and the approximation
is block-diagonal over layers.  For a matching loss the Gauss-Newton matrix *is* the Fisher, so
the difference shows exactly what the Kronecker and block-diagonal assumptions leave out.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.kfac import layer_statistics
from ..core.losses import Batch


def parameter_coordinates(params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each flat parameter (``ravel_pytree`` order: per layer ``W`` row-major, then ``b``):
    its layer, its row of ``W̄ = [W; b]`` (the input index, ``in`` for the bias) and column."""
    layer, row, col = [], [], []
    for k, p in enumerate(params):
        n_in, n_out = p["W"].shape
        r, c = np.divmod(np.arange(n_in * n_out), n_out)
        layer += [k] * (n_in * n_out + n_out)
        row += list(r) + [n_in] * n_out
        col += list(c) + list(range(n_out))
    return np.asarray(layer), np.asarray(row), np.asarray(col)


def kronecker_applies(built, params) -> bool:
    """Whether the model is one of the lab's MLPs (a list of ``{"W", "b"}`` layers), the models
    K-FAC's factors are defined for here."""
    layered = isinstance(params, (list, tuple)) and all(
        isinstance(p, dict) and set(p) == {"W", "b"} for p in params)
    return getattr(getattr(built, "model", None), "kind", None) == "mlp" and layered


def kronecker_view(built, params, indices: np.ndarray, g_shown: np.ndarray,
                   n_cases: int = 16) -> dict:
    """``{"K": A⊗G restricted to indices, "G-K": G − K, "kron_errors": [(layer, relative error)]}``
    for an MLP (empty for other models).  The relative error per layer block is
    ‖G_ll − A_l ⊗ G_l‖_F / ‖G_ll‖_F over the shown entries of that block."""
    if not kronecker_applies(built, params):
        return {}
    model = built.model
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    batch = Batch(*(jnp.asarray(a[:n_cases], jnp.float64) for a in built.task.train))
    A, G, _ = layer_statistics(params, batch.x, model.activations, built.loss, batch.y,
                               batch.mask, jax.random.PRNGKey(0), "exact")
    layer, row, col = (a[indices] for a in parameter_coordinates(params))
    K = np.zeros((len(indices), len(indices)))
    errors = []
    for k in range(len(params)):
        sel = np.flatnonzero(layer == k)
        if not len(sel):
            continue
        block = np.asarray(A[k])[np.ix_(row[sel], row[sel])] * \
            np.asarray(G[k])[np.ix_(col[sel], col[sel])]
        K[np.ix_(sel, sel)] = block
        exact = g_shown[np.ix_(sel, sel)]
        errors.append((f"layer {k + 1}", float(np.linalg.norm(exact - block) /
                                               max(np.linalg.norm(exact), 1e-300))))
    return {"K": K, "G-K": g_shown - K, "kron_errors": errors}

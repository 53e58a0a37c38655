"""A run's state as the store keeps it: the leaves of (parameters, optimiser state) as named
arrays, and back — the template (the model's fresh parameters and the optimiser's initial
state) gives the tree structure and each leaf's dtype."""
from __future__ import annotations

import jax
import numpy as np

from .experiment import init_params


def state_leaves(params, opt_state) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves((params, opt_state))
    return {f"leaf_{i:05d}": np.asarray(a) for i, a in enumerate(leaves)}


def restore_state(built, leaves: dict[str, np.ndarray]):
    template_params = init_params(built)
    template = (template_params, built.optimizer.init(template_params))
    treedef = jax.tree_util.tree_structure(template)
    ordered = [leaves[k] for k in sorted(k for k in leaves if k.startswith("leaf_"))]
    if len(ordered) != treedef.num_leaves:
        raise ValueError(f"checkpoint has {len(ordered)} arrays, the model needs "
                         f"{treedef.num_leaves}")
    return jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(a, dtype=t.dtype) for a, t in
                  zip(ordered, jax.tree_util.tree_leaves(template))])

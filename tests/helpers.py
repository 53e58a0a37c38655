"""Shared test helpers: random float64 models, targets and a relative-error measure."""
import jax
import jax.numpy as jnp
import numpy as np

import hflab  # noqa: F401  (enables x64)
from hflab.core.losses import get_loss
from hflab.core.models import Model


def rel_err(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def random_targets(loss_name, key, shape):
    if loss_name == "squared":
        return jax.random.normal(key, shape, jnp.float64)
    if loss_name == "logistic":
        return jax.random.uniform(key, shape, jnp.float64)
    labels = jax.random.randint(key, shape[:-1], 0, shape[-1])
    return jax.nn.one_hot(labels, shape[-1], dtype=jnp.float64)


def random_problem(kind, sizes, activation, loss_name, batch, steps, seed):
    """(model, params, x, y, mask, loss) in float64 with Gaussian init (no zero weights)."""
    key = jax.random.PRNGKey(seed)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    if kind == "mlp":
        model = Model("mlp", tuple(sizes), tuple([activation] * (len(sizes) - 2)), "gaussian", 1.0)
        x = jax.random.normal(k2, (batch, sizes[0]), jnp.float64)
        out_shape = (batch, sizes[-1])
        mask = jnp.ones((batch,), jnp.float64)
    else:
        model = Model("rnn", tuple(sizes), (activation,), "gaussian", 1.0)
        x = jax.random.normal(k2, (batch, steps, sizes[0]), jnp.float64)
        out_shape = (batch, steps, sizes[-1])
        mask = (jax.random.uniform(k4, (batch, steps)) > 0.3).astype(jnp.float64)
        # every case needs a target somewhere — not necessarily at the last step, so that a
        # mask reduced by its last step instead of "any step" is caught
        first = jnp.argmax(jax.random.uniform(jax.random.fold_in(k4, 1), (batch, steps)), axis=1)
        mask = mask.at[jnp.arange(batch), first].set(1.0)
    params = model.init_params(k1, jnp.float64)
    # perturb every entry (biases start at 0), so no ReLU sits exactly on its kink
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(k1, 1), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])
    y = random_targets(loss_name, k3, out_shape)
    return model, params, x, y, mask, get_loss(loss_name)



"""An Equinox MLP trained by Hessian-free optimisation through ``hflab.hessian_free_transform``,
beside Adam at an equal number of updates, on the 8×8 digits (scikit-learn).

The module's arrays are the parameters (``eqx.partition(model, eqx.is_array)``); the rest is
static and closed over.  Run: ``python examples/equinox_mlp.py`` (under a minute on 2 CPU
cores).  The model opens on the lab's Curvature page as "Equinox MLP (example)":
:func:`lab_model` is the hook (:mod:`hflab.hooks`).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import hflab  # noqa: E402


def data(n_train: int = 1200):
    """Digits scaled to [0, 1], one-hot labels; a fixed shuffle; (train, test)."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[digits.target]
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def model_and_params(seed: int = 0):
    """``apply_fn(params, x)`` over a batch and the parameter pytree (the module's arrays)."""
    mlp = eqx.nn.MLP(64, 10, width_size=32, depth=1, activation=jnp.tanh,
                     key=jax.random.PRNGKey(seed))
    params, static = eqx.partition(mlp, eqx.is_array)

    def apply_fn(p, x):
        return jax.vmap(eqx.combine(p, static))(x)
    return apply_fn, params


def loss_fn(apply_fn, params, x, y):
    return optax.softmax_cross_entropy(apply_fn(params, x), y).mean()


def train_hf(updates: int, seed: int = 0):
    (x, y), _ = data()
    apply_fn, params = model_and_params(seed)
    tx = hflab.hessian_free_transform(apply_fn, "softmax", damping=1.0, max_cg_iters=100)
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(None, s, p, batch=(x, y)))
    for _ in range(updates):
        u, state = step(params, state)
        params = optax.apply_updates(params, u)
    return apply_fn, params, state


def train_adam(updates: int, seed: int = 0, learning_rate: float = 0.01):
    (x, y), _ = data()
    apply_fn, params = model_and_params(seed)
    tx = optax.adam(learning_rate)
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        g = jax.grad(lambda q: loss_fn(apply_fn, q, x, y))(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s
    for _ in range(updates):
        params, state = step(params, state)
    return apply_fn, params


def main(updates: int = 30) -> dict:
    """Train both; print and return the final training and test losses."""
    (x, y), (xt, yt) = data()
    out = {}
    apply_fn, p_hf, state = train_hf(updates)
    _, p_adam = train_adam(updates)
    for name, p in (("hf", p_hf), ("adam", p_adam)):
        out[name] = {"train_loss": float(loss_fn(apply_fn, p, x, y)),
                     "test_loss": float(loss_fn(apply_fn, p, xt, yt)),
                     "test_error": float(jnp.mean(jnp.argmax(apply_fn(p, xt), -1)
                                                  != jnp.argmax(yt, -1)))}
        print(f"{name:5s} after {updates} updates: train loss {out[name]['train_loss']:.3g}, "
              f"test loss {out[name]['test_loss']:.4f}, test error {out[name]['test_error']:.3f}")
    print(f"HF's final λ {float(state.damping):.3g}, last ρ {float(state.info.rho):.3f}, "
          f"last CG iterations {int(state.info.cg_iters)}")
    return out


def lab_model() -> "hflab.hooks.LabModel":
    """The Curvature page's hook: the freshly initialised MLP on 16 training cases."""
    from hflab.hooks import LabModel
    (x, y), _ = data()
    apply_fn, params = model_and_params(0)
    return LabModel(apply_fn, params, "softmax", x[:16], y[:16], name="Equinox MLP")


if __name__ == "__main__":
    main()

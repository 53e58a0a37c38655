"""Models against plain NumPy forward passes (an independent route), and the sparse init."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hflab  # noqa: F401
from hflab.core.models import SPARSE_FAN_IN, Model

NP_ACTS = {"tanh": np.tanh, "logistic": lambda a: 1 / (1 + np.exp(-a)),
           "relu": lambda a: np.maximum(a, 0), "linear": lambda a: a}


@pytest.mark.parametrize("act", list(NP_ACTS))
def test_mlp_forward_matches_numpy(act):
    model = Model("mlp", (3, 5, 4, 2), (act, act), "gaussian")
    params = model.init_params(jax.random.PRNGKey(1), jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a + 0.1, params)          # non-zero biases
    x = np.random.default_rng(0).standard_normal((6, 3))
    a = x
    for layer in params[:-1]:
        a = NP_ACTS[act](a @ np.asarray(layer["W"]) + np.asarray(layer["b"]))
    expected = a @ np.asarray(params[-1]["W"]) + np.asarray(params[-1]["b"])
    assert np.allclose(model.apply(params, jnp.asarray(x)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [3, 70])            # fully unrolled and rolled scans
def test_rnn_forward_matches_numpy(steps):
    model = Model("rnn", (2, 4, 3), ("tanh",), "gaussian")
    p = model.init_params(jax.random.PRNGKey(2), jnp.float64)
    p = {k: np.asarray(v) + 0.05 for k, v in p.items()}
    x = np.random.default_rng(1).standard_normal((5, steps, 2))
    h = np.zeros((5, 4))
    outs, hs = [], []
    for t in range(steps):
        h = np.tanh(x[:, t] @ p["W_in"] + h @ p["W_rec"] + p["b"])
        hs.append(h)
        outs.append(h @ p["W_out"] + p["b_out"])
    z, hidden = model.apply_with_hidden({k: jnp.asarray(v) for k, v in p.items()},
                                        jnp.asarray(x))
    assert np.allclose(z, np.stack(outs, 1), rtol=1e-11, atol=1e-12)
    assert np.allclose(hidden, np.stack(hs, 1), rtol=1e-11, atol=1e-12)


def test_sparse_init_has_fifteen_incoming_weights_and_martens_scales():
    model = Model("rnn", (2, 40, 1), ("tanh",), "sparse", rec_scale=1.2)
    p = model.init_params(jax.random.PRNGKey(0), jnp.float32)
    w = np.asarray(p["W_rec"])
    assert np.all((w != 0).sum(axis=0) == SPARSE_FAN_IN)
    assert np.isclose(np.max(np.abs(np.linalg.eigvals(w.astype(np.float64)))), 1.2, rtol=1e-4)
    # RNN hidden biases start at 0 (memory at the h = 0 operating point); MLP tanh units at 0.5
    assert np.all(np.asarray(p["b"]) == 0.0)
    mlp = Model("mlp", (3, 20, 2), ("tanh",), "sparse").init_params(
        jax.random.PRNGKey(0), jnp.float32)
    assert np.all(np.asarray(mlp[0]["b"]) == 0.5)
    again = model.init_params(jax.random.PRNGKey(0), jnp.float32)
    assert np.array_equal(np.asarray(again["W_rec"]), w)                # seeded


def test_orthogonal_init_keeps_every_singular_value_at_its_scale():
    """Saxe et al. (2014): a square W_rec with all singular values equal (so its spectral radius
    is the same number) — a sparse or Gaussian matrix at radius 1.1 has singular values spread
    well above it; rectangular matrices have orthonormal rows or columns times the scale."""
    model = Model("rnn", (2, 40, 3), ("tanh",), "orthogonal", 0.7, rec_scale=1.1)
    p = model.init_params(jax.random.PRNGKey(4), jnp.float64)
    s = np.linalg.svd(np.asarray(p["W_rec"]), compute_uv=False)
    assert np.allclose(s, 1.1, rtol=1e-10)
    assert np.isclose(np.max(np.abs(np.linalg.eigvals(np.asarray(p["W_rec"])))), 1.1, rtol=1e-10)
    w_in, w_out = np.asarray(p["W_in"]), np.asarray(p["W_out"])
    assert np.allclose(w_in @ w_in.T, 0.49 * np.eye(2), atol=1e-12)         # (2, 40): rows
    assert np.allclose(w_out.T @ w_out, 0.49 * np.eye(3), atol=1e-12)       # (40, 3): columns
    assert np.all(np.asarray(p["b"]) == 0.0) and np.all(np.asarray(p["b_out"]) == 0.0)
    sparse = Model("rnn", (2, 40, 3), ("tanh",), "sparse", rec_scale=1.1).init_params(
        jax.random.PRNGKey(4), jnp.float64)
    assert np.linalg.svd(np.asarray(sparse["W_rec"]), compute_uv=False).max() > 1.5
    mlp = Model("mlp", (6, 6, 2), ("tanh",), "orthogonal", 2.0).init_params(
        jax.random.PRNGKey(5), jnp.float64)
    assert np.allclose(np.asarray(mlp[0]["W"]).T @ np.asarray(mlp[0]["W"]), 4 * np.eye(6),
                       atol=1e-12)

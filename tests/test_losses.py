"""Matching losses against jax.hessian of the loss *value* — a route sharing no code with the
hand-written output-space Hessian products — with masks, padding and per-case normalisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hflab  # noqa: F401
from hflab.core.losses import case_weights, get_loss, n_cases, pad_batch, make_batch
from helpers import random_targets, rel_err


def rnn_mask(batch, steps, seed):
    """Random targets per (case, step); case 1's only target is NOT at the last step; the last
    case is padding (all zero)."""
    rng = np.random.default_rng(seed)
    m = (rng.random((batch, steps)) > 0.5).astype(np.float64)
    m[:, 0] = 1.0
    m[1] = 0.0
    m[1, 0] = 1.0
    m[-1] = 0.0
    return jnp.asarray(m)


@pytest.mark.parametrize("name", ["squared", "logistic", "softmax"])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 3)])      # MLP (cases, out) / RNN (cases, T, out)
def test_output_hessian_product_equals_jax_hessian_of_the_value(name, shape):
    key = jax.random.PRNGKey(7)
    z = jax.random.normal(key, shape, jnp.float64)
    y = random_targets(name, jax.random.fold_in(key, 1), shape)
    if len(shape) == 2:
        mask = jnp.asarray([1.0, 1.0, 0.0, 1.0, 0.0])       # two padding cases
    else:
        mask = rnn_mask(shape[0], shape[1], 3)
    loss = get_loss(name)
    m = z.size
    dense = jax.hessian(lambda flat: loss.value(flat.reshape(shape), y, mask))(jnp.ravel(z))
    basis = jnp.eye(m, dtype=jnp.float64).reshape((m,) + shape)
    products = jax.vmap(lambda e: jnp.ravel(loss.hessian_vp(z, y, mask, e)))(basis).T
    assert rel_err(products, dense.reshape(m, m)) <= 1e-12
    # the value is summed over masked positions and divided by the number of REAL cases
    per_position = np.asarray(loss.position_loss(z, y))
    real = 3 if len(shape) == 2 else shape[0] - 1
    assert np.isclose(float(loss.value(z, y, mask)),
                      float((np.asarray(mask) * per_position).sum() / real), rtol=1e-12)


def test_real_cases_are_those_with_any_target_step():
    mask = rnn_mask(4, 5, 0)
    assert np.array_equal(np.asarray(case_weights(mask)), [1.0, 1.0, 1.0, 0.0])
    assert float(n_cases(mask)) == 3.0
    assert float(n_cases(jnp.zeros((3,)))) == 1.0              # never 0/0


def test_padding_with_zero_mask_cases_changes_nothing():
    key = jax.random.PRNGKey(2)
    x = jax.random.normal(key, (5, 2, 3), jnp.float64)
    y = jax.random.normal(jax.random.fold_in(key, 1), (5, 2, 3), jnp.float64)
    mask = rnn_mask(5, 2, 1).at[-1].set(1.0)
    b = make_batch(x, y, mask)
    padded = pad_batch(b, 4)
    assert padded.x.shape[0] == 8
    loss = get_loss("squared")
    assert np.isclose(float(loss.value(padded.x, padded.y, padded.mask)),
                      float(loss.value(b.x, b.y, b.mask)), rtol=1e-14)


def _numpy_output_and_loss(name, z, y):
    """Each matching pair written out in NumPy from its textbook definition."""
    if name == "squared":
        return z, 0.5 * ((z - y) ** 2).sum(-1)
    if name == "logistic":
        p = 1.0 / (1.0 + np.exp(-z))
        return p, -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(-1)
    e = np.exp(z - z.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    return p, -(y * np.log(p)).sum(-1)


@pytest.mark.parametrize("name", ["squared", "logistic", "softmax"])
@pytest.mark.parametrize("shape", [(6, 3), (5, 4, 3)])
def test_values_outputs_and_the_matching_gradient_equal_their_textbook_definitions(name, shape):
    """L = Σ_masked ℓ / (real cases) with ℓ the textbook loss of the output f(z), and — what makes
    the pair *matching* — ∂L/∂z = mask·(f(z) − y) / (real cases)."""
    key = jax.random.PRNGKey(11)
    z = jax.random.normal(key, shape, jnp.float64) * 2.0
    y = random_targets(name, jax.random.fold_in(key, 1), shape)
    mask = (jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]) if len(shape) == 2
            else rnn_mask(shape[0], shape[1], 5))
    loss = get_loss(name)
    zn, yn, mn = (np.asarray(a) for a in (z, y, mask))
    p, ell = _numpy_output_and_loss(name, zn, yn)
    real = (mn.reshape(mn.shape[0], -1).max(1) > 0).sum()
    assert np.allclose(np.asarray(loss.output(z)), p, rtol=1e-12, atol=1e-14)
    assert float(loss.value(z, y, mask)) == pytest.approx((mn * ell).sum() / real, rel=1e-12)
    grad = np.asarray(jax.grad(lambda zz: loss.value(zz, y, mask))(z))
    assert np.allclose(grad, mn[..., None] * (p - yn) / real, rtol=1e-10, atol=1e-14)

"""Matching losses against jax.hessian of the loss *value* — a route sharing no code with the
hand-written output-space Hessian products — with masks, padding and per-case normalisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hflab  # noqa: F401
from hflab.losses import case_weights, get_loss, n_cases, pad_batch, make_batch
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

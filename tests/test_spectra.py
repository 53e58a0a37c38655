"""The spectrum tracker (λ_max / λ_min of G and H over training) against dense eigenvalues
built in this file from ``jax.hessian`` and ``jax.jacfwd`` of plain functions — no code shared
with the operator products or the tracker's Lanczos."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from hflab.core.losses import get_loss, make_batch
from hflab.core.models import Model
from hflab.core.spectra import N_CASES, SpectrumTracker

from helpers import random_targets


@pytest.mark.parametrize("loss_name", ["squared", "softmax"])
def test_tracker_extremes_equal_dense_eigenvalues(loss_name):
    model = Model("mlp", (4, 3, 3), ("tanh",), "gaussian", 1.0)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(7), 3)
    params = model.init_params(k1, jnp.float64)
    x = jax.random.normal(k2, (N_CASES + 5, 4), jnp.float64)     # the tracker keeps 16 cases
    y = random_targets(loss_name, k3, (N_CASES + 5, 3))
    loss = get_loss(loss_name)
    tracker = SpectrumTracker(model.apply, loss, make_batch(x, y), maxiter=200, tol=1e-10)
    got = tracker(params)

    flat, unravel = ravel_pytree(params)
    xs, ys = x[:N_CASES], y[:N_CASES]
    if loss_name == "squared":
        value = lambda z: 0.5 * jnp.sum((z - ys) ** 2) / N_CASES          # noqa: E731
    else:
        value = lambda z: jnp.sum(jax.nn.logsumexp(z, -1) - jnp.sum(ys * z, -1)) / N_CASES  # noqa: E731,E501
    out = lambda p: model.apply(unravel(p), xs)                            # noqa: E731
    jac = jax.jacfwd(lambda p: out(p).ravel())(flat)
    z = out(flat)
    h_out = jax.hessian(lambda zz: value(zz.reshape(z.shape)))(z.ravel())
    g = np.linalg.eigvalsh(np.asarray(jac.T @ h_out @ jac))
    h = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda p: value(out(p)))(flat)))
    assert got["spectrum_G_max"] == pytest.approx(g[-1], rel=1e-6)
    assert got["spectrum_H_max"] == pytest.approx(h[-1], rel=1e-6)
    assert got["spectrum_H_min"] == pytest.approx(h[0], rel=1e-5, abs=1e-8 * abs(h[-1]))
    assert abs(got["spectrum_G_min"] - g[0]) < 1e-6 * g[-1]
    assert h[0] < -1e-6 * h[-1] or loss_name == "squared"   # a case where the sign matters


def test_tracker_profile_blocks_and_density_match_the_dense_matrices():
    """The per-checkpoint profile: each weight block's λ_max equals eigvalsh of the dense block
    (16 Lanczos steps cover every block of this 27-parameter net), the SLQ nodes lie in the
    spectrum, and the stored trace is Hutchinson's within its own standard error bound."""
    model = Model("mlp", (4, 3, 3), ("tanh",), "gaussian", 1.0)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    params = model.init_params(k1, jnp.float64)
    x = jax.random.normal(k2, (N_CASES, 4), jnp.float64)
    y = random_targets("squared", k3, (N_CASES, 3))
    blocks = model.parameter_blocks()
    tracker = SpectrumTracker(model.apply, get_loss("squared"), make_batch(x, y), blocks=blocks)
    profile = tracker.profile(params)
    flat, unravel = ravel_pytree(params)
    h = np.asarray(jax.hessian(lambda p: 0.5 * jnp.sum((model.apply(unravel(p), x) - y) ** 2)
                               / N_CASES)(flat))
    lam = np.linalg.eigvalsh(h)
    got = profile["kinds"]["H"]
    assert [b[0] for b in got["blocks"]] == [name for name, _, _ in blocks]
    for (name, a, b), (_, size, top, trace, err) in zip(blocks, got["blocks"]):
        assert size == b - a
        assert top == pytest.approx(np.linalg.eigvalsh(h[a:b, a:b])[-1], rel=1e-4, abs=1e-6)
    nodes = np.asarray(got["nodes"])
    assert nodes.shape == (5, flat.size) and np.all(nodes >= lam[0] - 1e-4 * abs(lam[0]) - 1e-6)
    assert np.all(nodes <= lam[-1] * (1 + 1e-4) + 1e-6)
    assert abs(got["trace"] - np.trace(h)) <= 5 * got["trace_error"] + 1e-6

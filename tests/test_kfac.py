"""K-FAC (hflab.core.kfac) against routes that share no code with it: Kronecker factors from the
layers' inputs and back-propagated output Hessians in plain JAX, the dense Gauss-Newton matrix of
a single linear layer (where the Kronecker form is exact), and one step computed densely."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hflab.config import ConfigError, preset_config
from hflab.core.kfac import KFAC, KFACSettings, kronecker_blocks, layer_statistics
from hflab.core.losses import Batch, get_loss
from hflab.core.models import Model
from hflab.experiment import run

KEY = jax.random.PRNGKey(3)


def mlp_problem(loss_name, sizes=(4, 5, 3), n=9):
    k1, k2, k3 = jax.random.split(KEY, 3)
    model = Model("mlp", sizes, ("tanh",) * (len(sizes) - 2), "gaussian", 1.0)
    params = model.init_params(k1, jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * jax.random.normal(k3, a.shape, a.dtype),
                                    params)
    x = jax.random.normal(k2, (n, sizes[0]), jnp.float64)
    if loss_name == "softmax":
        y = jax.nn.one_hot(jax.random.randint(k3, (n,), 0, sizes[-1]), sizes[-1],
                           dtype=jnp.float64)
    else:
        y = jax.random.uniform(k3, (n, sizes[-1]), jnp.float64)
    return model, params, Batch(x, y, jnp.ones((n,), jnp.float64))


def plain_position_loss(name):
    """ℓ(z, y) of one case, written here (textbook forms)."""
    if name == "squared":
        return lambda z, y: 0.5 * jnp.sum((z - y) ** 2)
    if name == "logistic":
        return lambda z, y: -jnp.sum(y * jnp.log(jax.nn.sigmoid(z)) +
                                     (1 - y) * jnp.log(1 - jax.nn.sigmoid(z)))
    return lambda z, y: -jnp.sum(y * jax.nn.log_softmax(z))


@pytest.mark.parametrize("loss_name", ["softmax", "logistic", "squared"])
def test_factors_equal_inputs_and_backpropagated_output_hessians(loss_name):
    model, params, batch = mlp_problem(loss_name)
    A, G, _ = layer_statistics(params, batch.x, model.activations, get_loss(loss_name),
                               batch.y, batch.mask, KEY, "exact")
    (w1, b1), (w2, b2) = (params[0]["W"], params[0]["b"]), (params[1]["W"], params[1]["b"])
    ell = plain_position_loss(loss_name)
    n = batch.x.shape[0]
    a_ref = [np.zeros((5, 5)), np.zeros((6, 6))]
    g_ref = [np.zeros((5, 5)), np.zeros((3, 3))]
    for i in range(n):
        x, y = batch.x[i], batch.y[i]
        s1 = x @ w1 + b1
        h = jnp.tanh(s1)
        z_of_s1 = lambda s: jnp.tanh(s) @ w2 + b2          # noqa: E731
        z = z_of_s1(s1)
        hess = jax.hessian(ell)(z, y)                      # output Hessian of ℓ
        j1 = jax.jacfwd(z_of_s1)(s1)                       # ∂z/∂s₁
        xb, hb = np.append(x, 1.0), np.append(h, 1.0)
        a_ref[0] += np.outer(xb, xb) / n
        a_ref[1] += np.outer(hb, hb) / n
        g_ref[0] += np.asarray(j1.T @ hess @ j1) / n
        g_ref[1] += np.asarray(hess) / n                   # ∂z/∂s₂ = I
    for k in range(2):
        np.testing.assert_allclose(A[k], a_ref[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(G[k], g_ref[k], rtol=1e-9, atol=1e-12)


def test_sampled_factors_are_unbiased_for_the_exact_expectation():
    model, params, batch = mlp_problem("softmax", n=40)
    loss = get_loss("softmax")
    _, g_exact, _ = layer_statistics(params, batch.x, model.activations, loss, batch.y,
                                     batch.mask, KEY, "exact")
    draws = jax.jit(jax.vmap(lambda key: layer_statistics(
        params, batch.x, model.activations, loss, batch.y, batch.mask, key, "sampled")[1]))(
        jax.random.split(KEY, 300))
    for k in range(2):
        mean = np.mean(np.asarray(draws[k]), axis=0)
        err = np.linalg.norm(mean - g_exact[k]) / np.linalg.norm(g_exact[k])
        assert err < 0.1, err                   # Monte Carlo error of 300 × 40 draws
        one = np.asarray(draws[k][0])
        assert np.linalg.norm(one - g_exact[k]) / np.linalg.norm(g_exact[k]) > 0.05


def linear_problem(n=12, d=3, out=2):
    k1, k2, k3 = jax.random.split(KEY, 3)
    model = Model("mlp", (d, out), (), "gaussian", 1.0)
    params = model.init_params(k1, jnp.float64)
    x = jax.random.normal(k2, (n, d), jnp.float64)
    y = jax.random.normal(k3, (n, out), jnp.float64)
    return model, params, Batch(x, y, jnp.ones((n,), jnp.float64))


def test_a_single_linear_layer_block_is_exactly_the_gauss_newton_matrix():
    model, params, batch = linear_problem()
    opt = KFAC(model, get_loss("squared"), KFACSettings(estimator="exact"))
    _, state, _ = opt.update(params, opt.init(params), batch, batch)
    (block,) = kronecker_blocks(state)

    def objective(flat_wb):                  # ½‖X W + b − Y‖² / N in (W row-major, b) order
        w, b = flat_wb[:6].reshape(3, 2), flat_wb[6:]
        return 0.5 * jnp.sum((batch.x @ w + b - batch.y) ** 2) / batch.x.shape[0]
    dense = jax.hessian(objective)(jnp.zeros(8, jnp.float64))   # = the Gauss-Newton matrix
    np.testing.assert_allclose(block, dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_on_linear_least_squares_equals_the_dense_computation(adaptive):
    model, params, batch = linear_problem()
    lam, n = 0.7, batch.x.shape[0]
    settings = KFACSettings(damping=lam, estimator="exact", adaptive_step=adaptive,
                            learning_rate=1.0, momentum=0.0)
    opt = KFAC(model, get_loss("squared"), settings)
    new, _, info = opt.update(params, opt.init(params), batch, batch)
    xb = np.hstack([np.asarray(batch.x), np.ones((n, 1))])
    wbar = np.vstack([np.asarray(params[0]["W"]), np.asarray(params[0]["b"])[None]])
    resid = xb @ wbar - np.asarray(batch.y)
    grad = xb.T @ resid / n                                       # ∇ w.r.t. [W; b]
    a, g = xb.T @ xb / n, np.eye(2)
    pi = np.sqrt((np.trace(a) / 4) / (np.trace(g) / 2))
    gamma = np.sqrt(lam)
    delta = -np.linalg.solve(a + pi * gamma * np.eye(4), grad) @ np.linalg.inv(
        g + gamma / pi * np.eye(2))
    if adaptive:                               # α minimises ½α²Δᵀ(F+λI)Δ + α∇ᵀΔ (no δ₀ yet)
        f = np.kron(a, g)
        d = delta.ravel()
        alpha = -(grad.ravel() @ d) / (d @ f @ d + lam * d @ d)
        delta = alpha * delta
        assert float(info.learning_rate) == pytest.approx(alpha, rel=1e-10)
    got = np.vstack([np.asarray(new[0]["W"]), np.asarray(new[0]["b"])[None]]) - wbar
    np.testing.assert_allclose(got, delta, rtol=1e-10, atol=1e-13)
    assert float(info.momentum) == 0.0


def test_kfac_trains_in_the_lab_and_records_its_state():
    cfg = preset_config("digits-ae", optimizer="kfac", steps=6, n_train=200, n_test=50,
                        checkpoint_every=0, layers="16-8").validate()
    records = []
    out = run(cfg, on_step=lambda r, *a: records.append(dict(r)))
    assert out.steps_done == 6 and records[-1]["train_loss"] < records[0]["train_loss"]
    last = records[-1]
    for key in ("damping", "rho", "learning_rate", "momentum", "predicted_reduction",
                "actual_reduction"):
        assert np.isfinite(last[key]), key
    # ρ is the recorded actual over predicted reduction
    assert last["rho"] == pytest.approx(last["actual_reduction"] / last["predicted_reduction"])


def test_kfac_is_refused_for_rnn_tasks_with_the_reason():
    with pytest.raises(ConfigError) as e:
        preset_config("addition", optimizer="kfac").validate()
    assert e.value.field == "optimizer" and "recurrent weights" in str(e.value)

"""The HF optimiser: exact on quadratics, ρ and damping, rejection of non-finite steps,
structural damping, preconditioner, and training the digits autoencoder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from hflab import curvature, hf
from hflab.config import RunConfig
from hflab.experiment import run
from hflab.losses import Batch, get_loss, make_batch
from hflab.models import Model
from helpers import random_problem, rel_err


def linear_problem(n=40, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, 1))
    model = Model("mlp", (d, 1), (), "gaussian")
    params = model.init_params(jax.random.PRNGKey(seed), jnp.float64)
    return model, params, x, y


def test_one_update_with_tiny_damping_minimises_a_convex_quadratic():
    model, params, x, y = linear_problem()
    opt = hf.hessian_free(model, get_loss("squared"), damping=1e-12)
    batch = make_batch(jnp.asarray(x), jnp.asarray(y))
    new, state, info = opt.update(params, opt.init(params), batch, batch)
    xa = np.hstack([x, np.ones((x.shape[0], 1))])
    sol = np.linalg.lstsq(xa, y, rcond=None)[0].ravel()
    got = np.concatenate([np.asarray(new[0]["W"]).ravel(), np.asarray(new[0]["b"])])
    assert rel_err(got, sol) <= 1e-8
    assert bool(info.accepted) and float(info.line_search_rate) == 1.0
    assert abs(float(info.rho) - 1.0) < 1e-8           # the quadratic model is exact
    assert np.isclose(float(info.new_damping), 1e-12 * 2 / 3)


@pytest.mark.parametrize("c, expected_factor", [(1.0, 2 / 3), (0.75, 1.0), (0.5, 1.5), (-1.0, 1.5)])
def test_rho_and_levenberg_marquardt_rule(c, expected_factor):
    """Gradient batch targets y, curvature batch targets c·y at the same inputs: from θ = 0 the
    HF step is the least-squares fit to y, and ρ = 2c − 1 exactly."""
    model, params, x, y = linear_problem(seed=1)
    params = jax.tree_util.tree_map(jnp.zeros_like, params)
    opt = hf.hessian_free(model, get_loss("squared"), damping=1e-10, line_search=False,
                          backtracking=False)
    g_batch = make_batch(jnp.asarray(x), jnp.asarray(y))
    c_batch = make_batch(jnp.asarray(x), jnp.asarray(c * y))
    _, state, info = opt.update(params, opt.init(params), g_batch, c_batch)
    assert abs(float(info.rho) - (2 * c - 1)) < 1e-6
    assert np.isclose(float(state.damping), 1e-10 * expected_factor, rtol=1e-12)


def test_nan_gradient_batch_is_rejected_and_damping_rises():
    model, params, x, y = linear_problem(seed=2)
    opt = hf.hessian_free(model, get_loss("squared"), damping=2.0)
    bad = make_batch(jnp.asarray(x).at[3, 1].set(jnp.nan), jnp.asarray(y))
    good = make_batch(jnp.asarray(x), jnp.asarray(y))
    state = opt.init(params)._replace(prev_step=jnp.ones(7))
    new, new_state, info = opt.update(params, state, bad, good)
    assert not bool(info.accepted)
    assert rel_err(ravel_pytree(new)[0], ravel_pytree(params)[0]) == 0.0
    assert float(new_state.damping) == 3.0
    assert np.all(np.asarray(new_state.prev_step) == 0)
    assert np.all(np.isfinite(ravel_pytree(new)[0]))


def test_nan_curvature_is_rejected():
    model, params, x, y = linear_problem(seed=3)
    opt = hf.hessian_free(model, get_loss("squared"), damping=1.0)
    good = make_batch(jnp.asarray(x), jnp.asarray(y))
    bad = make_batch(jnp.asarray(x).at[0, 0].set(jnp.inf), jnp.asarray(y))
    new, new_state, info = opt.update(params, opt.init(params), good, bad)
    assert not bool(info.accepted)
    assert np.array_equal(ravel_pytree(new)[0], ravel_pytree(params)[0])
    assert float(new_state.damping) == 1.5


@pytest.mark.parametrize("activation", ["tanh", "logistic"])
def test_structural_damping_term_equals_dense_construction(activation):
    model, params, x, y, mask, loss = random_problem("rnn", (2, 3, 1), activation, "squared", 3, 4, 5)
    mask = mask.at[2].set(0.0)                  # a padded case contributes nothing
    batch = Batch(x, y, mask)
    lam, mu = 0.7, 0.03
    opt = hf.hessian_free(model, loss, damping=lam, structural_damping=mu)
    flat, unravel = ravel_pytree(params)
    op = opt._curvature(params, batch)
    v = jax.random.normal(jax.random.PRNGKey(1), flat.shape, jnp.float64)
    extra = op.damped(lam, mu)(v) - op.multiply(v) - lam * v
    hfun = lambda p: model.apply_with_hidden(p, x)[1]  # noqa: E731
    jh = curvature.jacobian_matrix(hfun, params)                       # (B·T·H, n)
    h = np.asarray(hfun(params)).ravel()
    # real cases weigh 1/N with N = 2 real cases (case 2 is padding)
    w = np.repeat(np.asarray([0.5, 0.5, 0.0]), 4 * 3)
    hd = w if activation == "tanh" else w / np.clip(h * (1 - h), 1e-6, None)
    dense = lam * mu * jh.T @ (hd * (jh @ v))
    assert rel_err(extra, dense) <= 1e-10
    assert rel_err(op.structural(v), dense / (lam * mu)) <= 1e-10


@pytest.mark.parametrize("curv", ["hessian", "fisher"])
def test_alternative_curvatures_match_dense(curv):
    model, params, x, y, mask, loss = random_problem("mlp", (3, 4, 2), "tanh", "softmax", 6, 1, 8)
    batch = Batch(x, y, mask)
    opt = hf.hessian_free(model, loss, curvature=curv, weight_cost=0.01)
    flat, unravel = ravel_pytree(params)
    op = opt._curvature(params, batch)
    f_c, c_op = op.value, op.multiply
    obj = opt._objective(unravel, batch)
    v = jax.random.normal(jax.random.PRNGKey(2), flat.shape, jnp.float64)
    if curv == "hessian":
        dense = jax.hessian(obj)(flat)
    else:
        def case(p, i):
            return loss.per_case(model.apply(unravel(p), x[i:i + 1]), y[i:i + 1], mask[i:i + 1])[0]
        gs = np.stack([jax.grad(case)(flat, i) for i in range(6)])
        dense = gs.T @ gs / 6 + 0.01 * np.eye(flat.size)
    assert rel_err(c_op(v), dense @ v) <= 1e-10
    assert np.isclose(float(f_c), float(obj(flat)))


def test_preconditioner_is_the_martens_diagonal():
    model, params, x, y, mask, loss = random_problem("mlp", (3, 4, 2), "tanh", "squared", 7, 1, 9)
    batch = Batch(x, y, mask)
    opt = hf.hessian_free(model, loss, preconditioner=True, weight_cost=0.1, precond_chunk=3)
    flat, unravel = ravel_pytree(params)
    r = jax.random.normal(jax.random.PRNGKey(3), flat.shape, jnp.float64)
    m = r / opt._preconditioner(opt._curvature(params, batch), 2.0)(r)      # CG applies r / M

    def case(p, i):
        return loss.per_case(model.apply(unravel(p), x[i:i + 1]), y[i:i + 1], mask[i:i + 1])[0]
    gs = np.stack([jax.grad(case)(flat, i) for i in range(7)])
    expected = ((gs ** 2).sum(0) / 7 + 2.0 + 0.1) ** 0.75
    assert rel_err(m, expected) <= 1e-12
    # and a preconditioned update runs and decreases the loss
    new, _, info = opt.update(params, opt.init(params), batch, batch)
    assert float(info.loss_after) < float(info.loss_before)


def test_warm_start_uses_decayed_previous_step():
    model, params, x, y = linear_problem(seed=4)
    opt = hf.hessian_free(model, get_loss("squared"), damping=1.0, max_cg_iters=1,
                          line_search=False, backtracking=False)
    batch = make_batch(jnp.asarray(x), jnp.asarray(y))
    prev = jnp.arange(7.0) / 10
    state = opt.init(params)._replace(prev_step=prev)
    _, _, info = opt.update(params, state, batch, batch)
    flat, unravel = ravel_pytree(params)
    damped = opt._curvature(params, batch).damped(1.0)
    g = jax.grad(opt._objective(unravel, batch))(flat)
    x0 = 0.95 * prev
    phi0 = 0.5 * jnp.vdot(x0, damped(x0)) + jnp.vdot(g, x0)
    assert np.isclose(float(info.cg_quad_values[0]), float(phi0), rtol=1e-10)


def test_hf_beats_300_adam_steps_on_the_digits_autoencoder():
    base = RunConfig(task="digits-ae", seed=0, eval_every=1000, checkpoint_every=0)
    hf_out = run(base.replace(optimizer="hf", steps=25, damping=1.0))
    adam_out = run(base.replace(optimizer="adam", steps=300, learning_rate=0.01))
    assert hf_out.status == adam_out.status == "finished"
    assert hf_out.last["train_loss"] < adam_out.last["train_loss"]
    assert hf_out.last["n_gv"] > 0 and adam_out.last["n_gv"] == 0


def test_update_is_one_jitted_program_with_cg_inside():
    model, params, x, y = linear_problem(seed=5)
    opt = hf.hessian_free(model, get_loss("squared"))
    batch = make_batch(jnp.asarray(x), jnp.asarray(y))
    text = opt.update.lower(params, opt.init(params), batch, batch).as_text()
    assert text.count("stablehlo.while") >= 3      # CG, backtracking, line search

"""The HF optimiser: exact on quadratics, ρ and damping, rejection of non-finite steps,
structural damping, preconditioner, and training the digits autoencoder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from hflab.core import curvature, hf
from hflab.config import RunConfig
from hflab.experiment import run
from hflab.core.losses import Batch, get_loss, make_batch
from hflab.core.models import Model
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
    opt = hf.hessian_free(model, get_loss("squared"), damping=1e-12, min_damping=0.0)
    batch = make_batch(jnp.asarray(x), jnp.asarray(y))
    new, state, info = opt.update(params, opt.init(params), batch, batch)
    xa = np.hstack([x, np.ones((x.shape[0], 1))])
    sol = np.linalg.lstsq(xa, y, rcond=None)[0].ravel()
    got = np.concatenate([np.asarray(new[0]["W"]).ravel(), np.asarray(new[0]["b"])])
    assert rel_err(got, sol) <= 1e-8
    assert bool(info.accepted) and float(info.line_search_rate) == 1.0
    assert abs(float(info.rho) - 1.0) < 1e-8           # the quadratic model is exact
    assert np.isclose(float(info.new_damping), 1e-12 * 2 / 3, rtol=1e-12, atol=0)


@pytest.mark.parametrize("c, expected_factor", [(1.0, 2 / 3), (0.75, 1.0), (0.5, 1.5), (-1.0, 1.5)])
def test_rho_and_levenberg_marquardt_rule(c, expected_factor):
    """Gradient batch targets y, curvature batch targets c·y at the same inputs: from θ = 0 the
    HF step is the least-squares fit to y, and ρ = 2c − 1 exactly."""
    model, params, x, y = linear_problem(seed=1)
    params = jax.tree_util.tree_map(jnp.zeros_like, params)
    opt = hf.hessian_free(model, get_loss("squared"), damping=1e-10, line_search=False,
                          backtracking=False, min_damping=0.0)   # no floor: λ·factor exactly
    g_batch = make_batch(jnp.asarray(x), jnp.asarray(y))
    c_batch = make_batch(jnp.asarray(x), jnp.asarray(c * y))
    _, state, info = opt.update(params, opt.init(params), g_batch, c_batch)
    assert abs(float(info.rho) - (2 * c - 1)) < 1e-6
    assert np.isclose(float(state.damping), 1e-10 * expected_factor, rtol=1e-12, atol=0)


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


def test_the_warm_start_alone_is_no_update_when_cg_cannot_take_a_step():
    """Non-finite curvature stops CG before its first iteration; the decayed previous step —
    here pointing straight downhill, so the line search alone would accept it — must not be
    applied on its own."""
    model, params, x, y = linear_problem(seed=3)
    opt = hf.hessian_free(model, get_loss("squared"), damping=1.0)
    good = make_batch(jnp.asarray(x), jnp.asarray(y))
    bad = make_batch(jnp.asarray(x).at[0, 0].set(jnp.inf), jnp.asarray(y))
    flat, unravel = ravel_pytree(params)
    downhill = -0.01 * jax.grad(opt._objective(unravel, good))(flat)
    state = opt.init(params)._replace(prev_step=downhill)
    new, new_state, info = opt.update(params, state, good, bad)
    assert int(info.cg_iters) == 0
    assert not bool(info.accepted)
    assert np.array_equal(ravel_pytree(new)[0], flat)
    assert float(new_state.damping) == 1.5 and not np.any(np.asarray(new_state.prev_step))
    # the same warm start with a healthy curvature batch is taken and improved on by CG
    new, _, info = opt.update(params, state, good, good)
    assert bool(info.accepted) and int(info.cg_iters) > 0


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


@pytest.mark.parametrize("kind,sizes,act,loss_name", [
    ("mlp", (3, 4, 2), "tanh", "squared"),                     # one backward pass (MLP route)
    ("mlp", (5, 4, 3, 6), "logistic", "logistic"),             # two hidden layers, padding
    ("rnn", (3, 4, 2), "tanh", "squared"),                     # per-case vmap (shared weights)
])
def test_preconditioner_is_the_martens_diagonal(kind, sizes, act, loss_name):
    model, params, x, y, mask, loss = random_problem(kind, sizes, act, loss_name, 7, 4, 9)
    if kind == "mlp" and len(sizes) > 3:
        mask = mask.at[jnp.array([2, 5])].set(0.0)            # zero-mask padding cases
    n = float(jnp.sum(mask.reshape(7, -1).max(axis=1)))
    batch = Batch(x, y, mask)
    opt = hf.hessian_free(model, loss, preconditioner=True, weight_cost=0.1, precond_chunk=3)
    flat, unravel = ravel_pytree(params)
    r = jax.random.normal(jax.random.PRNGKey(3), flat.shape, jnp.float64)
    m = r / opt._preconditioner(opt._curvature(params, batch), 2.0)(r)      # CG applies r / M

    def case(p, i):
        return loss.per_case(model.apply(unravel(p), x[i:i + 1]), y[i:i + 1], mask[i:i + 1])[0]
    gs = np.stack([jax.grad(case)(flat, i) for i in range(7)])
    expected = ((gs ** 2).sum(0) / n + 2.0 + 0.1) ** 0.75
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


def _dense_references(model, params, batch, loss, wc):
    """Plain-function references: objective, its gradient, dense G (jax.hessian of the loss
    value) and dense S (hidden-state Jacobian), all without the lab's products."""
    flat, unravel = ravel_pytree(params)

    def objective(p):
        return loss.value(model.apply(unravel(p), batch.x), batch.y, batch.mask) + \
            0.5 * wc * jnp.vdot(p, p)
    z_of = lambda p: model.apply(unravel(p), batch.x)  # noqa: E731
    jz = jax.jacfwd(lambda p: jnp.ravel(z_of(p)))(flat)
    z = z_of(flat)
    hl = jax.hessian(lambda zz: loss.value(zz.reshape(z.shape), batch.y, batch.mask))(
        jnp.ravel(z))
    g_dense = jz.T @ hl @ jz
    if model.kind != "rnn":
        return flat, objective, jax.grad(objective)(flat), np.asarray(g_dense), None
    h_of = lambda p: jnp.ravel(model.apply_with_hidden(unravel(p), batch.x)[1])  # noqa: E731
    jh = jax.jacfwd(h_of)(flat)
    real = np.asarray(batch.mask).reshape(batch.mask.shape[0], -1).max(axis=1)
    w = np.repeat(real / real.sum(), jh.shape[0] // len(real))
    s_dense = jh.T @ (w[:, None] * jh)
    return flat, objective, jax.grad(objective)(flat), np.asarray(g_dense), np.asarray(s_dense)


@pytest.mark.parametrize("rho_batch", ["curvature", "gradient"])
def test_rho_measures_the_actual_reduction_on_the_chosen_batch(rho_batch):
    """Gradient and curvature batches differ: the predicted reduction is gᵀp + ½pᵀG_c p (g from
    the gradient batch, G_c dense from the curvature batch), the actual one is measured on the
    batch ``rho_batch`` names.  The two readings differ here by far more than the tolerance, so
    ρ taken from the other batch (or the option ignored) fails."""
    model, params, x, y, mask, loss = random_problem("mlp", (3, 4, 2), "tanh", "squared", 9, 1, 5)
    grad_batch, curv_batch = Batch(x, y, mask), Batch(x[:3], y[:3], mask[:3])
    flat, f_grad, g, _, _ = _dense_references(model, params, grad_batch, loss, 0.0)
    _, f_curv, _, g_curv, _ = _dense_references(model, params, curv_batch, loss, 0.0)
    opt = hf.hessian_free(model, loss, damping=0.5, max_cg_iters=60, backtracking=False,
                          line_search=False, rho_batch=rho_batch)
    new, _, info = opt.update(params, opt.init(params), grad_batch, curv_batch)
    p = ravel_pytree(new)[0] - flat
    q = float(g @ p + 0.5 * p @ g_curv @ p)
    expected = {name: (float(f(flat + p)) - float(f(flat))) / q
                for name, f in (("curvature", f_curv), ("gradient", f_grad))}
    assert abs(expected["curvature"] - expected["gradient"]) > 0.05
    assert np.isclose(float(info.rho), expected[rho_batch], rtol=1e-9)
    # "gradient" reuses the loss the step's evaluation already has: one forward pass fewer
    assert int(info.n_forward) == (1 if rho_batch == "gradient" else 2)


def test_an_unknown_rho_batch_is_refused():
    with pytest.raises(ValueError, match="rho_batch 'test'.*allowed"):
        hf.HFConfig(rho_batch="test")


@pytest.mark.parametrize("kind", ["rnn", "mlp"])
def test_the_cg_system_is_g_plus_weight_cost_plus_lambda_plus_structural_damping(kind):
    """A converged CG step with no backtracking, line search or warm start is exactly
    −(G + wc·I + λI + λμS)⁻¹ g — every term of the damped system, checked densely (the RNN with
    structural damping, the MLP without: the two code paths of the Gauss-Newton product)."""
    sizes = (2, 3, 1) if kind == "rnn" else (3, 4, 2)
    model, params, x, y, mask, loss = random_problem(kind, sizes, "tanh", "squared", 4, 3, 21)
    mask = mask.at[3].set(0.0)                                     # one padding case
    batch = Batch(x, y, mask)
    lam, mu, wc = 0.3, (0.5 if kind == "rnn" else 0.0), 0.01
    flat, objective, g, g_dense, s_dense = _dense_references(model, params, batch, loss, wc)
    n = flat.size
    opt = hf.hessian_free(model, loss, damping=lam, structural_damping=mu, weight_cost=wc,
                          max_cg_iters=3 * n, cg_eps=0.0, cg_tol=1e-15, cg_decay=0.0,
                          backtracking=False, line_search=False)
    new, state, info = opt.update(params, opt.init(params), batch, batch)
    p = ravel_pytree(new)[0] - flat
    a = g_dense + (wc + lam) * np.eye(n) + (lam * mu * s_dense if mu else 0.0)
    assert rel_err(p, -np.linalg.solve(a, np.asarray(g))) <= 1e-9
    # ρ recomputed independently: actual over predicted reduction, damping left out of q
    q = float(g @ p + 0.5 * p @ (g_dense + wc * np.eye(n)) @ p)
    rho = (float(objective(flat + p)) - float(objective(flat))) / q
    assert np.isclose(float(info.rho), rho, rtol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_an_accepted_step_never_increases_the_objective(seed):
    """Nonconvex tanh net, indefinite Hessian curvature, almost no damping: big steps must be
    cut back by the Armijo search, never accepted uphill (checked on the plain objective)."""
    model, params, x, y, mask, loss = random_problem("mlp", (3, 6, 2), "tanh", "squared", 9, 1,
                                                     100 + seed)
    batch = Batch(x * 3.0, y, mask)
    flat, objective, g, _, _ = _dense_references(model, params, batch, loss, 0.0)
    opt = hf.hessian_free(model, loss, damping=1e-6, curvature="hessian", backtracking=False)
    state = opt.init(params)
    for _ in range(3):
        new, state, info = opt.update(params, state, batch, batch)
        f0, f1 = float(objective(ravel_pytree(params)[0])), float(objective(ravel_pytree(new)[0]))
        step = ravel_pytree(new)[0] - ravel_pytree(params)[0]
        gk = jax.grad(objective)(ravel_pytree(params)[0])
        if bool(info.accepted):
            assert f1 <= f0 + 1e-2 * float(gk @ step) + 1e-12
            assert np.isclose(float(info.loss_after), f1, rtol=1e-10)
        else:
            assert f1 == f0
        params = new


@pytest.mark.parametrize("init", ["sparse", "gaussian", "glorot", "orthogonal"])
@pytest.mark.parametrize("kind, sizes", [("mlp", (3, 5, 2)), ("rnn", (2, 4, 1))])
def test_every_init_honours_the_dtype(init, kind, sizes):
    model = Model(kind, sizes, ("tanh",) * (1 if kind == "rnn" else len(sizes) - 2), init, 1.5,
                  1.2 if kind == "rnn" else None)
    for dtype in (jnp.float32, jnp.float64):
        params = model.init_params(jax.random.PRNGKey(0), dtype)
        assert {a.dtype for a in jax.tree_util.tree_leaves(params)} == {jnp.dtype(dtype)}
        x = jnp.ones((2, 3, sizes[0]) if kind == "rnn" else (2, sizes[0]), dtype)
        assert model.apply(params, x).dtype == jnp.dtype(dtype)


@pytest.mark.parametrize("rho, factor", [(0.2, 1.5), (0.26, 1.0), (0.4, 1.0), (0.74, 1.0),
                                         (0.76, 2 / 3), (-np.inf, 1.5), (np.nan, 1.5)])
def test_levenberg_marquardt_branches_at_martens_thresholds(rho, factor):
    """ρ < ¼ (or not finite) ⇒ λ·3/2; ρ > ¾ ⇒ λ·2/3; otherwise λ stays (Martens 2010 §4.1)."""
    cfg = hf.HFConfig()
    new = hf.levenberg_marquardt(jnp.asarray(rho if np.isfinite(rho) else -np.inf),
                                 jnp.asarray(2.0), cfg)
    assert np.isclose(float(new), 2.0 * factor, rtol=1e-12)
    assert float(hf.levenberg_marquardt(jnp.asarray(0.1), jnp.asarray(1e-9), cfg)) >= 1e-9
    # the floor: √ε of the dtype λ is kept in (float32: 2⁻¹¹·⁵ ≈ 3.45e-4, float64 ≈ 1.49e-8)
    for dtype, floor in ((jnp.float32, 3.4526698e-4), (jnp.float64, 1.4901161193847656e-8)):
        low = hf.levenberg_marquardt(jnp.asarray(0.9), jnp.asarray(1e-9, dtype), cfg)
        assert low.dtype == dtype and float(low) == pytest.approx(floor, rel=1e-6)
    fixed = hf.HFConfig(min_damping=1e-12)
    assert float(hf.levenberg_marquardt(jnp.asarray(0.9), jnp.asarray(1e-12, jnp.float32),
                                        fixed)) == pytest.approx(1e-12)


def test_armijo_rejects_a_full_step_that_overshoots_uphill():
    """f(x) = x² at x = 1 with p = −2.01: the full step lands at −1.01 (f rises to 1.0201), so
    rate 1 must be refused and 0.8 accepted (f(1 − 1.608) = 0.37 ≤ 1 + 10⁻²·0.8·gᵀp)."""
    opt = hf.hessian_free(Model("mlp", (1, 1), ()), get_loss("squared"))
    objective = lambda x: jnp.sum(x ** 2)  # noqa: E731
    flat, p = jnp.asarray([1.0]), jnp.asarray([-2.01])
    f0, slope = objective(flat), float(2.0 * -2.01)
    rate, f_new, tries, ok = opt._armijo(objective, flat, p, f0, slope, objective(flat + p))
    assert bool(ok) and int(tries) == 1 and np.isclose(float(rate), 0.8)
    assert float(f_new) < float(f0)

"""HF as an optax transformation and the curvature operator for any JAX function.

The references share no code with the products: a plain two-layer function on a *differently
shaped* pytree (nested dicts, weights stored transposed), dense ``jax.hessian`` of the loss value
and ``jax.jacfwd`` of the outputs."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import hflab
from hflab.core.hf import HFConfig, HessianFree
from hflab.core.losses import get_loss, make_batch
from hflab.core.models import Model

from helpers import rel_err, random_targets

SIZES = (5, 7, 3)


def lab_problem(loss_name, seed=0, batch=23):
    model = Model("mlp", SIZES, ("tanh",), "gaussian", 1.0)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.init_params(k1, jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jnp.ones_like(a), params)
    x = jax.random.normal(k2, (batch, SIZES[0]), jnp.float64)
    y = random_targets(loss_name, k3, (batch, SIZES[-1]))
    return model, params, x, y


def flat(tree):
    return ravel_pytree(tree)[0]


def to_nested(lab_params):
    """The same numbers in another pytree: {'layer': {'hidden': {'w_t', 'b'}, 'out': …}}, with
    each weight matrix stored transposed (so the flat order differs from the lab model's)."""
    (w1, b1), (w2, b2) = ((p["W"], p["b"]) for p in lab_params)
    return {"layer": {"hidden": {"w_t": w1.T, "b": b1}, "out": {"w_t": w2.T, "b": b2}}}


def nested_apply(p, x):
    h = jnp.tanh(x @ p["layer"]["hidden"]["w_t"].T + p["layer"]["hidden"]["b"])
    return h @ p["layer"]["out"]["w_t"].T + p["layer"]["out"]["b"]


@pytest.mark.parametrize("loss_name", ["squared", "softmax"])
def test_transform_follows_the_labs_hf_trajectory_on_an_equivalent_mlp(loss_name):
    model, params, x, y = lab_problem(loss_name)
    settings = dict(damping=0.5, max_cg_iters=40)
    lab_hf = HessianFree(model, get_loss(loss_name), HFConfig(**settings))
    batch = make_batch(x, y)
    lab_state = lab_hf.init(params)
    tx = hflab.hessian_free_transform(nested_apply, loss_name, **settings)
    nested = to_nested(params)
    state = tx.init(nested)
    step = jax.jit(lambda p, s: tx.update(None, s, p, batch=(x, y)))
    for _ in range(6):
        params, lab_state, lab_info = lab_hf.update(params, lab_state, batch, batch)
        updates, state = step(nested, state)
        nested = optax.apply_updates(nested, updates)
        assert float(state.damping) == pytest.approx(float(lab_state.damping), rel=1e-9)
        assert float(state.info.rho) == pytest.approx(float(lab_info.rho), rel=1e-6)
        assert int(state.info.cg_iters) == int(lab_info.cg_iters)
    assert rel_err(flat(to_nested(params)), flat(nested)) < 1e-8
    assert float(state.info.loss_after) < float(lab_problem_loss(loss_name, x, y))


def lab_problem_loss(loss_name, x, y):
    """The objective at the problem's starting point (the run must have gone below it)."""
    model, params, _, _ = lab_problem(loss_name)
    return get_loss(loss_name).value(model.apply(params, x), y, jnp.ones(x.shape[0]))


def test_state_keeps_its_structure_so_updates_scan_and_info_is_exposed():
    model, params, x, y = lab_problem("squared")
    tx = hflab.hessian_free_transform(nested_apply, "squared", damping=1.0, max_cg_iters=20)
    nested = to_nested(params)
    state = tx.init(nested)

    def body(carry, _):
        p, s = carry
        u, s = tx.update(None, s, p, batch=(x, y))
        return (optax.apply_updates(p, u), s), s.info.loss_before
    (nested, state), losses = jax.lax.scan(body, (nested, state), None, length=5)
    losses = np.asarray(losses)
    assert np.all(np.diff(losses) < 0), losses          # accepted HF steps only go down
    assert int(state.count) == 5
    assert state.info.cg_residuals.shape == (21,)
    assert np.isfinite(float(state.info.rho))


def test_masked_cases_count_as_absent_and_the_curvature_batch_is_used_for_rho():
    model, params, x, y = lab_problem("squared", batch=20)
    tx = hflab.hessian_free_transform(nested_apply, "squared", damping=1.0, max_cg_iters=30)
    nested = to_nested(params)
    mask = jnp.concatenate([jnp.ones(12), jnp.zeros(8)])
    u_masked, _ = tx.update(None, tx.init(nested), nested, batch=(x, y), mask=mask)
    u_cut, _ = tx.update(None, tx.init(nested), nested, batch=(x[:12], y[:12]))
    assert rel_err(flat(u_masked), flat(u_cut)) < 1e-9
    # ρ on another curvature batch differs from ρ on the gradient batch
    _, s_same = tx.update(None, tx.init(nested), nested, batch=(x, y))
    _, s_other = tx.update(None, tx.init(nested), nested, batch=(x, y),
                           curvature_batch=(x[:5], y[:5]))
    assert abs(float(s_same.info.rho) - float(s_other.info.rho)) > 1e-6


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="unknown HF settings.*'dampng'"):
        hflab.hessian_free_transform(nested_apply, "squared", dampng=1.0)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        hflab.hessian_free_transform(nested_apply, "hinge")
    with pytest.raises(ValueError, match="structural damping needs"):
        hflab.hessian_free_transform(nested_apply, "squared", structural_damping=0.3)
    tx = hflab.hessian_free_transform(nested_apply, "squared")
    _, params, x, y = lab_problem("squared")
    nested = to_nested(params)
    with pytest.raises(ValueError, match="needs batch"):
        tx.update(None, tx.init(nested), nested)
    with pytest.raises(ValueError, match="mask shape"):
        tx.update(None, tx.init(nested), nested, batch=(x, y), mask=jnp.ones(3))


def dense_references(loss_name, x, y, nested):
    """Dense G = Jᵀ (∂²L/∂z²) J and H = ∇²f from jax.jacfwd / jax.hessian of plain functions."""
    flat_p, unravel = ravel_pytree(nested)
    n = x.shape[0]

    def loss_of_z(z):                 # the matching losses written out, averaged over cases
        if loss_name == "squared":
            return 0.5 * jnp.sum((z - y) ** 2) / n
        if loss_name == "logistic":
            return jnp.sum(jnp.logaddexp(0.0, z) - y * z) / n
        return jnp.sum(jax.scipy.special.logsumexp(z, axis=1) - jnp.sum(y * z, axis=1)) / n
    z_of = lambda p: nested_apply(unravel(p), x)  # noqa: E731
    z = z_of(flat_p)
    jac = jax.jacfwd(lambda p: z_of(p).ravel())(flat_p)
    h_out = jax.hessian(lambda zz: loss_of_z(zz.reshape(z.shape)))(z.ravel())
    return jac.T @ h_out @ jac, jax.hessian(lambda p: loss_of_z(z_of(p)))(flat_p)


@pytest.mark.parametrize("loss_name", ["squared", "logistic", "softmax"])
def test_public_curvature_operator_matches_dense_references_on_a_pytree(loss_name):
    _, params, x, y = lab_problem(loss_name, batch=9)
    nested = to_nested(params)
    g_ref, h_ref = dense_references(loss_name, x, y, nested)
    gn = hflab.curvature_operator(nested_apply, loss_name, nested, (x, y))

    @jax.jit
    def dense(p):                   # built inside jit, as the docstring advises for products
        return [hflab.curvature_operator(nested_apply, loss_name, p, (x, y), kind=k).to_dense()
                for k in ("gauss_newton", "hessian")]
    g_dense, h_dense = dense(nested)
    assert rel_err(g_dense, g_ref) < 1e-10
    assert rel_err(h_dense, h_ref) < 1e-10
    # multiply_tree keeps the pytree; multiply_inverse solves the damped system
    v = jax.tree_util.tree_map(jnp.ones_like, nested)
    gv = gn.multiply_tree(v)
    assert jax.tree_util.tree_structure(gv) == jax.tree_util.tree_structure(nested)
    b = jnp.arange(g_ref.shape[0], dtype=jnp.float64) / g_ref.shape[0]
    sol, _ = gn.multiply_inverse(b, 0.1, max_iters=200, tol=1e-14, eps=0.0)
    assert rel_err(sol, np.linalg.solve(np.asarray(g_ref) + 0.1 * np.eye(len(b)), b)) < 1e-7
    top = gn.eigenvalues(k=2, which="LA")
    assert rel_err(np.sort(top), np.sort(np.linalg.eigvalsh(np.asarray(g_ref)))[-2:]) < 1e-8

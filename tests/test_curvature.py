"""Gradient, Hv, Gv, Jacobian, dense matrices and spectra against independent routes (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st
from jax.flatten_util import ravel_pytree

from hflab.core import curvature
from hflab.core.losses import Batch, BoundLoss
from helpers import random_problem, rel_err

ACTS = ["tanh", "logistic", "relu", "linear"]
LOSSES = ["squared", "logistic", "softmax"]

problems = st.builds(
    lambda kind, depth, widths, act, loss, batch, steps, seed: (
        kind, ([widths[0]] + widths[1:depth + 1] + [widths[-1]]) if kind == "mlp"
        else (widths[0], widths[1], widths[-1]), act, loss, batch, steps, seed),
    st.sampled_from(["mlp", "rnn"]), st.integers(0, 2),
    st.lists(st.integers(1, 4), min_size=4, max_size=4), st.sampled_from(ACTS),
    st.sampled_from(LOSSES), st.integers(1, 3), st.integers(1, 4), st.integers(0, 10_000))


def setup(problem):
    kind, sizes, act, loss_name, batch, steps, seed = problem
    if loss_name == "softmax" and sizes[-1] == 1:
        sizes = tuple(sizes[:-1]) + (2,)
    model, params, x, y, mask, loss = random_problem(kind, sizes, act, loss_name, batch, steps, seed)
    f = lambda p: model.apply(p, x)  # noqa: E731
    bound = BoundLoss(loss, y, mask)
    v = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(seed + 1), a.shape,
                                                           jnp.float64), params)
    return model, params, f, bound, v


@settings(max_examples=6, deadline=None, derandomize=True)
@given(problems)
def test_gv_hv_jacobian_match_dense_autodiff(problem):
    model, params, f, bound, v = setup(problem)
    flat_v = ravel_pytree(v)[0]
    fun = lambda p: bound(f(p))  # noqa: E731

    @jax.jit
    def everything(params, v):
        return (curvature.gauss_newton_matrix(f, bound, params),
                ravel_pytree(curvature.gauss_newton_vp(f, bound, params, v))[0],
                curvature.hessian_matrix(fun, params),
                ravel_pytree(curvature.hvp(fun, params, v))[0],
                curvature.jacobian_matrix(f, params),
                jnp.ravel(curvature.jacobian_vp(f, params, v)))

    g_dense, gv, h_dense, hv, jac, jv = everything(params, v)
    assert rel_err(gv, g_dense @ flat_v) <= 1e-10
    assert rel_err(hv, h_dense @ flat_v) <= 1e-10
    assert rel_err(jv, jac @ flat_v) <= 1e-10

    # G is symmetric positive semi-definite
    assert np.allclose(g_dense, g_dense.T, rtol=0, atol=1e-12 * max(1.0, np.abs(g_dense).max()))
    assert np.linalg.eigvalsh(np.asarray(g_dense)).min() >= -1e-10 * max(1.0, np.abs(g_dense).max())


@settings(max_examples=5, deadline=None, derandomize=True)
@given(problems)
def test_products_match_central_finite_differences(problem):
    model, params, f, bound, v = setup(problem)
    fun = lambda p: bound(f(p))  # noqa: E731
    flat_v = ravel_pytree(v)[0]

    @jax.jit
    def autodiff(params, v):
        return (ravel_pytree(curvature.grad(fun, params))[0],
                ravel_pytree(curvature.hvp(fun, params, v))[0],
                jnp.ravel(curvature.jacobian_vp(f, params, v)),
                ravel_pytree(curvature.gauss_newton_vp(f, bound, params, v))[0],
                curvature.output_hessian_matrix(bound, f(params)))

    g, hv, jv, gv, h_out = autodiff(params, v)
    assert rel_err(g, curvature.fd_gradient(fun, params, 1e-6)) <= 1e-6
    assert rel_err(hv, jax.jit(lambda p, v: curvature.fd_hvp(fun, p, v, 1e-5))(params, v)) <= 1e-6
    assert rel_err(jv, jnp.ravel(jax.jit(lambda p, v: curvature.fd_jvp(f, p, v))(params, v))) <= 1e-6
    # Gv through the finite-difference Jacobian and the exact output-space Hessian
    jac_fd = curvature.fd_jacobian_matrix(f, params, 1e-6)
    assert rel_err(gv, jac_fd.T @ (h_out @ (jac_fd @ flat_v))) <= 1e-6


@settings(max_examples=6, deadline=None, derandomize=True)
@given(problems)
def test_jacobian_adjoint_identity(problem):
    """⟨u, J v⟩ = ⟨Jᵀ u, v⟩."""
    model, params, f, bound, v = setup(problem)
    z = f(params)
    u = jax.random.normal(jax.random.PRNGKey(7), z.shape, jnp.float64)
    jv, jtu = jax.jit(lambda p, v, u: (curvature.jacobian_vp(f, p, v),
                                       curvature.jacobian_tvp(f, p, u)))(params, v, u)
    lhs = jnp.vdot(u, jv)
    rhs = jnp.vdot(ravel_pytree(jtu)[0], ravel_pytree(v)[0])
    assert abs(float(lhs - rhs)) <= 1e-10 * max(1.0, abs(float(lhs)))


def test_linearised_gauss_newton_reuses_one_linearisation():
    _, params, f, bound, v = setup(("mlp", (3, 4, 2), "tanh", "softmax", 3, 1, 3))
    z, gv = curvature.linearize_gauss_newton(f, bound, params)
    assert np.allclose(z, f(params))
    a = ravel_pytree(gv(v))[0]
    b = ravel_pytree(curvature.gauss_newton_vp(f, bound, params, v))[0]
    assert rel_err(a, b) <= 1e-12
    # the product is linear in v
    two_v = jax.tree_util.tree_map(lambda t: 2 * t, v)
    assert rel_err(ravel_pytree(gv(two_v))[0], 2 * a) <= 1e-12


def test_generic_callable_loss_matches_exact_output_hessian():
    _, params, f, bound, v = setup(("mlp", (2, 3, 3), "logistic", "logistic", 4, 1, 5))
    plain = lambda z: bound(z)  # noqa: E731  (no hessian_vp attribute: autodiff route)
    a = ravel_pytree(curvature.gauss_newton_vp(f, plain, params, v))[0]
    b = ravel_pytree(curvature.gauss_newton_vp(f, bound, params, v))[0]
    assert rel_err(a, b) <= 1e-12


def test_empirical_fisher_matches_dense_outer_products():
    model, params, x, y, mask, loss = random_problem("mlp", (3, 3, 2), "tanh", "squared", 5, 1, 11)

    def case_loss(p, xi, yi, mi):
        return loss.per_case(model.apply(p, xi[None]), yi[None], mi[None])[0]
    mask = mask.at[4].set(0.0)                    # a padding case: N counts real cases only
    op = curvature.CurvatureOperator(model.apply, loss, params, Batch(x, y, mask), kind="fisher")
    fv = op.multiply(ravel_pytree(params)[0])
    gs = np.stack([ravel_pytree(jax.grad(case_loss)(params, x[i], y[i], mask[i]))[0]
                   for i in range(4)])
    dense = gs.T @ gs / 4
    assert rel_err(fv, dense @ ravel_pytree(params)[0]) <= 1e-10


def test_extreme_eigenvalues_match_numpy():
    _, params, f, bound, _ = setup(("mlp", (3, 5, 2), "tanh", "squared", 6, 1, 2))
    fun = lambda p: bound(f(p))  # noqa: E731
    h = np.asarray(curvature.hessian_matrix(fun, params))
    full = np.linalg.eigvalsh(h)
    op_h = curvature.for_function(f, bound, params, kind="hessian")
    mv, n = op_h.multiply, op_h.n
    top = curvature.extreme_eigenvalues(mv, n, k=3, which="LA")
    bottom = curvature.extreme_eigenvalues(mv, n, k=3, which="SA")
    assert np.allclose(top, full[::-1][:3], rtol=1e-7, atol=1e-9)
    assert np.allclose(bottom, full[:3], rtol=1e-7, atol=1e-9)
    g = np.asarray(curvature.gauss_newton_matrix(f, bound, params))
    mvg = curvature.for_function(f, bound, params).multiply
    assert np.allclose(curvature.extreme_eigenvalues(mvg, n, k=n, which="LA"),
                       np.linalg.eigvalsh(g)[::-1], atol=1e-9)


def test_extreme_eigenpairs_vectors_match_dense_hessian():
    """Each returned vector is the dense Hessian's eigenvector of its value (up to sign; checked
    where the value is simple), in the order ``which`` asks for — by Lanczos and by the dense
    route (k ≥ n − 1) — and satisfies ``H v = w v``."""
    _, params, f, bound, _ = setup(("mlp", (3, 5, 2), "tanh", "squared", 6, 1, 3))
    h = np.asarray(curvature.hessian_matrix(lambda p: bound(f(p)), params))
    full_w, full_v = np.linalg.eigh(h)
    op_h = curvature.for_function(f, bound, params, kind="hessian")
    n = op_h.n
    for which, k, ref in (("SA", 3, np.arange(3)), ("LA", 2, np.arange(n)[::-1][:2]),
                          ("SA", n, np.arange(n))):
        w, v = curvature.extreme_eigenpairs(op_h.multiply, n, k=k, which=which)
        assert v.shape == (n, k)
        assert np.allclose(w, full_w[ref], rtol=1e-7, atol=1e-9)
        for i in range(k):
            assert np.linalg.norm(h @ v[:, i] - w[i] * v[:, i]) < 1e-7 * max(1.0, abs(w[i]))
            gap = np.min(np.abs(np.delete(full_w, ref[i]) - full_w[ref[i]]))
            if gap > 1e-4:
                assert abs(abs(v[:, i] @ full_v[:, ref[i]]) - 1.0) < 1e-6, (which, i)


def test_largest_magnitude_eigenvalues_are_ordered_by_magnitude():
    d = np.array([-5.0, 1.0, 2.0, 0.5])
    mv = lambda v: jnp.asarray(d) * v  # noqa: E731
    assert np.allclose(curvature.extreme_eigenvalues(mv, 4, k=3, which="LM"), [-5.0, 2.0, 1.0])
    big = np.concatenate([[-5.0], np.linspace(0.1, 1.0, 30)])
    mvb = lambda v: jnp.asarray(big) * v  # noqa: E731
    assert np.allclose(curvature.extreme_eigenvalues(mvb, big.size, k=2, which="LM"), [-5.0, 1.0])


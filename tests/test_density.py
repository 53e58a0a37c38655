"""The curvature instrument against dense references built here (``jax.hessian`` of plain
functions, ``numpy.linalg.eigvalsh``): SLQ moments, Hutchinson trace and diagonal, per-block top
eigenvalues and traces, loss slices and HF's quadratic model along its step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import hflab
from hflab.core import curvature, density, slices
from hflab.core.hf import HessianFree, HFConfig
from hflab.core.losses import Batch, get_loss
from hflab.core.models import Model

RNG = np.random.default_rng(7)
X = jnp.asarray(RNG.standard_normal((12, 3)))
Y = jnp.asarray(RNG.standard_normal((12, 2)))


def plain_net(p, x):
    return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def plain_loss(z):
    return 0.5 * jnp.sum((z - Y) ** 2) / X.shape[0]


PARAMS = {"W1": jnp.asarray(RNG.standard_normal((3, 4))), "b1": jnp.asarray(RNG.standard_normal(4)),
          "W2": jnp.asarray(RNG.standard_normal((4, 2))), "b2": jnp.asarray(RNG.standard_normal(2))}
FLAT, UNRAVEL = ravel_pytree(PARAMS)
N = FLAT.size                                                      # 30 parameters


def dense_hessian():
    return np.asarray(jax.hessian(lambda f: plain_loss(plain_net(UNRAVEL(f), X)))(FLAT))


def operator(kind="hessian"):
    return curvature.for_function(lambda p: plain_net(p, X), plain_loss, PARAMS, kind=kind)


def hutchinson_sd(a: np.ndarray) -> float:
    """The standard deviation of one Rademacher sample vᵀAv: sqrt(2 Σ_{i≠j} A_ij²)."""
    off = a - np.diag(np.diag(a))
    return float(np.sqrt(2.0 * np.sum(off ** 2)))


def test_slq_with_n_steps_reproduces_the_first_two_moments():
    h = dense_hessian()
    lam = np.linalg.eigvalsh(h)
    probes = 300
    quad = density.slq_quadrature(operator(), num_probes=probes, num_steps=N, seed=1)
    assert quad.nodes.shape == (probes, N)
    np.testing.assert_allclose(quad.weights.sum(axis=1), 1.0, rtol=1e-10)
    # every probe's quadrature is exact (m = n): its nodes are the eigenvalues it sees
    assert np.all(quad.nodes.min(axis=1) >= lam[0] - 1e-8)
    assert np.all(quad.nodes.max(axis=1) <= lam[-1] + 1e-8)
    for k, mat in ((1, h), (2, h @ h)):
        exact = np.trace(mat) / N
        bound = 4.0 * hutchinson_sd(mat) / N / np.sqrt(probes)     # four standard errors
        assert abs(quad.moment(k) - exact) <= bound, (k, quad.moment(k), exact, bound)
        assert bound < 0.5 * abs(exact)                          # the check has teeth


def test_density_integrates_to_one_and_its_mean_is_the_first_moment():
    quad = density.slq_quadrature(operator(), num_probes=8, num_steps=12)
    grid, dens = density.density_on_grid(quad, num_points=4000)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-4)
    assert np.trapezoid(grid * dens, grid) == pytest.approx(quad.moment(1), rel=1e-3, abs=1e-6)
    g2, d2 = hflab.spectral_density(operator(), num_probes=8, num_steps=12)
    assert d2.shape == g2.shape and np.all(d2 >= 0)


@pytest.mark.parametrize("kind", ["hessian", "gauss_newton"])
def test_hutchinson_trace_is_within_its_statistical_bound(kind):
    op = operator(kind)
    mat = np.asarray(jax.vmap(op.multiply)(jnp.eye(N)).T)
    if kind == "gauss_newton":        # the independent route: Jᵀ H_L J from jax.jacfwd/hessian
        jac = np.asarray(jax.jacfwd(lambda f: plain_net(UNRAVEL(f), X).ravel())(FLAT))
        np.testing.assert_allclose(mat, jac.T @ jac / X.shape[0], atol=1e-12)
    else:
        np.testing.assert_allclose(mat, dense_hessian(), atol=1e-12)
    probes = 400
    est, sem = hflab.hutchinson_trace(op, num_probes=probes, seed=3, return_error=True)
    assert hflab.hutchinson_trace(op, num_probes=probes, seed=3) == est       # a plain number
    bound = 4.0 * hutchinson_sd(mat) / np.sqrt(probes)
    assert abs(est - np.trace(mat)) <= bound
    assert sem == pytest.approx(hutchinson_sd(mat) / np.sqrt(probes), rel=0.3)
    # XTrace with n probes sees the whole space: exact
    exact = density.hutchinson_trace(op, num_probes=N, method="xtrace")
    assert exact == pytest.approx(np.trace(mat), rel=1e-8, abs=1e-10)
    diag, dsem = density.hutchinson_diagonal(op, num_probes=probes, seed=4, return_error=True)
    assert dsem.shape == diag.shape == (N,)
    row_sd = np.sqrt(np.sum((mat - np.diag(np.diag(mat))) ** 2, axis=1))   # per entry
    assert np.all(np.abs(diag - np.diag(mat)) <= 5.0 * row_sd / np.sqrt(probes) + 1e-12)


def test_block_top_eigenvalues_and_traces_match_the_dense_blocks():
    h = dense_hessian()
    # ravel_pytree orders a dict's keys alphabetically: W1, W2, b1, b2
    names = sorted(PARAMS)
    sizes = [PARAMS[k].size for k in names]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    blocks = [(k, int(a), int(b)) for k, a, b in zip(names, starts[:-1], starts[1:])]
    probes = 400
    stats = density.block_statistics(operator(), blocks, num_probes=probes, num_steps=N, seed=2)
    for s, (name, a, b) in zip(stats, blocks):
        block = h[a:b, a:b]
        assert s.name == name and s.size == b - a
        assert s.top_eigenvalue == pytest.approx(np.linalg.eigvalsh(block)[-1], rel=1e-8,
                                                 abs=1e-10)
        assert abs(s.trace - np.trace(block)) <= 4.0 * hutchinson_sd(block) / np.sqrt(probes) \
            + 1e-12
    with pytest.raises(ValueError, match="not inside"):
        density.block_statistics(operator(), [("x", 20, 40)])


def test_bad_counts_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="num_probes = 0"):
        density.slq_quadrature(operator(), num_probes=0)
    with pytest.raises(ValueError, match="method = 'hutch'"):
        density.hutchinson_trace(operator(), method="hutch")
    with pytest.raises(ValueError, match="XTrace needs"):
        density.hutchinson_trace(operator(), num_probes=1, method="xtrace")


def test_loss_slice_and_plane_equal_the_loss_at_the_moved_parameters():
    def f(p):
        return plain_loss(plain_net(p, X))
    d1 = jnp.asarray(RNG.standard_normal(N))
    d2 = jnp.asarray(RNG.standard_normal(N))
    alphas = np.array([-1.0, -0.3, 0.0, 0.7, 2.0])
    got = hflab.loss_slice(f, PARAMS, d1, alphas)
    want = [float(plain_loss(plain_net(UNRAVEL(FLAT + a * d1), X))) for a in alphas]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    betas = np.array([-0.5, 0.25])
    plane = slices.loss_plane(f, PARAMS, UNRAVEL(d1), d2, alphas, betas)
    assert plane.shape == (2, 5)
    assert plane[1, 3] == pytest.approx(float(plain_loss(plain_net(
        UNRAVEL(FLAT + 0.7 * d1 + 0.25 * d2), X))), rel=1e-12)
    with pytest.raises(ValueError, match="direction of 3 entries"):
        slices.loss_slice(f, PARAMS, jnp.ones(3), alphas)


def test_slice_directions_are_the_top_hessian_eigenvectors_and_descent():
    h = dense_hessian()
    g = np.asarray(jax.grad(lambda f: plain_loss(plain_net(UNRAVEL(f), X)))(FLAT))
    dirs = slices.slice_directions(operator().multiply, g, k=2)
    w, v = np.linalg.eigh(h)
    for i, name in enumerate(["eigenvector 1", "eigenvector 2"]):
        d, lam = dirs[name]
        assert lam == pytest.approx(w[-1 - i], rel=1e-6)
        assert abs(abs(d @ v[:, -1 - i]) - 1.0) < 1e-5 and d @ g <= 0
    np.testing.assert_allclose(dirs["−gradient"][0], -g / np.linalg.norm(g), rtol=1e-12)


def test_quadratic_model_along_hf_step_equals_the_dense_model_and_rho_is_its_gap():
    model = Model(kind="mlp", sizes=(3, 4, 2), activations=("tanh",), init="gaussian")
    params = model.init_params(jax.random.PRNGKey(0), jnp.float64)
    loss = get_loss("squared")
    batch = Batch(X, Y, jnp.ones(X.shape[0]))
    hf = HessianFree(model, loss, HFConfig(damping=1.0))
    prop = jax.jit(hf.proposal)(params, hf.init(params), batch)
    flat, unravel = ravel_pytree(params)

    def f(v):                                        # the loss written here, not the lab's
        z = model.apply(unravel(v), X)
        return 0.5 * jnp.sum((z - Y) ** 2) / X.shape[0]
    g = np.asarray(jax.grad(f)(flat))
    jac = np.asarray(jax.jacfwd(lambda v: model.apply(unravel(v), X).ravel())(flat))
    gn = jac.T @ jac / X.shape[0]
    p = np.asarray(prop["step"])
    np.testing.assert_allclose(prop["grad"], g, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(prop["curvature_step"], gn @ p, rtol=1e-8, atol=1e-12)
    alphas = np.linspace(-0.5, 2.0, 6)
    np.testing.assert_allclose(slices.quadratic_model(prop["grad"], p, prop["curvature_step"],
                                                      alphas),
                               alphas * (g @ p) + 0.5 * alphas ** 2 * (p @ gn @ p), rtol=1e-8)
    actual = float(f(flat + p) - f(flat))
    assert float(prop["rho"]) == pytest.approx(actual / (g @ p + 0.5 * p @ gn @ p), rel=1e-8)
    assert float(prop["rho"]) > 0                   # the step does go downhill


def test_lanczos_breakdown_on_invariant_krylov_spaces_keeps_the_quadrature_exact():
    """The identity (Krylov space of dimension 1) and a rank-2 matrix with more steps than its
    rank: no NaN, the nodes that carry weight are true eigenvalues, the moments are exact."""
    quad = density.slq_quadrature(jnp.eye(6), num_probes=3, num_steps=6)
    assert np.all(np.isfinite(quad.nodes)) and np.all(np.isfinite(quad.weights))
    carried = quad.nodes[quad.weights > 1e-12]
    np.testing.assert_allclose(carried, 1.0, atol=1e-12)
    assert quad.moment(1) == pytest.approx(1.0, abs=1e-12)
    u = RNG.standard_normal((10, 2))
    low = u @ np.diag([3.0, 5.0]) @ u.T
    quad = density.slq_quadrature(jnp.asarray(low), num_probes=4, num_steps=8, seed=5)
    assert np.all(np.isfinite(quad.nodes))
    lam = np.linalg.eigvalsh(low)
    carried = quad.nodes[quad.weights > 1e-10]
    assert np.all(np.min(np.abs(carried[:, None] - lam[None, :]), axis=1) < 1e-8 * lam[-1])

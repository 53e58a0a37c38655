"""The origin notebook's hand derivations against autodiff and finite differences, and its
printed numbers."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st
from jax.flatten_util import ravel_pytree

from hflab.view import analysis
from hflab.core import curvature, manual
from hflab.core.models import mlp_apply, rnn_apply
from helpers import rel_err


def test_quadratic_seed_values_exactly_as_printed():
    """The hand-written quadratic and the Derivations page's autodiff route (analysis), not a
    lambda written here: f = 40, ∇f = [11, 16, 19, 22], H = A."""
    x = np.ones(4)
    assert manual.quadratic_value(x) == 40.0
    assert list(manual.quadratic_gradient(x)) == [11.0, 16.0, 19.0, 22.0]
    assert np.array_equal(manual.quadratic_hessian(), manual.SEED_A)
    page = analysis.derivation_quadratic(x)
    assert page["f"] == 40.0
    assert list(page["grad_autodiff"]) == [11.0, 16.0, 19.0, 22.0]
    assert np.array_equal(page["hessian_autodiff"], manual.SEED_A)


def test_reverse_mode_of_a_vector_sums_rows_not_the_jacobian():
    """The notebook's pitfall: 'd²f/dx²' by naive reverse mode gave [10, 14, 16, 18]; for the
    3-3-3 net's dh2/dz1 = W2 it gives W2's column sums [0.6, 1.5, 2.4]."""
    page = analysis.derivation_quadratic()
    assert list(page["naive_reverse_mode"]) == [10.0, 14.0, 16.0, 18.0]
    assert list(page["naive_reverse_mode"]) == list(manual.SEED_A.sum(axis=0))
    jac = analysis.derivation_jacobian()
    w2 = manual.seed_mlp()[1]
    assert np.allclose(jac["jacobian_autodiff"], w2, rtol=1e-12)
    assert np.allclose(jac["naive_reverse_mode"], [0.6, 1.5, 2.4], rtol=1e-12)
    assert np.allclose(manual.reverse_mode_of_vector(lambda z: jnp.asarray(w2) @ z, np.ones(3)),
                       w2.sum(axis=0), rtol=1e-12)


def test_seed_mlp_printed_values_in_float32():
    """y = 2.7463741 and dy/dx = [0.00771682, 0.00966905, 0.01162129] (printed in float32), from
    the Derivations page's float32 autodiff route and from the hand-written pass."""
    page = analysis.derivation_forward(np.ones(3))
    assert f"{page['y_float32']:.7f}" == "2.7463741"
    assert [f"{v:.8f}" for v in page["dydx_float32"]] == ["0.00771682", "0.00966905",
                                                          "0.01162129"]
    # in float64 the value is 2.74637389, within one float32 rounding (≈ 2.4e-7) of the print
    assert abs(manual.seed_mlp_output(np.ones(3)) - 2.7463741) < 2.5e-7
    assert abs(page["y_float64"] - manual.seed_mlp_output(np.ones(3))) < 1e-14
    # the hand-written backward pass (float64) agrees to the printed digits
    assert np.allclose(manual.seed_mlp_input_gradient(np.ones(3)),
                       [0.00771682, 0.00966905, 0.01162129], atol=1e-8)


def test_seed_w1_block_of_bishop_hessian_equals_autodiff():
    w1, w2, b1, b2 = manual.seed_mlp()
    x = np.ones(3)
    net = manual.GlobalNet([w1, w2], [b1, b2], ["logistic", "logistic"])
    h = net.hessian(x)
    for layer, wl in ((1, w1), (2, w2)):
        idx = net.layer_weight_indices(layer)

        def f(w):
            ws = [jnp.asarray(w1), jnp.asarray(w2)]
            ws[layer - 1] = w
            z1 = jax.nn.sigmoid(ws[0] @ x + b1)
            return jnp.sum(jax.nn.sigmoid(ws[1] @ z1 + b2))
        auto = np.asarray(jax.hessian(f)(jnp.asarray(wl))).reshape(9, 9)
        assert np.abs(h[np.ix_(idx, idx)] - auto).max() <= 1e-15 + 1e-10 * np.abs(auto).max()
    # the printed (rounded) W1 block: -0.004 / -0.007 / -0.005 on the diagonal blocks
    idx = net.layer_weight_indices(1)
    blocks = np.round(h[np.ix_(idx, idx)], 3)
    assert blocks[0, 0] == -0.004 and blocks[3, 3] == -0.007 and blocks[6, 6] == -0.005


nets = st.builds(lambda sizes, acts, out_act, seed: (sizes, acts[:len(sizes) - 2], out_act, seed),
                 st.lists(st.integers(1, 4), min_size=2, max_size=5),
                 st.lists(st.sampled_from(["logistic", "tanh"]), min_size=3, max_size=3),
                 st.sampled_from(["logistic", "tanh", "linear"]), st.integers(0, 1000))


@settings(max_examples=8, deadline=None, derandomize=True)
@given(nets)
def test_bishop_hessian_matches_autodiff_and_finite_differences(net):
    sizes, acts, out_act, seed = net
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(b) for b in sizes[1:]]
    x = rng.standard_normal(sizes[0])
    c = rng.standard_normal(sizes[-1])
    params = [{"W": jnp.asarray(w.T), "b": jnp.asarray(b)} for w, b in zip(ws, bs)]
    out_fn = {"logistic": jax.nn.sigmoid, "tanh": jnp.tanh, "linear": lambda a: a}[out_act]
    fun = lambda p: jnp.dot(jnp.asarray(c), out_fn(mlp_apply(p, jnp.asarray(x), acts)))  # noqa: E731
    bishop = manual.bishop_param_hessian(ws, bs, list(acts) + [out_act], x, c)
    auto = np.asarray(jax.jit(lambda p: curvature.hessian_matrix(fun, p))(params))
    assert rel_err(bishop, auto) <= 1e-10
    fd = np.asarray(curvature.fd_hessian_matrix(fun, params, 1e-5))
    assert rel_err(bishop, fd) <= 1e-6
    assert np.allclose(bishop, bishop.T, atol=1e-14)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 5),
       st.integers(1, 3), st.integers(0, 1000))
def test_bptt_matches_autodiff_and_finite_differences(n_in, n_h, n_out, steps, batch, seed):
    rng = np.random.default_rng(seed)
    params = {"W_in": rng.standard_normal((n_in, n_h)), "W_rec": rng.standard_normal((n_h, n_h)),
              "b": rng.standard_normal(n_h), "W_out": rng.standard_normal((n_h, n_out)),
              "b_out": rng.standard_normal(n_out)}
    x = rng.standard_normal((batch, steps, n_in))
    target = rng.standard_normal((batch, steps, n_out))
    # squared-error loss: dL/dy = y − target
    _, y = manual.rnn_forward(params, x)
    manual_g = manual.bptt_gradients(params, x, y - target)
    jparams = jax.tree_util.tree_map(jnp.asarray, params)
    loss = lambda p: 0.5 * jnp.sum((rnn_apply(p, jnp.asarray(x)) - target) ** 2)  # noqa: E731
    auto_g = jax.jit(jax.grad(loss))(jparams)
    flat_manual = ravel_pytree(jax.tree_util.tree_map(jnp.asarray, manual_g))[0]
    assert rel_err(flat_manual, ravel_pytree(auto_g)[0]) <= 1e-10
    assert rel_err(flat_manual, curvature.fd_gradient(loss, jparams, 1e-6)) <= 1e-6


def test_bptt_of_the_notebook_objective_sum_of_outputs():
    """J = Σ_t Σ_k y_t,k as in the notebook: dJ/dW_out has identical columns (printed pattern)."""
    rng = np.random.RandomState(1234)
    params = {"W_in": rng.randn(3, 3), "W_rec": rng.randn(3, 3), "b": np.ones(3),
              "W_out": rng.randn(3, 2), "b_out": rng.randn(2)}
    x = rng.randn(1, 3, 3)
    g = manual.bptt_gradients(params, x, np.ones((1, 3, 2)))
    assert np.allclose(g["W_out"][:, 0], g["W_out"][:, 1])
    auto = jax.grad(lambda p: jnp.sum(rnn_apply(p, jnp.asarray(x))))(
        jax.tree_util.tree_map(jnp.asarray, params))
    for k in params:
        assert rel_err(g[k], auto[k]) <= 1e-12

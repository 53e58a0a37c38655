"""Martens CG: exactness, quadratic-model trace, stopping rule, warm start, saves, negative curvature."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hflab.core import cg


def spd(n, seed, cond=100.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.logspace(0, -math.log10(cond), n)
    return q @ np.diag(eig) @ q.T, rng.standard_normal(n)


def run(a, b, **kw):
    a_j = jnp.asarray(a)
    return jax.jit(lambda b: cg.solve_flat(lambda v: a_j @ v, b, **kw))(jnp.asarray(b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_solve_on_spd_systems(seed):
    a, b = spd(30, seed, cond=1e3)
    x, info = run(a, b, max_iters=200, tol=1e-13, eps=0.0)  # eps=0: only the residual stops it
    assert np.linalg.norm(x - np.linalg.solve(a, b)) / np.linalg.norm(np.linalg.solve(a, b)) < 1e-9
    assert cg.STOP_REASONS[int(info.stop_reason)] == "residual_tolerance"


def test_pytree_interface_and_preconditioner():
    a, b = spd(12, 3, cond=1e4)
    d = np.diag(a).copy()
    tree_b = {"u": jnp.asarray(b[:5]), "w": jnp.asarray(b[5:]).reshape(7, 1)}
    a_j = jnp.asarray(a)

    def mv(t):
        v = jnp.concatenate([t["u"], t["w"].ravel()])
        out = a_j @ v
        return {"u": out[:5], "w": out[5:].reshape(7, 1)}

    def pre(t):
        return {"u": t["u"] / d[:5], "w": t["w"] / d[5:].reshape(7, 1)}
    x, info = cg.solve(mv, tree_b, precond=pre, max_iters=100)
    flat = np.concatenate([np.asarray(x["u"]), np.asarray(x["w"]).ravel()])
    assert np.allclose(flat, np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def test_quadratic_trace_decreases_monotonically_and_is_phi():
    a, b = spd(60, 4, cond=1e4)
    x, info = run(a, b, max_iters=60, tol=0.0)
    it = int(info.iterations)
    phis = np.asarray(info.quad_values)[:it + 1]
    assert it > 20
    assert np.all(np.diff(phis) <= 1e-12 * np.abs(phis).max())
    assert np.all(np.isnan(np.asarray(info.quad_values)[it + 1:]))
    # the last φ equals ½xᵀAx − bᵀx computed directly
    xn = np.asarray(x)
    assert np.isclose(phis[-1], 0.5 * xn @ a @ xn - b @ xn, rtol=1e-10)
    # residual trace is ‖b − A x_i‖ at the end
    assert np.isclose(np.asarray(info.residual_norms)[it], np.linalg.norm(b - a @ xn), rtol=1e-6)


def martens_rule(phis, i, eps=cg.MARTENS_EPS):
    k = max(10, math.ceil(0.1 * i))
    return i > k and phis[i] < 0 and (phis[i] - phis[i - k]) / phis[i] < k * eps


def test_relative_progress_rule_stops_at_the_first_iteration_it_holds():
    # very ill-conditioned: progress stalls long before the residual is small
    a, b = spd(400, 5, cond=1e4)   # converges slowly enough for k to grow past 10
    x, info = run(a, b, max_iters=250, tol=0.0)
    it = int(info.iterations)
    phis = np.asarray(info.quad_values)
    assert cg.STOP_REASONS[int(info.stop_reason)] == "relative_progress"
    assert it < 250
    assert martens_rule(phis, it)
    assert not any(martens_rule(phis, i) for i in range(1, it))
    # with a 100x stricter ε the solver must go on longer
    _, strict = run(a, b, max_iters=250, tol=0.0, eps=5e-6)
    assert int(strict.iterations) > it


def test_warm_start_phi_and_fewer_iterations():
    a, b = spd(50, 6, cond=1e3)
    exact = np.linalg.solve(a, b)
    x0 = exact + 1e-3 * np.random.default_rng(0).standard_normal(50)
    _, cold = run(a, b, max_iters=250, tol=1e-10, eps=0.0)
    x, warm = run(a, b, x0=jnp.asarray(x0), max_iters=250, tol=1e-10, eps=0.0)
    assert np.isclose(float(warm.quad_values[0]), 0.5 * x0 @ a @ x0 - b @ x0, rtol=1e-12)
    assert int(warm.iterations) < int(cold.iterations)
    assert np.allclose(x, exact, atol=1e-8)
    # starting at the exact solution needs no iteration at all
    _, at_solution = run(a, b, x0=jnp.asarray(exact), max_iters=250, tol=1e-8)
    assert int(at_solution.iterations) == 0


def test_save_schedule_is_ceil_5_times_1_3_to_the_j():
    expected = sorted({math.ceil(5 * 1.3 ** j) for j in range(40) if math.ceil(5 * 1.3 ** j) <= 250})
    assert list(cg.save_schedule(250)) == expected
    assert list(cg.save_schedule(250)[:8]) == [5, 7, 9, 11, 15, 19, 25, 32]


def test_saved_iterates_are_the_iterates_at_those_iterations():
    a, b = spd(80, 7, cond=1e6)
    _, info = run(a, b, max_iters=45, tol=0.0, eps=0.0)
    saved = np.asarray(info.saved_iterates)
    iters = np.asarray(info.saved_iters)
    assert list(iters[iters >= 0]) == [5, 7, 9, 11, 15, 19, 25, 32, 41]
    for slot, i in enumerate(iters[iters >= 0]):
        x_i, info_i = run(a, b, max_iters=int(i), tol=0.0, eps=0.0)
        assert int(info_i.iterations) == i
        assert np.allclose(saved[slot], x_i, rtol=1e-10, atol=1e-12)


def test_backtrack_candidates_end_with_the_final_iterate():
    a, b = spd(80, 8, cond=1e6)
    x, info = run(a, b, max_iters=20, tol=0.0, eps=0.0)
    iterates, iters, count = cg.backtrack_candidates(info, x)
    # schedule ≤ 20 is 5, 7, 9, 11, 15, 19: six saved iterates, then the final x_20
    assert int(count) == 7
    assert list(np.asarray(iters)[:7]) == [5, 7, 9, 11, 15, 19, 20]
    assert np.array_equal(np.asarray(iterates)[6], np.asarray(x))
    assert np.array_equal(np.asarray(iterates)[:6], np.asarray(info.saved_iterates)[:6])


def test_negative_curvature_stops_at_once():
    a = np.diag([-1.0, 1.0, 2.0])
    x, info = run(a, np.array([1.0, 0.0, 0.0]), max_iters=50)
    assert cg.STOP_REASONS[int(info.stop_reason)] == "negative_curvature"
    assert int(info.iterations) == 0
    assert np.all(np.asarray(x) == 0)
    # indefinite system: some positive steps, then the non-positive direction ends CG
    a2 = np.diag([3.0, 2.0, 1.0, -0.5])
    x2, info2 = run(a2, np.ones(4), max_iters=50)
    assert cg.STOP_REASONS[int(info2.stop_reason)] == "negative_curvature"
    assert 1 <= int(info2.iterations) < 4
    assert np.all(np.isfinite(np.asarray(x2)))
    phis = np.asarray(info2.quad_values)[:int(info2.iterations) + 1]
    assert np.all(np.diff(phis) < 0)


def test_whole_solve_is_one_compiled_program():
    a, b = spd(20, 9)
    a_j = jnp.asarray(a)
    lowered = jax.jit(lambda b: cg.solve_flat(lambda v: a_j @ v, b, max_iters=50)).lower(jnp.asarray(b))
    assert "while" in lowered.as_text()

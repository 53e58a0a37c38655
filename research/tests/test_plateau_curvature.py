"""The plateau-curvature benchmark measures what it says: its Hessian and Gauss-Newton spectra
match dense matrices built by another route (``jax.hessian`` of the plain loss, ``jax.jacfwd``
of the outputs with the loss's own output Hessian), and its quadratic-model check holds at small
steps."""
import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from research import plateau_curvature
from hflab.experiment import build, run as run_loop

SETTINGS = dict(n_train=400, grad_batch=200, layers="5", dtype="float64")
N_SEQ = 60


@pytest.fixture(scope="module")
def case():
    runs = []

    def recording_run(cfg, **kw):            # keep the run's parameters and config
        out = run_loop(cfg, **kw)
        runs.append((cfg, out.params))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plateau_curvature, "run_loop", recording_run)
        record = plateau_curvature.measure("xor", 8, 1, 3, n_sequences=N_SEQ, k=3,
                                           settings=SETTINGS, tol=1e-10)
    (cfg, params), = runs
    built = build(cfg)
    flat, unravel = ravel_pytree(params)
    tr = built.task.train
    x, y, mask = tr.x[:N_SEQ], tr.y[:N_SEQ], tr.mask[:N_SEQ]

    def loss_of_outputs(z):
        return built.loss.value(z, y, mask)

    def outputs(p):
        return built.model.apply(unravel(p), x)

    hessian = np.asarray(jax.jit(jax.hessian(lambda p: loss_of_outputs(outputs(p))))(flat))
    z = outputs(flat)
    jac = np.asarray(jax.jit(jax.jacfwd(outputs))(flat)).reshape(z.size, flat.size)
    h_out = np.asarray(jax.hessian(loss_of_outputs)(z)).reshape(z.size, z.size)
    return record, hessian, jac.T @ h_out @ jac


def test_spectra_match_dense_matrices(case):
    record, hessian, gauss_newton = case
    assert record["n_params"] == hessian.shape[0] == 2 * 5 + 25 + 5 + 5 + 1
    w_h = np.linalg.eigvalsh(0.5 * (hessian + hessian.T))
    w_g = np.linalg.eigvalsh(0.5 * (gauss_newton + gauss_newton.T))
    assert np.allclose(record["hessian_smallest"], w_h[:3], rtol=1e-6, atol=1e-10)
    assert np.allclose(record["gauss_newton_largest"], w_g[::-1][:3], rtol=1e-6, atol=1e-10)
    assert record["hessian_smallest"][0] < 0 < record["gauss_newton_largest"][-1]


def test_quadratic_model_holds_at_small_steps(case):
    """At t = 10⁻³ along an eigenvector the loss change is ± t·gᵀv + ½t²w up to a third-order
    term, measured against the two terms' size (they may cancel); a wrong sign of the slope, a
    vector not matching its value or a missing ½ would break it."""
    record = case[0]
    for d in record["directions"]:
        rows = [r for r in d["model_check"] if abs(r["t"]) == 1e-3]
        assert len(rows) == 2
        for r in rows:
            scale = abs(r["t"] * d["slope"]) + 0.5 * r["t"] ** 2 * abs(d["eigenvalue"])
            assert abs(r["actual"] - r["model"]) <= 1e-2 * scale, (d, r)


def test_record_fields(case):
    record = case[0]
    assert record["benchmark"] == "plateau_curvature" and record["updates"] == 3
    tests = [m for d in record["directions"] for m in d["test"]]
    assert len(tests) == 3 * 2 * len(plateau_curvature.TEST_T)
    assert record["best_test_error_along"] == min(m["test_error"] for m in tests)
    assert record["best_change_along_eigenvectors"] == min(m["test_loss_change"] for m in tests)
    assert record["hessian_min"] == record["hessian_smallest"][0]
    assert record["gauss_newton_max"] == record["gauss_newton_largest"][0]
    assert all(0.0 <= m["test_error"] <= 1.0 for m in tests)
    assert len(record["random"]) == plateau_curvature.N_RANDOM
    assert [r["t"] for r in record["steepest_descent"]] == list(plateau_curvature.TEST_T)
    # the batch's steepest descent lowers the test loss a little at the smallest step (the test
    # set is drawn like the batch); a flipped sign would raise it
    assert record["steepest_descent"][0]["test_loss_change"] < 0

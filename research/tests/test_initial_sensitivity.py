"""The initial-sensitivity benchmark's Jacobian norms against central finite differences of a
plain NumPy RNN (float64): shares no code with the JAX route it checks."""
import jax
import numpy as np

from research.initial_sensitivity import measure, sensitivities
from hflab.core.models import init_rnn


def _last_state(p, x, last):
    h = np.zeros(p["W_rec"].shape[0])
    for t in range(last + 1):
        h = np.tanh(x[t] @ p["W_in"] + h @ p["W_rec"] + p["b"])
    return h


def test_sensitivities_match_finite_differences_of_a_plain_rnn():
    with jax.enable_x64(True):
        params = init_rnn(jax.random.PRNGKey(3), 2, 6, 1, rec_scale=1.3, dtype=np.float64)
        p = {k: np.asarray(v) for k, v in params.items()}
        p["b"] = np.random.default_rng(0).normal(0, 0.3, 6)      # a non-zero bias is exercised
        params = {**params, "b": p["b"]}
        x = np.random.default_rng(1).uniform(0, 1, (3, 14, 2))
        last = np.array([13, 11, 12])
        got = sensitivities(params, x, last, step=10)
    assert got.dtype == np.float64
    eps = 1e-6
    for i in range(3):
        cols = []
        for j in range(2):
            up, down = x[i].copy(), x[i].copy()
            up[10, j] += eps
            down[10, j] -= eps
            cols.append((_last_state(p, up, last[i]) - _last_state(p, down, last[i])) / (2 * eps))
        want = np.linalg.norm(np.stack(cols, 1))
        assert abs(got[i] - want) <= 1e-7 * want + 1e-12
    # a step after a sequence's end cannot reach its state
    with jax.enable_x64(True):
        assert sensitivities(params, x, np.array([9, 9, 9]), step=10).max() == 0.0


def test_record_names_its_case_and_orders_its_quantiles(monkeypatch):
    from research import initial_sensitivity
    monkeypatch.setattr(initial_sensitivity, "PAPERS_DATA", dict(n_train=300, grad_batch=100))
    monkeypatch.setattr(initial_sensitivity, "N_SEQUENCES", 40)
    r = measure("addition", 20, 0, 1.0, 1.2)
    assert (r["problem"], r["T"], r["seed"], r["init_scale"], r["rec_scale"]) == \
        ("addition", 20, 0, 1.0, 1.2)
    assert r["n_sequences"] == 40
    assert 0 < r["sensitivity_q10"] <= r["sensitivity"] <= r["sensitivity_q90"]

"""Does the true Hessian point off HF's plateau?  (``--only plateau_curvature``, about 10 minutes
on one core.)

Gauss-Newton HF cannot see negative curvature: ``G = Jᵀ H_L J`` is PSD, and the Hessian's other
term, ``Σ (∂L/∂z)·∇²z``, is what G drops.  XOR's target is uncorrelated with each marked bit, so
its first signal lies in cross terms between the parameters that would carry the two memories —
second order, where the dropped term lives.  If XOR's plateau were a saddle whose negative-
curvature directions lead off it, a negative-curvature step (as in saddle-free Newton, Dauphin et
al. 2014, or Curtis & Robinson 2019) would be the way to make HF better there.  This measures it.

Per case ``(problem, T, seed, updates)``: HF with structural damping at the paper-scale settings
of :func:`benchmarks.rnn_problems.run_papers` for ``updates`` updates (on the plateau: test success
at chance), then, on the first :data:`N_SEQUENCES` training sequences, the :data:`K` most negative
Hessian eigenpairs and the K largest Gauss-Newton eigenvalues (Lanczos, via
:func:`hflab.core.curvature.extreme_eigenpairs`), and along each Hessian eigenvector ``v``:

* ``model_check``: that batch's loss change at ``θ ± t·v`` for small t against the quadratic model
  ``± t·gᵀv + ½·t²·w`` — whether the eigenvalue holds, and over what distance;
* ``test``: the test loss change and test error at ``θ ± t·v`` for t from 0.3 to 30 — whether the
  direction leads anywhere;

and the test loss change along :data:`N_RANDOM` random unit directions (the baseline a direction
must beat) and along the batch's steepest descent ``−g/‖g‖``.  ``best_test_error_along`` is the
lowest test error over every eigen-direction and t; ``best_change_along_*`` the lowest test loss
change each kind of direction reaches.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from hflab.config import preset_config
from hflab.core.curvature import CurvatureOperator, extreme_eigenpairs
from hflab.experiment import build, evaluator, run as run_loop
from hflab.core.losses import Batch

from benchmarks.rnn_problems import PAPERS_DATA

N_SEQUENCES = 4_000
K = 4
N_RANDOM = 2
SMALL_T = (1e-3, 1e-2, 0.1)
TEST_T = (0.3, 1.0, 3.0, 10.0, 30.0)
# XOR at T = 100 (every seed stays at chance), and addition's seed 0 at T = 100 on its plateau
# before it leaves it (after ~35 updates): if negative curvature pointed the way off, addition's
# plateau should show it too
CASES = (("xor", 100, 0, 40), ("addition", 100, 0, 25))


def measure(problem: str, seq_len: int, seed: int, updates: int, n_sequences: int = N_SEQUENCES,
            k: int = K, settings: dict | None = None, tol: float = 1e-4) -> dict:
    """One case; ``settings`` (RunConfig fields, default :data:`PAPERS_DATA`) size the training
    set and batches (and may change the net, e.g. ``layers``, ``dtype``)."""
    t_start = time.perf_counter()
    cfg = preset_config(problem, seq_len=seq_len, seed=seed, steps=updates,
                        checkpoint_every=0, eval_every=updates,
                        **(PAPERS_DATA if settings is None else settings))
    out = run_loop(cfg, on_step=None)
    built = build(cfg)
    model, loss = built.model, built.loss
    flat, unravel = ravel_pytree(out.params)
    train, test = built.task.train, built.task.test
    batch = Batch(train.x[:n_sequences], train.y[:n_sequences], train.mask[:n_sequences])

    evaluate = evaluator(built)        # (loss, task error) from one jitted forward pass

    def loss_at(p, b):
        return evaluate(unravel(p), b)[0]

    def operator(kind):
        product = jax.jit(lambda p, b, v: CurvatureOperator(model.apply, loss, unravel(p), b,
                                                            kind=kind).multiply(v))
        return lambda v: product(flat, batch, v)

    g = jax.jit(jax.grad(loss_at))(flat, batch)
    f0 = float(loss_at(flat, batch))
    test0, test_err0 = (float(x) for x in evaluate(out.params, test))
    w_h, v_h = extreme_eigenpairs(operator("hessian"), flat.size, k=k, which="SA", tol=tol,
                                  dtype=flat.dtype)
    w_g = extreme_eigenpairs(operator("gauss_newton"), flat.size, k=k, which="LA", tol=tol,
                             dtype=flat.dtype)[0]

    directions = []
    for w, vec in zip(w_h, v_h.T):
        v = jnp.asarray(vec, flat.dtype)
        slope = float(jnp.vdot(g, v))
        check = [{"t": s * t, "actual": float(loss_at(flat + s * t * v, batch)) - f0,
                  "model": s * t * slope + 0.5 * t * t * float(w)}
                 for t in SMALL_T for s in (1, -1)]
        moved = [{"t": s * t, "test_loss_change": float(f) - test0, "test_error": float(e)}
                 for t in TEST_T for s in (1, -1)
                 for f, e in [evaluate(unravel(flat + s * t * v), test)]]
        directions.append({"eigenvalue": float(w), "slope": slope,
                           "model_check": model_check_rows(check), "test": moved})

    def test_changes(v):
        return [{"t": t, "test_loss_change": float(loss_at(flat + t * v, test)) - test0}
                for t in TEST_T]

    rng = np.random.default_rng(seed)
    random = []
    for _ in range(N_RANDOM):
        u = rng.standard_normal(flat.size)
        v = jnp.asarray(u / np.linalg.norm(u), flat.dtype)
        random.append(test_changes(v))
    steepest = test_changes(-g / jnp.linalg.norm(g))
    return {"benchmark": "plateau_curvature", "problem": problem, "T": seq_len, "seed": seed,
            "updates": out.steps_done, "n_sequences": int(batch.x.shape[0]),
            "n_params": int(flat.size), "test_error": test_err0,
            "test_loss": test0, "batch_loss": f0, "grad_norm": float(jnp.linalg.norm(g)),
            "hessian_smallest": [float(w) for w in w_h], "hessian_min": float(w_h[0]),
            "gauss_newton_max": float(w_g[0]),
            "gauss_newton_largest": [float(w) for w in w_g],
            "directions": directions, "random": random,
            "steepest_descent": steepest,
            "best_test_error_along": min(m["test_error"] for d in directions for m in d["test"]),
            # the lowest test loss change each kind of direction reaches over every t (negative:
            # the direction lowers the test loss somewhere)
            "best_change_along_eigenvectors": min(m["test_loss_change"] for d in directions
                                                  for m in d["test"]),
            "best_change_along_random": min(m["test_loss_change"] for r in random for m in r),
            "best_change_along_steepest_descent": min(m["test_loss_change"]
                                                      for m in steepest),
            "seconds": time.perf_counter() - t_start}


def model_check_rows(rows: list[dict]) -> list[dict]:
    """The small-t rows with the model's relative error (``None`` where the model predicts 0)."""
    return [{**r, "relative_error": (abs(r["actual"] - r["model"]) / abs(r["model"])
                                     if r["model"] else None)} for r in rows]


def run(full: bool):
    for problem, seq_len, seed, updates in CASES:
        yield measure(problem, seq_len, seed, updates)

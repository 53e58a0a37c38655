"""What the Curvature and Derivations pages show, computed without Streamlit.

* :func:`curvature_snapshot` — dense H, G, H − G and Jacobians of a (small) model on a few cases,
  and the extreme eigenvalues of H and G (Lanczos via :func:`hflab.curvature.extreme_eigenvalues`,
  or the full spectrum when the model is small).
* :func:`run_params` — a stored run's configuration and its newest checkpointed parameters.
* ``derivation_*`` — the origin notebook's checks, each returning the matrices and the largest
  absolute difference between the routes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import curvature, manual
from .experiment import RunConfig, build, init_params
from .lab import restore_state
from .losses import BoundLoss
from .models import Model

FULL_SPECTRUM_MAX = 400


def run_params(store, run_id: int):
    """(config, built, params, step) of the newest checkpoint (step 0 = initial parameters)."""
    info = store.get_run(run_id)
    config = RunConfig.from_dict(info["config"])
    built = build(config)
    ck = store.latest_checkpoint(run_id)
    if ck is None:
        return config, built, init_params(built), 0
    step, leaves = ck
    params, _ = restore_state(built, leaves)
    return config, built, params, step


def curvature_snapshot(built, params, n_cases: int = 16, k: int = 8) -> dict:
    """Dense curvature matrices of ``params`` on the first ``n_cases`` training cases (float64)."""
    model: Model = built.model
    n = model.n_params
    curvature.require_dense_size(n)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    data = built.task.train
    x = jnp.asarray(data.x[:n_cases], jnp.float64)
    y = jnp.asarray(data.y[:n_cases], jnp.float64)
    mask = jnp.asarray(data.mask[:n_cases], jnp.float64)
    loss = BoundLoss(built.loss, y, mask)
    f = lambda p: model.apply(p, x)  # noqa: E731
    fun = lambda p: loss(f(p))  # noqa: E731

    @jax.jit
    def dense(p):
        return (curvature.hessian_matrix(fun, p), curvature.gauss_newton_matrix(f, loss, p),
                curvature.jacobian_matrix(f, p))
    h, g, jac = (np.asarray(a) for a in dense(params))
    # Jacobian of the outputs of the first case with respect to its inputs
    x0 = x[:1]
    j_in = np.asarray(jax.jacfwd(lambda xi: jnp.ravel(model.apply(params, xi)))(x0)).reshape(
        -1, int(np.prod(x0.shape[1:])))
    if n <= FULL_SPECTRUM_MAX:
        eig_h, eig_g = np.linalg.eigvalsh(h)[::-1], np.linalg.eigvalsh(g)[::-1]
    else:
        mv_h, _ = curvature.flat_operator(lambda v: curvature.hvp(fun, params, v), params)
        mv_g, _ = curvature.flat_operator(lambda v: curvature.gauss_newton_vp(f, loss, params, v),
                                          params)
        eig_h = np.concatenate([curvature.extreme_eigenvalues(mv_h, n, k, "LA"),
                                curvature.extreme_eigenvalues(mv_h, n, k, "SA")[::-1]])
        eig_g = np.concatenate([curvature.extreme_eigenvalues(mv_g, n, k, "LA"),
                                curvature.extreme_eigenvalues(mv_g, n, k, "SA")[::-1]])
    return {"H": h, "G": g, "H-G": h - g, "J": jac, "J_inputs": j_in, "eig_H": eig_h,
            "eig_G": eig_g, "names": model.parameter_names(), "blocks": model.parameter_blocks(),
            "n_params": n, "n_cases": int(x.shape[0]), "full_spectrum": n <= FULL_SPECTRUM_MAX}


# ----------------------------------------------------------------------------- derivations
def derivation_quadratic(x=None) -> dict:
    x = np.ones(4) if x is None else np.asarray(x, np.float64)
    a, b = manual.SEED_A, manual.SEED_B
    f = lambda v: 0.5 * v @ jnp.asarray(a) @ v + jnp.asarray(b) @ v + manual.SEED_C  # noqa: E731
    grad_fn = lambda v: jnp.asarray(a) @ v + jnp.asarray(b)  # noqa: E731
    return {"f": float(f(jnp.asarray(x))), "grad_autodiff": np.asarray(jax.grad(f)(jnp.asarray(x))),
            "grad_analytic": manual.quadratic_gradient(x),
            "hessian_autodiff": np.asarray(jax.hessian(f)(jnp.asarray(x))),
            "hessian_analytic": manual.quadratic_hessian(),
            "naive_reverse_mode": manual.reverse_mode_of_vector(grad_fn, x)}


def derivation_jacobian() -> dict:
    w1, w2, b1, b2 = manual.seed_mlp()
    z1 = 1 / (1 + np.exp(-(w1 @ np.ones(3) + b1)))
    h2 = lambda z: jnp.asarray(w2) @ z + b2  # noqa: E731
    return {"jacobian_autodiff": np.asarray(jax.jacfwd(h2)(jnp.asarray(z1))),
            "jacobian_analytic": w2,
            "naive_reverse_mode": manual.reverse_mode_of_vector(h2, z1),
            "column_sums": w2.sum(axis=0)}


def derivation_mlp_hessian(sizes=(3, 3, 3), activation="logistic", seed: int = 0,
                           use_seed_net: bool = True) -> dict:
    """The MLP Hessian three ways: autodiff, Bishop's algorithm, finite differences."""
    if use_seed_net and tuple(sizes) == (3, 3, 3) and activation == "logistic":
        w1, w2, b1, b2 = manual.seed_mlp()
        ws, bs, x = [w1, w2], [b1, b2], np.ones(3)
    else:
        rng = np.random.default_rng(seed)
        ws = [rng.standard_normal((b, a)) * 0.8 for a, b in zip(sizes[:-1], sizes[1:])]
        bs = [rng.standard_normal(b) * 0.5 for b in sizes[1:]]
        x = rng.standard_normal(sizes[0])
    acts = [activation] * (len(sizes) - 1)
    params = [{"W": jnp.asarray(w.T), "b": jnp.asarray(b)} for w, b in zip(ws, bs)]
    from .models import ACTIVATIONS, mlp_apply
    out = ACTIVATIONS[activation]
    fun = lambda p: jnp.sum(out(mlp_apply(p, jnp.asarray(x), acts[:-1])))  # noqa: E731
    auto = np.asarray(curvature.hessian_matrix(fun, params))
    bishop = manual.bishop_param_hessian(ws, bs, acts, x)
    fd = np.asarray(curvature.fd_hessian_matrix(fun, params, 1e-5))
    model = Model("mlp", tuple(sizes), tuple(acts[:-1]))
    return {"autodiff": auto, "bishop": bishop, "finite differences": fd,
            "max_abs_bishop_vs_autodiff": float(np.abs(bishop - auto).max()),
            "max_abs_fd_vs_autodiff": float(np.abs(fd - auto).max()),
            "names": model.parameter_names(), "blocks": model.parameter_blocks()}


def derivation_bptt(n_in=3, n_hidden=3, n_out=2, steps=3, seed: int = 1234) -> dict:
    """Hand-written BPTT vs autodiff for J = Σ_t Σ_k y_t,k (the notebook's objective)."""
    rng = np.random.RandomState(seed)
    params = {"W_in": rng.randn(n_in, n_hidden), "W_rec": rng.randn(n_hidden, n_hidden),
              "b": np.ones(n_hidden), "W_out": rng.randn(n_hidden, n_out),
              "b_out": rng.randn(n_out)}
    x = rng.randn(1, steps, n_in)
    manual_g = manual.bptt_gradients(params, x, np.ones((1, steps, n_out)))
    from .models import rnn_apply
    auto = jax.grad(lambda p: jnp.sum(rnn_apply(p, jnp.asarray(x))))(
        jax.tree_util.tree_map(jnp.asarray, params))
    rows = [{"parameter": k, "shape": str(manual_g[k].shape),
             "max_abs_difference": float(np.abs(manual_g[k] - np.asarray(auto[k])).max())}
            for k in ("W_in", "W_rec", "b", "W_out", "b_out")]
    return {"manual": manual_g, "autodiff": {k: np.asarray(v) for k, v in auto.items()},
            "table": rows}


def derivation_gv(sizes=(3, 4, 2), activation="tanh", loss_name="softmax", seed: int = 0) -> dict:
    """The Gv product vs the dense Jᵀ H_L J."""
    from .losses import get_loss
    model = Model("mlp", tuple(sizes), (activation,) * (len(sizes) - 2), "gaussian")
    key = jax.random.PRNGKey(seed)
    params = model.init_params(key, jnp.float64)
    x = jax.random.normal(jax.random.fold_in(key, 1), (5, sizes[0]), jnp.float64)
    if loss_name == "softmax":
        y = jax.nn.one_hot(jnp.arange(5) % sizes[-1], sizes[-1], dtype=jnp.float64)
    else:
        y = jax.random.uniform(jax.random.fold_in(key, 2), (5, sizes[-1]), jnp.float64)
    loss = BoundLoss(get_loss(loss_name), y, jnp.ones(5, jnp.float64))
    f = lambda p: model.apply(p, x)  # noqa: E731
    v = jax.random.normal(jax.random.fold_in(key, 3), (model.n_params,), jnp.float64)
    _, unravel = ravel_pytree(params)
    gv = np.asarray(ravel_pytree(curvature.gauss_newton_vp(f, loss, params, unravel(v)))[0])
    g = np.asarray(curvature.gauss_newton_matrix(f, loss, params))
    dense = g @ np.asarray(v)
    return {"Gv": gv, "dense": dense, "G": g,
            "max_abs_difference": float(np.abs(gv - dense).max()),
            "min_eigenvalue": float(np.linalg.eigvalsh(g).min())}

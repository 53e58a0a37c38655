"""What the Curvature and Derivations pages show, computed without Streamlit.

* :func:`curvature_snapshot` — dense H, G, H − G and Jacobians of a (small) model on a few cases,
  and the extreme eigenvalues of H and G (Lanczos via :func:`hflab.core.curvature.extreme_eigenvalues`,
  or the full spectrum when the model is small).
* :func:`run_params` — a stored run's configuration and its newest checkpointed parameters.
* ``derivation_*`` — the origin notebook's checks, each returning the matrices and the largest
  absolute difference between the routes.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..core import curvature, manual
from ..config import RunConfig, preset_config
from ..experiment import build, init_params
from ..checkpoint import restore_state
from ..core.losses import Batch, BoundLoss, get_loss
from ..core.models import ACTIVATIONS, Model, mlp_apply, rnn_apply
from ..tasks import SPECS
from .kronecker import kronecker_applies, kronecker_view

KINDS = tuple(curvature.KIND_INFO.values())    # every curvature kind, in the order shown
FRESH_MODEL_TASKS = ("seed-333", "regression", "spirals", "digits", "seed-rnn", "addition", "xor")


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


def checkpoint_state(store, run_id: int, step: int | None = None):
    """(config, built, params, optimiser state, step) of the run's checkpoint at ``step`` (the
    newest when None; step 0 = the initial parameters and state when no checkpoint is kept)."""
    config = RunConfig.from_dict(store.get_run(run_id)["config"])
    built = build(config)
    ck = store.latest_checkpoint(run_id, step=step) if step != 0 else None
    if ck is None:
        if step not in (None, 0):
            raise ValueError(f"run #{run_id} keeps no checkpoint of update {step}")
        params = init_params(built)
        return config, built, params, built.optimizer.init(params), 0
    params, opt_state = restore_state(built, ck[1])
    return config, built, params, opt_state, ck[0]


def fresh_model(task: str, layers: str, seed: int = 0):
    """(built, params) of a freshly initialised small model of ``task`` (Gaussian init; RNN tasks
    with T = 5).  Raises :class:`~hflab.config.ConfigError` for a bad layer string."""
    extra = {"seq_len": 5} if SPECS[task].kind == "rnn" else {}
    cfg = preset_config(task, layers=layers, seed=int(seed), init="gaussian", **extra).validate()
    built = build(cfg)
    return built, init_params(built)


class _Static:
    """A model or loss as a jit static argument: by value when it hashes (the lab's frozen
    models and losses — a new checkpoint of the same model reuses the compiled program), by
    identity otherwise (a hook's function view)."""

    def __init__(self, obj):
        self.obj = obj
        try:
            self._key = (0, hash(obj))
        except TypeError:
            self._key = (1, id(obj))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key and (
            self.obj == other.obj if self._key[0] == 0 else self.obj is other.obj)


@partial(jax.jit, static_argnames=("model", "loss", "kinds", "jacobian"))
def _dense(model, loss, params, batch, kinds, jacobian):
    """The dense matrices of ``kinds`` (names) and, with ``jacobian``, the parameter Jacobian:
    one program per model, batch shape and choice, fed each checkpoint's parameters."""
    mats = {curvature.KIND_INFO[k].symbol: curvature.CurvatureOperator(
        model.obj.apply, loss.obj, params, batch, kind=k).to_dense() for k in kinds}
    return mats, (curvature.jacobian_matrix(lambda q: model.obj.apply(q, batch.x), params)
                  if jacobian else None)


# The parts of a view, each computed only when asked for.  A page that follows a live run asks
# only for the figure it shows: one figure's part is a small fraction of the whole view (three
# sub-matrices, the Jacobian, K-FAC's factors and two Lanczos runs), and the view process has
# only the cycles training leaves, so a live page keeps up only with the small one
# (``make bench-class``'s follow-live rows measure how late it is).
PARTS = tuple(k.symbol for k in KINDS) + ("H-G", "J", "spectrum", "K")


def _kinds_needed(parts, dense: bool) -> tuple:
    unknown = set(parts or ()) - set(PARTS)
    if unknown:
        raise ValueError(f"view parts {sorted(unknown)} unknown; parts are {list(PARTS)}")
    if parts is None or (dense and "spectrum" in parts):   # the dense spectra: every kind's
        return KINDS
    want = set(parts) | ({"H", "G"} if "H-G" in parts else set()) | (
        {"G"} if "K" in parts else set())
    return tuple(k for k in KINDS if k.symbol in want)


def figure_parts(built, params) -> dict[str, tuple[str, ...]]:
    """The Curvature page's figures, in the order offered, each with the view parts it needs
    (K-FAC's two only for the lab's MLPs, where :func:`kronecker_view` applies)."""
    figures = {f"{k.label} {k.symbol}": (k.symbol,) for k in KINDS}
    figures.update({"H − G": ("H-G",), "Jacobians": ("J",), "spectrum": ("spectrum",)})
    if kronecker_applies(built, params):
        figures.update({"K-FAC A ⊗ G": ("K",), "G − A ⊗ G": ("K",)})
    return figures


def curvature_snapshot(built, params, n_cases: int = 16, parts=None) -> dict:
    """Dense H, G, H − G and Jacobians of ``params`` on the first ``n_cases`` training cases
    (float64), from the lab's curvature operator, with their full spectra; ``parts`` (of
    :data:`PARTS`; None: all) limits what is computed."""
    model: Model = built.model
    n = model.n_params
    curvature.require_dense_size(n)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    data = built.task.train
    batch = Batch(*(jnp.asarray(a[:n_cases], jnp.float64) for a in data))
    every = parts is None
    kinds = _kinds_needed(parts, dense=True)
    mats, jac = _dense(_Static(model), _Static(built.loss), params, batch,
                       tuple(k.name for k in kinds), every or "J" in parts)
    mats = {s: np.asarray(m) for s, m in mats.items()}
    out = {**mats, "kinds": [(k.symbol, k.label, k.psd) for k in KINDS],
           "names": model.parameter_names(), "blocks": model.parameter_blocks(),
           "n_params": n, "n_cases": int(batch.x.shape[0]), "full_spectrum": True,
           "spectrum_note": "", "view": "every parameter", "indices": np.arange(n),
           "parts": parts}
    if "H" in mats and "G" in mats:
        out["H-G"] = mats["H"] - mats["G"]
    if jac is not None:
        # and the Jacobian of the outputs of the first case with respect to its inputs
        x0 = batch.x[:1]
        out["J"] = np.asarray(jac)
        out["J_inputs"] = np.asarray(jax.jacfwd(lambda xi: jnp.ravel(model.apply(params, xi)))(
            x0)).reshape(-1, int(np.prod(x0.shape[1:])))
    if every or "spectrum" in parts:
        out.update({f"eig_{s}": np.linalg.eigvalsh(0.5 * (m + m.T))[::-1]
                    for s, m in mats.items()})
    return out


MAX_VIEW = 600          # parameters in a block / sampled heatmap above FULL_VIEW
FULL_VIEW = 700         # up to this many parameters the heatmaps show every entry
_CHUNK = 32             # unit vectors per batched product when assembling a sub-matrix


def view_indices(model: Model, block: str | None = None, max_view: int = MAX_VIEW,
                 seed: int = 0) -> np.ndarray:
    """Parameter indices to show: a named weight block (evenly thinned to ``max_view``), or a
    seeded sample of ``max_view`` parameters spread over every block (``block=None``)."""
    blocks = {name: (a, b) for name, a, b in model.parameter_blocks()}
    if block is not None:
        if block not in blocks:
            raise ValueError(f"block {block!r} unknown; blocks are {list(blocks)}")
        a, b = blocks[block]
        idx = np.arange(a, b)
        if idx.size > max_view:
            idx = idx[np.linspace(0, idx.size - 1, max_view).round().astype(int)]
        return np.unique(idx)
    rng = np.random.default_rng(seed)
    n = model.n_params
    return np.sort(rng.choice(n, size=min(max_view, n), replace=False))


# Above the dense cap the views are built from programs that take the parameters and the batch
# as arguments: compiled once per (model, loss, kind, shapes), not once per checkpoint (a
# closure over the parameters would bake them into the program as constants — 7 compilations,
# ~5 s, on every view of a followed run).
def _operator(model, loss, kind, params, batch):
    return curvature.CurvatureOperator(model.obj.apply, loss.obj, params, batch, kind=kind)


@partial(jax.jit, static_argnames=("model", "loss", "kind"))
def _product(model, loss, kind, params, batch, v):
    """``C v`` of one kind at ``params`` (linearised inside: one compiled program per model)."""
    return _operator(model, loss, kind, params, batch).multiply(v)


@partial(jax.jit, static_argnames=("model", "loss", "kind"))
def _sub_matrix(model, loss, kind, params, batch, cols, idx):
    """``C[idx, idx]`` from products with unit vectors, a chunk (a row of ``cols``) at a time
    (memory: one chunk of n-vectors, never the n × n matrix); the operator is linearised once."""
    op = _operator(model, loss, kind, params, batch)

    def chunk(c):
        basis = jnp.zeros((cols.shape[1], op.n), op.flat.dtype).at[
            jnp.arange(cols.shape[1]), c].set(1.0)
        return jax.vmap(op.multiply)(basis)[:, idx]            # (chunk, |idx|)
    return jax.lax.map(chunk, cols).reshape(-1, idx.shape[0])


@partial(jax.jit, static_argnames=("model",))
def _jacobian_columns(model, params, x, idx):
    """∂ vec(outputs) / ∂ θ[idx] by forward mode (|idx| tangents)."""
    flat, unravel = ravel_pytree(params)
    return jax.jacfwd(lambda t: jnp.ravel(model.obj.apply(unravel(flat.at[idx].add(t)), x)))(
        jnp.zeros(idx.shape[0], flat.dtype))


def _chunked(idx: np.ndarray) -> jnp.ndarray:
    """``idx`` padded (with its first entry) to whole chunks of ``_CHUNK`` columns."""
    pad = (-len(idx)) % _CHUNK
    return jnp.asarray(np.concatenate([idx, np.full(pad, idx[0])]).reshape(-1, _CHUNK))


def _shown_blocks(model, idx: np.ndarray) -> list[tuple[str, int, int]]:
    """The weight blocks of the shown parameters ``idx``, in heatmap coordinates."""
    out, start = [], 0
    for name, a, b in model.parameter_blocks():
        count = int(np.sum((idx >= a) & (idx < b)))
        if count:
            out.append((name, start, start + count))
            start += count
    return out


def lanczos_extremes(matvec, n: int, k: int = 6) -> tuple[np.ndarray, str]:
    """Top and bottom ``k`` eigenvalues by Lanczos of the operator ``matvec`` (already compiled:
    called as given) on flat vectors of length ``n``, with a note.  ARPACK convergence failures
    give fewer eigenvalues; a second try uses a looser tolerance."""
    found, notes = [], []
    for which in ("LA", "SA"):
        for tol in (1e-8, 1e-4):
            try:
                # a wider Krylov space and a bounded number of restarts: the smallest
                # eigenvalues of an indefinite H converge slowly, and the page must answer
                w = curvature.extreme_eigenvalues(matvec, n, k=min(k, n - 2), which=which,
                                                  tol=tol, maxiter=60,
                                                  ncv=min(n - 1, max(4 * k, 40)), compiled=True)
            except Exception as e:  # noqa: BLE001 — ARPACK failures become a note, never a crash
                notes.append(f"{which} at tol {tol:g}: {type(e).__name__}")
                continue
            if tol > 1e-8:
                notes.append(f"{which}: converged only at tolerance {tol:g}")
            if len(w) < min(k, n - 2):
                notes.append(f"{'largest' if which == 'LA' else 'smallest'}: only {len(w)} of "
                             f"{k} eigenvalues converged (the ones shown are exact; the extreme "
                             "ones may lie beyond them)")
            found.append(w)
            break
    w = np.unique(np.concatenate(found)) if found else np.array([])
    return w[::-1], "; ".join(notes)


def curvature_view(built, params, n_cases: int = 16, block: str | None = None,
                   k: int = 6, parts=None) -> dict:
    """What the Curvature page shows for a model of any size.

    Up to the dense cap: :func:`curvature_snapshot` (every entry, full spectra).  Above it: H, G
    and H − G restricted to a weight block or a sample of parameters (sub-matrices assembled
    from the curvature operator's products), the Jacobian's columns for those parameters, and
    Lanczos extremes of the full H and G.  For an MLP also K-FAC's A ⊗ G on the same entries
    and its difference from G (:mod:`hflab.view.kronecker`).  ``parts`` (of :data:`PARTS`;
    None: all) limits what is computed — a live page asks only for the figure it shows.
    """
    model: Model = built.model
    every = parts is None
    kron = every or "K" in parts
    if model.n_params <= curvature.DENSE_PARAM_CAP:
        snap = curvature_snapshot(built, params, n_cases, parts)
        if model.n_params <= FULL_VIEW:
            return {**snap, **(kronecker_view(built, params, snap["indices"], snap["G"], n_cases)
                               if kron else {})}
        # exact spectra from the dense matrices; heatmaps of a block or a sample (a browser
        # cannot draw millions of cells with hover text)
        idx = view_indices(model, block)
        sub = np.ix_(idx, idx)
        names = snap["names"]
        shown = {s: snap[s][sub] for s in (*(kd.symbol for kd in KINDS), "H-G") if s in snap}
        return {**snap, **shown, **({"J": snap["J"][:, idx]} if "J" in snap else {}),
                "names": [names[i] for i in idx], "indices": idx,
                "blocks": _shown_blocks(model, idx),
                **(kronecker_view(built, params, idx, shown["G"], n_cases) if kron else {}),
                "view": f"block {block}" if block else f"{len(idx)} sampled parameters"}
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    batch = Batch(*(jnp.asarray(a[:n_cases], jnp.float64) for a in built.task.train))
    static_model, static_loss = _Static(model), _Static(built.loss)
    n = model.n_params
    idx = view_indices(model, block)
    cols, sel = _chunked(idx), jnp.asarray(idx)
    mats = {kd.symbol: np.asarray(_sub_matrix(static_model, static_loss, kd.name, params, batch,
                                              cols, sel))[:len(idx)].T
            for kd in _kinds_needed(parts, dense=False)}
    names = model.parameter_names()
    out = {**mats, "kinds": [(kd.symbol, kd.label, kd.psd) for kd in KINDS],
           "names": [names[i] for i in idx], "blocks": _shown_blocks(model, idx), "indices": idx,
           "n_params": n, "n_cases": int(batch.x.shape[0]), "full_spectrum": False,
           "spectrum_note": "", "parts": parts,
           "view": f"block {block}" if block else f"{len(idx)} sampled parameters"}
    if "H" in mats and "G" in mats:
        out["H-G"] = mats["H"] - mats["G"]
    if every or "J" in parts:
        out.update(J=np.asarray(_jacobian_columns(static_model, params, batch.x, sel)),
                   J_inputs=None)
    if kron:
        out.update(kronecker_view(built, params, idx, mats["G"], n_cases))
    if every or "spectrum" in parts:
        # Lanczos for the kinds whose spectrum the lab tracks (H, G); above the cap the others
        # are shown as heatmaps only (another few hundred products each on every view)
        spectra = {kd.symbol: lanczos_extremes(partial(_product, static_model, static_loss,
                                                       kd.name, params, batch), n, k)
                   if kd.tracked else (np.array([]), "not computed above the dense cap")
                   for kd in KINDS}
        out.update({f"eig_{s}": eig for s, (eig, _) in spectra.items()}, spectrum_note="; ".join(
            f"{s}: {note}" for s, (_, note) in spectra.items() if note))
    return out


# ----------------------------------------------------------------------------- derivations
def derivation_quadratic(x=None) -> dict:
    x = np.ones(4) if x is None else np.asarray(x, np.float64)
    a, b = manual.SEED_A, manual.SEED_B
    f = lambda v: 0.5 * v @ jnp.asarray(a) @ v + jnp.asarray(b) @ v + manual.SEED_C  # noqa: E731
    grad_fn = lambda v: jnp.asarray(a) @ v + jnp.asarray(b)  # noqa: E731
    value, grad, hess = jax.jit(lambda v: (f(v), jax.grad(f)(v), jax.hessian(f)(v)))(
        jnp.asarray(x))
    return {"f": float(value), "grad_autodiff": np.asarray(grad),
            "grad_analytic": manual.quadratic_gradient(x),
            "hessian_autodiff": np.asarray(hess),
            "hessian_analytic": manual.quadratic_hessian(),
            "naive_reverse_mode": manual.reverse_mode_of_vector(grad_fn, x)}


def derivation_forward(x=None) -> dict:
    """The notebook's 3-3-3 logistic net at x = (1, 1, 1): y = Σ σ(W2 σ(W1 x + b1) + b2) and
    dy/dx — the hand-written pass (NumPy) beside autodiff in float32 and float64."""
    x = np.ones(3) if x is None else np.asarray(x, np.float64)
    w1, w2, b1, b2 = manual.seed_mlp()

    def y(v, dtype):
        c = lambda a: jnp.asarray(a, dtype)  # noqa: E731
        z1 = jax.nn.sigmoid(c(w1) @ v + c(b1))
        return jnp.sum(jax.nn.sigmoid(c(w2) @ z1 + c(b2)))
    out = {"y_manual": manual.seed_mlp_output(x),
           "dydx_manual": manual.seed_mlp_input_gradient(x)}
    for dtype in (jnp.float32, jnp.float64):
        v = jnp.asarray(x, dtype)
        out[f"y_{jnp.dtype(dtype).name}"] = float(y(v, dtype))
        out[f"dydx_{jnp.dtype(dtype).name}"] = np.asarray(jax.grad(y)(v, dtype))
    return out


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
    out = ACTIVATIONS[activation]
    fun = lambda p: jnp.sum(out(mlp_apply(p, jnp.asarray(x), acts[:-1])))  # noqa: E731
    auto = np.asarray(jax.jit(lambda p: curvature.hessian_matrix(fun, p))(params))
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
    auto = jax.grad(lambda p: jnp.sum(rnn_apply(p, jnp.asarray(x))))(
        jax.tree_util.tree_map(jnp.asarray, params))
    rows = []
    for k in ("W_in", "W_rec", "b", "W_out", "b_out"):
        hand, ad = np.ravel(manual_g[k]), np.ravel(np.asarray(auto[k]))
        for j in range(hand.size):
            rows.append({"parameter": f"{k}[{j}]", "hand-written BPTT": hand[j],
                         "autodiff": ad[j], "difference": hand[j] - ad[j]})
    return {"manual": manual_g, "autodiff": {k: np.asarray(v) for k, v in auto.items()},
            "table": rows}


def derivation_gv(sizes=(3, 4, 2), activation="tanh", loss_name="softmax", seed: int = 0) -> dict:
    """The Gv product vs the dense Jᵀ H_L J."""
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

    @jax.jit        # one program, not hundreds of eagerly compiled operations
    def both(params, v):
        return (ravel_pytree(curvature.gauss_newton_vp(f, loss, params, unravel(v)))[0],
                curvature.gauss_newton_matrix(f, loss, params))
    gv, g = (np.asarray(a) for a in both(params, v))
    dense = g @ np.asarray(v)
    return {"Gv": gv, "dense": dense, "G": g,
            "max_abs_difference": float(np.abs(gv - dense).max()),
            "min_eigenvalue": float(np.linalg.eigvalsh(g).min())}

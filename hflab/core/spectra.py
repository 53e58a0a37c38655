"""Curvature over training: at every checkpoint (and at update 0), for the Gauss-Newton matrix G
and the Hessian H, the spectrum's extremes λ_max and λ_min (stored with that update's metrics)
and a profile (:meth:`SpectrumTracker.profile`, stored per checkpoint): the SLQ quadrature of the
spectral density, the Hutchinson trace and every weight block's top eigenvalue and trace
(:mod:`hflab.core.density`), each kind one compiled program per run.

Lanczos (ARPACK, ``scipy.sparse.linalg.eigsh``, k = 1; the bottom end as the top of the shifted
``|λ_max| I − C``) on the first
:data:`N_CASES` training cases, with a loose tolerance and a bounded number of restarts: these are
trends to watch, not the page's exact spectra.  The products are compiled once per run (a jitted
function of the parameters and the vector), so a checkpoint costs a few hundred products, not a
compilation; the time is spent between updates and is not part of any update's wall time.
Written by hand around eigsh (instead of :func:`hflab.core.curvature.extreme_eigenvalues`) because that
helper compiles its product for each call.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from .curvature import KIND_INFO, CurvatureOperator
from .density import block_kernel, check_blocks, slq_kernel
from .losses import Batch

N_CASES = 16
SLQ_PROBES, SLQ_STEPS = 5, 30           # the density at each checkpoint: 150 products a kind
BLOCK_PROBES, BLOCK_STEPS = 8, 16       # each block's trace (8 products) and λ_max (16)
KEYS = {k.name: k.symbol for k in KIND_INFO.values() if k.tracked}   # kind → metric symbol


@functools.lru_cache(maxsize=64)
def _programs(apply_fn, loss, kind: str, blocks: tuple | None):
    """The jitted product and profile of one kind, shared by every tracker (every run) of the
    same model, loss and blocks: the batch is an argument, so a comparison of several
    optimisers on one model compiles them once."""
    def op(params, batch):
        return CurvatureOperator(apply_fn, loss, params, batch, kind=kind)

    def profile(params, batch, key):
        o = op(params, batch)
        k1, k2 = jax.random.split(key)
        nodes, weights = slq_kernel(o.multiply, o.n, o.flat.dtype, SLQ_PROBES,
                                    min(SLQ_STEPS, o.n), k1)
        tops, sums = block_kernel(o.multiply, o.n, o.flat.dtype,
                                  check_blocks(blocks or [("all", 0, o.n)], o.n), BLOCK_PROBES,
                                  BLOCK_STEPS, k2)
        return nodes, weights, tops, sums
    return jax.jit(lambda p, batch, v: op(p, batch).multiply(v)), jax.jit(profile)


def profiles_enabled() -> bool:
    """``HFLAB_CURVATURE_PROFILE=0`` keeps the extremes but skips the per-checkpoint profile
    (for a machine too small to spare the measuring)."""
    return os.environ.get("HFLAB_CURVATURE_PROFILE", "1") != "0"


class SpectrumTracker:
    """``tracker(params) -> {"spectrum_G_max": …, "spectrum_G_min": …, …}`` for every tracked
    curvature kind's symbol (NaN where Lanczos did not converge); :meth:`profile` the rest."""

    def __init__(self, apply_fn, loss, train: Batch, maxiter: int = 10, tol: float = 1e-3,
                 blocks=None):
        n = min(N_CASES, int(train.x.shape[0]))
        self.batch = Batch(train.x[:n], train.y[:n], train.mask[:n])
        self.maxiter, self.tol = maxiter, tol
        self.blocks = None if blocks is None else tuple(
            (str(name), int(a), int(b)) for name, a, b in blocks)  # None: the whole vector
        programs = {kind: _programs(apply_fn, loss, kind, self.blocks) for kind in KEYS}
        self._mv = {kind: (lambda p, v, f=mv: f(p, self.batch, v))
                    for kind, (mv, _) in programs.items()}
        self._profile = {kind: (lambda p, key, f=prof: f(p, self.batch, key))
                         for kind, (_, prof) in programs.items()}

    def profile(self, params, seed: int = 0) -> dict:
        """``{"cases", "probes", "steps", "kinds": {symbol: {"nodes", "weights", "trace",
        "trace_error", "blocks": [[name, size, λ_max, trace, error], …]}}}`` — JSON-ready, values
        to 5 significant digits (a few kB per checkpoint)."""
        flat = ravel_pytree(params)[0]
        out = {"cases": int(self.batch.x.shape[0]), "probes": SLQ_PROBES,
               "steps": min(SLQ_STEPS, int(flat.size)), "kinds": {}}
        blocks = check_blocks(self.blocks or [("all", 0, int(flat.size))], int(flat.size))
        for kind, symbol in KEYS.items():
            nodes, weights, tops, sums = (np.asarray(a, np.float64) for a in
                                          self._profile[kind](params, jax.random.PRNGKey(seed)))
            total = sums.sum(axis=1)
            out["kinds"][symbol] = {
                "nodes": _rounded(nodes), "weights": _rounded(weights),
                "trace": _rounded(total.mean()),
                "trace_error": _rounded(total.std() / np.sqrt(total.size)),
                "blocks": [[name, b - a, _rounded(top), _rounded(s.mean()),
                            _rounded(s.std() / np.sqrt(s.size))]
                           for (name, a, b), top, s in zip(blocks, tops, sums.T)]}
        return out

    def _extreme(self, mv, params, n, dtype, shift=None, stop=None) -> float:
        """The largest eigenvalue of C, or with ``shift = s`` of ``s I − C`` (whose largest is
        ``s − λ_min(C)``: Lanczos finds the top of a spectrum fast, its bottom — often a big
        null space next to 0 — slowly and with a useless relative tolerance)."""
        def matvec(x):
            if stop is not None and stop():        # Stop pressed: give up within one product
                raise Stopped
            cx = np.asarray(mv(params, jnp.asarray(x.ravel(), dtype)), np.float64)
            return cx if shift is None else shift * x.ravel() - cx
        op = LinearOperator((n, n), dtype=np.float64, matvec=matvec)
        try:
            w = eigsh(op, k=1, which="LA", tol=self.tol, maxiter=self.maxiter,
                      ncv=min(n - 1, 20), v0=np.random.default_rng(0).standard_normal(n),
                      return_eigenvectors=False)
        except ArpackNoConvergence as e:
            w = np.asarray(e.eigenvalues)
        return float(w[0]) if len(w) else math.nan

    def __call__(self, params, stop=None) -> dict:
        """The four extremes; ``{}`` if ``stop()`` turns true meanwhile (Stop is honoured
        within one product, not after the whole Lanczos run)."""
        flat = ravel_pytree(params)[0]
        n, out = int(flat.size), {}
        try:
            for kind, key in KEYS.items():
                top = math.nan if n < 3 else self._extreme(self._mv[kind], params, n,
                                                           flat.dtype, stop=stop)
                shift = abs(top) if math.isfinite(top) else math.nan
                low = math.nan if not math.isfinite(shift) else shift - self._extreme(
                    self._mv[kind], params, n, flat.dtype, shift=shift, stop=stop)
                out[f"spectrum_{key}_max"], out[f"spectrum_{key}_min"] = top, low
        except Stopped:
            return {}
        return out


def _rounded(a):
    """5 significant digits, NaN/inf as None (JSON has neither)."""
    if np.ndim(a) == 0:
        v = float(a)
        return float(f"{v:.5g}") if math.isfinite(v) else None
    return [_rounded(x) for x in a]


class Stopped(Exception):
    """Raised inside Lanczos' product when the run is asked to stop."""

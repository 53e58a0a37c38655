"""The data stream: which training cases update ``step`` sees — a pure function of (seed, step),
so a resumed run sees exactly the data it would have seen.

Full batch, or minibatches cut from a per-epoch permutation of the training set (every case once
per epoch).  An optimiser that takes a curvature batch gets chunk ``step mod n_chunks`` of the
gradient batch (Martens 2010 §4.5), fixed within one update.

**Growing gradient batches** (``grad_batch_doubling`` = k > 0): the gradient batch doubles every k
updates until it is the whole training set — the geometric sample-size schedule of Friedlander &
Schmidt (2012, "Hybrid deterministic-stochastic methods for data fitting"), under which a
stochastic method keeps the linear rate of its full-batch version; Byrd, Chin, Nocedal & Wu
(2012) grow the sample of subsampled Hessian-free Newton-CG for the same reason.  Early updates
are cheap while the gradient's direction matters more than its precision; later ones see
enough cases that the step fitted to one batch (HF's ≤ 250 CG iterations) does not overfit it
and ρ measures the objective rather than the batch's noise.  Doubling, not a smooth ×1.05 per
update, because each new size is a new compiled update (a handful of shapes, not hundreds).
Within each size's span the cases come from that span's own per-epoch permutations; the first
span's stream is the fixed-size stream, so a run with doubling equals the plain run until its
first doubling.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .config import RunConfig
from .core.losses import Batch


def grad_batch_size(config: RunConfig, n_train: int, step: int) -> int:
    """The gradient batch size of update ``step`` (0-based) for a training set of ``n_train``."""
    size = config.grad_batch or n_train
    if config.grad_batch_doubling and size < n_train:
        doublings = min(step // config.grad_batch_doubling, n_train.bit_length())
        size = min(n_train, size << doublings)
    return size


def curvature_chunks(config: RunConfig, n_train: int, step: int) -> int:
    """How many curvature chunks update ``step``'s gradient batch is cut into: ``n_chunks``, or
    with ``curvature_batch_fixed`` as many chunks of the first batch's chunk size as fit."""
    chunks = config.curvature_chunks
    if chunks == 1 or not (config.curvature_batch_fixed and config.grad_batch_doubling):
        return chunks
    first = min(config.grad_batch or n_train, n_train) // chunks
    return max(chunks, grad_batch_size(config, n_train, step) // first)


@functools.lru_cache(maxsize=8)
def _epoch_order(key: tuple, n: int) -> np.ndarray:
    """The permutation of ``n`` cases for one epoch (kept: every update of the epoch cuts its
    minibatch from it, and drawing 20,000 afresh costs ~0.3 ms an update).  Read-only."""
    order = np.random.default_rng(key).permutation(n)
    order.flags.writeable = False
    return order


@jax.jit
def _take(batch: Batch, idx) -> Batch:
    """The cases ``idx`` of ``batch``, as one compiled program: three eager gathers cost ~1 ms
    of dispatch an update, four times a small Adam update itself."""
    return Batch(batch.x[idx], batch.y[idx], batch.mask[idx])


@functools.partial(jax.jit, static_argnums=2)
def _chunk(batch: Batch, start, size: int) -> Batch:
    """Cases ``start … start + size − 1`` of ``batch`` (a curvature chunk), compiled as one
    program per size (the start is an argument, so every chunk shares it)."""
    return Batch(*(jax.lax.dynamic_slice_in_dim(a, start, size) for a in batch))


def batches_for_step(built, step: int) -> tuple[Batch, Batch]:
    """(gradient batch, curvature batch) of update ``step`` of ``built``'s run (a
    :class:`hflab.experiment.Built`) — a pure function of (seed, step)."""
    cfg, train = built.config, built.task.train
    n = train.size
    gb = grad_batch_size(cfg, n, step)
    if gb >= n:
        grad = train
    else:
        span = step // cfg.grad_batch_doubling if cfg.grad_batch_doubling else 0
        per_epoch = n // gb
        epoch, k = divmod(step - span * cfg.grad_batch_doubling, per_epoch)   # within the span
        key = (cfg.seed, epoch) if not span else (cfg.seed, span, epoch)
        idx = np.sort(_epoch_order(key, n)[k * gb:(k + 1) * gb])
        grad = _take(train, jnp.asarray(idx))
    chunks = curvature_chunks(cfg, n, step)
    if chunks == 1:
        return grad, grad
    size = gb // chunks
    return grad, _chunk(grad, (step % chunks) * size, size)

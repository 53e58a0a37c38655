"""Evaluation of a run's parameters on a whole set (training or test): the loss and the task's
reported error, in bounded memory.

``built`` is a :class:`hflab.experiment.Built` (the run's task data, model and loss).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from . import tasks
from .core.losses import Batch, case_weights, n_cases, pad_batch

_EVAL_CACHE: dict = {}


# Case-steps (cases × masked positions per case) per evaluation chunk.  A whole training set in
# one forward pass holds every hidden state at once: 160,000 XOR sequences of 110 steps with 64
# tanh units took ~11 GB at each evaluation; in chunks of 2¹⁸ case-steps (~2,400 such sequences)
# the peak is the chunk's, whatever the set's size.
EVAL_CHUNK_CASE_STEPS = 1 << 18


def evaluation_chunk(mask) -> int:
    """Cases per evaluation chunk for a set with this mask (shape (cases,) or (cases, steps))."""
    steps = math.prod(mask.shape[1:])
    return max(1, min(mask.shape[0], EVAL_CHUNK_CASE_STEPS // max(steps, 1)))


def evaluator(built) -> Callable:
    """``evaluate(params, batch) -> (loss, task error)`` over the whole ``batch``, jitted.

    The batch is cut into chunks of :func:`evaluation_chunk` cases (the last padded with
    zero-mask cases) run one after another in a ``lax.map``, so memory is bounded by a chunk.
    Loss and error are sums over cases divided by the number of cases (:func:`losses.n_cases`),
    so each chunk gives its sums — the loss summed per case, the error's mean times its case
    count — and the whole batch's values are the summed sums over the summed case counts: equal
    to one pass over the batch, not the mean of the chunks' means (which would overweight the
    padded last chunk)."""
    key = (built.model, built.loss, built.task.spec)
    if key not in _EVAL_CACHE:
        model, loss, spec = built.model, built.loss, built.task.spec

        def chunk_sums(params, b: Batch):
            z = model.apply(params, b.x)
            n = n_cases(b.mask)          # the error's divisor (1 for an all-padding chunk: sum 0)
            return (jnp.sum(loss.per_case(z, b.y, b.mask)), tasks.task_error(spec, z, b) * n,
                    jnp.sum(case_weights(b.mask)))

        @jax.jit
        def evaluate(params, batch: Batch):
            size = evaluation_chunk(batch.mask)
            padded = pad_batch(batch, size)
            chunks = jax.tree.map(lambda a: a.reshape((-1, size) + a.shape[1:]), padded)
            loss_sum, error_sum, count = jax.lax.map(lambda b: chunk_sums(params, b), chunks)
            total = jnp.maximum(jnp.sum(count), 1.0)
            return jnp.sum(loss_sum) / total, jnp.sum(error_sum) / total
        _EVAL_CACHE[key] = evaluate
    return _EVAL_CACHE[key]


def evaluation(built, params) -> dict:
    """Train and test loss and error at ``params``."""
    evaluate = evaluator(built)
    # both sets dispatched, then one transfer: four reads would each wait for a transfer of
    # their own, which on a small task's every-update evaluation outweighs the update itself
    values = jax.device_get((evaluate(params, built.task.train),
                             evaluate(params, built.task.test)))
    (tr_loss, tr_err), (te_loss, te_err) = values
    return {"train_loss": float(tr_loss), "train_error": float(tr_err),
            "test_loss": float(te_loss), "test_error": float(te_err)}

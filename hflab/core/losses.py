"""Matching output-nonlinearity / loss pairs and their output-space Hessian products.

With a *matching* pair (Schraudolph 2002) the loss composed with the output nonlinearity is
convex in the pre-activation output ``z``, so ``H_L = ∂²L/∂z²`` is PSD and the Gauss-Newton matrix
``G = Jᵀ H_L J`` is PSD (it equals the Fisher for these exponential-family pairs, Martens 2014):

=========  ====================  ===================================  =====================
name       output ``ŷ(z)``        per-position loss ``ℓ(z, y)``         ``H_L v``
=========  ====================  ===================================  =====================
squared    ``z``                 ``½ Σ (z − y)²``                      ``v``
logistic   ``σ(z)``              ``Σ softplus(z) − y z`` (= BCE)       ``σ(1−σ) ⊙ v``
softmax    ``softmax(z)``        ``logsumexp(z) − yᵀz`` (= CE)         ``p ⊙ v − p (pᵀv)``
=========  ====================  ===================================  =====================

A batch's loss is ``L = Σ_positions mask · ℓ / n_cases``: summed over outputs and over the
time steps that carry a target, averaged over cases (Martens' per-case normalisation).  The
mask is (batch,) for an MLP and (batch, T) for an RNN; a case whose mask is all zero (padding)
counts neither in the sum nor in ``n_cases``, so padded batches give the same numbers.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Batch(NamedTuple):
    """Inputs, targets (same shape as the model output) and a mask over cases (and steps)."""
    x: jax.Array
    y: jax.Array
    mask: jax.Array

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


def make_batch(x, y, mask=None) -> Batch:
    x = jnp.asarray(x)
    y = jnp.asarray(y, dtype=x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32)
    if mask is None:
        mask = jnp.ones(y.shape[:-1], y.dtype)
    return Batch(x, y, jnp.asarray(mask, y.dtype))


def pad_batch(batch: Batch, multiple: int) -> Batch:
    """Append zero-mask cases so the batch size divides by ``multiple``."""
    n = batch.x.shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return batch

    def padded(a):
        return jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])
    return Batch(padded(batch.x), padded(batch.y), padded(batch.mask))


def case_weights(mask) -> jax.Array:
    """Per case: its largest mask entry (1 for a real case, 0 for padding): shape (batch,)."""
    return mask if mask.ndim == 1 else jnp.max(mask.reshape(mask.shape[0], -1), axis=1)


def n_cases(mask) -> jax.Array:
    """Number of real cases: those with any non-zero mask entry (at least 1, to avoid 0/0)."""
    return jnp.maximum(jnp.sum(case_weights(mask)), 1.0)


class MatchingLoss:
    """Base: subclasses give ``elementwise`` (ℓ per position), ``output`` and ``hessian_elem_vp``."""
    name = "base"
    output_activation = "linear"

    def output(self, z):
        raise NotImplementedError

    def position_loss(self, z, y):
        """ℓ summed over the output axis: shape ``z.shape[:-1]``."""
        raise NotImplementedError

    def hessian_elem_vp(self, z, y, v):
        """``∂²ℓ/∂z² v`` per position (no mask, no normalisation)."""
        raise NotImplementedError

    # -- batch-level quantities ------------------------------------------------------------
    def value(self, z, y, mask):
        return jnp.sum(mask * self.position_loss(z, y)) / n_cases(mask)

    def per_case(self, z, y, mask):
        """Unnormalised loss of each case (summed over its masked steps): shape (batch,)."""
        l = mask * self.position_loss(z, y)
        return l.reshape(l.shape[0], -1).sum(axis=1)

    def hessian_vp(self, z, y, mask, v):
        """``∂²L/∂z² v`` for the batch loss L (mask and per-case normalisation included)."""
        return (mask / n_cases(mask))[..., None] * self.hessian_elem_vp(z, y, v)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self).__name__)


class SquaredError(MatchingLoss):
    name = "squared"
    output_activation = "linear"

    def output(self, z):
        return z

    def position_loss(self, z, y):
        return 0.5 * jnp.sum((z - y) ** 2, axis=-1)

    def hessian_elem_vp(self, z, y, v):
        return v


class LogisticCrossEntropy(MatchingLoss):
    name = "logistic"
    output_activation = "logistic"

    def output(self, z):
        return jax.nn.sigmoid(z)

    def position_loss(self, z, y):
        # softplus(z) - y z  ==  -[y log σ(z) + (1-y) log(1-σ(z))], stable for large |z|
        return jnp.sum(jax.nn.softplus(z) - y * z, axis=-1)

    def hessian_elem_vp(self, z, y, v):
        p = jax.nn.sigmoid(z)
        return p * (1.0 - p) * v


class SoftmaxCrossEntropy(MatchingLoss):
    name = "softmax"
    output_activation = "softmax"

    def output(self, z):
        return jax.nn.softmax(z, axis=-1)

    def position_loss(self, z, y):
        return jax.nn.logsumexp(z, axis=-1) - jnp.sum(y * z, axis=-1)

    def hessian_elem_vp(self, z, y, v):
        p = jax.nn.softmax(z, axis=-1)
        return p * v - p * jnp.sum(p * v, axis=-1, keepdims=True)


LOSSES = {"squared": SquaredError, "logistic": LogisticCrossEntropy, "softmax": SoftmaxCrossEntropy}


def get_loss(name: str) -> MatchingLoss:
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; allowed: {sorted(LOSSES)}") from None


class BoundLoss:
    """A matching loss with its targets and mask bound: a function ``z -> scalar`` that also
    knows its exact output-space Hessian product (used by :func:`curvature.gauss_newton_vp`)."""

    def __init__(self, loss: MatchingLoss, y, mask):
        self.loss, self.y, self.mask = loss, y, mask

    def __call__(self, z):
        return self.loss.value(z, self.y, self.mask)

    def hessian_vp(self, z, v):
        return self.loss.hessian_vp(z, self.y, self.mask, v)

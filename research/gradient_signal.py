"""Does the gradient at the start of a paper-scale RNN run carry the task? (``--only
gradient_signal``, about 5 minutes on one core.)

At the exact initial parameters and data of ``rnn_problems.run_papers`` (per problem, T and seed),
the gradient of the training loss on 20,000 sequences is computed three times: with the true
targets, and with the targets permuted among the sequences by two different permutations.  A
permutation keeps every target's value and the inputs but breaks their relation, so the two
permuted gradients differ by sampling noise alone.  The record's ``signal_to_noise`` is

    ‖g_true − mean(g_perm₁, g_perm₂)‖ / (‖g_perm₁ − g_perm₂‖ · √(3/4))

(if the targets were unrelated to the inputs, g_true would be one more draw like the permuted
ones: the numerator's noise has 1.5 times one draw's covariance, g_perm₁ − g_perm₂ twice it, hence
the √(3/4)) — about 1 when the gradient knows no more about the task than about shuffled labels,
≫ 1 when it does.  Addition's target a + b is linear in each marked value, so the first-order sensitivity of
the output to either value already correlates with it; XOR's target a ⊕ b is uncorrelated with a
and with b alone, so at the start the gradient sees it only through the net's a·b interactions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from hflab.config import preset_config
from hflab.experiment import build, init_params
from hflab.core.losses import BoundLoss

from benchmarks.rnn_problems import PAPERS_DATA

N_SEQUENCES = 20_000


def shuffled_targets(y: np.ndarray, mask: np.ndarray, rng) -> np.ndarray:
    """``y`` with each sequence's one target (at its last, masked step) replaced by another
    sequence's: values and mask positions stay, their relation to the inputs is broken.  (Whole
    rows cannot be permuted: sequences differ in length, so a target would leave its mask.)"""
    last, rows = mask.argmax(1), np.arange(len(mask))
    out = np.zeros_like(y)
    out[rows, last] = y[rows, last][rng.permutation(len(rows))]
    return out


def measure(problem: str, seq_len: int, seed: int, n_sequences: int = N_SEQUENCES,
            data: dict | None = None, params=None) -> dict:
    """One (problem, T, seed): ``data`` (default :data:`PAPERS_DATA`) sizes the training set;
    ``params`` (default: the run's initial network) is the network whose gradient is measured
    (an RNN trained at another length, say)."""
    cfg = preset_config(problem, seq_len=seq_len, seed=seed, checkpoint_every=0,
                        **(PAPERS_DATA if data is None else data))
    built = build(cfg)
    params = init_params(built) if params is None else params
    x = built.task.train.x[:n_sequences]
    y = built.task.train.y[:n_sequences]
    mask = built.task.train.mask[:n_sequences]

    @jax.jit                            # data as arguments: closed-over arrays would be folded
    def gradient_of(params, x, targets, mask):
        loss = BoundLoss(built.loss, targets, mask)
        return ravel_pytree(jax.grad(lambda p: loss(built.model.apply(p, x)))(params))[0]

    def gradient(targets):
        return np.asarray(gradient_of(params, x, targets, mask), np.float64)

    rng = np.random.default_rng(seed)
    y_np, mask_np = np.asarray(y), np.asarray(mask)
    g_true = gradient(y)
    g1, g2 = (gradient(jnp.asarray(shuffled_targets(y_np, mask_np, rng), y.dtype))
              for _ in range(2))
    noise = np.linalg.norm(g1 - g2) * np.sqrt(0.75)
    signal = np.linalg.norm(g_true - (g1 + g2) / 2)
    return {"benchmark": "gradient_signal", "problem": problem, "T": seq_len, "seed": seed,
            "n_sequences": int(len(mask_np)), "grad_norm": float(np.linalg.norm(g_true)),
            "signal_norm": float(signal), "noise_norm": float(noise),
            "signal_to_noise": float(signal / noise) if noise > 0 else None}


def run(full: bool):
    for problem in ("addition", "multiplication", "xor", "temporal-order-2"):
        for seq_len in (20, 50, 100):
            for seed in (0, 1, 2):
                yield measure(problem, seq_len, seed)

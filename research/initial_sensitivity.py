"""How much of an early input reaches the last hidden state at initialisation?  (``--only
initial_sensitivity``, about a minute on one core.)

Per (problem, T, seed, ``init_scale``, ``rec_scale``): the paper-scale run's initial network (the
problem's preset, :data:`benchmarks.rnn_problems.PAPERS_DATA`), and on :data:`N_SEQUENCES`
training sequences the norm of ``∂h_last/∂x_10`` — the Jacobian of each sequence's hidden state
at its last step with respect to its input at step 10, where the first marked value lies — whose
median is the record's ``sensitivity``.  It measures how far the initial dynamics carry an early
input (vanishing: ≪ 1e-2; chaotic: ≫ 1), one candidate for why a seed stays on the plateau.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hflab.config import preset_config
from hflab.experiment import build, init_params
from hflab.core.models import rnn_apply_with_hidden

from benchmarks.rnn_problems import PAPERS_DATA

N_SEQUENCES = 200
STEP = 10
# (problem, T, init_scale, rec_scale): the presets at T = 100, XOR with its input weights halved
# (the ``init_scale`` 0.5 runs) and with W_rec at spectral radius 1.4 (the ``rec_scale`` 1.4 runs)
CASES = (("addition", 100, 1.0, 1.2), ("multiplication", 100, 1.0, 1.2),
         ("temporal-order-2", 100, 1.0, 1.2), ("xor", 100, 1.0, 1.2), ("xor", 100, 0.5, 1.2),
         ("xor", 100, 1.0, 1.4))
SEEDS = (0, 1, 2)


def sensitivities(params, x, last, activation: str = "tanh", step: int = STEP) -> np.ndarray:
    """‖∂h_{last_i}/∂x_{i, step}‖ (Frobenius) for each sequence ``i`` of ``x``."""
    def last_state(xi, li):
        return rnn_apply_with_hidden(params, xi[None], activation)[1][0, li]

    def one(xi, li):
        return jnp.linalg.norm(jax.jacrev(last_state)(xi, li)[:, step, :])
    return np.asarray(jax.jit(jax.vmap(one))(x, last))


def measure(problem: str, seq_len: int, seed: int, init_scale: float, rec_scale: float) -> dict:
    cfg = preset_config(problem, seq_len=seq_len, seed=seed, checkpoint_every=0,
                        init_scale=init_scale, rec_scale=rec_scale, **PAPERS_DATA)
    built = build(cfg)
    train = built.task.train
    x = jnp.asarray(train.x[:N_SEQUENCES], built.dtype)
    last = jnp.asarray(np.asarray(train.mask[:N_SEQUENCES]).argmax(1))
    values = sensitivities(init_params(built), x, last, cfg.resolved_activation())
    return {"benchmark": "initial_sensitivity", "problem": problem, "T": seq_len, "seed": seed,
            "init_scale": init_scale, "rec_scale": rec_scale, "n_sequences": int(len(values)),
            "step": STEP, "sensitivity": float(np.median(values)),
            "sensitivity_q10": float(np.quantile(values, 0.1)),
            "sensitivity_q90": float(np.quantile(values, 0.9))}


def run(full: bool):
    for problem, seq_len, init_scale, rec_scale in CASES:
        for seed in SEEDS:
            yield measure(problem, seq_len, seed, init_scale, rec_scale)

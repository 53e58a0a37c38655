"""Does the readout's shrinking keep XOR on its plateau?  (``--only fixed_readout``, about 20
minutes on one core.)

On the plateau an RNN's readout ``W_out`` shrinks towards predicting the mean — the one thing the
loss rewards while the hidden state's variation is noise — and the gradient and Gauss-Newton
blocks of every recurrent weight scale with it.  The paper-scale records show the XOR runs that
succeed leaving the plateau within 15–30 updates with the readout near its initial norm, and the
ones that fail with it shrinking (T = 50 seed 2, μ = 0.3: 4.06 → 1.78 after 25 updates).
Whether the shrinking *causes* the failure is tested here: HF with structural damping at the
settings of :func:`benchmarks.rnn_problems.run_papers`, with ``W_out`` held at its initial value
(the output bias still trained), on the XOR seeds that stay at chance at T = 50.  The records
are ``rnn_problem`` lines labelled ``hf+structural (readout fixed)``.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from hflab.experiment import build, init_params
from hflab.core.models import Model

from benchmarks.rnn_problems import PAPERS_DATA, SOLVED_ERROR, one

# the T = 50 XOR seeds HF+SD leaves at chance (379 and 341 updates in 600 s)
CASES = (("xor", 50, 1, 600.0), ("xor", 50, 2, 600.0))
LABEL = "hf+structural (readout fixed)"


@dataclasses.dataclass(frozen=True)
class FixedReadoutRNN(Model):
    """An RNN whose readout ``W_out`` is a constant of the model, not a parameter: its
    parameters are the others (``W_in``, ``W_rec``, ``b``, ``b_out``), so every optimiser and
    curvature product sees the readout as fixed.  ``readout`` is ``W_out`` as nested tuples
    (hashable: the model keys jitted functions)."""
    readout: tuple = ()

    def with_readout(self, params):
        dtype = params["W_rec"].dtype
        return {**params, "W_out": jnp.asarray(self.readout, dtype)}

    def apply(self, params, x):
        return super().apply(self.with_readout(params), x)

    def apply_with_hidden(self, params, x):
        return super().apply_with_hidden(self.with_readout(params), x)

    @property
    def n_params(self) -> int:
        return super().n_params - int(np.size(self.readout))


def fixed_readout_start(cfg):
    """``(built, params, opt_state)`` for ``cfg``'s RNN with its initial ``W_out`` made a
    constant: the same initial network, one parameter block fewer."""
    built = build(cfg)
    params = init_params(built)
    model = FixedReadoutRNN(**{f.name: getattr(built.model, f.name)
                               for f in dataclasses.fields(Model)},
                            readout=tuple(map(tuple, np.asarray(params["W_out"]).tolist())))
    optimizer = cfg.entry.factory(model, built.loss, cfg.weight_cost, cfg.settings)
    built = dataclasses.replace(built, model=model, optimizer=optimizer)
    params = {k: v for k, v in params.items() if k != "W_out"}
    return built, params, optimizer.init(params)


def run(full: bool):
    for problem, seq_len, seed, budget in CASES:
        record = one(problem, seq_len, LABEL, {**PAPERS_DATA, "optimizer": "hf"}, seed, budget,
                     curve=True, target_error=SOLVED_ERROR, start=fixed_readout_start)
        yield {**record, **PAPERS_DATA, "settings": {"readout": "fixed"}}

"""The optimiser registry: ``name → OptimizerEntry(factory, settings, …)``.

Everything that offers a choice of optimiser — the config's allowed values and defaults, the CLI
flags, the Train page's form and widgets, the run loop's data stream and memory estimate, the CG
inspector's run list, the benchmarks — iterates :data:`REGISTRY`; nothing branches on a name.
Adding an optimiser is one module (an object following :mod:`hflab.core.protocol`) and one entry here.

An entry's ``settings`` maps the :class:`~hflab.config.RunConfig` fields the optimiser reads to
its own default for them (``None`` keeps RunConfig's default).  ``factory(model, loss,
weight_cost, settings)`` builds it; ``weight_cost`` belongs to the objective, so every optimiser
gets it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from .core import baselines, hf
from .core.lbfgs import LBFGS


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    label: str
    description: str
    factory: Callable
    settings: Mapping[str, object] = field(default_factory=dict)
    curvature_batch: bool = False    # receives chunk ``step mod n_chunks`` as its curvature batch
    cg_trace: bool = False           # records a CG trace per update (CG inspector)
    memory_vectors: int = 4          # parameter-sized vectors it holds (for the memory estimate)


def _hf(model, loss, weight_cost, settings):
    hf_settings = {k: v for k, v in settings.items() if k != "n_chunks"}
    return hf.HessianFree(model, loss, hf.HFConfig(weight_cost=weight_cost, **hf_settings))


def _optax(transform):
    def factory(model, loss, weight_cost, settings):
        return baselines.FirstOrder(model, loss, transform(**settings), weight_cost)
    return factory


def _lbfgs(model, loss, weight_cost, settings):
    return LBFGS(model, loss, weight_cost=weight_cost, **settings)


REGISTRY: dict[str, OptimizerEntry] = {e.name: e for e in [
    OptimizerEntry(
        "hf", "Hessian-free", "Martens (2010): truncated-Newton steps by CG on the damped "
        "Gauss-Newton (or Hessian / Fisher) model", _hf,
        settings={"curvature": None, "damping": None, "structural_damping": None,
                  "max_cg_iters": None, "cg_decay": None, "n_chunks": None,
                  "preconditioner": None, "backtracking": None, "line_search": None,
                  "rho_batch": None},
        # parameter-sized vectors: CG's, the saved iterates CG-backtracking may return (⌈5·1.3^j⌉
        # up to 250), the step, gradient and warm start — 36 covers the MNIST autoencoder's update
        # as XLA's memory analysis measures it
        curvature_batch=True, cg_trace=True, memory_vectors=36),
    OptimizerEntry("sgd", "SGD", "plain stochastic gradient descent (optax.sgd)",
                   _optax(baselines.sgd), settings={"learning_rate": 0.05}),
    OptimizerEntry("momentum", "Nesterov momentum", "SGD with Nesterov momentum (optax.sgd)",
                   _optax(baselines.nesterov), settings={"learning_rate": 0.01, "momentum": 0.9}),
    OptimizerEntry("adam", "Adam", "Kingma & Ba (2015) (optax.adam)", _optax(baselines.adam),
                   settings={"learning_rate": 0.003}),
    OptimizerEntry("lbfgs", "L-BFGS", "optax.lbfgs: two-loop recursion, memory 10, zoom line "
                   "search (strong Wolfe)", _lbfgs, settings={"learning_rate": 1.0},
                   memory_vectors=25),
]}
NAMES = tuple(REGISTRY)


def get(name: str) -> OptimizerEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {list(NAMES)}") from None

"""The optimiser registry: ``name → OptimizerEntry(factory, settings class, presets, …)``.

Everything that offers a choice of optimiser — the config's allowed values, the CLI flags, the
Train page's form and widgets, the URL, the run loop's data stream and memory estimate, the CG
inspector's run list, the benchmarks — iterates :data:`REGISTRY`; nothing branches on a name.

Each optimiser owns its settings: a frozen dataclass (:mod:`hflab.core.settings`) whose fields
carry help text and ranges, and per-task presets that apply to it alone (HF's λ₀ = 45 on the deep
autoencoders never reaches Adam).  Its settings are namespaced by its name everywhere a user sees
them: ``hf.damping`` in the URL and the bundles, ``--hf.damping`` on the command line.

Adding an optimiser is one module (an object following :mod:`hflab.core.protocol` and a settings
dataclass) and one entry here.  ``factory(model, loss, weight_cost, settings)`` builds it;
``weight_cost`` belongs to the objective, so every optimiser gets it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .core import baselines, hf, kfac, muon, sophia
from .core.lbfgs import LBFGS, LBFGSSettings
from .core.settings import SettingError, from_mapping
from .learning_rates import LEARNING_RATES


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    label: str
    description: str
    factory: Callable
    settings: type                   # its frozen settings dataclass
    presets: Mapping[str, Mapping[str, object]] = field(default_factory=dict)   # task → fields
    curvature_batch: bool = False    # receives chunk ``step mod n_chunks`` as its curvature batch
    cg_trace: bool = False           # records a CG trace per update (CG inspector)
    memory_vectors: int = 4          # parameter-sized vectors it holds (for the memory estimate)
    # cross-checks against the run: ``check(settings, kind, grad_batch)`` raises SettingError
    check: Callable | None = None
    # its state across updates on the inspector page: (metric, label, log axis) panels
    state_panels: tuple = ()

    def defaults(self):
        return self.settings()

    def preset(self, task: str):
        """Its settings for ``task``: the dataclass's defaults, then the task's preset."""
        return dataclasses.replace(self.defaults(), **self.presets.get(task, {}))

    def from_mapping(self, data: dict, base=None):
        """Settings from a mapping of (some of) its fields over ``base`` (its defaults); messages
        name the field as ``<optimizer>.<field>``."""
        base = base if base is not None else self.defaults()
        return from_mapping(self.settings, {**dataclasses.asdict(base), **data}, f"{self.name}.")

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.settings))


def _hf(model, loss, weight_cost, settings: hf.HFSettings):
    return hf.HessianFree(model, loss, settings.hf_config(weight_cost))


def _check_hf(settings: hf.HFSettings, kind: str, grad_batch: int):
    if settings.structural_damping and kind != "rnn":
        raise SettingError("structural_damping", settings.structural_damping,
                           "only RNN tasks (it damps hidden-state changes); use 0 for an MLP")
    if settings.n_chunks > grad_batch:
        raise SettingError("n_chunks", settings.n_chunks, f"at most the gradient batch size "
                           f"({grad_batch}): each curvature chunk needs at least one case")


def _kfac(model, loss, weight_cost, settings: kfac.KFACSettings):
    return kfac.KFAC(model, loss, settings, weight_cost)


def _check_kfac(settings: kfac.KFACSettings, kind: str, grad_batch: int):
    if kind == "rnn":
        raise SettingError("optimizer", "kfac", "an MLP task for K-FAC: its Kronecker factors "
                           "are per dense layer, and an RNN's recurrent weights are shared "
                           "across time steps (K-FAC for RNNs, Martens, Ba & Johnson 2018, is "
                           "not implemented); use hf, adam or another optimiser")


def _optax(transform):
    def factory(model, loss, weight_cost, settings):
        return baselines.FirstOrder(model, loss, transform(settings), weight_cost)
    return factory


def _sophia(model, loss, weight_cost, settings: sophia.SophiaSettings):
    return sophia.Sophia(model, loss, settings, weight_cost)


def _lbfgs(model, loss, weight_cost, settings: LBFGSSettings):
    return LBFGS(model, loss, learning_rate=settings.learning_rate, weight_cost=weight_cost)


def _swept(optimizer: str) -> dict[str, dict]:
    """Per task, the learning rate the recorded sweep chose for ``optimizer``."""
    return {task: {"learning_rate": rates[optimizer]}
            for task, rates in LEARNING_RATES.items() if optimizer in rates}


# HF per task (Martens 2010; Martens & Sutskever 2011): λ₀ = 45 and curvature on a quarter of
# the batch for the deep autoencoders; the digits autoencoder (the lab's default run) also takes
# its curvature on a quarter of its whole batch — a quarter of the cost per update, ahead of the
# whole batch on the way down and as fast to a low loss — and measures ρ on the whole batch, the
# objective the step was made for, whose loss CG-backtracking has already evaluated, rather than
# on the quarter (Martens' code): sooner to a low loss (benchmarks/peer.py measures each); RNN
# problems with structural damping μ = 0.03, λ₀ = 1, curvature on a quarter of the data and at
# most 100 CG iterations.
_HF_RNN = dict(damping=1.0, structural_damping=0.03, n_chunks=4, max_cg_iters=100)
HF_PRESETS: dict[str, dict] = {
    "seed-333": dict(damping=1.0), "regression": dict(damping=1.0), "spirals": dict(damping=1.0),
    "digits": dict(damping=1.0), "digits-ae": dict(damping=1.0, n_chunks=4, rho_batch="gradient"),
    "mnist": dict(damping=1.0, n_chunks=4), "mnist-ae": dict(damping=45.0, n_chunks=4),
    "curves": dict(damping=45.0, n_chunks=4), "seed-rnn": dict(damping=1.0),
    **{t: dict(_HF_RNN) for t in ("addition", "multiplication", "xor", "temporal-order-2",
                                  "temporal-order-3", "memorization")},
}

REGISTRY: dict[str, OptimizerEntry] = {e.name: e for e in [
    OptimizerEntry(
        "hf", "Hessian-free", "Martens (2010): truncated-Newton steps by CG on the damped "
        "Gauss-Newton (or Hessian / Fisher) model", _hf, hf.HFSettings, HF_PRESETS,
        # parameter-sized vectors: CG's, the saved iterates CG-backtracking may return (⌈5·1.3^j⌉
        # up to 250), the step, gradient and warm start — 36 covers the MNIST autoencoder's update
        # as XLA's memory analysis measures it
        curvature_batch=True, cg_trace=True, memory_vectors=36, check=_check_hf),
    OptimizerEntry(
        "kfac", "K-FAC", "Martens & Grosse (2015): Kronecker-factored Fisher per layer, factored "
        "Tikhonov damping, α and μ from the quadratic model, ρ-adapted λ (the lab's own code)",
        _kfac, kfac.KFACSettings, check=_check_kfac, memory_vectors=8,
        state_panels=(("damping", "damping λ", True), ("rho", "reduction ratio ρ", False),
                      ("learning_rate", "learning rate α (quadratic model)", False),
                      ("momentum", "momentum μ (quadratic model)", False),
                      ("predicted_reduction", "predicted change q(δ)", False),
                      ("actual_reduction", "actual change h(θ+δ) − h(θ)", False))),
    OptimizerEntry("sgd", "SGD", "plain stochastic gradient descent (optax.sgd)",
                   _optax(baselines.sgd), baselines.SGDSettings, _swept("sgd")),
    OptimizerEntry("momentum", "Nesterov momentum", "SGD with Nesterov momentum (optax.sgd)",
                   _optax(baselines.nesterov), baselines.MomentumSettings, _swept("momentum")),
    OptimizerEntry("adam", "Adam", "Kingma & Ba (2015) (optax.adam)", _optax(baselines.adam),
                   baselines.AdamSettings, _swept("adam")),
    OptimizerEntry("lbfgs", "L-BFGS", "optax.lbfgs: two-loop recursion, memory 10, zoom line "
                   "search (strong Wolfe)", _lbfgs, LBFGSSettings, _swept("lbfgs"),
                   memory_vectors=25),
    OptimizerEntry("sophia", "Sophia", "Liu et al. (2024): gradient EMA over a clipped "
                   "Hutchinson estimate of the Hessian diagonal (optax.contrib.sophia)", _sophia,
                   sophia.SophiaSettings, _swept("sophia"), memory_vectors=8),
    OptimizerEntry("muon", "Muon", "Jordan et al. (2024): Newton–Schulz-orthogonalised momentum "
                   "for weight matrices, Adam for the rest (optax.contrib.muon)",
                   _optax(muon.transformation), muon.MuonSettings, _swept("muon"),
                   memory_vectors=6),
]}
NAMES = tuple(REGISTRY)


def get(name: str) -> OptimizerEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {list(NAMES)}") from None

"""Muon (Jordan et al. 2024; Liu et al. 2025) from ``optax.contrib.muon``, behind the optimiser
protocol.

Muon orthogonalises the (Nesterov) momentum of every weight matrix by a few Newton–Schulz
iterations — an approximation of ``U Vᵀ`` from the momentum's SVD ``U Σ Vᵀ``, i.e. the steepest
descent step under the spectral norm — and updates the remaining parameters (biases) with Adam,
as optax does.  One gradient per update, like the first-order baselines.
"""
from __future__ import annotations

from dataclasses import dataclass

import optax
from optax import contrib

from .settings import setting


@dataclass(frozen=True)
class MuonSettings:
    learning_rate: float = setting(0.02, "learning rate (per preset from the recorded sweep)",
                                   lo=0.0, hi=100.0, open_low=True)
    beta: float = setting(0.95, "momentum decay", lo=0.0, hi=1.0, open_high=True)
    ns_steps: int = setting(5, "Newton–Schulz iterations per update", lo=1, hi=50)


def transformation(settings: MuonSettings) -> optax.GradientTransformation:
    """``optax.contrib.muon`` with the lab's settings (Adam at the same rate for biases)."""
    return contrib.muon(settings.learning_rate, beta=settings.beta, ns_steps=settings.ns_steps)

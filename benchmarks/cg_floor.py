"""The CG noise floor: what a λ floor tied to the dtype saves on the digits-autoencoder run.

On the digits autoencoder in float32 with the whole batch for gradient and curvature (the lab's
default run when this was measured; its preset now takes the curvature on a quarter of the batch,
see benchmarks/peer.py, and this benchmark keeps the whole batch) Levenberg–Marquardt drives λ
towards its floor because the steps keep being good; with a floor of 10⁻⁸ (the lab's until this
measurement; kfac-jax's default) G + λI is so badly conditioned that float32 CG stalls — its residual flat and noisy — yet Martens' stop rarely fires,
and CG runs to its 250-iteration cap on update after update.  Those iterations cost time and no
longer improve the model.  Measured here: the same run (same data, seed, initial weights) with
the λ floor at 10⁻⁸, at 10⁻⁶ and at √ε of float32 (3.5·10⁻⁴: a damping below it is lost in the
rounding of G's entries of order one — the lab's default since), each for ``steps`` updates; per
variant the training loss against update seconds, the CG iterations, the share of updates that hit
the cap, and the update seconds each needs to reach the training loss the 10⁻⁸ run ends at.

Whether a stop rule that watches the residual's stagnation would save more: per variant the
share of the updates at the cap whose CG-backtracking chose the last iterate (``last_chosen_at_cap``)
— the one the true objective preferred over every earlier saved iterate: where that share is
high, the iterations a stagnation rule would have cut still paid.  Not measured: CG in float64 vectors over a float32
model (the lab has no such mode); the floor is the change that needs no new mode.
"""
from __future__ import annotations

import dataclasses
import statistics

STEPS = 200
FLOORS = {"1e-8": 1e-8, "1e-6": 1e-6, "√ε float32 = 3.5e-4 (default)": None}


def run_variant(floor: float, seed: int, steps: int) -> dict:
    from hflab.config import RunConfig
    from hflab.core import hf
    from hflab.experiment import build, run
    cfg = RunConfig(steps=steps, seed=seed, checkpoint_every=0, eval_every=1)
    built = build(cfg)
    config = dataclasses.replace(cfg.settings.hf_config(cfg.weight_cost), min_damping=floor)
    built = dataclasses.replace(built, optimizer=hf.HessianFree(built.model, built.loss, config))
    rows = []
    run(cfg, built=built, on_step=lambda record, *_: rows.append(dict(record)))
    rows = [r for r in rows if r["step"] > 0]
    return {"train_loss": [r["train_loss"] for r in rows],
            "seconds": [r["wall_seconds"] for r in rows],
            "cg_iters": [int(r["cg_iters"]) for r in rows],
            "damping": [float(r["damping"]) for r in rows],
            "chosen": [int(r["backtrack_index"]) for r in rows]}


def last_chosen_at_cap(cg_iters: list[int], chosen: list[int], cap: int = 250) -> float | None:
    """Of the updates whose CG ran to ``cap``, the share where backtracking kept the last iterate
    (None when none reached the cap)."""
    at_cap = [c == i for i, c in zip(cg_iters, chosen) if i >= cap]
    return statistics.mean(at_cap) if at_cap else None


def run(full: bool):
    seeds = (0, 1, 2) if full else (0,)
    steps = STEPS if full else 100
    for seed in seeds:
        runs = {name: run_variant(floor, seed, steps) for name, floor in FLOORS.items()}
        target = runs["1e-8"]["train_loss"][-1]
        for name, r in runs.items():
            reached = next((s for s, l in zip(r["seconds"], r["train_loss"]) if l <= target), None)
            yield {"benchmark": "cg_floor", "floor": name, "seed": seed, "steps": steps,
                   "final_train_loss": r["train_loss"][-1], "seconds": r["seconds"][-1],
                   "target_train_loss": target, "seconds_to_target": reached,
                   "cg_iterations": sum(r["cg_iters"]), "share_at_cap": statistics.mean(
                       c >= 250 for c in r["cg_iters"]),
                   "final_damping": r["damping"][-1],
                   "last_chosen_at_cap": last_chosen_at_cap(r["cg_iters"], r["chosen"]),
                   "curve_train_loss": r["train_loss"],
                   "curve_seconds": r["seconds"], "curve_cg_iters": r["cg_iters"]}


REPORT_SECTIONS = [
    ("The CG noise floor (the digits-autoencoder run in float32, whole-batch curvature, λ floors)",
     "cg_floor", ["floor", "seed", "steps"],
     ["floor", "seed", "steps", "final_train_loss", "seconds", "seconds_to_target",
      "cg_iterations", "share_at_cap", "last_chosen_at_cap", "final_damping"]),
]

"""Learning-rate sweep behind every preset's first-order defaults (the Train page's comparison).

For each task and each registered first-order optimiser, a short run (the preset's model and data,
``steps`` updates, full-batch or the preset's batch) at each learning rate of a log grid; the
chosen rate is the one with the lowest final training loss among runs that did not diverge.  The
results go to results.jsonl (``lr_sweep`` lines, and one ``lr_sweep_best`` line per pair) and the
chosen rates are the ones in :data:`hflab.config.PRESETS`.
"""
from __future__ import annotations

import math

from hflab import optimizers
from hflab.config import PRESETS, preset_config
from hflab.experiment import run as run_loop

GRID = {"lbfgs": (1.0, 0.3, 0.1)}
DEFAULT_GRID = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
BIG = ("mnist", "mnist-ae", "curves")          # quick mode: smaller data for the big presets


def run(full: bool):
    steps = 100 if full else 40
    for task in PRESETS:
        for name, entry in optimizers.REGISTRY.items():
            if entry.curvature_batch:                # HF has no learning rate
                continue
            best = None
            for lr in GRID.get(name, DEFAULT_GRID):
                extra = {} if full or task not in BIG else {"n_train": 500, "n_test": 100,
                                                            "grad_batch": 0}
                cfg = preset_config(task, optimizer=name, learning_rate=lr, steps=steps,
                                    checkpoint_every=0, eval_every=steps, target_error=-1.0,
                                    **extra)
                out = run_loop(cfg)
                loss = out.last.get("train_loss", math.inf)
                ok = out.status == "finished" and math.isfinite(loss)
                yield {"benchmark": "lr_sweep", "task": task, "optimizer": name,
                       "learning_rate": lr, "steps": steps, "train_loss": loss if ok else None,
                       "status": out.status}
                if ok and (best is None or loss < best[1]):
                    best = (lr, loss)
            yield {"benchmark": "lr_sweep_best", "task": task, "optimizer": name,
                   "learning_rate": best[0] if best else None,
                   "train_loss": best[1] if best else None, "steps": steps}

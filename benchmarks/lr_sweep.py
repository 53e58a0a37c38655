"""Learning-rate sweep behind every preset's first-order defaults (the Train page's comparison).

For each task and each registered first-order optimiser, a short run (the preset's model and data,
``steps`` updates, full-batch or the preset's batch) at each learning rate of a log grid; the
chosen rate is the one with the lowest final training loss among runs that did not diverge.  The
results go to records/lr_sweep.jsonl (``lr_sweep`` lines, and one ``lr_sweep_best`` line per
pair), and ``python -m benchmarks.lr_sweep`` writes the chosen rates into
``hflab/learning_rates.py``, which the optimisers' registry entries read as their per-task
presets.  ``HFLAB_SWEEP_TASKS`` and ``HFLAB_SWEEP_OPTIMIZERS`` (comma lists) pick a subset.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from hflab import optimizers
from hflab.config import PRESETS, preset_config
from hflab.experiment import run as run_loop

GRID = {"lbfgs": (1.0, 0.3, 0.1), "sophia": (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003)}
DEFAULT_GRID = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
BIG = ("mnist", "mnist-ae", "curves")          # quick mode: smaller data for the big presets


def run(full: bool):
    steps = 100 if full else 40
    only = [t for t in os.environ.get("HFLAB_SWEEP_TASKS", "").split(",") if t]
    chosen = [o for o in os.environ.get("HFLAB_SWEEP_OPTIMIZERS", "").split(",") if o]
    for task in only or PRESETS:
        for name, entry in optimizers.REGISTRY.items():
            if "learning_rate" not in entry.field_names():   # HF has no learning rate
                continue
            if chosen and name not in chosen:
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
        release_compiled()


def release_compiled():
    """Drop the compiled programs of a task's runs: each holds memory mappings of its machine
    code, and a sweep over every preset in one process would otherwise reach the kernel's limit
    on mappings (LLVM then fails with 'Cannot allocate memory')."""
    import jax

    from hflab import compiled, experiment
    experiment._OPT_CACHE.clear()
    compiled.COMPILED.clear()
    jax.clear_caches()


def verify(full: bool = False):
    """Each preset's first-order optimisers at their chosen rates for the preset's own number of
    updates (what Start runs): ``lr_check`` lines with the final status — none may diverge."""
    only = [t for t in os.environ.get("HFLAB_SWEEP_TASKS", "").split(",") if t]
    for task in only or PRESETS:
        for name, entry in optimizers.REGISTRY.items():
            if "learning_rate" not in entry.field_names():
                continue
            cfg = preset_config(task, optimizer=name, checkpoint_every=0, target_error=-1.0)
            out = run_loop(cfg)
            yield {"benchmark": "lr_check", "task": task, "optimizer": name,
                   "learning_rate": cfg.settings.learning_rate, "steps": cfg.steps,
                   "status": out.status, "train_loss": out.last.get("train_loss")}


def chosen_rates(rows: list[dict]) -> dict[str, dict[str, float]]:
    """task → optimiser → learning rate, from ``lr_sweep`` lines (the newest sweep per pair)."""
    latest: dict = {}
    for r in rows:
        if r.get("benchmark") == "lr_sweep":
            latest[(r["task"], r["optimizer"], r["learning_rate"])] = r
    out: dict = {}
    for task, opt in sorted({(t, o) for t, o, _ in latest}):
        grid = sorted(lr for t, o, lr in latest if (t, o) == (task, opt))
        ok = {lr: latest[(task, opt, lr)]["train_loss"] for lr in grid
              if latest[(task, opt, lr)]["train_loss"] is not None}
        if not ok:
            continue
        best = min(ok, key=ok.get)
        i = grid.index(best)
        larger_diverged = i + 1 < len(grid) and grid[i + 1] not in ok
        if larger_diverged and i > 0 and grid[i - 1] in ok:
            best = grid[i - 1]
        out.setdefault(task, {})[opt] = best
    return out


def write_table(rows: list[dict], path) -> None:
    rates = chosen_rates(rows)
    lines = ['"""First-order learning rates of every preset, chosen by ``benchmarks/lr_sweep.py``',
             "(written by it: do not edit by hand; the sweep's lines are in",
             'records/lr_sweep.jsonl)."""', "", "LEARNING_RATES = {"]
    for task, per in rates.items():
        items = [f'"{o}": {lr!r}' for o, lr in sorted(per.items())]
        line = f'    "{task}": {{'
        for k, item in enumerate(items):          # wrapped at 100 characters
            piece = item + (", " if k + 1 < len(items) else "},")
            if len(line) + len(piece.rstrip()) > 100:
                lines.append(line.rstrip())
                line = " " * 8
            line += piece
        lines.append(line)
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import json
    import sys

    from .common import read_records
    rows = ([json.loads(line) for line in open(sys.argv[1])] if len(sys.argv) > 1
            else read_records(["lr_sweep"]))
    target = Path(__file__).resolve().parent.parent / "hflab" / "learning_rates.py"
    write_table(rows, target)
    print(f"wrote {target}")

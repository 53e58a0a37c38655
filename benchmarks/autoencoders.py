"""Deep autoencoders (Martens 2010): HF vs Adam vs Nesterov momentum at equal wall time; error =
squared reconstruction error summed over pixels, averaged over cases (the paper's measure)."""
from __future__ import annotations

import jax

from hflab.config import preset_config
from hflab.experiment import run as run_loop

from .common import compared_optimizers

# learning rates tuned for these autoencoders where they differ from the registry's defaults
TUNED = {"adam": dict(learning_rate=0.001)}
QUICK_SKIP = ("sgd",)


def variants(full: bool) -> dict[str, dict]:
    return {name: {**s, **TUNED.get(name, {})}
            for name, s in compared_optimizers(() if full else QUICK_SKIP).items()}


def cases(full: bool):
    gpu = jax.devices()[0].platform != "cpu"
    yield "digits-ae", {}, 60.0 if full else 10.0
    yield "curves", ({"n_train": 20000, "n_test": 10000} if full and gpu else
                     {"n_train": 2000, "n_test": 500}), 300.0 if full else 20.0
    if full:
        yield "mnist-ae", {"grad_batch": 1000}, 600.0


def run(full: bool):
    for task, extra, budget in cases(full):
        for label, opt in variants(full).items():
            first_order = label != "hf"
            cfg = preset_config(task, steps=1_000_000, max_seconds=budget, checkpoint_every=0,
                                eval_every=5 if not first_order else 50,
                                **{**extra, **opt,
                                   **({"grad_batch": min(extra.get("grad_batch", 0) or 200, 200)}
                                      if first_order else {})})
            out = run_loop(cfg)
            yield {"benchmark": "autoencoder", "task": task, "optimizer": label,
                   "budget_seconds": budget, "updates": out.steps_done,
                   "train_error": out.last.get("train_error"),
                   "test_error": out.last.get("test_error"), "n_train": cfg.n_train or None,
                   "layers": cfg.layers or cfg.spec.default_layers}

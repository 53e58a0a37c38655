"""The run loop's own cost: how much of an update's time through the lab's loop is the compiled
update, and how much the loop's host work around it (cutting the batch from the data stream,
finding the compiled program, reading the info record).

Measured inside :class:`hflab.experiment.Trainer` itself: ``loop_ms`` is the time of
``Trainer.advance`` per update, ``update_ms`` the part of it the loop times as the update
(``wall_seconds``, waited on); evaluation is left out (one at the start, none after).  Two
cases on the digits autoencoder: Adam on minibatches of 200 — the smallest update the lab runs,
where the host work shows most — and HF on the full batch.  A first-order run's curve against
seconds and a comparison's equal-seconds point (:mod:`benchmarks.autoencoders`) count the update
time only; its budget counts the loop's, so ``update_share`` is the part of a budget a small
run spends optimising.
"""
from __future__ import annotations

import time

from hflab.config import preset_config
from hflab.experiment import Trainer

CASES = {"adam, digits-ae, minibatches of 200": (dict(optimizer="adam", grad_batch=200,
                                                      learning_rate=0.03), 3000),
         "hf, digits-ae, full batch": (dict(optimizer="hf"), 60)}
WARM_UPDATES = 10


def run(full: bool):
    for case, (overrides, updates) in CASES.items():
        cfg = preset_config("digits-ae", steps=10**6, eval_every=10**6, checkpoint_every=0,
                            **overrides).validate()
        trainer = Trainer(cfg)
        for _ in range(WARM_UPDATES):          # compiled, data stream and caches warm
            trainer.advance()
        wall0, t0 = trainer.progress.wall, time.perf_counter()
        for _ in range(updates):
            trainer.advance()
        loop = (time.perf_counter() - t0) / updates
        update = (trainer.progress.wall - wall0) / updates
        yield {"benchmark": "loop_cost", "case": case, "updates": updates,
               "loop_ms": 1e3 * loop, "update_ms": 1e3 * update,
               "host_ms": 1e3 * (loop - update), "update_share": update / loop}


REPORT_SECTIONS = [
    ("The run loop's own cost (ms per update: through the loop, the update alone)",
     "loop_cost", ["case"],
     ["case", "updates", "loop_ms", "update_ms", "host_ms", "update_share", "device"]),
]

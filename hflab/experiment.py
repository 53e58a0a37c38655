"""The one run loop shared by every optimiser: build, the data stream, evaluation, the loop.

:func:`build` turns a validated :class:`~hflab.config.RunConfig` into task data, a model and an
optimiser from the registry (:mod:`hflab.optimizers`).  :func:`run` drives any optimiser that
follows :mod:`hflab.protocol`; it never asks which one it is.

The data stream is a pure function of (seed, step): full batch, or fixed-size minibatches cut
from a per-epoch permutation; an optimiser that takes a curvature batch gets chunk
``step mod n_chunks`` of the gradient batch (Martens 2010 §4.5), fixed within one update.  So a
resumed run sees exactly the data it would have seen.

Costs: every update's ``wall_seconds`` is the time of that update alone (waited on with
``block_until_ready``); compilation is done ahead of time and reported as ``compile_seconds``;
evaluation is left out.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import tasks
from .config import RunConfig
from .losses import Batch, get_loss
from .models import Model

MAX_CONSECUTIVE_REJECTIONS = 25
COUNTERS = ("n_grad", "n_gv", "n_forward", "n_passes")


# ----------------------------------------------------------------------------- building
@dataclass
class Built:
    config: RunConfig
    task: tasks.Task
    model: Model
    loss: Any
    optimizer: Any
    dtype: Any


_OPT_CACHE: dict = {}


def build(config: RunConfig) -> Built:
    """Task data, model and optimiser for a validated config.

    Optimisers are cached by (name, model, loss, settings) so runs with matching configurations
    share their compiled update (JAX's jit cache lives on the function object).
    """
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    task = tasks.load_task(config.task, config.seed, config.seq_len or 0, config.n_train,
                           config.n_test, dtype)
    model = config.model()
    loss = get_loss(config.resolved_loss())
    settings = config.optimizer_settings()
    key = (config.optimizer, model, loss, config.weight_cost, tuple(sorted(settings.items())))
    if key not in _OPT_CACHE:
        _OPT_CACHE[key] = config.entry.factory(model, loss, config.weight_cost, settings)
    return Built(config, task, model, loss, _OPT_CACHE[key], dtype)


def init_params(built: Built):
    return built.model.init_params(jax.random.PRNGKey(built.config.seed), built.dtype)


# ----------------------------------------------------------------------------- data stream
def batches_for_step(built: Built, step: int) -> tuple[Batch, Batch]:
    """(gradient batch, curvature batch) of update ``step`` — a pure function of (seed, step)."""
    cfg, train = built.config, built.task.train
    n = train.size
    gb = cfg.grad_batch or n
    if gb >= n:
        grad = train
    else:
        per_epoch = n // gb
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng((cfg.seed, epoch)).permutation(n)[k * gb:(k + 1) * gb]
        idx = jnp.asarray(np.sort(perm))
        grad = Batch(train.x[idx], train.y[idx], train.mask[idx])
    if not cfg.entry.curvature_batch or cfg.n_chunks == 1:
        return grad, grad
    size = gb // cfg.n_chunks
    sl = slice((step % cfg.n_chunks) * size, (step % cfg.n_chunks + 1) * size)
    return grad, Batch(grad.x[sl], grad.y[sl], grad.mask[sl])


# ----------------------------------------------------------------------------- evaluation
_EVAL_CACHE: dict = {}


def evaluator(built: Built) -> Callable:
    key = (built.model, built.loss, built.task.spec)
    if key not in _EVAL_CACHE:
        model, loss, spec = built.model, built.loss, built.task.spec

        @jax.jit
        def evaluate(params, batch: Batch):
            z = model.apply(params, batch.x)
            return loss.value(z, batch.y, batch.mask), tasks.task_error(spec, z, batch)
        _EVAL_CACHE[key] = evaluate
    return _EVAL_CACHE[key]


def evaluation(built: Built, params) -> dict:
    """Train and test loss and error at ``params``."""
    evaluate = evaluator(built)
    tr_loss, tr_err = evaluate(params, built.task.train)
    te_loss, te_err = evaluate(params, built.task.test)
    return {"train_loss": float(tr_loss), "train_error": float(tr_err),
            "test_loss": float(te_loss), "test_error": float(te_err)}


# ----------------------------------------------------------------------------- compilation
_COMPILED: dict = {}


def _signature(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((a.shape, str(a.dtype), getattr(a, "sharding", None)) for a in leaves)


def compiled_update(opt, args) -> tuple[Callable, float]:
    """The optimiser's update compiled ahead of time for these argument shapes, and the seconds
    compiling took (0 when cached).  Compiling apart from the first call keeps compilation out of
    the optimisation time that curves and wall-clock budgets use; compiled programs are shared
    by every run with the same optimiser and shapes."""
    key = (id(opt), _signature(args))
    if key in _COMPILED:
        return _COMPILED[key][1], 0.0
    t0 = time.perf_counter()
    compiled = opt.update.lower(*args).compile()
    _COMPILED[key] = (opt, compiled)          # keep `opt` alive so its id stays unique
    return compiled, time.perf_counter() - t0


# ----------------------------------------------------------------------------- the loop
@dataclass
class RunOutcome:
    status: str                     # finished | stopped | diverged | failed
    reason: str
    steps_done: int
    params: Any
    opt_state: Any
    last: dict = field(default_factory=dict)


@dataclass
class _Progress:
    """What the loop carries between updates: cost counters and the rejection streak."""
    wall: float = 0.0
    compile: float = 0.0
    session_compile: float = 0.0
    totals: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    rejections: int = 0
    nonfinite: bool = False

    @classmethod
    def from_counters(cls, counters: dict | None):
        counters = counters or {}
        return cls(wall=float(counters.get("wall_seconds", 0.0)),
                   compile=float(counters.get("compile_seconds", 0.0)),
                   totals={k: int(counters.get(k, 0)) for k in COUNTERS})

    def add(self, scalars: dict, seconds: float) -> dict:
        self.wall += seconds
        for k, info_key in zip(COUNTERS, ("n_grad", "n_gv", "n_forward",
                                          "n_forward_backward_passes")):
            self.totals[k] += scalars[info_key]
        return {"wall_seconds": self.wall, "compile_seconds": self.compile, **scalars,
                **self.totals, "step_n_grad": scalars["n_grad"], "step_n_gv": scalars["n_gv"]}


def _one_update(built: Built, step: int, params, opt_state, progress: _Progress, place):
    """Batches, compile (once), run and time one update; returns its record and trace."""
    grad_b, curv_b = batches_for_step(built, step)
    if place is not None:
        params, opt_state, grad_b, curv_b = place(params, opt_state, grad_b, curv_b)
    update, compile_s = compiled_update(built.optimizer, (params, opt_state, grad_b, curv_b))
    progress.compile += compile_s
    progress.session_compile += compile_s
    t0 = time.perf_counter()
    params, opt_state, info = update(params, opt_state, grad_b, curv_b)
    # waiting here times this update alone and keeps at most one program in flight (XLA-CPU's
    # sharded all-reduces can deadlock with many queued programs)
    jax.block_until_ready((params, info))
    seconds = time.perf_counter() - t0
    scalars, trace = built.optimizer.record(info)
    return params, opt_state, {"step": step + 1, **progress.add(scalars, seconds)}, trace


def _verdict(built: Built, record: dict, progress: _Progress) -> tuple[str, str] | None:
    """(status, reason) when the run must end after this update, else None."""
    cfg, step = built.config, record["step"]
    if not record["accepted"]:
        if not built.optimizer.retries_rejected:
            return "diverged", f"loss or gradient became non-finite at step {step}"
        progress.rejections += 1
        progress.nonfinite = (progress.nonfinite or not math.isfinite(record["loss_before"])
                              or not math.isfinite(record.get("grad_norm", 0.0)))
        if progress.rejections >= MAX_CONSECUTIVE_REJECTIONS:
            if progress.nonfinite:
                return "failed", (f"{progress.rejections} consecutive steps rejected with "
                                  f"non-finite values (last λ = {record.get('new_damping', 0):.3g})"
                                  f" at step {step}")
            # finite loss, no decrease found however much λ grows: a (local) minimum
            return "finished", (f"converged: no decrease in {progress.rejections} consecutive "
                                f"updates (loss {record['loss_before']:.6g})")
    else:
        progress.rejections, progress.nonfinite = 0, False
    if "train_loss" in record and not math.isfinite(record["train_loss"]):
        return "diverged", f"training loss became non-finite at step {step}"
    if "test_error" in record and record["test_error"] <= cfg.target_error:
        return "finished", f"target test error {cfg.target_error:g} reached at step {step}"
    return None


def run(config: RunConfig, on_step: Callable | None = None, should_stop: Callable | None = None,
        start_step: int = 0, params=None, opt_state=None, counters: dict | None = None,
        built: Built | None = None, place: Callable | None = None) -> RunOutcome:
    """Train; call ``on_step(record, trace, params, opt_state)`` after every update.

    ``record`` holds the step's metrics (train/test loss and error at evaluation steps, wall
    seconds of optimisation, cumulative gradient / Gv / forward counts, and every scalar of the
    optimiser's info record); ``trace`` is the CG trace of optimisers that record one.
    ``should_stop()`` is polled between updates (a clean stop takes at most one update).
    ``config.max_seconds`` budgets optimisation time (compilation left out).
    ``place`` optionally maps (params, opt_state, batches) onto a device mesh.
    """
    built = built or build(config)
    if params is None:
        params = init_params(built)
        opt_state = built.optimizer.init(params)
    progress = _Progress.from_counters(counters)
    start_time = time.perf_counter()
    last: dict = {}
    step, status, reason = start_step, "finished", ""
    while step < config.steps:
        if should_stop is not None and should_stop():
            status, reason = "stopped", "stopped by the user"
            break
        if config.max_seconds and (time.perf_counter() - start_time - progress.session_compile
                                   >= config.max_seconds):
            status, reason = "finished", f"wall-clock budget of {config.max_seconds:g} s reached"
            break
        params, opt_state, record, trace = _one_update(built, step, params, opt_state, progress,
                                                       place)
        step = record["step"]
        if step % config.eval_every == 0 or step == config.steps or step == 1:
            record.update(evaluation(built, params))
        last = record
        if on_step is not None:
            on_step(record, trace, params, opt_state)
        verdict = _verdict(built, record, progress)
        if verdict is not None:
            return RunOutcome(*verdict, step, params, opt_state, last)
    if last and "test_error" not in last:
        # the run ended between evaluations (budget, stop): evaluate where it ended
        last.update(evaluation(built, params))
        if on_step is not None:
            on_step(last, None, params, opt_state)
    return RunOutcome(status, reason, step, params, opt_state, last)

"""The one run loop shared by every optimiser: build, the data stream, evaluation, the loop.

:func:`build` turns a validated :class:`~hflab.config.RunConfig` into task data, a model and an
optimiser from the registry (:mod:`hflab.optimizers`).  :func:`run` drives any optimiser that
follows :mod:`hflab.core.protocol`; it never asks which one it is.

The data stream (:mod:`hflab.datastream`) is a pure function of (seed, step), so a resumed run
sees exactly the data it would have seen.

Costs: every update's ``wall_seconds`` is the time of that update alone (waited on with
``block_until_ready``); compilation is done ahead of time and reported as ``compile_seconds``;
evaluation is left out.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from . import tasks
from .compiled import COMPILED, compiled_update, update_key
from .config import RunConfig
from .datastream import batches_for_step, grad_batch_size
from .evaluation import evaluation, evaluator  # noqa: F401  (callers import them from here)
from .core.losses import Batch, get_loss
from .core.models import Model

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
    # a curriculum run's data is its last stage's (each stage builds its own: ``config.stage``)
    task = tasks.load_task(config.task, config.seed, config.final_seq_len() or 0, config.n_train,
                           config.n_test, dtype, config.data)
    model = config.model()
    loss = get_loss(config.resolved_loss())
    key = (config.optimizer, model, loss, config.weight_cost, config.settings)
    if key not in _OPT_CACHE:
        _OPT_CACHE[key] = config.entry.factory(model, loss, config.weight_cost, config.settings)
    return Built(config, task, model, loss, _OPT_CACHE[key], dtype)


def init_params(built: Built):
    return built.model.init_params(jax.random.PRNGKey(built.config.seed), built.dtype)


# evaluation lives in hflab.evaluation (re-exported here for the loop's callers)


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


def _timed_update(update, params, opt_state, grad_b, curv_b):
    t0 = time.perf_counter()
    params, opt_state, info = update(params, opt_state, grad_b, curv_b)
    # waiting here times this update alone and keeps at most one program in flight (XLA-CPU's
    # sharded all-reduces can deadlock with many queued programs)
    jax.block_until_ready((params, info))
    return params, opt_state, info, time.perf_counter() - t0


def _at_damping_ceiling(built: Built, record: dict) -> bool:
    """Whether the update ran at the damping's ceiling (HF's ``max_damping``, 10¹⁰): its step is
    ~g/λ, nothing, and counts as no decrease.  Why: in float32 such an update is often "accepted"
    on a rounding-level change of the loss, which broke the rejection streak and left a
    converged run burning its budget on thousands of empty updates."""
    ceiling = getattr(getattr(built.optimizer, "config", None), "max_damping", None)
    return ceiling is not None and record.get("damping", 0.0) >= ceiling


def _verdict(built: Built, record: dict, progress: _Progress) -> tuple[str, str] | None:
    """(status, reason) when the run must end after this update, else None."""
    cfg, step = built.config, record["step"]
    if not record["accepted"] or _at_damping_ceiling(built, record):
        if not record["accepted"] and not built.optimizer.retries_rejected:
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
                                f"updates, or λ at its ceiling (loss {record['loss_before']:.6g})")
    else:
        progress.rejections, progress.nonfinite = 0, False
    if "train_loss" in record and not math.isfinite(record["train_loss"]):
        return "diverged", f"training loss became non-finite at step {step}"
    if "test_error" in record and record["test_error"] <= cfg.target_error:
        return "finished", f"target test error {cfg.target_error:g} reached at step {step}"
    return None


class Trainer:
    """One run advanced one update at a time, so a scheduler can interleave the runs of a
    comparison (each update is then timed alone).  :func:`run` drives one to the end.

    ``on_step(record, trace, params, opt_state)`` is called for update 0 (the initial
    evaluation, when starting from scratch) and after every update; ``on_phase(name)`` when the
    run enters ``"compiling"`` or ``"training"``.  ``config.max_seconds`` budgets this run's own
    optimisation time (its time inside :meth:`advance`, compilation left out).  ``first_step``:
    the update numbers before this run's own (a curriculum stage's predecessors): its data
    stream and evaluation schedule count from there, as a run of its own would.
    """

    def __init__(self, config: RunConfig, built: Built | None = None, *, start_step: int = 0,
                 params=None, opt_state=None, counters: dict | None = None,
                 place: Callable | None = None, on_step: Callable | None = None,
                 on_phase: Callable | None = None, first_step: int = 0):
        self.config, self.built = config, built or build(config)
        self.first_step = first_step
        if params is None:
            params = init_params(self.built)
            opt_state = self.built.optimizer.init(params)
        self.params, self.opt_state, self.step = params, opt_state, start_step
        self.place, self.on_step = place, on_step or (lambda *a: None)
        self.on_phase = on_phase or (lambda name: None)
        self.progress = _Progress.from_counters(counters)
        self.active_seconds = 0.0
        self.last: dict = {}
        if start_step == 0:
            self.last = {"step": 0, "wall_seconds": 0.0, "compile_seconds": 0.0,
                         **dict.fromkeys(COUNTERS, 0), **evaluation(self.built, params)}
            self.on_step(dict(self.last), None, params, opt_state)

    def _outcome(self, status: str, reason: str) -> RunOutcome:
        return RunOutcome(status, reason, self.step, self.params, self.opt_state, self.last)

    def _prepare(self):
        grad_b, curv_b = batches_for_step(self.built, self.step - self.first_step)
        args = (self.params, self.opt_state, grad_b, curv_b)
        if self.place is not None:
            args = self.place(*args)
        opt = self.built.optimizer
        key = update_key(opt, args)
        if key not in COMPILED:
            self.on_phase("compiling")
        update, compile_s = compiled_update(opt, args, key)
        self.progress.compile += compile_s
        if compile_s:
            self.on_phase("training")
        return update, args, compile_s

    def advance(self, should_stop: Callable | None = None) -> RunOutcome | None:
        """One update; the run's outcome when it is over (then stop calling), else None."""
        stop = should_stop or (lambda: False)
        if self.step >= self.config.steps:
            return self.finish("finished", "")
        if stop():
            return self.finish("stopped", "stopped by the user")
        if self.config.max_seconds and self.active_seconds >= self.config.max_seconds:
            return self.finish("finished",
                               f"wall-clock budget of {self.config.max_seconds:g} s reached")
        t0 = time.perf_counter()
        update, args, compile_s = self._prepare()
        if stop():            # stopped while compiling: this update is not run
            return self.finish("stopped", "stopped by the user")
        params, opt_state, info, seconds = _timed_update(update, *args)
        self.params, self.opt_state = params, opt_state
        scalars, trace = self.built.optimizer.record(info)
        record = {"step": self.step + 1, **self.progress.add(scalars, seconds)}
        if self.config.grad_batch_doubling:         # the size this update's gradient saw
            record["grad_batch_size"] = grad_batch_size(
                self.config, self.built.task.train.size, self.step - self.first_step)
        self.step = record["step"]
        own = self.step - self.first_step
        if own % self.config.eval_every == 0 or own == 1 or self.step == self.config.steps:
            record.update(evaluation(self.built, self.params))
        verdict = _verdict(self.built, record, self.progress)
        if verdict is not None and "test_error" not in record:
            # a run that ends by its own verdict (converged, diverged) is evaluated where it
            # ended, as one that ends at its budget is — before the record goes out, once
            record.update(evaluation(self.built, self.params))
        self.last = record
        self.on_step(record, trace, self.params, self.opt_state)
        self.active_seconds += time.perf_counter() - t0 - compile_s
        return self._outcome(*verdict) if verdict is not None else None

    # what a run with stages (:class:`CurriculumTrainer`) says more, a plain run says here
    def where(self) -> str | None:
        """The stage in progress, for progress lines; a plain run has none."""
        return None

    def resume_point(self, record: dict) -> dict:
        """What a checkpoint at ``record`` must hold beyond the state for a resume to continue
        the same run: nothing for a plain run (its update number says it all)."""
        return {}

    def finish(self, status: str, reason: str) -> RunOutcome:
        """End here: evaluate where the run stopped if that step was not evaluated."""
        if self.last and "test_error" not in self.last:
            self.last.update(evaluation(self.built, self.params))
            self.on_step(self.last, None, self.params, self.opt_state)
        return self._outcome(status, reason)


class CurriculumTrainer:
    """A run through a length curriculum (``config.curriculum``, e.g. '20,50,100'), advanced one
    update at a time like :class:`Trainer`, whose interface it shares.

    Stage k is the plain run ``config.stage(T_k)``: its own data at length T_k (a pure function
    of seed and T, as any run's), evaluated on its own test set.  When a stage's test error
    reaches ``config.target_error`` the next stage starts from **the same network** (an RNN's
    parameters do not depend on T) with the optimiser state fresh — for HF λ back at λ₀ and no CG
    warm start: λ measured how far the last length's quadratic model could be trusted, and the
    longer unrolling is another model, whose trust region must be found afresh.  A stage that ends any
    other way (budget, stop, divergence) ends the run.  ``steps`` and ``max_seconds`` budget the
    whole run; update numbers and cost counters run on across the stages, so curves against
    updates, passes and seconds include the shorter stages' cost, while each stage's data stream
    and evaluation schedule count from its own start, as a run of its own would (so a stage here
    is the stage ``research/curriculum.py`` runs; the tests hold the two together).

    Every record carries ``stage`` (1-based) and ``seq_len``; a stage's first update is always
    evaluated and also carries ``transfer_test_error`` / ``transfer_test_loss``: the network's
    test error and loss at the new length before that update (how much of the shorter solution
    carries over unchanged).  The stage in progress is :attr:`stage` (0-based), which a
    checkpoint stores so a resumed run continues in it.

    Why a curriculum: on XOR a random net gets no first-order signal from long sequences
    (either bit alone is uncorrelated with the target), while a net that solved the problem over
    a shorter span already carries both bits to the end (Bengio et al. 2009, curriculum
    learning; the curriculum study in docs/studies/ measures it).
    """

    def __init__(self, config: RunConfig, built: Built | None = None, *, start_step: int = 0,
                 params=None, opt_state=None, counters: dict | None = None,
                 place: Callable | None = None, on_step: Callable | None = None,
                 on_phase: Callable | None = None, stage: int = 0, fresh_stage: bool = False,
                 stage_start: int = 0):
        self.config, self.lengths = config, config.curriculum_lengths()
        if not 0 <= stage < len(self.lengths):
            raise ValueError(f"curriculum stage {stage} of {len(self.lengths)}")
        self.stage, self._place = stage, place
        self._on_step, self._on_phase = on_step or (lambda *a: None), on_phase
        self._spent_seconds = 0.0             # optimisation seconds of the finished stages
        self._transfer: dict = {}             # the stage's evaluation before its first update
        stage_config = self._stage_config()
        if built is None or built.config != stage_config:
            built = build(stage_config)
        if fresh_stage and params is not None:    # resumed at a stage's start
            opt_state, stage_start = self._enter(built, params), start_step
        self._start_stage(built, stage_start, start_step, params, opt_state, counters)

    def _start_stage(self, built: Built, stage_start: int, start_step: int, params, opt_state,
                     counters: dict | None):
        """The stage in progress runs as a :class:`Trainer` of its own, from update
        ``start_step`` (later than ``stage_start``, the update it began after, on a resume
        inside it), its data stream and evaluations counted from ``stage_start``."""
        self._stage_start = stage_start
        self._trainer = Trainer(built.config, built, start_step=start_step, params=params,
                                opt_state=opt_state, counters=counters, place=self._place,
                                on_step=self._record, on_phase=self._on_phase,
                                first_step=stage_start)

    # the Trainer interface -------------------------------------------------------------
    built = property(lambda self: self._trainer.built)
    step = property(lambda self: self._trainer.step)
    params = property(lambda self: self._trainer.params)
    opt_state = property(lambda self: self._trainer.opt_state)
    last = property(lambda self: self._trainer.last)

    @property
    def active_seconds(self) -> float:
        return self._spent_seconds + self._trainer.active_seconds

    def _stage_config(self) -> RunConfig:
        """Stage ``self.stage``'s plain run; its time budget is what the finished stages left."""
        cfg = self.config.stage(self.lengths[self.stage])
        if self.config.max_seconds:
            cfg = cfg.replace(max_seconds=max(self.config.max_seconds - self._spent_seconds,
                                              1e-9))
        return cfg

    def where(self) -> str:
        """'T = 50 (stage 2 of 3)'."""
        return f"T = {self.lengths[self.stage]} (stage {self.stage + 1} of {len(self.lengths)})"

    def _reached(self, record: dict) -> bool:
        return "test_error" in record and record["test_error"] <= self.config.target_error

    def resume_point(self, record: dict) -> dict:
        """Where a run resumed from a checkpoint at ``record`` continues (keyword arguments of
        :func:`make_trainer`): the next stage, fresh, when ``record`` passed a stage that is not
        the last; else this stage, which began after update ``stage_start``."""
        if self._reached(record) and self.stage + 1 < len(self.lengths):
            return {"stage": self.stage + 1, "fresh_stage": True, "stage_start": record["step"]}
        return {"stage": self.stage, "fresh_stage": False, "stage_start": self._stage_start}

    def _record(self, record, trace, params, opt_state):
        record.update(stage=self.stage + 1, seq_len=self.lengths[self.stage])
        if record["step"] == self._stage_start + 1 and self.stage:
            record.update(self._transfer)                 # the stage's first update
        self._on_step(record, trace, params, opt_state)

    def _enter(self, built: Built, params):
        """A stage starts from ``params``: its transfer evaluation, and a fresh optimiser state
        (returned)."""
        before = evaluation(built, params)
        self._transfer = {"transfer_test_error": before["test_error"],
                          "transfer_test_loss": before["test_loss"]}
        return built.optimizer.init(params)

    def _next_stage(self, outcome: RunOutcome):
        """Start the next stage from ``outcome``'s network, the optimiser fresh."""
        self._spent_seconds += self._trainer.active_seconds
        self.stage += 1
        built = build(self._stage_config())
        counters = {k: outcome.last.get(k, 0) for k in ("wall_seconds", "compile_seconds",
                                                        *COUNTERS)}
        self._start_stage(built, outcome.steps_done, outcome.steps_done, outcome.params,
                          self._enter(built, outcome.params), counters)

    def advance(self, should_stop: Callable | None = None) -> RunOutcome | None:
        """One update; the run's outcome when it is over, else None."""
        outcome = self._trainer.advance(should_stop)
        if outcome is None:
            return None
        passed = outcome.status == "finished" and self._reached(outcome.last)
        if passed and self.stage + 1 < len(self.lengths):
            out_of_time = self.config.max_seconds and self.active_seconds >= \
                self.config.max_seconds
            if outcome.steps_done < self.config.steps and not out_of_time:
                self._next_stage(outcome)
                return None
            outcome.reason = (f"{self.where()} passed at update {outcome.steps_done}; the "
                              f"budget ended before T = {self.lengths[self.stage + 1]}")
            return outcome
        outcome.reason = f"{self.where()}: {outcome.reason or 'all updates done'}"
        return outcome

    def finish(self, status: str, reason: str) -> RunOutcome:
        return self._trainer.finish(status, reason)


def make_trainer(config: RunConfig, built: Built | None = None, resume_point: dict | None = None,
                 **kw):
    """The :class:`Trainer` for ``config``, or a :class:`CurriculumTrainer` when it has a
    curriculum (``resume_point``: where a resumed one continues,
    :meth:`CurriculumTrainer.resume_point`)."""
    if config.curriculum_lengths():
        return CurriculumTrainer(config, built, **(resume_point or {}), **kw)
    return Trainer(config, built, **kw)


def run(config: RunConfig, on_step: Callable | None = None, should_stop: Callable | None = None,
        start_step: int = 0, params=None, opt_state=None, counters: dict | None = None,
        built: Built | None = None, place: Callable | None = None) -> RunOutcome:
    """Train to the end (see :class:`Trainer`); ``should_stop()`` is polled between updates.

    ``record`` (passed to ``on_step``) holds the step's metrics — train/test loss and error at
    evaluation steps, optimisation seconds, cumulative gradient / Gv / forward counts and every
    scalar of the optimiser's info record; ``trace`` is the CG trace of optimisers that record
    one.  ``place`` optionally maps (params, opt_state, batches) onto a device mesh.
    """
    trainer = make_trainer(config, built, start_step=start_step, params=params,
                           opt_state=opt_state, counters=counters, place=place, on_step=on_step)
    while True:
        outcome = trainer.advance(should_stop)
        if outcome is not None:
            return outcome

"""Background runs: a process-wide registry that trains in worker threads and streams every step
into the run store, so pages only read from the store and a browser refresh loses nothing.

Why threads, not processes: XLA releases the GIL while a compiled program runs, so several runs
progress in parallel; and runs in one process share JAX's compilation cache — HF beside SGD and
Adam on the same task compile each optimiser once, and a second HF run with the same model and
settings reuses the first one's compiled update (:func:`hflab.experiment.build` caches them).
A run is stopped cleanly between two updates (at most one update late).

:func:`run_to_store` is the one code path from a config to stored steps; the CLI uses it too.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from . import datasets, ownership
from .core import parallel
from .config import ConfigError, RunConfig
from .compiled import enable_compilation_cache
from .experiment import build, make_trainer
from .checkpoint import restore_state, state_leaves
from .memory import release_freed_memory
from .core.spectra import SpectrumTracker
from .monitor import CurvatureMonitor
from .scheduler import Scheduler
from .store import Store, default_home

COUNTER_KEYS = ("wall_seconds", "compile_seconds", "n_grad", "n_gv", "n_forward", "n_passes")


def device_description(config: RunConfig | None = None) -> str:
    """'cpu', 'NVIDIA H100 …', or 'cpu ×8 (mesh)'."""
    mesh_devices = parallel.select_devices(config.devices if config else "1")
    d = mesh_devices[0]
    name = d.device_kind if d.platform != "cpu" else "cpu"
    return f"{name} ×{len(mesh_devices)} (data-parallel mesh)" if len(mesh_devices) > 1 else name


class StoredRun:
    """One run whose every step goes to the store, advanced one update at a time.

    Phases: ``queued`` → ``preparing`` (data, model, initialisation, checkpoint) → ``compiling``
    → ``training`` → ``done``.  ``resume=True`` continues from the run's latest checkpoint
    (parameters, optimiser state — HF's λ and previous CG solution included — and cost
    counters), dropping any steps stored after it, so the data stream and the curves continue
    exactly.  Any exception ends the run as ``failed`` with its text: a crash is recorded, never
    lost.
    """

    def __init__(self, store: Store, run_id: int, config: RunConfig, resume: bool = False,
                 on_record=None, log: bool = True):
        self.store, self.run_id, self.config = store, run_id, config
        self.resume, self.on_record, self.log = resume, on_record, log
        self.trainer = None
        self.spectra = None                # the curvature tracker (hflab.core.spectra)
        self.monitor = CurvatureMonitor(store, run_id)     # runs it off the training path
        self._spectra_of = None            # the Built whose training set ``spectra`` uses
        self.notes: list[str] = []         # e.g. checkpoints that could not be read on resume
        self.start_step = 0
        self.status = None                 # the final status once done
        self.set_phase("queued")

    def set_phase(self, phase: str):
        self.phase, self.phase_since = phase, time.time()

    def _checkpoint(self, step, params, opt_state, record):
        leaves = state_leaves(params, opt_state)
        for k in COUNTER_KEYS:
            leaves[f"counter_{k}"] = np.asarray(record.get(k, 0))
        for k, v in self.trainer.resume_point(record).items():     # a curriculum's stage
            leaves[f"curriculum_{k}"] = np.asarray(v)
        self.store.save_checkpoint(self.run_id, step, leaves)

    def set_spectra(self, built=None):
        """λ extremes on the training set being trained on (a curriculum's changes by stage)."""
        built = built or (self.trainer.built if self.trainer is not None else None)
        if built is None or not self.config.checkpoint_every:
            return
        if self.spectra is None or self._spectra_of is not built:
            self.spectra = SpectrumTracker(built.model.apply, built.loss, built.task.train,
                                           blocks=built.model.parameter_blocks())
            self._spectra_of = built

    def _on_step(self, record, trace, params, opt_state):
        every = self.config.checkpoint_every
        at_checkpoint = bool(every) and record["step"] % every == 0
        if self.log:
            self.store.log_step(self.run_id, record, trace)
        if at_checkpoint and record["step"]:
            self._checkpoint(record["step"], params, opt_state, record)
        if at_checkpoint and self.log:
            self.set_spectra()
        if at_checkpoint and self.spectra is not None and self.log:
            # the curvature of G and H (update 0 too), measured on the monitor's thread and
            # added to the row later: the curve never waits for Lanczos
            self.monitor.submit(self.spectra, record, trace, params)
        if self.on_record is not None:
            self.on_record(record)

    def prepare(self):
        """Build, restore and start the trainer (logs update 0 when starting from scratch)."""
        self.set_phase("preparing")
        config, store = self.config, self.store
        start_step, params, opt_state, counters = 0, None, None, {}
        ck = resume_point = None
        if self.resume:
            store.remove_orphan_temporaries(self.run_id)
            ck = store.latest_checkpoint(self.run_id)
            if ck is not None and "curriculum_stage" in ck[1]:
                resume_point = {k: int(ck[1][f"curriculum_{k}"]) for k in
                                ("stage", "fresh_stage", "stage_start")}
        # the run's first stage, or the stage a resumed curriculum continues in (built once)
        lengths = config.curriculum_lengths()
        built = build(config.stage(lengths[resume_point["stage"] if resume_point else 0])
                      if lengths else config)
        if self.resume:
            if ck is not None:
                start_step, leaves = ck
                params, opt_state = restore_state(built, leaves)
                counters = {k: float(leaves[f"counter_{k}"]) for k in COUNTER_KEYS
                            if f"counter_{k}" in leaves}
            self.notes = list(store.checkpoint_notes)
            if ck is None and store.checkpoint_notes:
                self.notes.append("no readable checkpoint: restarted from step 0")
            store.truncate_after(self.run_id, start_step)
        place = parallel.placer(config.devices)
        store.set_device(self.run_id, device_description(config))
        store.set_status(self.run_id, "running")
        self.start_step = start_step
        self.set_spectra(built)
        self.trainer = make_trainer(config, built, start_step=start_step, params=params,
                                    opt_state=opt_state, counters=counters, place=place,
                                    on_step=self._on_step, on_phase=self.set_phase,
                                    resume_point=resume_point)
        self.set_phase("training")

    def advance(self, should_stop=None) -> bool:
        """Prepare, or run one update; False once the run is over (status stored)."""
        try:
            if self.trainer is None:
                if should_stop is not None and should_stop():
                    return self._end("stopped", "stopped by the user before it started")
                self.prepare()
                if should_stop is not None and should_stop():    # stopped while preparing
                    return self._end("stopped", "stopped by the user while preparing")
                return True
            outcome = self.trainer.advance(should_stop)
            if outcome is None:
                return True
            if outcome.last and self.config.checkpoint_every:
                self._checkpoint(outcome.steps_done, outcome.params, outcome.opt_state,
                                 outcome.last)
            return self._end(outcome.status, outcome.reason)
        except ConfigError as e:
            return self._end("failed", str(e))
        except Exception as e:  # noqa: BLE001 — a crashing run is recorded, never lost
            return self._end("failed", f"{type(e).__name__}: {e}\n"
                                       f"{traceback.format_exc(limit=5)}")

    def _end(self, status: str, reason: str) -> bool:
        # a finished (or diverged) run's record is complete: wait for its last checkpoints
        self.monitor.close(wait=status in ("finished", "diverged"))
        self.notes += self.monitor.failures[:1]
        if self.notes:
            reason = "; ".join([reason] * bool(reason) + self.notes)
        self.status = status
        self.set_phase("done")
        try:
            self.store.set_status(self.run_id, status, reason)
        except KeyError:
            pass                  # the run was deleted meanwhile
        return False


def run_to_store(store: Store, run_id: int, config: RunConfig, should_stop=None,
                 resume: bool = False, on_record=None, log: bool = True) -> str:
    """Train ``config`` as run ``run_id`` to the end; returns the final status."""
    stored = StoredRun(store, run_id, config, resume, on_record, log)
    while stored.advance(should_stop):
        pass
    return stored.status


@dataclass
class _Handle:
    run: StoredRun
    ticket: int                       # its comparison's place in the lab's scheduler
    stop: threading.Event = field(default_factory=threading.Event)


HEARTBEAT_SECONDS = 10.0


class Lab:
    """Start, stop, resume and list background runs writing to one store.

    The runs started together (one comparison) share ONE worker thread that advances them in
    turn, one update each: they never compete for the cores, so every update's wall time is its
    own, and all curves grow together.  Separate comparisons get separate workers.
    """

    def __init__(self, home=None):
        self.store = Store(home)
        self.store.mark_dead_runs_interrupted()
        enable_compilation_cache(self.store.home)
        datasets.add_folder(self.store.home)
        self._handles: dict[int, _Handle] = {}
        self._lock = threading.Lock()
        self._submit = threading.Lock()   # creation to queue, one comparison at a time: ids
        # then follow the queue's order, whichever sessions press Start at the same moment
        self.scheduler = Scheduler()           # at most `limit` comparisons advance at once
        self._beat: threading.Thread | None = None

    def start(self, config: RunConfig, owner: str = ownership.PYTHON) -> int:
        """Validate (raises ConfigError before anything is stored), record, start a worker."""
        return self.start_many([config], owner)[0]

    def start_many(self, configs: list[RunConfig], owner: str = ownership.PYTHON) -> list[int]:
        """Start a comparison: validate all first (a bad one starts none), then one worker.
        ``owner`` (:mod:`hflab.ownership`) is who may stop, resume or delete its runs."""
        for c in configs:
            c.validate()
        datasets.keep(configs, self.store.home)
        with self._submit:
            ids = [self.store.create_run(c, status="queued", owner=owner) for c in configs]
            self._launch([(i, c, False) for i, c in zip(ids, configs)])
        return ids

    RESUMABLE = ("stopped", "interrupted", "failed")

    def resumable(self, run_id: int) -> bool:
        """A run can continue when no worker is on it and it did not end on its own."""
        return (not self.is_active(run_id)
                and self.store.get_run(run_id)["status"] in self.RESUMABLE)

    def check_resumable(self, run_id: int):
        """Raise ValueError saying why ``run_id`` cannot be resumed now."""
        status = self.store.get_run(run_id)["status"]
        if self.is_training(run_id):
            raise ValueError(f"run {run_id} is still training — stop it first")
        if status not in self.RESUMABLE:
            raise ValueError(f"run {run_id} is {status}; only {', '.join(self.RESUMABLE)} runs "
                             "can be resumed")

    def resume(self, run_id: int) -> int:
        self.resume_many([run_id], strict=True)
        return run_id

    def resume_many(self, run_ids, strict: bool = False, owner: str | None = None,
                    take_over: bool = False) -> list[int]:
        """Resume the resumable runs of ``run_ids`` together (one worker); returns them.
        ``owner``/``take_over``: see :func:`hflab.ownership.claim`."""
        if strict:
            for i in run_ids:
                self.check_resumable(i)
        chosen = [int(i) for i in run_ids if self.resumable(int(i))]
        ownership.claim(self.store, chosen, owner, take_over, "resume")
        items = []
        for i in chosen:
            config = RunConfig.from_dict(self.store.get_run(i)["config"])
            self.store.set_status(i, "queued")
            items.append((i, config, True))
        if items:
            self._launch(items)
        return chosen

    def is_training(self, run_id: int) -> bool:
        """A worker here, or a live process elsewhere (dead writers were marked interrupted
        when this lab opened the store), is training the run."""
        return self.is_active(run_id) or self.store.get_run(run_id)["status"] in ("running",
                                                                                 "queued")

    def delete(self, run_ids, owner: str | None = None, take_over: bool = False):
        """Delete runs and their checkpoints; refuses (ValueError) while any of them trains, and
        (:class:`~hflab.ownership.NotYourRun`) another owner's runs unless ``take_over``."""
        for i in run_ids:
            self.store.get_run(int(i))
        active = [int(i) for i in run_ids if self.is_training(int(i))]
        if active:
            raise ValueError(f"runs {active} are still training — stop them first")
        ownership.claim(self.store, run_ids, owner, take_over, "delete")
        for i in run_ids:
            self.store.delete_run(int(i))

    def _launch(self, items):
        ticket = items[0][0]
        handles = [_Handle(StoredRun(self.store, i, c, resume=r), ticket) for i, c, r in items]

        def work():
            scheduler = self.scheduler
            # its turn (or all of its runs stopped while queued: each then ends at once)
            admitted = scheduler.acquire(ticket, lambda: all(h.stop.is_set() for h in handles))
            pending = list(handles)
            try:
                while pending:                     # one update of each run in turn
                    for h in list(pending):
                        if not h.run.advance(h.stop.is_set):
                            pending.remove(h)
                            with self._lock:
                                self._handles.pop(h.run.run_id, None)
            finally:
                if admitted:
                    scheduler.release(ticket)

        self.scheduler.enqueue(ticket)        # its place is known before this returns
        with self._lock:
            for h in handles:
                self._handles[h.run.run_id] = h
            if self._beat is None:
                self._beat = threading.Thread(target=self._heartbeats, name="hflab-lease",
                                              daemon=True)
                self._beat.start()
        threading.Thread(target=work, name=f"hflab-runs-{items[0][0]}", daemon=True).start()

    def _heartbeats(self):
        """Renew the lease of every run this lab writes, also while one compiles for minutes
        (steps renew it too): another process sees a live writer and refuses to take over; and
        while runs are active, hand freed memory back to the system every second."""
        for beat in itertools.count(1):
            time.sleep(1.0)
            try:
                if self.active():
                    release_freed_memory()
                if beat % HEARTBEAT_SECONDS == 0:
                    self.store.heartbeat(self.active())
            except Exception:  # noqa: BLE001 — a full disk etc. must not kill the lease thread
                pass

    def stop(self, run_id: int, owner: str | None = None, take_over: bool = False):
        """Ask a run to stop; honoured before its next update.  A run still preparing or
        compiling (which cannot be interrupted) is marked stopped at once and whatever that
        phase produces is discarded.  Another owner's run: see :func:`hflab.ownership.claim`."""
        with self._lock:
            handle = self._handles.get(run_id)
        if handle is None:
            return
        ownership.claim(self.store, [run_id], owner, take_over, "stop")
        handle.stop.set()
        with self._lock:
            comparison = [h for h in self._handles.values() if h.ticket == handle.ticket]
        if all(h.stop.is_set() for h in comparison):
            # its place goes to the next comparison now, not when a compile that cannot be
            # interrupted ends (its worker releases it again at the end: a no-op then)
            self.scheduler.release(handle.ticket)
        if handle.run.phase in ("queued", "preparing", "compiling"):
            self.store.set_status(run_id, "stopped", f"stopped by the user while "
                                                     f"{handle.run.phase}")

    def stop_all(self):
        for run_id in self.active():
            self.stop(run_id)

    def is_active(self, run_id: int) -> bool:
        return run_id in self._handles              # one dict read: atomic, no lock needed

    def admitted(self, run_id: int) -> bool | None:
        """Whether the run's comparison holds (or is about to take) one of the scheduler's
        places rather than waiting in its queue; None when no worker holds the run."""
        handle = self._handles.get(run_id)         # one dict read: atomic, no lock needed
        return None if handle is None else self.scheduler.admitted(handle.ticket)

    def active(self) -> list[int]:
        with self._lock:
            return sorted(self._handles)

    def wait(self, run_id: int, timeout: float | None = None) -> bool:
        """Wait until the run's worker is done with it; False on timeout."""
        deadline = None if timeout is None else time.time() + timeout
        while self.is_active(run_id):
            if deadline is not None and time.time() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def progress(self, run_id: int) -> dict:
        """Status, phase (with seconds in it), steps, fraction and an ETA once updates flow."""
        info = self.store.get_run(run_id)
        steps = int(info["config"].get("steps", 0))
        done = int(info["steps_done"])
        with self._lock:
            handle = self._handles.get(run_id)
        phase = handle.run.phase if handle is not None else info["status"]
        since = handle.run.phase_since if handle is not None else None
        out = {"id": run_id, "status": info["status"], "phase": phase, "steps_done": done,
               "steps": steps, "fraction": min(1.0, done / max(steps, 1)),
               "active": handle is not None, "error": info["error"],
               "phase_seconds": None if since is None else time.time() - since, "eta": None}
        if handle is not None and phase == "queued":
            out.update(self._queue_place(handle.ticket))
        trainer = handle.run.trainer if handle is not None else None
        stage = trainer.where() if trainer is not None else None
        if stage:
            out["stage"] = stage                    # a curriculum's stage in progress
        if trainer is not None and phase == "training":
            advanced = trainer.step - handle.run.start_step
            if advanced:
                left = trainer.active_seconds / advanced * max(steps - trainer.step, 0)
                if trainer.config.max_seconds:
                    left = min(left, max(trainer.config.max_seconds - trainer.active_seconds, 0))
                out["eta"] = left
        return out

    def _queue_place(self, ticket) -> dict:
        """A waiting comparison's place: comparisons ahead of it in the queue, those running,
        and the wait when it is known (the time left of the running comparison that frees its
        slot, from their runs' ETAs)."""
        ahead = self.scheduler.position(ticket)
        if ahead is None:
            return {}
        running = self.scheduler.running()
        with self._lock:
            by_ticket = {}
            for h in self._handles.values():
                by_ticket.setdefault(h.ticket, []).append(h.run.run_id)
        left = []
        for t in running:
            etas = [self.progress(i)["eta"] for i in by_ticket.get(t, [])]
            left.append(max(etas) if etas and None not in etas else None)
        free = sorted(left, key=lambda v: float("inf") if v is None else v)
        limit = self.scheduler.limit
        wait = free[ahead] if limit and ahead < len(free) and len(running) >= limit else None
        return {"queue_ahead": ahead, "queue_running": len(running), "queue_wait": wait}


_LABS: dict[str, Lab] = {}
_LABS_LOCK = threading.Lock()


def get_lab(home=None) -> Lab:
    """The process-wide lab for a store location."""
    key = str(home or default_home())
    with _LABS_LOCK:
        if key not in _LABS:
            _LABS[key] = Lab(key)
        return _LABS[key]

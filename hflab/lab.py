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

import threading
import traceback
from dataclasses import dataclass, field

import jax
import numpy as np

from . import parallel
from .config import ConfigError, RunConfig
from .experiment import build, init_params, run
from .store import Store, default_home

COUNTER_KEYS = ("wall_seconds", "compile_seconds", "n_grad", "n_gv", "n_forward", "n_passes")


def device_description(config: RunConfig | None = None) -> str:
    """'cpu', 'NVIDIA H100 …', or 'cpu ×8 (mesh)'."""
    mesh_devices = parallel.select_devices(config.devices if config else "1")
    d = mesh_devices[0]
    name = d.device_kind if d.platform != "cpu" else "cpu"
    return f"{name} ×{len(mesh_devices)} (data-parallel mesh)" if len(mesh_devices) > 1 else name


def _state_leaves(params, opt_state) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves((params, opt_state))
    return {f"leaf_{i:05d}": np.asarray(a) for i, a in enumerate(leaves)}


def restore_state(built, leaves: dict[str, np.ndarray]):
    template_params = init_params(built)
    template = (template_params, built.optimizer.init(template_params))
    treedef = jax.tree_util.tree_structure(template)
    ordered = [leaves[k] for k in sorted(k for k in leaves if k.startswith("leaf_"))]
    if len(ordered) != treedef.num_leaves:
        raise ValueError(f"checkpoint has {len(ordered)} arrays, the model needs "
                         f"{treedef.num_leaves}")
    restored = jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(a, dtype=t.dtype) for a, t in
                  zip(ordered, jax.tree_util.tree_leaves(template))])
    return restored


def run_to_store(store: Store, run_id: int, config: RunConfig, should_stop=None,
                 resume: bool = False, on_record=None, log: bool = True) -> str:
    """Train ``config`` as run ``run_id``; every step goes to the store.  Returns the final status.

    ``resume=True`` continues from the run's latest checkpoint (parameters, optimiser state —
    HF's λ and previous CG solution included — and cost counters), dropping any steps stored
    after it, so the data stream and the curves continue exactly.
    """
    try:
        built = build(config)
        start_step, params, opt_state, counters = 0, None, None, {}
        if resume:
            ck = store.latest_checkpoint(run_id)
            if ck is not None:
                start_step, leaves = ck
                params, opt_state = restore_state(built, leaves)
                counters = {k: float(leaves[f"counter_{k}"]) for k in COUNTER_KEYS
                            if f"counter_{k}" in leaves}
            store.truncate_after(run_id, start_step)
        place = parallel.placer(config.devices)
        store.set_device(run_id, device_description(config))
        store.set_status(run_id, "running")

        def checkpoint(step, params, opt_state, record):
            leaves = _state_leaves(params, opt_state)
            for k in COUNTER_KEYS:
                leaves[f"counter_{k}"] = np.asarray(record.get(k, 0))
            store.save_checkpoint(run_id, step, leaves)

        def on_step(record, trace, params, opt_state):
            if log:
                store.log_step(run_id, record, trace)
            if config.checkpoint_every and record["step"] % config.checkpoint_every == 0:
                checkpoint(record["step"], params, opt_state, record)
            if on_record is not None:
                on_record(record)

        out = run(config, on_step=on_step, should_stop=should_stop, start_step=start_step,
                  params=params, opt_state=opt_state, counters=counters, built=built, place=place)
        if out.last and config.checkpoint_every:
            checkpoint(out.steps_done, out.params, out.opt_state, out.last)
        store.set_status(run_id, out.status, out.reason)
        return out.status
    except ConfigError as e:
        store.set_status(run_id, "failed", str(e))
        return "failed"
    except Exception as e:  # noqa: BLE001 — a crashing run is recorded, never lost
        store.set_status(run_id, "failed", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}")
        return "failed"


@dataclass
class _Handle:
    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)


class Lab:
    """Start, stop, resume and list background runs writing to one store."""

    def __init__(self, home=None):
        self.store = Store(home)
        self.store.mark_dead_runs_interrupted()
        self._handles: dict[int, _Handle] = {}
        self._lock = threading.Lock()

    def start(self, config: RunConfig) -> int:
        """Validate (raises ConfigError before anything is stored), record, start a worker."""
        config.validate()
        run_id = self.store.create_run(config, status="queued")
        self._launch(run_id, config, resume=False)
        return run_id

    def start_many(self, configs: list[RunConfig]) -> list[int]:
        for c in configs:            # validate all first: a bad one starts none
            c.validate()
        return [self.start(c) for c in configs]

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

    def resume_many(self, run_ids) -> list[int]:
        """Resume every resumable run of ``run_ids``; returns those resumed."""
        return [self.resume(i) for i in run_ids if self.resumable(i)]

    def is_training(self, run_id: int) -> bool:
        """A worker here, or a live process elsewhere (dead writers were marked interrupted
        when this lab opened the store), is training the run."""
        return self.is_active(run_id) or self.store.get_run(run_id)["status"] in ("running",
                                                                                 "queued")

    def delete(self, run_ids):
        """Delete runs and their checkpoints; refuses (ValueError) while any of them trains."""
        active = [int(i) for i in run_ids if self.is_training(int(i))]
        if active:
            raise ValueError(f"runs {active} are still training — stop them first")
        for i in run_ids:
            self.store.get_run(int(i))
        for i in run_ids:
            self.store.delete_run(int(i))

    def resume(self, run_id: int) -> int:
        if self.is_active(run_id):
            raise RuntimeError(f"run {run_id} is still running")
        info = self.store.get_run(run_id)
        config = RunConfig.from_dict(info["config"])
        self.store.set_status(run_id, "queued")
        self._launch(run_id, config, resume=True)
        return run_id

    def _launch(self, run_id, config, resume):
        handle = _Handle(thread=None)  # type: ignore[arg-type]

        def work():
            try:
                run_to_store(self.store, run_id, config, should_stop=handle.stop.is_set,
                             resume=resume)
            finally:
                with self._lock:
                    self._handles.pop(run_id, None)

        handle.thread = threading.Thread(target=work, name=f"hflab-run-{run_id}", daemon=True)
        with self._lock:
            self._handles[run_id] = handle
        handle.thread.start()

    def stop(self, run_id: int):
        with self._lock:
            handle = self._handles.get(run_id)
        if handle is not None:
            handle.stop.set()

    def stop_all(self):
        for run_id in self.active():
            self.stop(run_id)

    def is_active(self, run_id: int) -> bool:
        with self._lock:
            return run_id in self._handles

    def active(self) -> list[int]:
        with self._lock:
            return sorted(self._handles)

    def wait(self, run_id: int, timeout: float | None = None) -> bool:
        with self._lock:
            handle = self._handles.get(run_id)
        if handle is None:
            return True
        handle.thread.join(timeout)
        return not handle.thread.is_alive()

    def progress(self, run_id: int) -> dict:
        info = self.store.get_run(run_id)
        steps = int(info["config"].get("steps", 0))
        return {"id": run_id, "status": info["status"], "steps_done": int(info["steps_done"]),
                "steps": steps, "fraction": min(1.0, info["steps_done"] / max(steps, 1)),
                "active": self.is_active(run_id), "error": info["error"]}


_LABS: dict[str, Lab] = {}
_LABS_LOCK = threading.Lock()


def get_lab(home=None) -> Lab:
    """The process-wide lab for a store location."""
    key = str(home or default_home())
    with _LABS_LOCK:
        if key not in _LABS:
            _LABS[key] = Lab(key)
        return _LABS[key]

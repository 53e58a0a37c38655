"""Views of stored checkpoints computed off the training path, in a low-priority process.

The lab trains in the server's own process, so a view computed there (seconds of XLA work, more
for its first compilation per model) takes the cores from the updates it watches, and their
recorded seconds grow.  A :class:`ViewWorker` computes such views in one child process of its
own, started on first use and run at the lowest CPU priority (nice 19 in the idle scheduling
class, :func:`lowest_priority`): the kernel gives it only the cycles the runs leave, so following
a run costs the run little, and the page never blocks — it shows the newest view that is ready
and asks for the newest checkpoint's.

A page that follows a training run finds its newest checkpoint's view ready: for a while after
a page asked for one (:data:`FOLLOW_SECONDS`), the free worker computes that view again for each
newer checkpoint of a run still training, unasked — no round trip of ask, compute, refresh.

A job is a named function of the store and ``(run_id, step, *options)``.  Requests are served
newest first: a request for a later checkpoint of the same (job, run, options) supersedes the
earlier ones still waiting (a live view wants the newest, not a backlog), and those are answered
"superseded" so that whoever still wants one asks again.  Results are kept in memory (least
recently used, :data:`KEEP` of them), shared by every browser session of the server.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections import OrderedDict

KEEP = 64                  # results kept in memory (a curvature view is ≤ a few MB)
NICENESS = 19
# views that follow a training run on their own: computed for its newest checkpoint as soon as
# the worker is free, for FOLLOW_SECONDS after a page last asked (a closed page stops costing)
FOLLOWED = ("curvature_view",)
FOLLOW_SECONDS = 30.0
FOLLOW_POLL = 0.5          # how often a free worker looks for a newer checkpoint


def _curvature_view(store, run_id: int, step: int, cases: int, block, parts=None):
    from . import analysis
    _, built, params, _, step = analysis.checkpoint_state(store, run_id, step)
    return analysis.curvature_view(built, params, cases, block, parts=parts)


def _loss_slices(store, run_id: int, step: int, k: int, cases: int):
    from . import analysis, instrument
    _, built, params, opt_state, _ = analysis.checkpoint_state(store, run_id, step)
    return instrument.slice_data(built, params, cases, k, opt_state)


def _priority(store, run_id: int, step: int):
    """The worker's own priority (what the tests check it runs at): (niceness, policy)."""
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
    return os.nice(0), policy


def lowest_priority():
    """Give the calling process (and the threads it starts later, which inherit this) only the
    cycles training leaves: nice 19, and Linux's idle scheduling class where the kernel has it.
    Nice alone is not enough for XLA: a training thread that wakes must wait for a nice-19 task
    to finish its time slice, and XLA's threads wait for each other at every operation, so one
    stalled thread stalls the update; a task of the idle class is preempted the moment a normal
    one wakes (``make bench-class``'s follow-live rows measure what watching costs a run)."""
    os.nice(NICENESS - os.nice(0))
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:                 # a kernel or sandbox without it: nice 19 stays
            pass


JOBS = {"curvature_view": _curvature_view, "loss_slices": _loss_slices, "priority": _priority}


def _group(key):
    """What a later step supersedes: the same job, run and options."""
    name, run_id, _step, *options = key
    return (name, run_id, *options)


def newest_first(keys: list) -> tuple[list, list]:
    """(to compute, superseded): per group only its latest step, the groups in order of arrival."""
    latest: dict = {}
    for key in keys:
        group = _group(key)
        if group not in latest or key[2] >= latest[group][2]:
            latest[group] = key
    keep = list(latest.values())
    return keep, [k for k in keys if k not in keep]


def _serve(home: str, requests, results):
    """The child process: lowest priority first (before JAX makes its threads, which inherit
    it), then the store and the programs' cache the server uses, then jobs until ``None``."""
    lowest_priority()
    from .. import datasets
    from ..compiled import enable_compilation_cache
    from ..store import Store
    store = Store(home)
    enable_compilation_cache(store.home)
    datasets.add_folder(store.home)
    watched: dict = {}          # group → (newest key asked or proposed, when a page last asked)
    sent: OrderedDict = OrderedDict()        # the latest answers, to repeat instead of recompute
    while True:
        try:
            waiting = [requests.get(timeout=FOLLOW_POLL if watched else None)]
        except queue.Empty:
            waiting = []
        while True:
            try:
                waiting.append(requests.get_nowait())
            except queue.Empty:
                break
        if None in waiting:
            return
        now = time.monotonic()
        for key in waiting:
            if key[0] in FOLLOWED:
                watched[_group(key)] = (key, now)
        todo, dropped = newest_first(list(dict.fromkeys(waiting)))
        for key in dropped:
            results.put((key, "superseded", None))
        if not todo:                    # nothing asked: the newest checkpoint of a watched run
            todo = _newer_checkpoints(store, watched, now)
        for key in todo:
            answer = sent.get(key) or _answer(store, key)
            results.put(answer)
            sent[key] = answer
            sent.move_to_end(key)
            while len(sent) > 8:
                sent.popitem(last=False)


def _answer(store, key) -> tuple:
    """(key, state, value) of one job; the value pickled here, not by the queue's feeder thread
    (which drops what it cannot pickle, leaving the page waiting for ever)."""
    try:
        return key, "ready", pickle.dumps(JOBS[key[0]](store, *key[1:]))
    except (ValueError, KeyError) as e:         # what the lab says of bad runs and steps
        return key, "error", str(e).strip("'\"")
    except Exception as e:                 # a job's failure is its answer, not the worker's
        return key, "error", f"{type(e).__name__}: {e}"


def _newer_checkpoints(store, watched: dict, now: float) -> list:
    """For each view a page asked for within :data:`FOLLOW_SECONDS` whose run still trains: the
    same view of the run's newest checkpoint, when it is newer than the one asked or proposed: a
    following page finds it ready instead of asking for it and waiting a view's time (the
    round trip that made a live page lag two views behind).  Runs no longer followed drop out."""
    todo = []
    for group, (key, asked) in list(watched.items()):
        try:
            training = store.get_run(key[1])["status"] in ("running", "queued")
            steps = store.checkpoint_steps(key[1]) if training else []
        except KeyError:                  # deleted meanwhile
            training, steps = False, []
        if not training or now - asked > FOLLOW_SECONDS:
            del watched[group]
        elif steps and steps[-1] > key[2]:
            newest = (key[0], key[1], steps[-1], *key[3:])
            watched[group] = (newest, asked)          # computed next: not proposed again
            todo.append(newest)
    return todo


class ViewWorker:
    """The server's background view process (see the module docstring).

    ``get(job, run_id, step, *options)`` returns ``("ready", value)``, ``("pending", None)``
    (asked now or before; ask again later) or ``("error", message)``.
    """

    def __init__(self, home):
        self.home = str(home)
        self._lock = threading.Lock()
        self._done: OrderedDict = OrderedDict()      # key → (state, value), newest last
        self._pending: set = set()
        self._process = None

    def _start(self):
        ctx = multiprocessing.get_context("spawn")     # JAX's threads do not survive a fork
        self._requests, self._results = ctx.Queue(), ctx.Queue()
        self._process = ctx.Process(target=_serve, args=(self.home, self._requests,
                                                         self._results),
                                    name="hflab-views", daemon=True)
        self._process.start()
        threading.Thread(target=self._receive, args=(self._results,), daemon=True,
                         name="hflab-views-receiver").start()

    def _receive(self, results):
        while True:
            try:
                key, state, value = results.get()
            except (EOFError, OSError):
                return
            if state == "ready":
                value = pickle.loads(value)
            with self._lock:
                self._pending.discard(key)
                if state != "superseded":
                    self._done[key] = (state, value)
                    self._done.move_to_end(key)
                    while len(self._done) > KEEP:
                        self._done.popitem(last=False)

    def get(self, job: str, run_id: int, step: int, *options):
        if job not in JOBS:
            raise ValueError(f"unknown view job {job!r}; one of {sorted(JOBS)}")
        key = (job, int(run_id), int(step), *options)
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            if self._process is None or not self._process.is_alive():
                if self._process is not None:
                    self._pending.clear()          # its requests died with it
                self._start()
            if key not in self._pending:
                self._pending.add(key)
                self._requests.put(key)
        return "pending", None

    def wait(self, job: str, run_id: int, step: int, *options, timeout: float = 600.0):
        """:meth:`get`, waiting up to ``timeout`` seconds while it is pending (asking again if
        a later request superseded this one)."""
        deadline = time.monotonic() + timeout
        while True:
            state, value = self.get(job, run_id, step, *options)
            if state != "pending" or time.monotonic() > deadline:
                return state, value
            time.sleep(0.05)

    def ready(self, job: str, run_id: int, *options) -> tuple[int, object] | None:
        """The latest-step view of (job, run, options) that is ready: (step, value), or None."""
        with self._lock:
            steps = [k[2] for k, (state, _) in self._done.items()
                     if state == "ready" and _group(k) == (job, int(run_id), *options)]
            if not steps:
                return None
            best = max(steps)
            return best, self._done[(job, int(run_id), best, *options)][1]

    def close(self):
        with self._lock:
            if self._process is not None and self._process.is_alive():
                self._requests.put(None)
                self._process.join(timeout=5)
                if self._process.is_alive():
                    self._process.kill()
            self._process = None


_WORKERS: dict[str, ViewWorker] = {}
_WORKERS_LOCK = threading.Lock()


def for_home(home) -> ViewWorker:
    """The process-wide view worker of a store (every session of a server shares it)."""
    with _WORKERS_LOCK:
        return _WORKERS.setdefault(str(home), ViewWorker(home))


def close_all():
    """Stop every view process (a test's teardown; the server's exit kills them anyway)."""
    with _WORKERS_LOCK:
        workers = list(_WORKERS.values())
        _WORKERS.clear()
    for w in workers:
        w.close()

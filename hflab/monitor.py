"""The curvature instrument of one run, off the training path.

At update 0 and every checkpoint the run hands its parameters to a :class:`CurvatureMonitor` and
goes straight on with its next update; the monitor's own thread measures them
(:class:`hflab.core.spectra.SpectrumTracker`: λ extremes by ARPACK, then the profile — SLQ
density, Hutchinson traces, per-block λ_max and traces) and writes the results to the store: the
extremes and traces into that update's metrics row, the profile into the ``spectra`` table.
Checkpoints are measured in order; the extremes of every one, the profile (costlier) of those
that find fewer than :data:`MAX_BACKLOG` checkpoints waiting — when checkpoints come much faster
than profiles (while the first profile compiles, say), the waiting ones get extremes only, so the
monitor never falls far behind.  A run that ends waits for its queued
checkpoints before it reports its final status (its last checkpoint always gets a profile), a
stopped run does not.
Why a thread: the first profile of a run compiles for seconds, and neither that nor the
measuring may delay the live curves (XLA releases the GIL while a program runs).
"""
from __future__ import annotations

import collections
import threading

from .core.spectra import profiles_enabled

MAX_BACKLOG = 8      # checkpoints waiting beyond which a checkpoint gets extremes only


class CurvatureMonitor:
    def __init__(self, store, run_id: int):
        self.store, self.run_id = store, run_id
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = self._abandoned = False
        self._thread: threading.Thread | None = None
        self.failures: list[str] = []
        self.profiles_skipped = 0

    def submit(self, tracker, record: dict, trace, params):
        """Queue one checkpoint's parameters (``record`` is that update's metrics row)."""
        with self._cond:
            if self._closed:
                return
            self._queue.append((tracker, dict(record), trace, params))
            self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=f"curvature-run{self.run_id}")
                self._thread.start()

    def close(self, wait: bool = True):
        """No more checkpoints: measure the queued ones (``wait``) or drop them and give up on
        the one being measured within one product."""
        with self._cond:
            self._closed = True
            if not wait:
                self._abandoned = True
                self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _loop(self):
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
            self._measure(*item)

    def _measure(self, tracker, record, trace, params):
        try:
            extremes = tracker(params, stop=lambda: self._abandoned)
            if not extremes:
                return
            traces = {}
            with self._cond:
                behind = len(self._queue) >= MAX_BACKLOG
            if profiles_enabled() and not behind:   # while keeping up (the last one always)
                profile = tracker.profile(params)
                traces = {f"trace_{s}": k["trace"] for s, k in profile["kinds"].items()}
                self.store.log_spectra(self.run_id, record["step"], profile)
            else:
                self.profiles_skipped += 1
            self.store.log_step(self.run_id, {**record, **extremes, **traces}, trace)
        except KeyError:
            pass                   # the run was deleted meanwhile
        except Exception as e:  # noqa: BLE001 — a trend line must never end a run
            self.failures.append(f"curvature at update {record.get('step')}: "
                                 f"{type(e).__name__}: {e}")

"""One lab-wide admission queue for training work: at most ``limit`` comparisons advance at once,
the others wait in the order they were started, whichever browser session (or CLI call in this
process) started them.

A comparison (the runs started together) is one worker that advances its runs in turn, one
update each (:mod:`hflab.lab`); the scheduler decides when that worker may begin.  The default
limit is the machine's cores (``os.sched_getaffinity``): two comparisons on two cores each keep a
core busy, and a third waits instead of slowing both — so the first plotted point of an admitted
run comes as fast as when it runs alone, and a queued one says where it stands.
``HFLAB_MAX_CONCURRENT`` (≥ 1, or 0 for no limit) sets it.
"""
from __future__ import annotations

import collections
import os
import threading


def default_limit() -> int:
    text = os.environ.get("HFLAB_MAX_CONCURRENT", "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"HFLAB_MAX_CONCURRENT = {text!r}: a whole number ≥ 0 (0: no limit)"
                             ) from None
        if value < 0:
            raise ValueError(f"HFLAB_MAX_CONCURRENT = {value}: a whole number ≥ 0 (0: no limit)")
        return value
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return len(cores) if cores else (os.cpu_count() or 1)


class Scheduler:
    """FIFO admission with a concurrency limit (0 = unlimited).  A ticket is any hashable (the
    lab uses the comparison's first run id)."""

    def __init__(self, limit: int | None = None):
        self.limit = default_limit() if limit is None else int(limit)
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._running: list = []

    def enqueue(self, ticket):
        """Take ``ticket``'s place in the queue now, in the caller's thread (its :meth:`acquire`
        may come a moment later from a worker's): its place, and whether it will wait, are known
        as soon as it is started."""
        with self._cond:
            if ticket not in self._queue and ticket not in self._running:
                self._queue.append(ticket)

    def acquire(self, ticket, give_up=None, poll: float = 0.1) -> bool:
        """Wait for ``ticket``'s turn (at the end of the queue unless :meth:`enqueue` placed it
        already); False (and out of the queue) once ``give_up()`` is true."""
        with self._cond:
            if ticket not in self._queue:
                self._queue.append(ticket)
            while not (self._queue[0] == ticket and self._free()):
                if give_up is not None and give_up():
                    self._queue.remove(ticket)
                    self._cond.notify_all()
                    return False
                self._cond.wait(poll)
            self._queue.popleft()
            self._running.append(ticket)
            self._cond.notify_all()
            return True

    def release(self, ticket):
        with self._cond:
            if ticket in self._running:
                self._running.remove(ticket)
            self._cond.notify_all()

    def _free(self) -> bool:
        return self.limit == 0 or len(self._running) < self.limit

    def position(self, ticket) -> int | None:
        """How many comparisons are ahead of a waiting ``ticket`` (None once it runs)."""
        with self._cond:
            return list(self._queue).index(ticket) if ticket in self._queue else None

    def admitted(self, ticket) -> bool:
        """Whether ``ticket`` is not waiting: it runs (or is releasing its place), or fewer
        comparisons are ahead of it than there are free places (it is about to run)."""
        with self._cond:
            if ticket not in self._queue:
                return True
            free = len(self._queue) if self.limit == 0 else self.limit - len(self._running)
            return list(self._queue).index(ticket) < free

    def running(self) -> list:
        with self._cond:
            return list(self._running)

    def waiting(self) -> list:
        with self._cond:
            return list(self._queue)

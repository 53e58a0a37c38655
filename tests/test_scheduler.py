"""The lab-wide scheduler: a concurrency limit, first come first served, positions of the
waiting, giving up when stopped; and the lab's comparisons going through it."""
import threading
import time

import pytest

from hflab.config import preset_config
from hflab.scheduler import Scheduler, default_limit


def test_at_most_limit_run_at_once_and_the_rest_start_in_order():
    sched = Scheduler(limit=2)
    started, lock = [], threading.Lock()
    release = {t: threading.Event() for t in range(5)}
    peak = [0]

    def work(t):
        assert sched.acquire(t)
        with lock:
            started.append(t)
            peak[0] = max(peak[0], len(sched.running()))
        release[t].wait(10)
        sched.release(t)

    threads = []
    for t in range(5):                       # arrive in order 0…4
        threads.append(threading.Thread(target=work, args=(t,)))
        threads[-1].start()
        time.sleep(0.05)
    assert sorted(started) == [0, 1] and sched.waiting() == [2, 3, 4]
    assert [sched.position(t) for t in (2, 3, 4)] == [0, 1, 2] and sched.position(0) is None
    for t in (1, 0, 2, 3, 4):                # finish out of order: the queue still drains in order
        release[t].set()
        time.sleep(0.2)
    for th in threads:
        th.join(5)
    assert started == [0, 1, 2, 3, 4] and peak[0] == 2
    assert sched.running() == [] and sched.waiting() == []


def test_a_place_is_taken_when_enqueued_not_when_the_worker_asks_for_it():
    sched = Scheduler(limit=1)
    sched.enqueue("a")
    sched.enqueue("b")
    sched.enqueue("a")                       # once only
    assert sched.waiting() == ["a", "b"] and sched.position("b") == 1
    got = []
    waiter = threading.Thread(target=lambda: got.append(sched.acquire("b")))
    waiter.start()                           # b's worker asks first, but a is ahead of it
    time.sleep(0.3)
    assert got == [] and sched.running() == []
    assert sched.acquire("a") and sched.running() == ["a"] and sched.waiting() == ["b"]
    sched.release("a")
    waiter.join(5)
    assert got == [True] and sched.running() == ["b"] and sched.waiting() == []


def test_a_waiting_ticket_gives_up_and_leaves_the_queue():
    sched = Scheduler(limit=1)
    assert sched.acquire("a")
    stop = threading.Event()
    out = []
    th = threading.Thread(target=lambda: out.append(sched.acquire("b", give_up=stop.is_set)))
    th.start()
    time.sleep(0.2)
    assert sched.position("b") == 0
    stop.set()
    th.join(5)
    assert out == [False] and sched.waiting() == []
    sched.release("a")
    assert sched.acquire("c", give_up=lambda: True)      # free slot: admitted at once


def test_no_limit_and_the_limit_from_the_environment(monkeypatch):
    sched = Scheduler(limit=0)
    assert all(sched.acquire(t) for t in range(20))
    monkeypatch.setenv("HFLAB_MAX_CONCURRENT", "3")
    assert default_limit() == 3
    monkeypatch.setenv("HFLAB_MAX_CONCURRENT", "-1")
    with pytest.raises(ValueError, match="HFLAB_MAX_CONCURRENT = -1"):
        default_limit()
    monkeypatch.setenv("HFLAB_MAX_CONCURRENT", "two")
    with pytest.raises(ValueError, match="'two'"):
        default_limit()


def test_lab_queues_comparisons_beyond_the_limit_and_reports_their_position(tmp_path):
    from hflab.lab import Lab
    lab = Lab(tmp_path)
    lab.scheduler = Scheduler(limit=1)
    slow = preset_config("regression", layers="4", steps=400, checkpoint_every=0, n_train=64,
                         n_test=16)
    first = lab.start_many([slow, slow.replace(optimizer="adam")])
    second = lab.start(slow.replace(optimizer="sgd", steps=3))
    deadline = time.time() + 60
    while time.time() < deadline and lab.progress(first[0])["phase"] in ("queued", "preparing",
                                                                        "compiling"):
        time.sleep(0.05)
    p = lab.progress(second)
    assert p["phase"] == "queued" and p["queue_ahead"] == 0 and p["queue_running"] == 1
    assert lab.store.metrics(second).empty                 # not started: nothing recorded
    # the Train page refreshes fast only for the admitted comparison; the waiting one at the
    # load-scaled period (2 comparisons for 1 place: twice the base); an ended one not at all
    from hflab.view.ui import live_refresh
    assert live_refresh(lab, first, 1.0) == ("active", 1.0)
    assert live_refresh(lab, [second], 1.0) == ("waiting", 2.0)
    for i in first:
        lab.stop(i)
    assert lab.wait(second, timeout=120)
    assert lab.store.get_run(second)["status"] == "finished"
    assert live_refresh(lab, [second], 1.0) == ("idle", None)
    assert live_refresh(lab, [], 1.0) == ("idle", None)
    # a queued comparison stopped before its turn ends without ever training
    lab.scheduler = Scheduler(limit=1)
    blocker = lab.start(slow)
    waiting = lab.start(slow.replace(optimizer="adam"))
    time.sleep(0.3)
    lab.stop(waiting)
    assert lab.wait(waiting, timeout=30)
    assert lab.store.get_run(waiting)["status"] == "stopped"
    lab.stop(blocker)
    lab.wait(blocker, timeout=60)


def test_a_comparison_stopped_while_it_compiles_gives_its_place_up_at_once(tmp_path):
    """Compiling cannot be interrupted; the stopped comparison's slot goes to the next in the
    queue when Stop is pressed, not when that compile ends."""
    from hflab.lab import Lab
    lab = Lab(tmp_path)
    lab.scheduler = Scheduler(limit=1)
    big = preset_config("curves", steps=5, checkpoint_every=0)        # seconds to compile
    small = preset_config("regression", layers="4", steps=3, checkpoint_every=0, n_train=64,
                          n_test=16, optimizer="adam")
    doomed = lab.start(big)
    deadline = time.time() + 60
    while time.time() < deadline and lab.progress(doomed)["phase"] == "queued":
        time.sleep(0.01)
    nxt = lab.start(small)
    time.sleep(0.2)
    assert lab.progress(nxt)["phase"] == "queued"
    assert lab.progress(doomed)["phase"] in ("preparing", "compiling")
    lab.stop(doomed)
    deadline = time.time() + 1.5
    while time.time() < deadline and lab.progress(nxt)["phase"] == "queued":
        time.sleep(0.02)
    assert lab.progress(nxt)["phase"] != "queued"
    assert lab.wait(nxt, timeout=120) and lab.store.get_run(nxt)["status"] == "finished"
    assert lab.wait(doomed, timeout=120)
    assert lab.store.get_run(doomed)["status"] == "stopped"
    assert lab.scheduler.running() == [] and lab.scheduler.waiting() == []


def test_two_runs_of_one_program_starting_together_compile_it_once():
    """Two sessions' runs of the same shapes reach the compile at the same moment: one
    compiles, the other waits and shares the program (counted at ``lower``)."""
    from hflab import compiled

    calls = []

    class Update:
        def lower(self, *args):
            calls.append(args)
            time.sleep(0.3)                 # a compile long enough for the other to arrive

            class Lowered:
                def compile(self):
                    return "program"
            return Lowered()

    class Opt:
        update = Update()

    opt = Opt()
    import numpy as np
    args = (np.zeros(3, np.float32),)
    results = []
    threads = [threading.Thread(target=lambda: results.append(compiled.compiled_update(opt, args)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(seconds > 0 for _, seconds in results) == [False, True]
    assert {program for program, _ in results} == {"program"}


def test_comparisons_started_at_once_get_their_run_ids_in_the_queues_order(tmp_path,
                                                                         monkeypatch):
    """Sessions pressing Start at the same moment: each comparison's runs get consecutive ids
    and the queue holds the comparisons in id order (so the Runs table's order is the queue's,
    and a queued session's place matches its ids).  Creating a run is made slow here, as a
    loaded store is, so that two sessions interleave unless the lab keeps each comparison's
    creation and its place in the queue together."""
    from hflab.lab import Lab
    lab = Lab(tmp_path)
    lab.scheduler = Scheduler(limit=1)
    slow = preset_config("regression", layers="4", steps=400, checkpoint_every=0, n_train=64,
                         n_test=16)
    blocker = lab.start(slow)                          # holds the one place: the rest queue
    create = lab.store.create_run

    def slow_create(*args, **kwargs):
        time.sleep(0.02)
        return create(*args, **kwargs)
    monkeypatch.setattr(lab.store, "create_run", slow_create)
    barrier, started = threading.Barrier(6), []

    def session(seed):
        barrier.wait()
        started.append(lab.start_many([slow.replace(seed=seed),
                                       slow.replace(seed=seed, optimizer="adam")]))
    threads = [threading.Thread(target=session, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert len(started) == 6
        assert all(ids[1] == ids[0] + 1 for ids in started), started
        queue = lab.scheduler.waiting()
        assert sorted(queue) == queue and sorted(queue) == sorted(ids[0] for ids in started)
    finally:
        for ids in [[blocker], *started]:
            for i in ids:
                lab.stop(i)
        for ids in [[blocker], *started]:
            for i in ids:
                lab.wait(i, 60)

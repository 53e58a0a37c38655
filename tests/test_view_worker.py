"""Views computed off the training path (:mod:`hflab.view.worker`): the background process
computes what the page would have computed itself, of the checkpoint asked for, at the lowest
priority; a later checkpoint supersedes an earlier one still waiting; a bad request is an
answer, not a hang."""
import os
import time

import numpy as np
import pytest

from hflab.config import preset_config
from hflab.lab import run_to_store
from hflab.store import Store
from hflab.view import analysis, worker


def test_newest_first_keeps_the_latest_step_of_each_job_run_and_options():
    keys = [("curvature_view", 1, 2, 16, None), ("loss_slices", 1, 2, 2, 64),
            ("curvature_view", 1, 6, 16, None), ("curvature_view", 1, 4, 16, None),
            ("curvature_view", 1, 4, 8, None), ("curvature_view", 2, 1, 16, None)]
    todo, dropped = worker.newest_first(keys)
    assert todo == [("curvature_view", 1, 6, 16, None), ("loss_slices", 1, 2, 2, 64),
                    ("curvature_view", 1, 4, 8, None), ("curvature_view", 2, 1, 16, None)]
    assert dropped == [("curvature_view", 1, 2, 16, None), ("curvature_view", 1, 4, 16, None)]


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("views"))
    cfg = preset_config("seed-333", steps=4, checkpoint_every=2).validate()
    run_id = store.create_run(cfg)
    assert run_to_store(store, run_id, cfg) == "finished"
    views = worker.ViewWorker(store.home)
    yield store, run_id, views
    views.close()


def test_the_background_view_is_the_view_of_the_checkpoint_asked_for(stored_run):
    store, run_id, views = stored_run
    assert views.get("priority", run_id, 0)[0] == "pending"         # never blocks the page
    state, (nice, policy) = views.wait("priority", run_id, 0)
    assert state == "ready" and nice == worker.NICENESS
    if hasattr(os, "SCHED_IDLE"):                # Linux: preempted whenever training wakes
        assert policy == os.SCHED_IDLE
    state, snap = views.wait("curvature_view", run_id, 4, 16, None)
    assert state == "ready"
    _, built, params, _, _ = analysis.checkpoint_state(store, run_id, 4)
    here = analysis.curvature_view(built, params, 16, None)
    for key in ("G", "H", "J", "eig_G", "eig_H"):
        np.testing.assert_allclose(snap[key], here[key], rtol=1e-10, atol=1e-12)
    # another checkpoint, another view (a worker that showed the newest for every step fails)
    assert not np.allclose(views.wait("curvature_view", run_id, 2, 16, None)[1]["G"], snap["G"])
    assert views.ready("curvature_view", run_id, 16, None)[0] == 4
    assert views.ready("curvature_view", run_id, 8, None) is None   # other options: none ready
    slices = views.wait("loss_slices", run_id, 4, 1, 32)[1]
    assert slices["n_cases"] == 32 and "step" in slices              # HF's step with q(αp)


def test_a_bad_request_is_answered_with_its_reason(stored_run):
    _, run_id, views = stored_run
    state, message = views.wait("curvature_view", run_id, 3, 16, None)
    assert state == "error" and "no checkpoint of update 3" in message
    assert views.wait("curvature_view", 10_000, 2, 16, None)[0] == "error"
    with pytest.raises(ValueError, match="unknown view job"):
        views.get("density", run_id, 2)


def test_a_later_checkpoint_supersedes_an_earlier_one_still_waiting(stored_run):
    """Asked for 2 then 4 at once: 4 is computed, and 2 too — at once, or (had it been dropped
    as superseded while the worker was busy) when asked for again: a page that still wants it
    is not left waiting."""
    _, run_id, views = stored_run
    views.get("curvature_view", run_id, 2, 12, None)
    views.get("curvature_view", run_id, 4, 12, None)
    assert views.wait("curvature_view", run_id, 4, 12, None)[0] == "ready"
    assert views.wait("curvature_view", run_id, 2, 12, None, timeout=120)[0] == "ready"


def test_a_page_following_a_training_run_finds_the_newest_checkpoint_ready(stored_run):
    """While the run trains, the worker computes the view a page asked for again for each newer
    checkpoint, unasked: the following page finds it ready instead of asking and waiting a view's
    time.  A run that has ended is not followed."""
    store, run_id, views = stored_run

    def newest_ready(cases, wait):
        deadline = time.time() + wait
        while time.time() < deadline and (views.ready("curvature_view", run_id, cases, None)
                                          or (0,))[0] < 4:
            time.sleep(0.1)
        return views.ready("curvature_view", run_id, cases, None)

    assert views.wait("curvature_view", run_id, 2, 9, None)[0] == "ready"     # ended: update 2
    assert newest_ready(9, 3.0)[0] == 2                                        # and only that
    store.set_status(run_id, "running")
    try:
        assert views.wait("curvature_view", run_id, 2, 10, None)[0] == "ready"
        step, snap = newest_ready(10, 120.0)
        assert step == 4                                            # never asked for
        _, built, params, _, _ = analysis.checkpoint_state(store, run_id, 4)
        np.testing.assert_allclose(snap["G"], analysis.curvature_view(built, params, 10, None)["G"],
                                   rtol=1e-10, atol=1e-12)
    finally:
        store.set_status(run_id, "finished")

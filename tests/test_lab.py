"""The lab's scheduler: one worker per comparison advancing its runs in turn; phases; stop."""
import time

from hflab.config import RunConfig, preset_config
from hflab.lab import Lab


def small(**kw):
    base = dict(task="regression", layers="8", n_train=64, n_test=32, steps=40,
                checkpoint_every=0, damping=1.0, max_cg_iters=10)
    base.update(kw)
    return RunConfig(**base)


def test_runs_of_one_comparison_advance_in_turn(tmp_path):
    """Never more than one update apart: they share one worker, so no update of one run
    overlaps an update of another (each update's wall time is its own)."""
    lab = Lab(tmp_path)
    ids = lab.start_many([small(optimizer="hf"), small(optimizer="adam"),
                          small(optimizer="sgd")])
    gaps = []
    while any(lab.is_active(i) for i in ids):
        done = [lab.progress(i)["steps_done"] for i in ids]
        if all(lab.is_active(i) for i in ids) and min(done) > 0:
            gaps.append(max(done) - min(done))
        time.sleep(0.01)
    assert gaps and max(gaps) <= 2, gaps
    for i in ids:
        assert lab.store.get_run(i)["status"] == "finished"
        m = lab.store.metrics(i)
        assert list(m["step"]) == list(range(0, 41))
        # optimisation seconds grow by the update's own time only
        assert m["wall_seconds"].diff().dropna().min() >= 0


def test_stop_during_preparation_is_honoured_at_once(tmp_path):
    lab = Lab(tmp_path)
    (run_id,) = lab.start_many([preset_config("curves", n_train=64, n_test=16, steps=5,
                                              checkpoint_every=0)])
    t0 = time.time()
    lab.stop(run_id)
    assert lab.store.get_run(run_id)["status"] == "stopped"
    assert time.time() - t0 < 1.0
    assert lab.wait(run_id, timeout=120)
    info = lab.store.get_run(run_id)
    assert info["status"] == "stopped" and "stopped by the user" in info["error"]


def test_progress_reports_phase_and_eta(tmp_path):
    lab = Lab(tmp_path)
    (run_id,) = lab.start_many([small(optimizer="hf", steps=400)])
    phases, etas = set(), []
    deadline = time.time() + 120
    while lab.is_active(run_id) and time.time() < deadline:
        p = lab.progress(run_id)
        phases.add(p["phase"])
        if p["eta"] is not None:
            etas.append(p["eta"])
            if len(etas) > 3:
                lab.stop(run_id)
        time.sleep(0.02)
    assert lab.wait(run_id, timeout=60)
    assert "training" in phases and etas and all(e >= 0 for e in etas)
    assert lab.store.get_run(run_id)["status"] == "stopped"


def test_resume_many_restarts_every_stopped_run_of_a_group(tmp_path):
    lab = Lab(tmp_path)
    ids = lab.start_many([small(optimizer="hf", steps=100000), small(optimizer="adam",
                                                                      steps=100000)])
    deadline = time.time() + 60
    while min(lab.progress(i)["steps_done"] for i in ids) < 2 and time.time() < deadline:
        time.sleep(0.02)
    for i in ids:
        lab.stop(i)
    for i in ids:
        assert lab.wait(i, timeout=60)
    assert sorted(lab.resume_many(ids)) == sorted(ids)
    assert all(lab.is_active(i) or lab.store.get_run(i)["status"] != "stopped" for i in ids)
    for i in ids:
        lab.stop(i)
        assert lab.wait(i, timeout=60)

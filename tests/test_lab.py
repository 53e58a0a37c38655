"""The lab's scheduler: one worker per comparison advancing its runs in turn; phases; stop;
the spectrum extremes it records at checkpoints."""
import time

import numpy as np
import pytest

from hflab.core import curvature
from hflab.config import RunConfig, preset_config
from hflab.lab import Lab


def small(**kw):
    base = dict(task="regression", layers="8", n_train=64, n_test=32, steps=40,
                checkpoint_every=0, damping=1.0, max_cg_iters=10)
    base.update(kw)
    return RunConfig.from_dict(base)


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


def test_spectrum_extremes_stored_at_checkpoints_match_the_dense_matrices(tmp_path):
    """λ_max/λ_min of G and H recorded at update 0 and at each checkpoint equal the extreme
    eigenvalues of the dense matrices (jax.hessian routes) at those parameters."""
    from hflab.config import preset_config
    from hflab.experiment import build
    from hflab.checkpoint import restore_state
    from hflab.lab import run_to_store
    from hflab.core.spectra import N_CASES
    from hflab.store import Store
    store = Store(tmp_path)
    cfg = preset_config("digits", layers="4", steps=4, checkpoint_every=2, n_train=64,
                        n_test=32, dtype="float64").validate()
    rid = store.create_run(cfg)
    assert run_to_store(store, rid, cfg) == "finished"
    m = store.metrics(rid).set_index("step")
    assert m["spectrum_G_max"].notna().tolist() == [True, False, True, False, True]
    built = build(cfg)
    step, leaves = store.latest_checkpoint(rid)
    params = restore_state(built, leaves)[0]
    x, y, mask = (a[:N_CASES] for a in built.task.train)
    out = lambda p: built.model.apply(p, x)  # noqa: E731
    bound = lambda z: built.loss.value(z, y, mask)  # noqa: E731
    g = np.linalg.eigvalsh(np.asarray(curvature.gauss_newton_matrix(out, bound, params)))
    h = np.linalg.eigvalsh(np.asarray(curvature.hessian_matrix(lambda p: bound(out(p)), params)))
    row = m.loc[step]
    assert row["spectrum_G_max"] == pytest.approx(g[-1], rel=1e-2)
    assert row["spectrum_H_max"] == pytest.approx(h[-1], rel=1e-2)
    assert row["spectrum_H_min"] == pytest.approx(h[0], rel=5e-2, abs=1e-3 * h[-1])
    assert abs(row["spectrum_G_min"]) < 1e-3 * g[-1]           # G is PSD: its floor is ~0


def test_spectrum_extremes_give_way_to_stop():
    """A Stop pressed while Lanczos runs ends it within one product (no extremes stored)."""
    import jax

    from hflab.experiment import build, init_params
    from hflab.core.spectra import SpectrumTracker
    built = build(preset_config("digits", layers="8", n_train=64, n_test=32))
    tracker = SpectrumTracker(built.model.apply, built.loss, built.task.train)
    params = init_params(built)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3
    assert tracker(params, stop=stop) == {} and len(calls) == 4
    full = tracker(params)
    assert set(full) == {"spectrum_G_max", "spectrum_G_min", "spectrum_H_max", "spectrum_H_min"}
    assert all(np.isfinite(v) for v in full.values())
    jax.clear_caches()


def test_a_session_acts_only_on_its_own_runs_unless_it_takes_them_over(tmp_path):
    """Stop, resume and delete by another owner are refused (naming the run and where it came
    from) and change nothing; taken over, they act and the run changes hands; the command line
    and Python (owner None) act on any run."""
    from hflab.ownership import NotYourRun, origin_label
    lab = Lab(tmp_path)
    alice, bob = "session:alice", "session:bob"
    a, = lab.start_many([small(optimizer="hf", steps=100_000)], owner=alice)
    deadline = time.time() + 60
    while time.time() < deadline and lab.progress(a)["steps_done"] < 2:
        time.sleep(0.05)
    with pytest.raises(NotYourRun, match=rf"cannot stop run #{a} \(started by another browser "
                                         r"session\).*take it over"):
        lab.stop(a, owner=bob)
    time.sleep(0.3)
    assert lab.is_active(a) and lab.store.get_run(a)["status"] == "running"
    assert origin_label(lab.store.get_run(a)["owner"], alice) == "this session"
    lab.stop(a, owner=alice)                        # its owner stops it without asking
    assert lab.wait(a, 60) and lab.store.get_run(a)["status"] == "stopped"

    with pytest.raises(NotYourRun, match="cannot resume"):
        lab.resume_many([a], owner=bob)
    assert lab.store.get_run(a)["status"] == "stopped" and not lab.is_active(a)
    assert lab.resume_many([a], owner=bob, take_over=True) == [a]
    assert lab.store.get_run(a)["owner"] == bob
    with pytest.raises(NotYourRun):                 # now bob's: alice must take it back
        lab.stop(a, owner=alice)
    lab.stop(a, owner=bob)
    assert lab.wait(a, 60)

    # delete is all or nothing: one foreign run among the chosen refuses the whole request
    c = lab.store.create_run(small(optimizer="adam"), status="stopped", owner="cli")
    with pytest.raises(NotYourRun, match=rf"run #{c} \(started by the command line\)"):
        lab.delete([a, c], owner=bob)
    assert set(lab.store.runs()["id"]) == {a, c}
    lab.delete([a, c], owner=bob, take_over=True)
    assert lab.store.runs().empty
    d = lab.store.create_run(small(optimizer="adam"), status="stopped", owner=alice)
    lab.delete([d])                                 # the command line / Python: any run
    assert lab.store.runs().empty

"""A length curriculum in the lab (``RunConfig.curriculum``): its validation, its stages (the
network kept, the optimiser restarted, the cost counted on), its records, resuming inside a
stage and at a stage's start, and the boundaries drawn on the curves."""
import time

import numpy as np
import pandas as pd
import pytest

from hflab import experiment as experiment_module
from hflab.view import formstate, plots
from hflab import lab as lab_module
from hflab.config import ConfigError, preset_config
from hflab.experiment import build, evaluation, run
from hflab.lab import Lab, run_to_store
from hflab.store import Store


def small(**kw):
    """Addition with an 8-unit RNN: T = 4 passes a 50 % target in about 7 updates."""
    base = dict(curriculum="4,6,8", steps=60, eval_every=1, layers="8", n_train=256,
                n_test=128, target_error=0.5, grad_batch=128, max_cg_iters=20,
                checkpoint_every=0, damping=1.0)
    return preset_config("addition", **{**base, **kw})


@pytest.mark.parametrize("fields, field, says", [
    (dict(curriculum="20,fifty"), "curriculum", "whole numbers"),
    (dict(curriculum="50"), "curriculum", "at least two"),
    (dict(curriculum="50,20,100"), "curriculum", "longer than the one before"),
    (dict(curriculum="20,20"), "curriculum", "longer than the one before"),
    (dict(curriculum="1,20"), "curriculum", "[2, 10000]"),
    (dict(curriculum="20,20000"), "curriculum", "[2, 10000]"),
    (dict(curriculum="20,50", seq_len=100), "seq_len", "the curriculum's last length"),
    (dict(curriculum="20,50", target_error=-1.0), "target_error", "a test error ≥ 0"),
])
def test_a_bad_curriculum_is_refused_naming_the_field(fields, field, says):
    with pytest.raises(ConfigError) as e:
        preset_config("xor", **fields).validate()
    assert e.value.field == field and says in str(e.value)


def test_a_curriculum_needs_a_sequence_task():
    with pytest.raises(ConfigError) as e:
        preset_config("digits", curriculum="20,50").validate()
    assert e.value.field == "curriculum" and "not a sequence problem" in str(e.value)


def test_a_curriculum_run_is_sized_by_its_longest_length():
    cfg = preset_config("xor", curriculum="20,50,200").validate()
    assert cfg.curriculum_lengths() == [20, 50, 200] and cfg.final_seq_len() == 200
    assert cfg.stage(50).seq_len == 50 and cfg.stage(50).curriculum == ""
    assert build(small()).task.train.x.shape[1] == build(small().stage(8)).task.train.x.shape[1]


def stage_rows(records):
    rows = pd.DataFrame(records)
    return rows, rows.index[rows["stage"].diff() > 0].tolist()


def test_each_stage_continues_the_last_network_with_a_fresh_optimiser_and_the_cost_runs_on():
    cfg = small()
    records, params_at = [], {}

    def on_step(record, trace, params, opt_state):
        records.append(dict(record))
        params_at[record["step"]] = params
    out = run(cfg, on_step=on_step)
    rows, starts = stage_rows(records)
    assert out.status == "finished" and out.reason.startswith("T = 8 (stage 3 of 3): target")
    assert list(rows["step"]) == list(range(out.steps_done + 1))
    assert len(starts) == 2 and list(rows["seq_len"].unique()) == [4, 6, 8]
    for i in starts:
        before, first = rows.loc[i - 1], rows.loc[i]
        # a stage ends once the target is reached, and not before
        assert before["test_error"] <= 0.5
        assert (rows.loc[:i - 1].query("stage == @before.stage")["test_error"].iloc[:-1] >
                0.5).all()
        # the optimiser restarted: λ₀ again (the stage before had lowered λ)
        assert first["damping"] == pytest.approx(1.0) and before["damping"] < 0.5
        # the counters run on: the new stage's first update adds its own cost
        assert first["n_passes"] > before["n_passes"] > 0
        assert first["wall_seconds"] > before["wall_seconds"]
        # the transfer point: the previous stage's final network on the longer problem
        expected = evaluation(build(cfg.stage(int(first["seq_len"]))), params_at[i - 1])
        assert first["transfer_test_error"] == pytest.approx(expected["test_error"], abs=1e-6)
        assert first["transfer_test_loss"] == pytest.approx(expected["test_loss"], rel=1e-5)
        # ...which is not the same network evaluated at the shorter length
        assert first["transfer_test_loss"] != pytest.approx(before["test_loss"], rel=1e-3)


def test_a_stage_that_misses_the_target_ends_the_run_and_says_where():
    out = run(small(steps=5))
    assert out.status == "finished" and out.steps_done == 5
    assert out.reason.startswith("T = 4 (stage 1 of 3)")
    # the update budget runs out right after a stage is passed
    records = []
    full = run(small(), on_step=lambda r, *a: records.append(r))
    passed = stage_rows(records)[1][0] - 1
    out = run(small(steps=passed))
    assert "passed at update" in out.reason and "before T = 6" in out.reason
    assert full.steps_done > passed


@pytest.mark.parametrize("extra", [0, 2], ids=["at-a-stage-start", "inside-a-stage"])
def test_resuming_a_curriculum_run_joins_the_uninterrupted_curve(tmp_path, extra, monkeypatch):
    store = Store(tmp_path)
    cfg = small(checkpoint_every=1000)      # a run's end writes a checkpoint whatever this is
    full = store.create_run(cfg)
    run_to_store(store, full, cfg.replace(steps=cfg.steps))
    a = store.metrics(full)
    boundary = int(a.loc[a["stage"].diff() > 0, "step"].iloc[0]) - 1
    stop_at = boundary + extra
    part = store.create_run(cfg)
    run_to_store(store, part, cfg.replace(steps=stop_at))
    store.set_status(part, "interrupted")
    _, leaves = store.latest_checkpoint(part)
    assert int(leaves["curriculum_stage"]) == 1 and bool(leaves["curriculum_fresh_stage"]) == \
        (not extra)
    assert int(leaves["curriculum_stage_start"]) == (stop_at if not extra else boundary)
    built_lengths = []              # the stages' data a resume builds: its own stage's, once
    for module in (experiment_module, lab_module):
        monkeypatch.setattr(module, "build", lambda c, real=module.build:
                            built_lengths.append(c.seq_len) or real(c))
    run_to_store(store, part, cfg, resume=True)
    assert built_lengths == [6, 8]
    b = store.metrics(part)
    assert list(b["step"]) == list(a["step"])
    for col in ("stage", "seq_len", "train_loss", "test_error", "damping", "rho", "cg_iters"):
        assert np.allclose(a[col].astype(float), b[col].astype(float), rtol=1e-5,
                           equal_nan=True), col
    if not extra:
        first = b["step"] == boundary + 1
        assert float(b.loc[first, "transfer_test_error"].iloc[0]) == pytest.approx(
            float(a.loc[first, "transfer_test_error"].iloc[0]))


def test_the_lab_reports_the_stage_in_progress(tmp_path):
    lab = Lab(tmp_path)
    (run_id,) = lab.start_many([small(steps=100000, target_error=0.9)])
    seen = set()
    deadline = time.time() + 120
    while lab.is_active(run_id) and time.time() < deadline:
        stage = lab.progress(run_id).get("stage")
        if stage:
            seen.add(stage)
        time.sleep(0.01)
    assert lab.wait(run_id, timeout=60)
    assert seen and seen <= {"T = 4 (stage 1 of 3)", "T = 6 (stage 2 of 3)",
                             "T = 8 (stage 3 of 3)"}
    assert lab.store.get_run(run_id)["status"] == "finished"


def test_stage_starts_are_drawn_where_the_curve_jumps():
    m = pd.DataFrame({"run_id": 1, "step": range(7), "wall_seconds": np.arange(7) * 0.5,
                      "train_loss": 1.0, "test_loss": 1.0,
                      "stage": [1, 1, 1, 2, 2, 3, 3], "seq_len": [4, 4, 4, 6, 6, 8, 8]})
    assert plots.stage_starts(m, "step") == [(2.0, 6), (4.0, 8)]
    assert plots.stage_starts(m, "wall_seconds") == [(1.0, 6), (2.0, 8)]
    assert plots.stage_starts(m.drop(columns=["stage"]), "step") == []
    fig = plots.loss_curves(m, {1: "hf"})
    assert [s["x0"] for s in fig.layout.shapes] == [2.0, 4.0]
    assert [a.text for a in fig.layout.annotations] == ["T = 6", "T = 8"]


def test_the_train_form_carries_a_curriculum_for_sequence_tasks_only():
    form = formstate.task_defaults("xor")
    assert form["curriculum"] == ""
    (cfg,) = formstate.configs_from_form({**form, "optimizers": ["hf"],
                                          "curriculum": "20,50,100", "seq_len": 20})
    assert cfg.curriculum == "20,50,100" and cfg.seq_len == cfg.final_seq_len() == 100
    query = formstate.query_from_form({**form, "curriculum": "20,50,100"})
    assert query["curriculum"] == "20,50,100"
    back, warnings = formstate.form_from_query(query)
    assert back["curriculum"] == "20,50,100" and not warnings
    _, warnings = formstate.form_from_query({"task": "xor", "curriculum": "50,20"})
    assert any("curriculum" in w for w in warnings)
    (mlp,) = formstate.configs_from_form({**formstate.task_defaults("digits"),
                                          "optimizers": ["hf"], "curriculum": "20,50"})
    assert mlp.curriculum == ""


def test_each_stage_draws_its_minibatches_from_its_own_start(monkeypatch):
    """A stage is the plain run at its length: its data stream counts updates from the stage's
    start (update k of a stage gets the batch a fresh run at that T gets at its update k), not
    from the start of the curriculum."""
    drawn = []
    real = experiment_module.batches_for_step

    def spy(built, step):
        drawn.append((built.config.seq_len, step))
        return real(built, step)
    monkeypatch.setattr(experiment_module, "batches_for_step", spy)
    run(small())
    by_length: dict = {}
    for length, step in drawn:
        by_length.setdefault(length, []).append(step)
    assert list(by_length) == [4, 6, 8]
    for length, steps in by_length.items():
        assert steps == list(range(len(steps))), (length, steps)

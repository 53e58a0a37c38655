"""The curriculum study's stages (each stage a run of its own) against the lab's curriculum run
(one run whose update numbers go on): two routes to the same stages."""
import pandas as pd
import pytest

from hflab.config import preset_config
from hflab.experiment import run


def test_the_lab_curriculum_reproduces_the_benchmark_stages(monkeypatch):
    """Two routes to the same stages: the benchmark runs each stage as a run of its own
    (:func:`research.curriculum.stages`), the lab as one run whose update numbers go on.  The
    data stream and evaluation schedule count from each stage's start in both, so each stage's
    updates, transfer success and final success must agree."""
    from research import curriculum
    monkeypatch.setattr(curriculum, "SOLVED_ERROR", 0.5)
    settings = dict(n_train=256, grad_batch=128, layers="8", max_cg_iters=20)
    bench = list(curriculum.stages("addition", (4, 6, 8), 0, 600.0, settings))
    records = []
    cfg = preset_config("addition", curriculum="4,6,8", seed=0, steps=10_000, target_error=0.5,
                        checkpoint_every=0, eval_every=5, optimizer="hf", **settings)
    run(cfg, on_step=lambda r, *a: records.append(dict(r)))
    rows = pd.DataFrame(records)
    assert len(bench) == 3 and rows["stage"].max() == 3
    for k, b in enumerate(bench, start=1):
        stage = rows[rows["stage"] == k].dropna(subset=["test_error"])
        assert stage["step"].iloc[-1] == b["updates"]          # cumulative, in both
        assert 1 - stage["test_error"].iloc[-1] == pytest.approx(b["success_rate"], abs=1e-6)
        if k > 1:
            assert 1 - stage["transfer_test_error"].dropna().iloc[0] == pytest.approx(
                b["transfer_success"], abs=1e-6)

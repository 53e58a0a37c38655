"""Paper-scale RNN benchmark runs on tiny problems (these train): the records' curves, and the
fixed-readout variant against the plain RNN."""
import numpy as np
import pytest


def test_paper_run_records_updates_and_the_readout_norm_at_each_evaluation():
    from benchmarks import rnn_problems
    from hflab.config import preset_config
    from hflab.experiment import build, init_params
    # Adam: the record's bookkeeping does not depend on the optimiser, and Adam compiles fast
    settings = dict(optimizer="adam", n_train=200, grad_batch=100, layers="8", steps=10)
    record = rnn_problems.one("addition", 6, "adam", settings, 0, 600.0, curve=True)
    assert record["updates"] == 10
    updates = record["curve_updates"]
    assert updates[0] == 0 and updates[-1] == 10 and 5 in updates
    assert updates == sorted(set(updates))
    norms = record["curve_readout_norm"]
    assert len(norms) == len(record["curve_success"]) == len(updates)
    start = init_params(build(preset_config("addition", seq_len=6, seed=0, **settings)))
    assert norms[0] == pytest.approx(float(np.linalg.norm(np.asarray(start["W_out"]))), rel=1e-6)
    assert norms[-1] != pytest.approx(norms[0], rel=1e-6)       # the readout is trained


def test_fixed_readout_variant_keeps_w_out_and_matches_the_plain_rnn():
    import jax
    from research import fixed_readout
    from hflab.config import preset_config
    from hflab.experiment import build, init_params, run
    from hflab.core.losses import BoundLoss
    from hflab.core.models import rnn_apply
    cfg = preset_config("xor", seq_len=6, seed=1, optimizer="hf", n_train=200, grad_batch=100,
                        layers="8", max_cg_iters=5, steps=3, checkpoint_every=0, dtype="float64")
    full = init_params(build(cfg))
    built, params, state = fixed_readout.fixed_readout_start(cfg)
    assert "W_out" not in params and set(params) == set(full) - {"W_out"}
    assert built.model.n_params == build(cfg).model.n_params - 8
    x, y, mask = built.task.train.x[:50], built.task.train.y[:50], built.task.train.mask[:50]
    np.testing.assert_allclose(built.model.apply(params, x), rnn_apply(full, x), rtol=1e-12)
    # the gradient the optimiser sees is the plain RNN's gradient without its W_out block
    loss = BoundLoss(built.loss, y, mask)
    g_fixed = jax.grad(lambda p: loss(built.model.apply(p, x)))(params)
    g_full = jax.grad(lambda p: loss(rnn_apply(p, x)))(full)
    for k in params:
        np.testing.assert_allclose(g_fixed[k], g_full[k], rtol=1e-10, atol=1e-14)
    out = run(cfg, built=built, params=params, opt_state=state)
    assert out.steps_done == 3 and "W_out" not in out.params
    assert not np.allclose(out.params["W_rec"], full["W_rec"])             # the rest trains
    np.testing.assert_array_equal(built.model.with_readout(out.params)["W_out"], full["W_out"])



def test_length_curriculum_continues_each_stage_from_the_last_and_adds_up_its_cost(monkeypatch):
    from benchmarks import rnn_problems
    from research import curriculum
    from hflab.config import preset_config
    from hflab.experiment import build, evaluation
    outcomes = []

    def kept(*args, **kwargs):
        record, out = rnn_problems.train_one(*args, **kwargs)
        outcomes.append(out)
        return record, out
    monkeypatch.setattr(curriculum, "train_one", kept)
    settings = dict(n_train=200, grad_batch=100, layers="8", max_cg_iters=5, steps=3)
    first, second = curriculum.stages("xor", (6, 12), 1, 600.0, settings)
    assert (first["T"], second["T"]) == (6, 12) and second["curriculum"] == [6, 12]
    assert first["updates"] == first["stage_updates"] == 3
    assert second["updates"] == 3 + second["stage_updates"] == 6
    assert second["seconds"] == pytest.approx(first["seconds"] + second["stage_seconds"])
    # the second stage's curves continue the first's on the cumulative axes
    assert second["curve_updates"][0] == first["curve_updates"][-1] == 3
    assert second["curve_seconds"][0] == pytest.approx(first["seconds"])
    # ...from the first stage's final network, not a fresh one: the readout the first stage
    # ended with, and the success those parameters have on the longer problem's test set
    assert second["curve_readout_norm"][0] == pytest.approx(first["curve_readout_norm"][-1])
    assert first["curve_readout_norm"][-1] != pytest.approx(first["curve_readout_norm"][0])
    cfg = preset_config("xor", seq_len=12, seed=1, **{**rnn_problems.PAPERS_DATA, **settings},
                        optimizer="hf")
    expected = 1.0 - evaluation(build(cfg), outcomes[0].params)["test_error"]
    assert second["transfer_success"] == pytest.approx(expected, abs=1e-9)


def test_a_curriculum_stage_keeps_the_network_and_restarts_the_optimiser():
    import jax
    from research import curriculum
    from hflab.config import preset_config
    from hflab.experiment import build, init_params
    cfg = preset_config("xor", seq_len=6, seed=0, optimizer="hf", n_train=200, grad_batch=100,
                        layers="8", damping=0.7, checkpoint_every=0)
    trained = jax.tree_util.tree_map(lambda w: w + 0.1, init_params(build(cfg)))
    built, params, state = curriculum.continue_from(trained)(
        preset_config("xor", seq_len=12, seed=0, optimizer="hf", n_train=200, grad_batch=100,
                      layers="8", damping=0.7, checkpoint_every=0))
    assert params is trained and built.task.train.x.shape[1] == 13      # the longer problem
    assert float(state.damping) == pytest.approx(0.7)                   # λ₀, not a carried λ
    assert not np.any(np.asarray(state.prev_step))                      # no warm start

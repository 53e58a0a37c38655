"""The gradient-signal benchmark's statistic: well above 1 where the first gradient knows the
task, about 1 where the targets have nothing to do with the inputs."""
import dataclasses

import numpy as np

from research import gradient_signal

SMALL = dict(n_train=8000, grad_batch=1000)


def test_the_addition_gradient_knows_its_targets():
    r = gradient_signal.measure("addition", 10, 0, n_sequences=8000, data=SMALL)
    assert r["signal_to_noise"] > 3, r


def test_targets_unrelated_to_the_inputs_read_as_noise(monkeypatch):
    """Null: the training targets are shuffled among the sequences before the measurement, so
    the 'true' gradient is one more permuted draw — a permutation that failed to break the
    relation, or a wrong noise normalisation, would move the statistic away from 1."""
    build = gradient_signal.build

    def shuffled_build(cfg):
        built = build(cfg)
        train = built.task.train
        y = np.asarray(train.y)
        out = gradient_signal.shuffled_targets(y, np.asarray(train.mask),
                                               np.random.default_rng(7))
        task = dataclasses.replace(built.task, train=train._replace(y=out.astype(y.dtype)))
        return dataclasses.replace(built, task=task)
    monkeypatch.setattr(gradient_signal, "build", shuffled_build)
    ratios = [gradient_signal.measure("addition", 10, seed, n_sequences=8000,
                                      data=SMALL)["signal_to_noise"] for seed in (0, 1)]
    assert all(0.3 < r < 2.0 for r in ratios), ratios


def test_shuffled_targets_keep_their_values_and_mask_positions_but_move_between_sequences():
    rng = np.random.default_rng(0)
    mask = np.zeros((50, 7))
    last = rng.integers(3, 7, 50)
    mask[np.arange(50), last] = 1.0
    y = np.zeros((50, 7, 2))
    y[np.arange(50), last] = rng.normal(size=(50, 2))
    out = gradient_signal.shuffled_targets(y, mask, np.random.default_rng(1))
    assert np.all(out[mask == 0] == 0)                          # nothing off the mask
    moved, kept = out[np.arange(50), last], y[np.arange(50), last]
    assert sorted(map(tuple, moved)) == sorted(map(tuple, kept))  # the same values, rows intact
    assert np.mean(np.all(moved == kept, axis=1)) < 0.2           # most moved to another sequence


def test_the_measured_network_is_the_one_given():
    """``params`` replaces the initial network: the record's gradient norm is that network's
    (computed here by plain ``jax.grad`` of the mean squared error at the target steps)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from hflab.config import preset_config
    from hflab.experiment import build, init_params
    from hflab.core.models import rnn_apply
    cfg = preset_config("addition", seq_len=10, seed=0, checkpoint_every=0, **SMALL)
    built = build(cfg)
    start = init_params(built)
    params = {**start, "W_out": start["W_out"] * 0.5, "b": start["b"] + 0.1}
    x, y, mask = (built.task.train.x[:2000], built.task.train.y[:2000],
                  built.task.train.mask[:2000])

    def loss(p):          # squared error ½‖ŷ − y‖² at each sequence's target step, mean over them
        err = (rnn_apply(p, x) - y) * mask[..., None]
        return 0.5 * jnp.sum(err ** 2) / jnp.sum(mask)
    expected = float(jnp.linalg.norm(ravel_pytree(jax.grad(loss)(params))[0]))
    given = gradient_signal.measure("addition", 10, 0, n_sequences=2000, data=SMALL,
                                    params=params)
    fresh = gradient_signal.measure("addition", 10, 0, n_sequences=2000, data=SMALL)
    assert np.isclose(given["grad_norm"], expected, rtol=1e-4), (given["grad_norm"], expected)
    assert not np.isclose(fresh["grad_norm"], expected, rtol=1e-2)

"""The gradient-signal benchmark's statistic: well above 1 where the first gradient knows the
task, about 1 where the targets have nothing to do with the inputs."""
import dataclasses

import numpy as np

from benchmarks import gradient_signal

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
        y, mask = np.asarray(train.y), np.asarray(train.mask)
        last, rows = mask.argmax(1), np.arange(len(mask))
        out = np.zeros_like(y)
        out[rows, last] = y[rows, last][np.random.default_rng(7).permutation(len(rows))]
        task = dataclasses.replace(built.task, train=train._replace(y=out.astype(y.dtype)))
        return dataclasses.replace(built, task=task)
    monkeypatch.setattr(gradient_signal, "build", shuffled_build)
    ratios = [gradient_signal.measure("addition", 10, seed, n_sequences=8000,
                                      data=SMALL)["signal_to_noise"] for seed in (0, 1)]
    assert all(0.3 < r < 2.0 for r in ratios), ratios

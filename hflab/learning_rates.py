"""First-order learning rates of every preset, chosen by ``benchmarks/lr_sweep.py``
(written by it: do not edit by hand; the sweep's lines are in
records/lr_sweep.jsonl)."""

LEARNING_RATES = {
    "addition": {"adam": 0.01, "lbfgs": 0.3, "momentum": 0.01, "sgd": 0.01},
    "curves": {"adam": 0.03, "lbfgs": 1.0, "momentum": 0.03, "sgd": 0.1},
    "digits": {"adam": 0.03, "lbfgs": 1.0, "momentum": 0.3, "sgd": 0.3},
    "digits-ae": {"adam": 0.03, "lbfgs": 1.0, "momentum": 0.3, "sgd": 0.3},
    "memorization": {"adam": 0.1, "lbfgs": 0.3, "momentum": 0.003, "sgd": 0.01},
    "mnist": {"adam": 0.003, "lbfgs": 1.0, "momentum": 0.1, "sgd": 0.3},
    "mnist-ae": {"adam": 0.001, "lbfgs": 1.0, "momentum": 0.01, "sgd": 0.01},
    "multiplication": {"adam": 0.01, "lbfgs": 0.3, "momentum": 0.01, "sgd": 0.01},
    "regression": {"adam": 0.03, "lbfgs": 1.0, "momentum": 0.01, "sgd": 0.03},
    "seed-333": {"adam": 0.3, "lbfgs": 1.0, "momentum": 0.3, "sgd": 0.3},
    "seed-rnn": {"adam": 0.3, "lbfgs": 1.0, "momentum": 0.1, "sgd": 0.3},
    "spirals": {"adam": 0.1, "lbfgs": 1.0, "momentum": 0.1, "sgd": 0.1},
    "temporal-order-2": {"adam": 0.001, "lbfgs": 1.0, "momentum": 0.03, "sgd": 0.1},
    "temporal-order-3": {"adam": 0.003, "lbfgs": 1.0, "momentum": 0.03, "sgd": 0.1},
    "xor": {"adam": 0.003, "lbfgs": 0.3, "momentum": 0.03, "sgd": 0.1},
}

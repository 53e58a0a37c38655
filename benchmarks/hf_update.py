"""HF update throughput: seconds per update with exactly N CG iterations (relative-progress stop
disabled), on the digits autoencoder (full batch 1797) and the addition RNN (batch 1000)."""
from __future__ import annotations

import jax.numpy as jnp

from hflab.core import hf
from hflab import tasks
from hflab.core.losses import Batch, get_loss
from hflab.core.models import Model

from .common import timeit


def _digits_batch():
    x, _ = tasks._digits_data()
    x = jnp.asarray(x, jnp.float32)
    return Batch(x, x, jnp.ones((x.shape[0],), jnp.float32))


def cases():
    digits = _digits_batch()
    add = tasks.load_task("addition", seed=0, seq_len=20, n_train=1000, n_test=10)
    return [
        ("digits-autoencoder 64-32-16-32-64 full batch 1797",
         Model("mlp", (64, 32, 16, 32, 64), ("logistic",) * 3), "squared", digits, {}),
        ("addition RNN 64 tanh T=20 batch 1000", Model("rnn", (2, 64, 1), ("tanh",)), "squared",
         add.train, {}),
        ("addition RNN 64 tanh T=20 batch 1000 + structural damping",
         Model("rnn", (2, 64, 1), ("tanh",)), "squared", add.train, {"structural_damping": 0.03}),
    ]


def run(full: bool):
    import jax
    iters = 250
    for name, model, loss_name, batch, extra in cases():
        opt = hf.hessian_free(model, get_loss(loss_name), damping=1.0, max_cg_iters=iters,
                              cg_eps=0.0, cg_tol=0.0, **extra)
        params = model.init_params(jax.random.PRNGKey(0), jnp.float32)
        state = opt.init(params)
        _, _, info = opt.update(params, state, batch, batch)
        secs = timeit(lambda: opt.update(params, state, batch, batch)[2], repeats=5 if full else 3)
        yield {"benchmark": "hf_update", "case": name, "cg_iters": int(info.cg_iters),
               "seconds_per_update": secs, "ms_per_cg_iteration": 1e3 * secs / iters,
               "n_params": model.n_params}

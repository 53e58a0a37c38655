"""Data parallelism in-process (the core tier runs with 4 host devices; skipped with fewer):
a sharded HF update and gradient equal the single-device ones on a batch not divisible by 4."""
import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from hflab.core import parallel
from hflab.config import preset_config
from hflab.experiment import build, init_params

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 devices "
                                "(XLA_FLAGS=--xla_force_host_platform_device_count=4)")


def test_a_sharded_update_equals_the_single_device_update():
    cfg = preset_config("spirals", n_train=101, n_test=20, dtype="float64", max_cg_iters=20,
                        checkpoint_every=0)
    built = build(cfg)
    params = init_params(built)
    opt = built.optimizer
    batch = built.task.train
    assert len(parallel.select_devices("4")) == 4
    place = parallel.placer("4")
    p4, s4, b4, _ = place(params, opt.init(params), batch, batch)
    assert b4.x.shape[0] == 104 and float(b4.mask.sum()) == 101
    one = opt.update(params, opt.init(params), batch, batch)
    four = opt.update(p4, s4, b4, b4)
    a, b = ravel_pytree(one[0])[0], ravel_pytree(four[0])[0]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) <= 1e-9
    assert np.isclose(float(one[2].rho), float(four[2].rho), rtol=1e-9)

"""Sophia and Muon in the lab are optax's own: five lab updates equal five updates of optax called
directly on the same objective (full batch, float64), and Sophia's Hessian-vector products are
counted in the cost."""
import jax
import numpy as np
import optax
import pytest
from optax import contrib

from hflab.config import preset_config
from hflab.experiment import build, init_params, run


def direct(cfg, tx, with_objective: bool, steps: int = 5):
    """``steps`` updates of ``tx`` on the run's training set, optax driven by hand."""
    built = build(cfg)
    params = init_params(built)
    train = built.task.train

    def objective(p):
        return built.loss.value(built.model.apply(p, train.x), train.y, train.mask)
    state = tx.init(params)
    for _ in range(steps):
        g = jax.grad(objective)(params)
        extra = {"obj_fn": objective} if with_objective else {}
        updates, state = tx.update(g, state, params, **extra)
        params = optax.apply_updates(params, updates)
    return params


def close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-9, atol=1e-12)


def small(name, **settings):
    return preset_config("regression", optimizer=name, steps=5, dtype="float64", n_train=64,
                         n_test=16, checkpoint_every=0, eval_every=1,
                         **{f"{name}.{k}": v for k, v in settings.items()}).validate()


def test_sophia_is_optax_sophia_and_counts_its_hessian_vector_products():
    cfg = small("sophia", learning_rate=0.05, update_interval=2, gamma=0.05)
    records = []
    out = run(cfg, on_step=lambda r, *a: records.append(dict(r)))
    tx = contrib.sophia(0.05, gamma=0.05, update_interval=2, weight_decay=0.0,
                        hessian_diagonal_fn=contrib.hutchinson_estimator_diag_hessian(
                            jax.random.PRNGKey(0)))
    close(out.params, direct(cfg, tx, with_objective=True))
    start = init_params(build(cfg))
    assert not np.allclose(np.asarray(out.params[0]["W"]), np.asarray(start[0]["W"]))
    # the diagonal is refreshed at updates 1, 3 and 5 (optax's count 0, 2, 4): one H·u each,
    # two passes each on top of the gradient's two
    last = records[-1]
    assert last["n_gv"] == 3 and last["n_passes"] == 2 * 5 + 2 * 3


def test_muon_is_optax_muon():
    cfg = small("muon", learning_rate=0.01, beta=0.9)
    out = run(cfg)
    close(out.params, direct(cfg, contrib.muon(0.01, beta=0.9), with_objective=False))


@pytest.mark.parametrize("name", ["sophia", "muon"])
def test_the_new_optimisers_take_their_settings_from_their_own_namespace(name):
    from hflab import optimizers
    cfg = preset_config("digits-ae", optimizer=name, **{f"{name}.learning_rate": 0.123})
    assert cfg.settings.learning_rate == 0.123
    assert isinstance(cfg.settings, optimizers.get(name).settings)
    assert cfg.to_dict()["settings"]["learning_rate"] == 0.123

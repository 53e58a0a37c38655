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


def test_sutskever_momentum_schedule_is_the_papers_formula():
    """μ_t = min(1 − 2^(−1 − log₂(⌊t/250⌋ + 1)), μ_max), written here from the paper's form."""
    from hflab.core.baselines import sutskever_momentum
    t = np.arange(0, 3001)
    for cap in (0.9, 0.995):
        want = np.minimum(1 - 2.0 ** (-1 - np.log2(np.floor(t / 250) + 1)), cap)
        got = np.asarray(jax.vmap(lambda s: sutskever_momentum(s, cap))(t))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert float(sutskever_momentum(249, 0.99)) == 0.5
    assert float(sutskever_momentum(250, 0.99)) == 0.75


def test_scheduled_nesterov_follows_a_hand_written_nag_loop_across_the_schedules_steps():
    """260 lab updates (μ 0.5 then 0.75 from update 250) against Nesterov's recurrence driven by
    hand in float64 — v ← g + μ_t v, θ ← θ − η (g + μ_t v) — sharing only the gradient."""
    cfg = small("momentum", learning_rate=0.02, momentum=0.99, schedule="sutskever2013")
    cfg = cfg.replace(steps=260)
    out = run(cfg)
    built = build(cfg)
    params = init_params(built)
    train = built.task.train

    def objective(p):
        return built.loss.value(built.model.apply(p, train.x), train.y, train.mask)
    grad = jax.jit(jax.grad(objective))
    v = jax.tree_util.tree_map(np.zeros_like, params)
    for t in range(260):
        mu = min(1 - 2.0 ** (-1 - np.log2(t // 250 + 1)), 0.99)
        g = grad(params)
        v = jax.tree_util.tree_map(lambda gi, vi: np.asarray(gi) + mu * vi, g, v)
        params = jax.tree_util.tree_map(
            lambda p, gi, vi: np.asarray(p) - 0.02 * (np.asarray(gi) + mu * vi), params, g, v)
    close(out.params, params)
    # and it is not the constant-μ run (the schedule did something)
    constant = run(cfg.replace(settings=cfg.settings.__class__(learning_rate=0.02,
                                                              momentum=0.99)))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree_util.tree_leaves(out.params), jax.tree_util.tree_leaves(constant.params)))
    assert diff > 1e-3


def test_scheduled_nesterov_keeps_a_float32_run_in_float32():
    cfg = preset_config("regression", optimizer="momentum", steps=3, dtype="float32", n_train=64,
                        n_test=16, checkpoint_every=0, **{"momentum.schedule": "sutskever2013"})
    built = build(cfg.validate())
    params = init_params(built)
    opt = built.optimizer
    state = opt.init(params)
    batch = built.task.train
    for _ in range(3):
        params, state, _ = opt.update(params, state, batch, batch)
    dtypes = {str(np.asarray(x).dtype) for x in jax.tree_util.tree_leaves((params, state))
              if np.asarray(x).dtype.kind == "f"}
    assert dtypes == {"float32"}, dtypes

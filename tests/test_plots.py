"""Figures are built without Streamlit, carry the right data and export it."""
import numpy as np
import pandas as pd
import pytest

from hflab.view import analysis, formstate, plots
from hflab.config import preset_config
from hflab.experiment import build, init_params


def metrics_frame():
    rows = []
    for run_id in (1, 2):
        for step in range(1, 6):
            rows.append({"run_id": run_id, "step": step, "wall_seconds": 0.1 * step * run_id,
                         "n_passes": 4 * step, "train_loss": 1.0 / step + run_id,
                         "test_loss": 1.1 / step + run_id,
                         "train_error": np.nan if step == 3 else 0.5 / step, "test_error": 0.6 / step})
    return pd.DataFrame(rows)


def test_loss_curves_one_train_and_test_trace_per_run():
    fig = plots.loss_curves(metrics_frame(), {1: "hf", 2: "adam"}, x="wall_seconds")
    assert [t.name for t in fig.data] == ["hf · train", "hf · test", "adam · train", "adam · test"]
    assert fig.layout.yaxis.type == "log"
    assert list(fig.data[2].x) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    err = plots.loss_curves(metrics_frame(), {1: "hf"}, y="error", log_y=False)
    assert len(err.data[0].x) == 4                 # the NaN evaluation is skipped
    with pytest.raises(ValueError):
        plots.loss_curves(metrics_frame(), {1: "hf"}, x="epochs")


def test_heatmap_is_centred_with_block_lines_and_named_hover():
    m = np.array([[1.0, -3.0, 0.0], [-3.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    fig = plots.matrix_heatmap(m, "H", ["W1[0,0]", "W1[0,1]", "b1[0]"], [("W1", 0, 2), ("b1", 2, 3)])
    hm = fig.data[0]
    assert hm.zmid == 0 and hm.zmin == -3 and hm.zmax == 3
    assert list(hm.x) == list(hm.y) == ["W1[0,0]", "W1[0,1]", "b1[0]"]      # hover names
    assert "%{x}" in hm.hovertemplate and "%{y}" in hm.hovertemplate
    assert len(fig.layout.shapes) == 2               # one vertical + one horizontal boundary
    assert fig.layout.shapes[0].x0 == 1.5            # between W1 (entries 0, 1) and b1 (2)
    # block labels on both axes, at the blocks' middle entries
    assert list(fig.layout.xaxis.tickvals) == ["W1[0,0]", "b1[0]"] == \
        list(fig.layout.yaxis.tickvals)
    assert list(fig.layout.xaxis.ticktext) == ["W1", "b1"]
    df = plots.figure_data(fig)
    assert len(df) == 9 and df["value"].abs().max() == 3


def test_cg_trace_marks_saved_and_chosen_iterates():
    r = np.logspace(0, -3, 21)
    q = -np.linspace(0, 1, 21)
    fig = plots.cg_trace(r, q, [5, 7, 9, 11, 15, 19], 15)
    names = [t.name for t in fig.data]
    assert names[:3] == ["‖r_i‖", "φ(p_i)", "saved iterates"]
    assert "chosen by backtracking (i=15)" in names
    assert list(fig.data[3].y) == [q[15]]


def test_timelines_and_spectrum():
    df = pd.DataFrame({"step": [1, 2, 3], "damping": [1.0, 0.67, 0.44], "rho": [0.9, np.inf, 0.8],
                       "cg_iters": [10, 20, 30], "line_search_rate": [1, 1, 0.8]})
    fig = plots.hf_timelines(df)
    assert len(fig.data) == 4
    assert np.isnan(fig.data[1].y[1])               # a non-finite ρ is a gap, not a spike
    sp = plots.spectrum({"H": np.array([3.0, -1.0, 2.0]), "G": np.array([1.0, 0.0, 2.0])})
    assert list(sp.data[0].y) == [3.0, 2.0, -1.0]


def test_curvature_snapshot_matches_its_definitions():
    built = build(preset_config("seed-333", layers="2"))
    snap = analysis.curvature_snapshot(built, init_params(built), n_cases=4)
    n = built.model.n_params
    assert snap["H"].shape == snap["G"].shape == (n, n)
    assert np.allclose(snap["H-G"], snap["H"] - snap["G"])
    assert np.allclose(np.sort(snap["eig_G"]), np.linalg.eigvalsh(snap["G"]))
    assert snap["J"].shape == (4 * 3, n) and snap["J_inputs"].shape == (3, 3)
    assert len(snap["names"]) == n and snap["blocks"][0][0] == "W1"
    big = build(preset_config("digits", layers="64"))
    with pytest.raises(ValueError, match="limited to 3,000 parameters"):
        analysis.curvature_snapshot(big, init_params(big))


def test_derivation_routes_agree():
    assert analysis.derivation_mlp_hessian()["max_abs_bishop_vs_autodiff"] < 1e-15
    assert analysis.derivation_mlp_hessian((2, 3, 2), "tanh")["max_abs_fd_vs_autodiff"] < 1e-8
    table = analysis.derivation_bptt()["table"]
    assert len(table) == 3 * 3 + 3 * 3 + 3 + 3 * 2 + 2            # every parameter's value
    assert max(abs(r["difference"]) for r in table) < 1e-12
    assert max(abs(r["autodiff"]) for r in table) > 1e-3
    fw = analysis.derivation_forward()
    assert f"{fw['y_float32']:.7f}" == "2.7463741"                 # the notebook's number
    assert np.allclose(fw["dydx_float32"], [0.00771682, 0.00966905, 0.01162129], atol=5e-9)
    assert np.allclose(fw["dydx_manual"], fw["dydx_float64"], rtol=1e-12)
    assert analysis.derivation_gv()["max_abs_difference"] < 1e-12
    q = analysis.derivation_quadratic()
    assert q["f"] == 40 and list(q["naive_reverse_mode"]) == [10, 14, 16, 18]


def test_form_round_trips_through_the_url():
    form, warnings = formstate.form_from_query({"task": "addition", "optimizers": "hf,adam",
                                                "hf.damping": "2.5", "hf.line_search": "false",
                                                "adam.learning_rate": "0.02"})
    assert not warnings
    q = formstate.query_from_form(form)
    assert q == {"task": "addition", "optimizers": "hf,adam", "hf.damping": "2.5",
                 "hf.line_search": "false", "adam.learning_rate": "0.02"}
    again, _ = formstate.form_from_query(q)
    assert again == form
    configs = formstate.configs_from_form(form)
    assert [c.optimizer for c in configs] == ["hf", "adam"]
    assert configs[0].settings.damping == 2.5 and not configs[0].settings.line_search
    assert configs[0].settings.structural_damping == 0.03
    assert configs[1].optimizer_settings() == {"learning_rate": 0.02}
    assert len({(c.task, c.seed, c.seq_len) for c in configs}) == 1   # same data and seed


def test_spectrum_over_training_shows_the_four_extremes_with_markers():
    m = pd.DataFrame({"step": [0, 1, 2, 4], "spectrum_G_max": [5.0, np.nan, 3.0, 2.0],
                      "spectrum_G_min": [0.0, np.nan, 0.0, 0.0],
                      "spectrum_H_max": [6.0, np.nan, 3.5, 2.1],
                      "spectrum_H_min": [-1.0, np.nan, -0.2, -0.01]})
    fig = plots.spectrum_over_training(m)
    assert [t.name for t in fig.data] == ["|λ_max(G)|", "|λ_min(G)|", "|λ_max(H)|",
                                          "|λ_min(H)|"]
    assert list(fig.data[2].x) == [0, 2, 4]               # steps without a checkpoint left out
    # magnitudes on a log axis, the signed values kept for the hover
    assert fig.layout.yaxis.type == "log"
    assert list(fig.data[3].y) == [1.0, 0.2, 0.01] and list(fig.data[3].customdata) == \
        [-1.0, -0.2, -0.01]
    assert all("markers" in t.mode for t in fig.data)
    assert plots.spectrum_over_training(pd.DataFrame({"step": [0]})).data == ()


# Links shared before optimisers owned their settings: flat keys for settings only one optimiser
# read, ``lr_<optimizer>`` for the shared learning rate.  Each must open the same set-up as the
# namespaced link of today.
OLD_LINKS = [
    ({"task": "addition", "optimizers": "hf,adam", "damping": "2.5", "line_search": "false",
      "lr_adam": "0.02"},
     {"task": "addition", "optimizers": "hf,adam", "hf.damping": "2.5",
      "hf.line_search": "false", "adam.learning_rate": "0.02"}),
    ({"task": "digits-ae", "optimizers": "momentum,sgd", "momentum": "0.5", "lr_momentum": "0.1",
      "lr_sgd": "0.2", "steps": "7"},
     {"task": "digits-ae", "optimizers": "momentum,sgd", "momentum.momentum": "0.5",
      "momentum.learning_rate": "0.1", "sgd.learning_rate": "0.2", "steps": "7"}),
    ({"task": "xor", "optimizers": "hf,lbfgs", "curvature": "hessian", "n_chunks": "2",
      "max_cg_iters": "40", "structural_damping": "0.1", "rho_batch": "gradient",
      "cg_decay": "0.5", "preconditioner": "true", "backtracking": "false", "lr_lbfgs": "0.5"},
     {"task": "xor", "optimizers": "hf,lbfgs", "hf.curvature": "hessian", "hf.n_chunks": "2",
      "hf.max_cg_iters": "40", "hf.structural_damping": "0.1", "hf.rho_batch": "gradient",
      "hf.cg_decay": "0.5", "hf.preconditioner": "true", "hf.backtracking": "false",
      "lbfgs.learning_rate": "0.5"}),
]


@pytest.mark.parametrize("old, new", OLD_LINKS)
def test_links_made_before_settings_were_namespaced_open_the_same_set_up(old, new):
    old_form, warnings = formstate.form_from_query(old)
    assert not warnings
    new_form, _ = formstate.form_from_query(new)
    assert old_form == new_form
    assert formstate.query_from_form(old_form) == new
    assert [c.to_dict() for c in formstate.configs_from_form(old_form)] == \
        [c.to_dict() for c in formstate.configs_from_form(new_form)]


def test_the_kronecker_heatmap_blocks_are_the_factors_kronecker_products():
    """The Curvature page's K-FAC view: each layer's block is A ⊗ G of that layer (the factors
    computed on the page's cases), every cross-layer block is zero, G − K is the difference, and
    the relative error per block is the norm ratio of the shown entries."""
    import jax
    from hflab.core.kfac import layer_statistics
    from hflab.core.losses import Batch
    built, params = analysis.fresh_model("regression", "4-3", seed=1)
    view = analysis.curvature_view(built, params, n_cases=16)
    assert view["view"] == "every parameter"
    p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    batch = Batch(*(np.asarray(a[:16], np.float64) for a in built.task.train))
    A, G, _ = layer_statistics(p64, batch.x, built.model.activations, built.loss, batch.y,
                               batch.mask, jax.random.PRNGKey(0), "exact")
    bounds = [0]
    for layer in params:
        bounds.append(bounds[-1] + layer["W"].size + layer["b"].size)
    K = view["K"]
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        np.testing.assert_allclose(K[lo:hi, lo:hi], np.kron(A[k], G[k]), rtol=1e-12, atol=1e-14)
        outside = np.delete(K[lo:hi], np.s_[lo:hi], axis=1)
        assert not outside.any()
        g_block = view["G"][lo:hi, lo:hi]
        err = np.linalg.norm(g_block - K[lo:hi, lo:hi]) / np.linalg.norm(g_block)
        assert view["kron_errors"][k] == (f"layer {k + 1}", pytest.approx(err))
    np.testing.assert_allclose(view["G-K"], view["G"] - K)
    # the last layer of a squared-error net: its Gauss-Newton block is exactly A ⊗ I, while a
    # hidden layer's is not (its output gradients depend on its inputs)
    assert built.loss.name == "squared"
    assert view["kron_errors"][-1][1] < 1e-12 and view["kron_errors"][0][1] > 1e-3


def test_the_view_above_the_dense_cap_equals_dense_references_at_every_checkpoint(monkeypatch):
    """Above the dense cap the page's H, G, J and Lanczos extremes come from programs compiled
    once per model and fed each checkpoint's parameters: at two different parameter vectors every
    shown entry equals the dense float64 reference built here from plain jax.hessian / jacfwd of
    the model's output and loss (a stale program, a wrong column order or a parameter baked into
    the program would fail it)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from hflab.core import curvature
    monkeypatch.setattr(curvature, "DENSE_PARAM_CAP", 20)
    built, params = analysis.fresh_model("regression", "4-3", seed=2)
    x, y, mask = (np.asarray(a[:16], np.float64) for a in built.task.train)
    flat0, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                                         params))
    n = flat0.size
    assert n > 20
    for scale in (1.0, 1.7):                 # the same shapes: the second view reuses programs
        flat = flat0 * scale
        view = analysis.curvature_view(built, unravel(flat), n_cases=16, block="W2")
        idx = view["indices"]
        assert list(idx) == list(range(8, 20)) and not view["full_spectrum"]

        def outputs(p):
            return built.model.apply(unravel(p), x)

        def objective(p):
            return built.loss.value(outputs(p), y, mask)
        H = np.asarray(jax.jit(jax.hessian(objective))(flat))
        J = np.asarray(jax.jit(jax.jacfwd(lambda p: jnp.ravel(outputs(p))))(flat))
        z = outputs(flat)
        HL = np.asarray(jax.jit(jax.hessian(
            lambda zz: built.loss.value(zz.reshape(z.shape), y, mask)))(jnp.ravel(z)))
        G = J.T @ HL @ J
        sub = np.ix_(idx, idx)
        np.testing.assert_allclose(view["H"], H[sub], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(view["G"], G[sub], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(view["J"], J[:, idx], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(view["H-G"], (H - G)[sub], rtol=1e-10, atol=1e-12)
        for sym, full in (("H", H), ("G", G)):
            w = np.linalg.eigvalsh(full)
            shown = np.sort(view[f"eig_{sym}"])
            np.testing.assert_allclose(shown[-3:], w[-3:], rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(shown[:3], w[:3], rtol=1e-6, atol=1e-9)


def test_loss_slices_of_two_checkpoints_equal_the_loss_at_the_moved_parameters():
    """The slices' programs are compiled once per model and fed each checkpoint: at two
    parameter vectors the −g slice, the plane and the top eigenvalue equal references computed
    here from the plain loss (a program holding the first checkpoint's parameters would fail).
    HF's step along p is checked in tests/test_density.py."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from hflab.view import instrument
    cfg = preset_config("regression", layers="4-3", optimizer="hf", dtype="float64",
                        weight_cost=1e-3).validate()
    built = build(cfg)
    params = init_params(built)
    flat0, unravel = ravel_pytree(params)
    x, y, mask = (jnp.asarray(a[:32]) for a in built.task.train)

    def f(v):
        z = built.model.apply(unravel(v), x)
        return 0.5 * jnp.sum(mask[:, None] * (z - y) ** 2) / jnp.sum(mask) + \
            0.5e-3 * jnp.vdot(v, v)
    for scale in (1.0, 1.6):
        flat = flat0 * scale
        data = instrument.slice_data(built, unravel(flat), 32, 2, None, points=5,
                                     plane_points=3)
        g = np.asarray(jax.jit(jax.grad(f))(flat))
        d = -g / np.linalg.norm(g)
        want = [float(f(flat + a * d)) for a in data["alphas"]]
        assert data["loss"] == pytest.approx(float(f(flat)), rel=1e-12)
        np.testing.assert_allclose(data["curves"]["−gradient"], want, rtol=1e-10)
        top = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(f))(flat)))[-1]
        assert data["eigenvalues"]["eigenvector 1"] == pytest.approx(top, rel=1e-6)
        d1 = data["plane"]["names"][0]
        assert d1 == "eigenvector 1"
        u = np.asarray(data["curves"][d1])            # f along the eigenvector at α
        np.testing.assert_allclose(data["plane"]["values"][1], u[[0, 2, 4]], rtol=1e-10)


@pytest.mark.parametrize("cap", [3000, 20])
def test_a_view_of_one_figure_holds_that_figures_entries_and_only_those(cap, monkeypatch):
    """A live page asks only for the figure it shows (``parts``): each figure's partial view
    holds the entries that figure draws, equal to the whole view's (itself checked against
    dense references above), and none of the costly others — a wrong kind behind a symbol, an
    entry a figure needs left out (K-FAC's needs G), or a partial view that still computes
    everything would fail it; on both sides of the dense cap."""
    from hflab.core import curvature
    monkeypatch.setattr(curvature, "DENSE_PARAM_CAP", cap)
    built, params = analysis.fresh_model("regression", "4-3", seed=2)
    whole = analysis.curvature_view(built, params, n_cases=16, block="W2")
    figures = analysis.figure_parts(built, params)
    assert list(figures) == [f"{k.label} {k.symbol}" for k in analysis.KINDS] + [
        "H − G", "Jacobians", "spectrum", "K-FAC A ⊗ G", "G − A ⊗ G"]
    drawn = {"H − G": {"H-G"}, "Jacobians": {"J"}, "spectrum": {"eig_G", "eig_H"},
             "K-FAC A ⊗ G": {"K", "G-K"}, "G − A ⊗ G": {"K", "G-K"},
             **{f"{k.label} {k.symbol}": {k.symbol} for k in analysis.KINDS}}
    costly = {"G", "H", "F", "J", "K", "eig_G", "eig_H"}
    for name, parts in figures.items():
        view = analysis.curvature_view(built, params, n_cases=16, block="W2", parts=parts)
        assert drawn[name] <= set(view), name
        for key in drawn[name] | (costly & set(view)):
            np.testing.assert_allclose(view[key], whole[key], rtol=1e-12, atol=1e-14)
        needs = {"H − G": {"G", "H"}, "K-FAC A ⊗ G": {"G"}, "G − A ⊗ G": {"G"}}.get(name, set())
        extra = costly & set(view) - drawn[name] - needs
        if name != "spectrum" or cap == 20:          # the dense spectra come from every matrix
            assert not extra, (name, extra)
            assert "eig_G" not in view or name == "spectrum", name
    with pytest.raises(ValueError, match="view parts \\['Q'\\] unknown"):
        analysis.curvature_view(built, params, parts=("Q",))
    # only the lab's MLPs offer K-FAC's figures
    rnn, rnn_params = analysis.fresh_model("seed-rnn", "3")
    assert "K-FAC A ⊗ G" not in analysis.figure_parts(rnn, rnn_params)

"""The examples run (Flax NNX and Equinox MLPs trained by hflab.hessian_free_transform) and their
Curvature-page hooks load; user hooks named in HFLAB_MODELS load, and fail with one clear line."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hflab.view import analysis
from hflab import hooks

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["flax_nnx_mlp", "equinox_mlp"])
def test_example_trains_with_hf_and_beats_adam_at_equal_updates(name, capsys):
    out = load_example(name).main(updates=20)
    assert "hf" in capsys.readouterr().out
    hf, adam = out["hf"], out["adam"]
    assert np.isfinite(hf["train_loss"]) and hf["train_loss"] < 0.05
    assert hf["train_loss"] < adam["train_loss"] / 3
    assert hf["test_error"] < 0.05


# the Equinox hook's view checked entry by entry here; the Flax NNX hook is opened on the page
# itself (tests/app/test_pages.py) — one dense 2,410-parameter view each, not two
@pytest.mark.parametrize("label", [k for k in hooks.BUILT_IN if k.startswith("Equinox")])
def test_example_hooks_open_on_the_curvature_page(label):
    lab_model = hooks.load(label)
    snap = analysis.curvature_view(lab_model, lab_model.params, 16)
    n = lab_model.model.n_params
    assert snap["n_params"] == n == 64 * 32 + 32 + 32 * 10 + 10
    # exact spectra of the dense matrices; heatmaps of a 600-parameter sample over all 4 blocks
    assert snap["full_spectrum"] and len(snap["eig_G"]) == len(snap["eig_H"]) == n
    m = analysis.MAX_VIEW
    assert len(snap["names"]) == m and snap["G"].shape == (m, m) and snap["J"].shape[1] == m
    assert snap["blocks"][-1][2] == m and len(snap["blocks"]) == 4
    names = lab_model.model.parameter_names()
    assert [names[i] for i in snap["indices"]] == snap["names"]
    # G of a softmax net is symmetric PSD; H − G is what the page says it is
    assert np.allclose(snap["G"], snap["G"].T, atol=1e-12)
    assert snap["eig_G"][-1] > -1e-10
    np.testing.assert_allclose(snap["H-G"], snap["H"] - snap["G"])


HOOK = '''
import jax.numpy as jnp, numpy as np
from hflab.hooks import LabModel

def lab_model():
    params = {"w": jnp.arange(6.0).reshape(3, 2) / 10, "b": jnp.zeros(2)}
    x = np.linspace(-1, 1, 12).reshape(4, 3)
    return LabModel(lambda p, x: x @ p["w"] + p["b"], params, "squared", x, np.ones((4, 2)))

def broken():
    raise RuntimeError("no GPU here")

def wrong():
    return 42
'''


def test_a_hook_named_in_the_environment_loads_and_failures_are_one_line(tmp_path, monkeypatch):
    path = tmp_path / "mine.py"
    path.write_text(HOOK)
    monkeypatch.setenv(hooks.ENV, f"{path}:lab_model, {path}:broken,{path}:wrong,"
                                  f"{tmp_path / 'gone.py'}:lab_model")
    labels = list(hooks.available())
    assert labels[:2] == list(hooks.BUILT_IN) and "mine.py · lab_model" in labels
    lab_model = hooks.load("mine.py · lab_model")
    snap = analysis.curvature_view(lab_model, lab_model.params, 16)
    # a linear model with squared error: G = H = (1/N) Σ_i J_iᵀJ_i, exactly
    x = np.linspace(-1, 1, 12).reshape(4, 3)
    assert snap["names"][:2] == ["b[0]", "b[1]"]
    g_w = np.kron(x.T @ x / 4, np.eye(2))              # the 'w' block, row-major (i, j)
    np.testing.assert_allclose(snap["G"][2:, 2:], g_w, atol=1e-12)
    np.testing.assert_allclose(snap["H"], snap["G"], atol=1e-12)
    with pytest.raises(ValueError, match="failed: RuntimeError: no GPU here"):
        hooks.load("mine.py · broken")
    with pytest.raises(ValueError, match="returned int, not hflab.hooks.LabModel"):
        hooks.load("mine.py · wrong")
    with pytest.raises(ValueError, match="does not exist"):
        hooks.load("gone.py · lab_model")
    with pytest.raises(ValueError, match="unknown"):
        hooks.load("os:system")

"""Every page under streamlit.testing.v1.AppTest: renders on defaults, runs, rejects bad input."""
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from hflab.core.curvature import KIND_INFO
from hflab.config import preset_config
from hflab.lab import get_lab, run_to_store
from hflab.tasks import SPECS

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["train", "curvature", "cg_inspector", "derivations", "runs"]
# presets whose default networks are too large for a 2-core test: shrink the model, keep the task
SMALL_LAYERS = {"mnist": "16", "mnist-ae": "16-8", "curves": "16-8"}


def shown(text: str) -> str:
    """What a reader sees of escaped markdown source (user text is escaped before rendering)."""
    return re.sub(r"\\(.)", r"\1", text)


def page(name, query=None):
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at


def wait_idle(timeout=240):
    lab = get_lab()
    deadline = time.time() + timeout
    while lab.active() and time.time() < deadline:
        time.sleep(0.1)
    assert not lab.active(), "runs did not finish in time"


def test_app_entry_renders():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_on_defaults_with_an_empty_store(name):
    at = page(name).run()
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("task", list(SPECS))
def test_each_preset_starts_and_finishes_a_tiny_run(task):
    query = {"task": task, "optimizers": "hf,adam", "steps": "1", "max_cg_iters": "3"}
    if task in SMALL_LAYERS:
        query["layers"] = SMALL_LAYERS[task]
    if SPECS[task].kind == "rnn" and SPECS[task].default_seq_len > 5:
        query["seq_len"] = "5"                       # a short unrolled scan compiles quickly
    at = page("train", query).run()
    assert not at.exception
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    wait_idle()
    at.run()
    runs = get_lab().store.runs()
    assert list(runs["status"]) == ["finished", "finished"], runs[["status", "error"]]
    assert set(runs["optimizer"]) == {"hf", "adam"} and set(runs["task"]) == {task}
    assert len(at.get("plotly_chart")) == 2                  # loss and error curves


def test_a_curriculum_run_starts_from_the_form_and_records_its_stage():
    at = page("train", {"task": "addition", "optimizers": "hf", "steps": "2",
                        "max_cg_iters": "3", "curriculum": "4,5", "layers": "8"}).run()
    assert not at.exception and not at.warning
    assert any("each stage trains at its own length" in c.value for c in at.caption)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    wait_idle()
    (run,) = get_lab().store.runs().itertuples()
    config = get_lab().store.get_run(run.id)["config"]
    assert config["curriculum"] == "4,5" and config["seq_len"] == 5      # T stored, resolved
    m = get_lab().store.metrics(run.id)
    assert list(m["stage"]) == [1, 1, 1] and list(m["seq_len"]) == [4, 4, 4]
    assert run.status == "finished" and "T = 4 (stage 1 of 2)" in run.error


def test_live_curves_grow_and_stop_works():
    at = page("train", {"task": "seed-333", "optimizers": "hf,sgd", "steps": "100000"}).run()
    at.button(key="start").click().run()
    lab = get_lab()
    deadline = time.time() + 60
    while time.time() < deadline and lab.store.metrics(lab.active()).shape[0] < 6:
        time.sleep(0.1)
    at.run()
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    n1 = lab.store.metrics(list(lab.store.runs()["id"])).shape[0]
    time.sleep(0.5)
    assert lab.store.metrics(list(lab.store.runs()["id"])).shape[0] > n1
    at.button(key="stop").click().run()
    wait_idle(60)
    assert set(lab.store.runs()["status"]) == {"stopped"}
    at.button(key="resume").click().run()
    assert lab.active()
    for run_id in lab.active():
        lab.stop(run_id)
    wait_idle(60)


@pytest.mark.parametrize("task, key, value, message", [
    ("digits-ae", "f_layers", "32-abc", "layers: '32-abc'"),
    ("digits-ae", "f_layers", "32-0", "at least 1 unit"),
    ("digits-ae", "f_layers", " ", "layer string like"),
    ("addition", "f_layers", "32-16", "RNN problem"),
    ("digits", "f_loss", "squared", "one-hot class targets"),
    ("digits-ae", "f_devices", "zero", "devices: 'zero'"),
    ("xor", "f_curriculum", "50,20", "each length longer than the one before"),
    ("xor", "f_curriculum", "1,20", "lengths in [2, 10000]"),
])
def test_bad_form_input_shows_the_specific_error(task, key, value, message):
    at = page("train", {"task": task}).run()
    widget = at.text_input(key=key) if key != "f_loss" else at.selectbox(key=key)
    widget.set_value(value).run()
    at.button(key="start").click().run()
    errors = [shown(e.value) for e in at.error]
    assert any(message in e for e in errors), errors
    assert get_lab().store.runs().empty


@pytest.mark.parametrize("query, message", [
    ({"layers": "32-abc"}, "layers='32-abc' is not allowed"),
    ({"steps": "-5"}, "steps=-5 is not allowed"),
    ({"hf.damping": "inf"}, "hf.damping=inf is not allowed"),
    ({"damping": "-1"}, "hf.damping=-1.0 is not allowed"),        # a link from before namespacing
    ({"task": "addition", "seq_len": "100000"}, "seq_len=100000 is not allowed"),
    ({"activation": "sin"}, "activation='sin' is not valid"),
    ({"optimizers": "hf,rmsprop"}, "optimizers='hf,rmsprop' is not valid"),
])
def test_out_of_range_url_values_are_named_and_fall_back(query, message):
    at = page("train", query).run()
    warnings = " ".join(shown(w.value) for w in at.warning)
    assert message in warnings and "task default" in warnings
    assert not at.exception and get_lab().store.runs().empty


def test_stale_url_values_warn_and_fall_back():
    at = page("train", {"task": "imagenet", "steps": "many", "colour": "red"}).run()
    warnings = " ".join(shown(w.value) for w in at.warning)
    assert "task 'imagenet' is unknown" in warnings
    assert "steps='many' is not valid" in warnings
    assert "'colour' is not a setting" in warnings
    assert at.selectbox(key="f_task").value == "digits-ae"


def test_widget_changes_go_into_the_url():
    at = page("train").run()
    at.selectbox(key="f_task").set_value("spirals").run()
    at.text_input(key="f_layers").set_value("8-8").run()
    assert at.query_params["task"] == "spirals" and at.query_params["layers"] == "8-8"


def test_app_frame_shows_the_device_badge():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    badge = " ".join(shown(c.value) for c in at.sidebar.caption)
    assert "Runs use · cpu" in badge and "Device · CPU" in badge


def test_curvature_page_fresh_model_and_run_checkpoint():
    at = page("curvature").run()
    assert not at.exception
    # one heatmap per curvature kind, H − G, 2 Jacobians, spectrum
    assert len(at.get("plotly_chart")) == len(KIND_INFO) + 4
    assert [t.label for t in at.tabs][:len(KIND_INFO)] == [f"{k.label} {k.symbol}"
                                                           for k in KIND_INFO.values()]
    lab = get_lab()
    cfg = preset_config("seed-333", steps=4, checkpoint_every=2)
    run_id = lab.store.create_run(cfg)
    run_to_store(lab.store, run_id, cfg)
    at = page("curvature", {"run": str(run_id)}).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == len(KIND_INFO) + 5   # + the spectrum over training
    assert any("at update 4" in c.value for c in at.caption)
    assert any("at update 0 and every checkpoint" in shown(c.value) for c in at.caption)
    m = lab.store.metrics(run_id)
    assert m.dropna(subset=["spectrum_G_max"])["step"].tolist() == [0, 2, 4]


def test_curvature_page_above_the_dense_cap_shows_a_block_and_lanczos():
    """A 3,610-parameter run: no error, a block choice, sub-matrix heatmaps and Lanczos."""
    lab = get_lab()
    cfg = preset_config("digits", layers="48", steps=1, checkpoint_every=1)
    run_id = lab.store.create_run(cfg)
    run_to_store(lab.store, run_id, cfg)
    at = page("curvature", {"run": str(run_id)}).run()
    assert not at.exception and not at.error
    assert "above the dense cap" in at.selectbox(key="curv_block").label
    at.selectbox(key="curv_block").set_value("W2").run()
    assert not at.exception and not at.error
    captions = " ".join(shown(c.value) for c in at.caption)
    assert "3,610 parameters (block W2)" in captions
    # every kind, H−G, J, spectrum, and the spectrum over training (updates 0 and 1)
    assert len(at.get("plotly_chart")) == len(KIND_INFO) + 4
    assert any("λ_max(H)" in m.value for m in at.markdown)


def test_cg_inspector_shows_trace_and_timelines():
    lab = get_lab()
    cfg = preset_config("digits-ae", steps=3, checkpoint_every=0)
    run_id = lab.store.create_run(cfg)
    run_to_store(lab.store, run_id, cfg)
    at = page("cg_inspector").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2
    assert [m.label for m in at.metric][:2] == ["CG iterations", "stop reason"]


def test_derivations_page_agreement_and_bad_sizes():
    at = page("derivations").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "f(1) = **40**" in text
    assert "max |Bishop − autodiff|" in text
    at.text_input(key="der_sizes").set_value("3-x").run()
    assert any("layer sizes: '3-x' is not allowed" in shown(e.value) for e in at.error)


def test_runs_page_overlay_export_delete():
    lab = get_lab()
    ids = []
    for opt in ("hf", "adam"):
        cfg = preset_config("seed-333", optimizer=opt, steps=3, learning_rate=0.01)
        ids.append(lab.store.create_run(cfg))
        run_to_store(lab.store, ids[-1], cfg)
    at = page("runs").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    assert len(at.get("download_button")) >= 3
    at.checkbox(key="runs_sure").check().run()
    at.button(key="runs_delete").click().run()
    assert lab.store.runs().empty


def test_a_stored_data_set_named_in_the_url_trains_and_an_unknown_one_is_named(tmp_path):
    import numpy as np

    from hflab import datasets
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    buf = tmp_path / "mine.npz"
    np.savez(buf, x=x, y=(x[:, 0] > 0).astype(np.int64))
    ds = datasets.read_path(str(buf))
    ds_id = datasets.save(ds, get_lab().store.home)
    at = page("train", {"task": "custom", "data": ds_id, "optimizers": "hf,adam",
                        "steps": "2"}).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert any("mine.npz: 60 cases × 3 inputs, classification into 2 classes" in shown(c.value)
               for c in at.caption)
    at.button(key="start").click().run()
    assert not at.error, [e.value for e in at.error]
    wait_idle()
    runs = get_lab().store.runs()
    assert list(runs["status"]) == ["finished", "finished"]
    assert all(ds_id in c for c in runs["config"])
    assert at.query_params["data"] == [ds_id] or at.query_params["data"] == ds_id
    # a data set this store does not have: named in a warning, and Start refuses with the reason
    at = page("train", {"task": "custom", "data": "0123456789abcdef"}).run()
    assert any("data='0123456789abcdef' is not allowed" in shown(w.value) and
               "not in this store" in shown(w.value) for w in at.warning)
    at.button(key="start").click().run()
    assert any("task 'custom' needs a data set" in shown(e.value) for e in at.error)
    assert len(get_lab().store.runs()) == 2


def test_curvature_page_shows_a_model_hook():
    at = page("curvature").run()
    at.radio(key="curv_source").set_value("your own model (hook)").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="curv_hook").options[:2] == ["Flax NNX MLP (example)",
                                                         "Equinox MLP (example)"]
    assert any("Flax NNX MLP · 2,410 parameters" in shown(c.value) for c in at.caption)
    assert len(at.get("plotly_chart")) >= 3          # H, G, H − G (the Equinox hook's numbers
    #                                                  are checked in tests/test_examples.py)


# one non-default, valid value per form key (the RNN-only keys on an RNN task)
ROUND_TRIP = {"optimizers": "adam,lbfgs", "steps": "7", "seed": "3", "layers": "7-5",
              "activation": "relu", "loss": "logistic", "init": "glorot", "weight_cost": "0.001",
              "dtype": "float64", "devices": "cpu", "hf.curvature": "hessian",
              "hf.damping": "2.5", "hf.max_cg_iters": "40", "hf.cg_decay": "0.5",
              "hf.n_chunks": "2", "hf.preconditioner": "true", "hf.backtracking": "false",
              "hf.line_search": "false", "hf.rho_batch": "gradient",
              "sgd.learning_rate": "0.002", "momentum.learning_rate": "0.004",
              "adam.learning_rate": "0.006", "lbfgs.learning_rate": "0.5",
              "momentum.momentum": "0.8"}
RNN_ROUND_TRIP = {"seq_len": "7", "hf.structural_damping": "0.1", "curriculum": "10,20"}


def test_the_round_trip_covers_every_form_key():
    from hflab.view import formstate
    assert set(formstate.all_keys()) - {"task", "data"} == set(ROUND_TRIP) | set(RNN_ROUND_TRIP)


@pytest.mark.parametrize("key", sorted(ROUND_TRIP) + sorted(RNN_ROUND_TRIP))
def test_every_form_field_round_trips_through_the_url_and_navigation(key):
    from hflab.view import formstate
    task = "addition" if key in RNN_ROUND_TRIP else "regression"
    text = {**ROUND_TRIP, **RNN_ROUND_TRIP}[key]
    at = page("train", {"task": task, key: text}).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    expected = formstate._parse(key, text)
    assert expected != formstate.task_defaults(task)[key]          # a real change
    assert at.session_state["form"][key] == expected               # the form holds it
    assert at.query_params[key] in (text, [text])                  # the URL says it
    # another page and back: the form and the URL are unchanged
    at.switch_page("curvature.py").run()
    at.switch_page("train.py").run()
    assert not at.exception
    assert at.session_state["form"][key] == expected
    assert at.query_params[key] in (text, [text])
    # and the configs it starts carry it
    configs = formstate.configs_from_form(at.session_state["form"])
    if key == "optimizers":
        assert [c.optimizer for c in configs] == ["adam", "lbfgs"]
    elif key in formstate.optimizer_keys():        # the setting reaches its optimiser's run
        owner, field = formstate.optimizer_keys()[key]
        for c in configs:
            if c.optimizer == owner:
                assert getattr(c.settings, field) == expected
    else:
        assert all(getattr(c, key) == expected for c in configs)

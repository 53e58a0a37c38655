"""The Train page's form and its URL: bad input is named, every setting round-trips through the
URL and navigation, old links still open."""
import pytest

from hflab.lab import get_lab

from apptest import shown, page


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


# one non-default, valid value per form key (the RNN-only keys on an RNN task)
ROUND_TRIP = {"optimizers": "adam,lbfgs", "steps": "7", "max_seconds": "12.5", "seed": "3",
              "layers": "7-5",
              "activation": "relu", "loss": "logistic", "init": "glorot", "weight_cost": "0.001",
              "dtype": "float64", "devices": "cpu", "hf.curvature": "hessian",
              "hf.damping": "2.5", "hf.max_cg_iters": "40", "hf.cg_decay": "0.5",
              "hf.n_chunks": "2", "hf.preconditioner": "true", "hf.backtracking": "false",
              "hf.line_search": "false", "hf.rho_batch": "gradient", "hf.min_damping": "1e-06",
              "sgd.learning_rate": "0.002", "momentum.learning_rate": "0.004",
              "adam.learning_rate": "0.006", "lbfgs.learning_rate": "0.5",
              "momentum.momentum": "0.8", "momentum.schedule": "sutskever2013",
              "sophia.learning_rate": "0.007", "sophia.b1": "0.9",
              "sophia.b2": "0.95", "sophia.gamma": "0.02", "sophia.clip_threshold": "0.5",
              "sophia.update_interval": "3", "muon.learning_rate": "0.009", "muon.beta": "0.9",
              "muon.ns_steps": "4", "kfac.damping": "10.5", "kfac.adaptive_damping": "false",
              "kfac.adaptive_step": "false", "kfac.learning_rate": "0.5", "kfac.momentum": "0.5",
              "kfac.inverse_update_period": "5", "kfac.damping_interval": "3",
              "kfac.factor_decay": "0.9", "kfac.estimator": "exact"}
RNN_ROUND_TRIP = {"seq_len": "7", "hf.structural_damping": "0.1", "curriculum": "10,20"}


def _groups():
    """The keys in groups that share one app session: each optimiser's settings together (its
    own settings box), every other key alone."""
    groups: dict[str, dict] = {}
    for key, text in {**ROUND_TRIP, **RNN_ROUND_TRIP}.items():
        group = (("rnn " if key in RNN_ROUND_TRIP else "") + key.split(".")[0]) if "." in key \
            else key
        groups.setdefault(group, {})[key] = text
    return groups


def test_the_round_trip_covers_every_form_key():
    from hflab.view import formstate
    assert set(formstate.all_keys()) - {"task", "data"} == set(ROUND_TRIP) | set(RNN_ROUND_TRIP)


@pytest.mark.parametrize("group", sorted(_groups()))
def test_every_form_field_round_trips_through_the_url_and_navigation(group):
    from hflab.view import formstate
    values = _groups()[group]
    task = "addition" if set(values) & set(RNN_ROUND_TRIP) else "regression"
    at = page("train", {"task": task, **values}).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    expected = {key: formstate._parse(key, text) for key, text in values.items()}
    defaults = formstate.task_defaults(task)
    for key, value in expected.items():
        assert value != defaults[key], key                            # a real change
        assert at.session_state["form"][key] == value, key             # the form holds it
        assert at.query_params[key] in (values[key], [values[key]])    # the URL says it
    # another page and back: the form and the URL are unchanged
    at.switch_page("curvature.py").run()
    at.switch_page("train.py").run()
    assert not at.exception
    for key, value in expected.items():
        assert at.session_state["form"][key] == value, key
        assert at.query_params[key] in (values[key], [values[key]])
    # and the configs it starts carry them
    form = at.session_state["form"]
    owners = {formstate.optimizer_keys()[k][0] for k in values if k in formstate.optimizer_keys()}
    if owners:                                   # run the owners, so their configs are built
        form = {**form, "optimizers": sorted(owners)}
    configs = formstate.configs_from_form(form)
    for key, value in expected.items():
        if key == "optimizers":
            assert [c.optimizer for c in configs] == ["adam", "lbfgs"]
        elif key in formstate.optimizer_keys():        # the setting reaches its optimiser's run
            owner, field = formstate.optimizer_keys()[key]
            (config,) = [c for c in configs if c.optimizer == owner]
            assert getattr(config.settings, field) == value
        else:
            assert all(getattr(c, key) == value for c in configs)

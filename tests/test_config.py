"""The config layer: one field list, presets, coercion, validation, and the registry it reads."""
from pathlib import Path

import pytest

from hflab import config, optimizers
from hflab.view import formstate
from hflab.config import PRESETS, ConfigError, RunConfig, parse_layers, preset_config
from hflab.tasks import SPECS

ROOT = Path(__file__).resolve().parents[1]


def test_every_preset_is_valid_for_every_optimizer():
    for task in PRESETS:
        for opt in optimizers.NAMES:
            cfg = preset_config(task, optimizer=opt).validate()
            # an optimiser only carries the preset's settings it reads
            if "n_chunks" not in optimizers.get(opt).settings:
                assert cfg.n_chunks == 1 and cfg.structural_damping == 0.0


def test_optimizer_defaults_come_from_the_registry_then_the_learning_rate_sweep():
    from hflab.learning_rates import LEARNING_RATES
    swept = LEARNING_RATES["regression"]
    assert swept and not any(t not in PRESETS for t in LEARNING_RATES)
    for name, entry in optimizers.REGISTRY.items():
        cfg = preset_config("regression", optimizer=name)
        for field, default in entry.settings.items():
            if field == "learning_rate" and name in swept:
                default = swept[name]
            if default is not None:
                assert getattr(cfg, field) == default
    # a pair the sweep did not cover keeps the registry's rate
    for task in PRESETS:
        if "sgd" not in LEARNING_RATES.get(task, {}):
            assert preset_config(task, optimizer="sgd").learning_rate == \
                optimizers.REGISTRY["sgd"].settings["learning_rate"]
    assert preset_config("regression", optimizer="adam", learning_rate=0.1).learning_rate == 0.1


@pytest.mark.parametrize("text, expected", [("32-16", [32, 16]), ("8", [8]), ("4,5 6", [4, 5, 6])])
def test_layer_strings(text, expected):
    assert parse_layers(text) == expected


@pytest.mark.parametrize("text", ["-5", "10--5", "32-²", "٣٢", "", "  ", "3-0", "a-3", "5-"])
def test_bad_layer_strings(text):
    with pytest.raises(ValueError):
        parse_layers(text)


@pytest.mark.parametrize("field, value, allowed", [
    ("steps", "abc", "a whole number"), ("seq_len", "abc", "a whole number"),
    ("damping", "٣", "a number"), ("line_search", "maybe", "true or false"),
    ("learning_rate", [1], "a number")])
def test_coercion_names_the_field_and_the_kind(field, value, allowed):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({field: value})
    assert e.value.field == field and allowed in str(e.value)


def test_rnn_sequence_length_has_the_task_minimum():
    with pytest.raises(ConfigError, match="seq_len"):
        preset_config("addition", seq_len=1).validate()
    preset_config("addition", seq_len=2, n_train=16, n_test=8).validate()


def test_form_and_cli_derive_from_the_field_list():
    """Every settings widget of the form is a RunConfig field or a registered optimiser's."""
    for key in formstate.all_keys():
        if key in ("task", "optimizers"):
            continue
        field = formstate.optimizer_keys().get(key, (None, key))[1]
        assert field in config.FIELDS
    from hflab.cli import build_parser
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    flags = {a.dest for a in run_parser._actions}
    assert set(config.FIELDS) <= flags
    assert config.FIELDS["optimizer"].metadata["choices"] == optimizers.NAMES


def test_tasks_own_their_dimensions():
    from hflab.tasks import load_task
    for name, spec in SPECS.items():
        n_train, n_test = spec.sizes(8, 4)
        t = load_task(name, 0, 0, n_train, n_test)
        assert (t.n_in, t.n_out) == (spec.n_in, spec.n_out)


def test_every_mutant_still_applies_to_the_tree():
    """`make mutants` runs on demand; this keeps its list in step with the code (a mutant whose
    text is gone would report STALE instead of testing anything)."""
    import sys
    sys.path.insert(0, str(ROOT / "tests" / "mutation"))
    from mutants import MUTANTS
    assert len(MUTANTS) >= 25
    for path, old, new, reason in MUTANTS:
        text = (ROOT / path).read_text()
        assert text.count(old) == 1, (path, old, reason)
        assert old != new and reason

"""The config layer: one field list, presets, coercion, validation, and the registry it reads."""
import dataclasses
import json
from pathlib import Path

import pytest

from hflab import config, optimizers
from hflab.view import formstate
from hflab.config import PRESETS, ConfigError, RunConfig, parse_layers, preset_config
from hflab.tasks import SPECS

ROOT = Path(__file__).resolve().parents[1]


def test_every_preset_is_valid_for_every_optimizer():
    """Every pair validates, except K-FAC on a sequence task, refused by name."""
    for task in PRESETS:
        for opt in optimizers.NAMES:
            if opt == "kfac" and SPECS[task].kind == "rnn":
                with pytest.raises(ConfigError, match="an MLP task for K-FAC"):
                    preset_config(task, optimizer=opt).validate()
                continue
            cfg = preset_config(task, optimizer=opt).validate()
            assert isinstance(cfg.settings, optimizers.get(opt).settings)


def test_each_optimizer_owns_its_settings_and_presets():
    """Defaults from the optimiser's settings dataclass, then its own preset for the task (the
    sweep's learning rate for first-order methods); another optimiser's preset never leaks in:
    HF's λ₀ = 45 on the deep autoencoders reaches HF alone."""
    from hflab.learning_rates import LEARNING_RATES
    swept = LEARNING_RATES["regression"]
    assert swept and not any(t not in PRESETS for t in LEARNING_RATES)
    for name, entry in optimizers.REGISTRY.items():
        cfg = preset_config("regression", optimizer=name)
        expected = dataclasses.replace(entry.defaults(), **entry.presets.get("regression", {}))
        if name in swept:
            expected = dataclasses.replace(expected, learning_rate=swept[name])
        assert cfg.settings == expected
    for task in PRESETS:
        if "sgd" not in LEARNING_RATES.get(task, {}):
            assert preset_config(task, optimizer="sgd").settings == optimizers.get("sgd").defaults()
    assert preset_config("curves", optimizer="hf").settings.damping == 45.0
    assert preset_config("curves", optimizer="hf").settings.n_chunks == 4
    adam = preset_config("curves", optimizer="adam")
    assert set(adam.optimizer_settings()) == {"learning_rate"}
    assert preset_config("regression", optimizer="adam", learning_rate=0.1).settings.learning_rate \
        == 0.1
    assert preset_config("regression", optimizer="adam",
                         **{"adam.learning_rate": 0.2}).settings.learning_rate == 0.2


def test_a_config_round_trips_with_its_settings_namespaced():
    cfg = preset_config("xor", optimizer="hf", damping=3.0).validate()
    data = json.loads(cfg.to_json())
    assert data["optimizer"] == "hf" and data["settings"]["damping"] == 3.0
    assert "damping" not in data and "learning_rate" not in data
    assert RunConfig.from_dict(data) == cfg
    # switching optimiser starts from the new one's defaults
    assert cfg.replace(optimizer="adam").settings == optimizers.get("adam").defaults()


@pytest.mark.parametrize("text, expected", [("32-16", [32, 16]), ("8", [8]), ("4,5 6", [4, 5, 6])])
def test_layer_strings(text, expected):
    assert parse_layers(text) == expected


@pytest.mark.parametrize("text", ["-5", "10--5", "32-²", "٣٢", "", "  ", "3-0", "a-3", "5-"])
def test_bad_layer_strings(text):
    with pytest.raises(ValueError):
        parse_layers(text)


@pytest.mark.parametrize("field, value, allowed", [
    ("steps", "abc", "a whole number"), ("seq_len", "abc", "a whole number"),
    ("hf.damping", "٣", "a number"), ("hf.line_search", "maybe", "true or false"),
    ("hf.max_cg_iters", "1.5", "a whole number")])
def test_coercion_names_the_field_and_the_kind(field, value, allowed):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({field: value})
    assert e.value.field == field and allowed in str(e.value)


def test_rnn_sequence_length_has_the_task_minimum():
    with pytest.raises(ConfigError, match="seq_len"):
        preset_config("addition", seq_len=1).validate()
    preset_config("addition", seq_len=2, n_train=16, n_test=8).validate()


def test_form_and_cli_derive_from_the_field_list():
    """Every settings widget of the form is a RunConfig field or a registered optimiser's
    setting, namespaced by it; the CLI has a flag for each."""
    settings = {f"{o}.{f}" for o, e in optimizers.REGISTRY.items() for f in e.field_names()}
    for key in formstate.all_keys():
        if key in ("task", "optimizers"):
            continue
        assert key in config.FIELDS or key in settings, key
    assert settings <= set(formstate.all_keys())
    from hflab.cli import build_parser
    run_parser = build_parser()._subparsers._group_actions[0].choices["run"]
    flags = {a.dest for a in run_parser._actions}
    assert set(config.FIELDS) <= flags and settings <= flags
    assert config.FIELDS["optimizer"].metadata["choices"] == optimizers.NAMES


def test_sequence_length_is_resolved_by_the_config_alone_and_stored():
    """T is resolved once (the config) and a validated config carries it; the data layer has no
    default of its own to drift from it."""
    from hflab.tasks import load_task
    assert preset_config("xor").validate().seq_len == SPECS["xor"].default_seq_len
    assert preset_config("xor", seq_len=30).validate().seq_len == 30
    assert preset_config("xor", curriculum="10,30").validate().seq_len == 30
    assert preset_config("digits").validate().seq_len is None
    stored = RunConfig.from_dict(preset_config("addition").validate().to_dict())
    assert stored.seq_len == 20 and stored.final_seq_len() == 20
    with pytest.raises(ValueError, match="sequence length"):
        load_task("xor", 0, 0, 8, 4)


def test_tasks_own_their_dimensions():
    from hflab.tasks import load_task
    for name, spec in SPECS.items():
        n_train, n_test = spec.sizes(8, 4)
        t = load_task(name, 0, spec.default_seq_len, n_train, n_test)
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

"""Bad input everywhere: each is rejected with a message naming the field, the value and what
is allowed, and none leaves a half-written run behind."""
import json
import sqlite3
import zipfile

import pytest

import dataclasses

from hflab import bundles, cli, optimizers
from hflab.core import curvature
from hflab.config import LEGACY_OPTIMIZER_FIELDS, ConfigError, RunConfig
from hflab.lab import Lab
from hflab.bundles import BundleError
from hflab.store import Store, StoreError

def unchecked_config(**fields) -> RunConfig:
    """A RunConfig holding ``fields`` as given — flat setting names go into the optimiser's
    settings dataclass unchecked — so that validate() is what must refuse them."""
    optimizer = fields.get("optimizer", RunConfig.optimizer)
    entry = optimizers.REGISTRY.get(optimizer, optimizers.REGISTRY["hf"])
    own = {k: fields.pop(k) for k in list(fields) if k in LEGACY_OPTIMIZER_FIELDS}
    return RunConfig(**fields, settings=dataclasses.replace(entry.defaults(), **own))


# (overrides, field named in the message, fragment of what is allowed)
BAD_CONFIGS = [
    (dict(layers="  "), "layers", "layer string like"),
    (dict(layers="-"), "layers", "layer string like"),
    (dict(layers="32-abc"), "layers", "whole numbers; 'abc'"),
    (dict(layers="32-0"), "layers", "at least 1 unit"),
    (dict(layers="1000000000"), "layers", "exceeds the limit of 100,000"),
    (dict(task="mnist", layers="20000-20000"), "layers", "at most 50,000,000"),
    (dict(task="addition", seq_len=1000, layers="1000", n_train=20000, grad_batch=20000), "layers",
     "GiB"),
    (dict(optimizer="sgd", learning_rate=-0.1), "sgd.learning_rate", "(0.0, 100.0]"),
    (dict(optimizer="adam", learning_rate=float("nan")), "adam.learning_rate", "finite number"),
    (dict(damping=-1.0), "hf.damping", "[0.0, 10000000000.0]"),
    (dict(damping=float("nan")), "hf.damping", "finite number"),
    (dict(task="addition", layers="32-16"), "layers", "RNN problem"),
    (dict(task="addition", seq_len=0), "seq_len", "[2, 10000]"),
    (dict(task="digits", seq_len=20), "seq_len", "not a sequence problem"),
    (dict(task="digits", n_chunks=2000), "hf.n_chunks", "at most the gradient batch size"),
    (dict(task="digits", grad_batch=5000), "grad_batch", "the training set has 1438 cases"),
    (dict(task="digits", grad_batch_doubling=-5), "grad_batch_doubling", "[0, 1000000]"),
    # growing batches reach the whole training set: memory is planned for it, not the first
    (dict(task="xor", seq_len=1000, n_train=40000, grad_batch=2000, grad_batch_doubling=10),
     "layers", "batch 40000"),
    (dict(activation="sigmoidish"), "activation", "['tanh', 'logistic', 'relu', 'linear']"),
    (dict(loss="hinge"), "loss", "['squared', 'logistic', 'softmax']"),
    (dict(task="addition", loss="softmax"), "loss", "no class targets"),
    (dict(task="digits", loss="squared"), "loss", "one-hot class targets"),
    (dict(task="imagenet"), "task", "one of ['seed-333'"),
    (dict(optimizer="rmsprop"), "optimizer", str(list(optimizers.NAMES))),
    (dict(task="addition", optimizer="kfac"), "optimizer", "an MLP task for K-FAC"),
    (dict(steps=0), "steps", "[1, 10000000]"),
    (dict(optimizer="momentum", momentum=1.0), "momentum.momentum", "[0.0, 1.0)"),
    (dict(structural_damping=0.03), "hf.structural_damping", "only RNN tasks"),
    (dict(init="he"), "init", "['sparse', 'gaussian', 'glorot', 'orthogonal']"),
    (dict(max_cg_iters=0), "hf.max_cg_iters", "[1, 5000]"),
    (dict(dtype="float16"), "dtype", "['float32', 'float64']"),
    (dict(devices="-3"), "devices", "'all', 'cpu' or a device count"),
    (dict(curvature="bfgs"), "hf.curvature", "['gauss_newton', 'hessian', 'fisher']"),
]


@pytest.mark.parametrize("overrides, field, allowed", BAD_CONFIGS,
                         ids=[f"{i}-{c[1]}" for i, c in enumerate(BAD_CONFIGS)])
def test_bad_config_is_rejected_with_a_specific_message(overrides, field, allowed, tmp_path):
    cfg = unchecked_config(**{"task": "digits-ae", **overrides})
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    msg = str(err.value)
    assert err.value.field == field
    assert msg.startswith(f"{field}: ")
    assert allowed in msg, msg
    # and the lab refuses it before anything is stored
    lab = Lab(tmp_path)
    with pytest.raises(ConfigError):
        lab.start(cfg)
    assert lab.store.runs().empty


@pytest.mark.parametrize("data, field, allowed", [
    ({"steps": "ten"}, "steps", "a whole number"),
    ({"line_search": "maybe"}, "hf.line_search", "true or false"),
    ({"hf.line_search": "maybe"}, "hf.line_search", "true or false"),
    ({"settings": {"damping": "lots"}}, "hf.damping", "a number"),
    ({"settings": {"dampening": 1}}, "hf.dampening", "not a setting of this optimiser"),
    ({"settings": [1]}, "settings", "a JSON object of the optimiser's settings"),
    ({"optimizer": "adam", "learning_rate": [1]}, "adam.learning_rate", "a number"),
    ({"optimizer": "adam", "hf.damping": 3}, "hf.damping", "this run's optimizer is 'adam'"),
    ({"colour": "red"}, "colour", "not a RunConfig field"),
])
def test_bad_config_file_values(data, field, allowed):
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"task": "digits", **data})
    assert err.value.field == field and allowed in str(err.value)


def run_cli(args, capsys):
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_flags_config_files_and_no_half_written_runs(tmp_path, capsys):
    code, _, err = run_cli(["run", "--task", "digits", "--layers", "32-abc"], capsys)
    assert code == 2 and "layers: '32-abc'" in err and "whole numbers" in err
    code, _, err = run_cli(["run", "--task", "addition", "--seq-len", "0"], capsys)
    assert code == 2 and "seq_len: 0" in err
    code, _, err = run_cli(["run", "--steps", "ten"], capsys)
    assert code == 2 and "steps: 'ten'" in err
    code, _, err = run_cli(["run", "--hf.damping", "-2"], capsys)
    assert code == 2 and "hf.damping: -2.0" in err and "[0.0, 10000000000.0]" in err
    code, _, err = run_cli(["run", "--optimizer", "adam", "--hf.damping", "2"], capsys)
    assert code == 2 and "hf.damping" in err and "optimizer is 'adam'" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli(["run", "--config", str(bad)], capsys)
    assert code == 2 and "config:" in err and "valid JSON" in err
    listy = tmp_path / "list.json"
    listy.write_text("[1, 2]")
    code, _, err = run_cli(["run", "--config", str(listy)], capsys)
    assert code == 2 and "a JSON object of RunConfig fields" in err
    code, _, err = run_cli(["run", "--config", str(tmp_path / "missing.json")], capsys)
    assert code == 2 and "an existing JSON file" in err
    assert Store().runs().empty                         # nothing half-written


def test_store_file_that_is_not_sqlite(tmp_path):
    (tmp_path / "hflab.sqlite").write_text("these are my notes, not a database")
    with pytest.raises(StoreError, match="not an HF Lab run store \\(not an SQLite database\\)"):
        Store(tmp_path)


def test_sqlite_file_of_another_application(tmp_path):
    con = sqlite3.connect(tmp_path / "hflab.sqlite")
    con.execute("CREATE TABLE recipes (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="another application"):
        Store(tmp_path)


def test_corrupt_and_foreign_bundles_are_rejected_and_import_nothing(tmp_path, capsys):
    store = Store(tmp_path / "s")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"\x00\x01 not a zip")
    with pytest.raises(BundleError, match="not an HF Lab export bundle"):
        bundles.import_bundle(store, junk)
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("photo.jpg", b"...")
    with pytest.raises(BundleError, match="no manifest.json"):
        bundles.import_bundle(store, foreign)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "tensorboard", "version": 1}))
    with pytest.raises(BundleError, match="expected 'hflab-bundle'"):
        bundles.import_bundle(store, other)
    truncated = tmp_path / "truncated.zip"
    with zipfile.ZipFile(truncated, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "hflab-bundle", "version": 1,
                                                 "table_format": "csv"}))
        zf.writestr("runs.csv", "id,config,task,optimizer,seed,status\n1,{bad json,x,hf,0,finished\n")
        zf.writestr("metrics.csv", "")
        zf.writestr("cg_traces.csv", "")
    with pytest.raises(BundleError):
        bundles.import_bundle(store, truncated)
    assert store.runs().empty
    code, _, err = run_cli(["runs", "import", str(junk)], capsys)
    assert code == 2 and "not an HF Lab export bundle" in err


def test_dense_hessian_over_the_parameter_cap():
    with pytest.raises(ValueError, match="dense Hessian is limited to 3,000 parameters"):
        curvature.require_dense_size(50_000)
    curvature.require_dense_size(100)               # under the cap: fine


def test_unknown_run_ids(capsys):
    code, _, err = run_cli(["runs", "show", "99"], capsys)
    assert code == 2 and "no run with id 99" in err
    code, _, err = run_cli(["runs", "delete", "5"], capsys)
    assert code == 2 and "no run with id 5" in err


def test_bad_multi_process_flags_exit_2_before_anything_is_stored(capsys):
    cases = [
        (["--coordinator", "127.0.0.1:1234"], "num-processes: '(not given)'", "go together"),
        (["--process-id", "0", "--num-processes", "2"], "coordinator: '(not given)'",
         "go together"),
        (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
         "coordinator: 'localhost'", "HOST:PORT"),
        (["--coordinator", "h:99999", "--num-processes", "2", "--process-id", "0"],
         "coordinator: 'h:99999'", "port 1–65535"),
        (["--coordinator", "h:1234", "--num-processes", "0", "--process-id", "0"],
         "num-processes: '0'", "from 1 to 4096"),
        (["--coordinator", "h:1234", "--num-processes", "2", "--process-id", "2"],
         "process-id: '2'", "from 0 to 1"),
        (["--coordinator", "h:1234", "--num-processes", "٢", "--process-id", "0"],
         "num-processes: '٢'", "whole number"),
    ]
    for flags, named, allowed in cases:
        code, _, err = run_cli(["run", "--task", "regression", *flags], capsys)
        assert code == 2 and named in err and allowed in err, (flags, err)
        assert "Traceback" not in err
    assert Store().runs().empty

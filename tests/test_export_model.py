"""Export what you trained: model.npz + a standalone evaluate.py whose test loss and error equal
the lab's own evaluation of the same parameters (MLP and RNN; the script imports no HF Lab)."""
import re
import subprocess
import sys
import zipfile

import pytest

from hflab.cli import main
from hflab.config import preset_config
from hflab.export_model import SCRIPT, model_files
from hflab.lab import run_to_store
from hflab.store import Store

CASES = {"mlp": dict(task="digits", layers="16", steps=3, n_train=200, n_test=100),
         "rnn": dict(task="addition", layers="8", seq_len=5, steps=2, n_train=64, n_test=32,
                     max_cg_iters=10)}


@pytest.mark.parametrize("kind", list(CASES))
def test_exported_script_reproduces_the_labs_test_evaluation(kind, tmp_path, capsys):
    store = Store()
    cfg = preset_config(**CASES[kind], checkpoint_every=1).validate()
    run_id = store.create_run(cfg)
    assert run_to_store(store, run_id, cfg) == "finished"
    out = tmp_path / "model.zip"
    assert main(["runs", "export-model", str(run_id), "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["evaluate.py", "model.npz"]
        zf.extractall(tmp_path / "m")
    assert "hflab" not in SCRIPT.replace("HF Lab", "")          # standalone: no lab import
    done = subprocess.run([sys.executable, "evaluate.py"], cwd=tmp_path / "m", text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    m = re.search(r"at update (\d+): test loss (\S+), test error (\S+) on (\d+) cases",
                  done.stdout)
    assert m, done.stdout
    _, lab_eval = model_files(store, run_id, evaluate=True)
    assert int(m.group(1)) == CASES[kind]["steps"] and int(m.group(4)) == CASES[kind]["n_test"]
    assert float(m.group(2)) == pytest.approx(lab_eval["test_loss"], rel=1e-5)
    assert float(m.group(3)) == pytest.approx(lab_eval["test_error"], rel=1e-5, abs=1e-7)
    # and the parameters are the trained ones, not the initial ones
    assert lab_eval["test_loss"] < store.metrics(run_id)["test_loss"].iloc[0]


def test_export_model_of_an_unknown_run_is_a_clean_error(tmp_path, capsys):
    Store()
    assert main(["runs", "export-model", "7", "--out", str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert "no run with id 7" in err and "Traceback" not in err
    assert not (tmp_path / "x.zip").exists()


def test_an_imported_run_exports_its_trained_model_not_the_initial_one(tmp_path):
    """Bundles carry each run's newest checkpoint: the model exported from the imported run is
    the trained one (its update and test loss equal the original's)."""
    from hflab import bundles
    store = Store(tmp_path / "a")
    cfg = preset_config(**CASES["mlp"], checkpoint_every=1).validate()
    run_id = store.create_run(cfg)
    assert run_to_store(store, run_id, cfg) == "finished"
    path = bundles.export(store, [run_id], tmp_path / "b.zip")
    other = Store(tmp_path / "b")
    (new_id,) = bundles.import_bundle(other, path)
    assert other.latest_checkpoint(new_id)[0] == CASES["mlp"]["steps"]
    _, original = model_files(store, run_id, evaluate=True)
    _, imported = model_files(other, new_id, evaluate=True)
    assert imported["test_loss"] == pytest.approx(original["test_loss"], rel=1e-12)
    # a bundle whose checkpoint holds a foreign array is refused whole
    with zipfile.ZipFile(path) as zf, zipfile.ZipFile(tmp_path / "bad.zip", "w") as out:
        for name in zf.namelist():
            data = zf.read(name)
            if name.startswith("checkpoints/"):
                import io

                import numpy as np
                buf = io.BytesIO()
                np.savez(buf, evil=np.array(["x"]))
                data = buf.getvalue()
            out.writestr(name, data)
    with pytest.raises(bundles.BundleError, match="not a checkpoint array"):
        bundles.import_bundle(other, tmp_path / "bad.zip")
    assert len(other.runs()) == 1

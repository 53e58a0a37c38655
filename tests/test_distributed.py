"""Beyond one machine, tested on one: two local processes joined by ``jax.distributed``
(a coordinator on 127.0.0.1, gloo CPU collectives) train ONE data-parallel HF run over the
devices of both, launched through the CLI exactly as on two hosts (README "Several hosts").

Checked: every stored step — the first HF update's loss, ρ, λ and CG iterations included —
equals a single-process, single-device run of the same configuration (float64; the only
difference is the order in which the all-reduces add up partial sums over cases, so 1e-9 is
generous for this well-damped problem yet far below any real change of trajectory), and the
run is stored once, by process 0, while process 1 writes nothing to the shared store."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from hflab.store import Store

ROOT = Path(__file__).resolve().parents[1]
RUN = ["run", "--task", "regression", "--layers", "8-8", "--steps", "5", "--optimizer", "hf",
       "--dtype", "float64", "--n-train", "101", "--n-test", "33", "--damping", "10",
       "--eval-every", "1", "--checkpoint-every", "5", "--quiet"]
COMPARED = ["train_loss", "test_loss", "rho", "damping", "cg_iters", "grad_norm", "step_norm"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(args, home, devices_per_process=1, timeout=240):
    env = {**os.environ, "HFLAB_HOME": str(home), "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           # the suite's compile-fast flags (conftest.py) and this process's device count
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") +
           f" --xla_force_host_platform_device_count={devices_per_process}"}
    return subprocess.Popen([sys.executable, "-m", "hflab", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"timed out:\n{out}")
    assert proc.returncode == 0, out
    return out


def test_two_processes_train_one_run_equal_to_a_single_process(tmp_path):
    shared, single = tmp_path / "shared", tmp_path / "single"
    port = free_port()
    launch = ["--devices", "all", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    procs = [cli(RUN + launch + ["--process-id", str(i)], shared, devices_per_process=2)
             for i in (0, 1)]
    # the reference run beside them: the pair spends much of its time starting up and waiting
    # on each other's collectives, which a third process fills
    reference = cli(RUN + ["--devices", "1"], single)
    outs = [finish(p) for p in procs]
    assert "on cpu ×4 (data-parallel mesh)" in outs[0], outs[0]     # both processes' devices
    assert "process 1 of 2: finished" in outs[1], outs[1]
    finish(reference)

    runs = Store(shared).runs()
    assert len(runs) == 1 and runs["status"].iloc[0] == "finished"       # stored once
    assert runs["steps_done"].iloc[0] == 5 and "×4" in runs["device"].iloc[0]
    many = Store(shared).metrics(int(runs["id"].iloc[0])).set_index("step")
    one = Store(single).metrics(1).set_index("step")
    assert list(many.index) == list(one.index) == [0, 1, 2, 3, 4, 5]
    for col in COMPARED:
        a, b = many[col].to_numpy(float), one[col].to_numpy(float)
        ok = np.isnan(a) == np.isnan(b)
        assert ok.all(), col
        assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-9, atol=1e-12), (col, a, b)
    assert many["cg_iters"].iloc[1] > 0 and many["train_loss"].iloc[-1] < many["train_loss"].iloc[0]
    assert Store(shared).latest_checkpoint(int(runs["id"].iloc[0])) is not None

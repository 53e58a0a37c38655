"""benchmarks/gpu.sh against a stand-in interpreter that records how it is called (no GPU, no JAX):
every suite runs in its own process, a failing suite neither stops the later ones nor is hidden
from the exit status, and the CUDA build is installed only when JAX sees no GPU."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE = r"""#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in
  *'platform == "gpu"'*) exit "$GPU_CHECK_RC" ;;
  *"jax.__version__)"*) echo 0.10.2 ;;
  *"--only $FAILING_SUITE "*) exit 3 ;;
  *"--only $SLOW_SUITE "*) sleep 20 ;;
esac
exit 0
"""


def _run(tmp_path, gpu_check_rc=0, failing="none", suites=None, extra_env=None, slow="none"):
    fake = tmp_path / "python"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "CALLS": str(calls), "GPU_CHECK_RC": str(gpu_check_rc),
           "FAILING_SUITE": failing, "SLOW_SUITE": slow, "PATH": "/usr/bin:/bin", **(extra_env or {})}
    if suites:
        env["HFLAB_GPU_SUITES"] = suites
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(fake), "--full"],
                          env=env, capture_output=True, text=True, timeout=60)
    return proc, calls.read_text().splitlines()


def _suites(calls):
    return [c.split("--only ")[1].split()[0] for c in calls if "-m benchmarks" in c]


def test_every_suite_runs_in_its_own_process_in_order_with_the_arguments(tmp_path):
    proc, calls = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _suites(calls) == ["rnn_cost", "hf_update", "gv_cost", "autoencoders"]
    assert all(c.endswith("--no-report --full") for c in calls if "-m benchmarks" in c)
    assert not any("pip install" in c for c in calls)          # JAX already sees the GPU


def test_a_failing_suite_does_not_stop_the_later_ones_and_sets_the_exit_status(tmp_path):
    proc, calls = _run(tmp_path, failing="hf_update")
    assert _suites(calls) == ["rnn_cost", "hf_update", "gv_cost", "autoencoders"]
    assert proc.returncode == 3
    assert "# suite hf_update: exit 3" in proc.stdout
    assert "# suite gv_cost: exit 0" in proc.stdout


def test_suites_can_be_picked_and_capped(tmp_path):
    proc, calls = _run(tmp_path, suites="hf_update rnn_cost",
                       extra_env={"HFLAB_GPU_SUITE_SECONDS": "30"})
    assert proc.returncode == 0, proc.stderr
    assert _suites(calls) == ["hf_update", "rnn_cost"]


def test_a_suite_over_its_cap_is_stopped_and_the_next_one_still_runs(tmp_path):
    proc, calls = _run(tmp_path, suites="hf_update rnn_cost", slow="hf_update",
                       extra_env={"HFLAB_GPU_SUITE_SECONDS": "1"})
    assert "# suite hf_update: exit 124" in proc.stdout      # timeout's status: the cap held
    assert "# suite rnn_cost: exit 0" in proc.stdout
    assert proc.returncode == 124 and _suites(calls) == ["hf_update", "rnn_cost"]


def test_without_a_gpu_the_cuda_build_of_the_same_jax_version_is_installed(tmp_path):
    proc, calls = _run(tmp_path, gpu_check_rc=1, suites="hf_update")
    installs = [c for c in calls if "pip install" in c]
    assert installs == ["-m pip install -q -U jax[cuda12]==0.10.2"]
    assert _suites(calls) == ["hf_update"]


@pytest.mark.parametrize("failing", ["rnn_cost", "autoencoders"])
def test_the_first_and_the_last_suite_failing_are_reported_too(tmp_path, failing):
    proc, calls = _run(tmp_path, failing=failing)
    assert proc.returncode == 3 and len(_suites(calls)) == 4

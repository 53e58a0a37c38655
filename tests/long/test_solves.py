"""Long checks (``make test-long``, minutes each on 2 cores): the lab solving a problem end to end
through the CLI, with its default settings."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_solves_the_addition_problem(tmp_path):
    """`python -m hflab run --task addition --seq-len 20 --optimizer hf` reaches ≥ 99 % success."""
    env = {**os.environ, "HFLAB_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    csv = tmp_path / "m.csv"
    out = subprocess.run([sys.executable, "-m", "hflab", "run", "--task", "addition", "--seq-len",
                          "20", "--optimizer", "hf", "--csv", str(csv)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("final test success rate")][0]
    assert float(line.split(":")[1].strip().rstrip("%")) >= 99.0
    assert "loss" in out.stderr and "λ" in out.stderr          # the progress bar
    import pandas as pd
    m = pd.read_csv(csv)
    assert m["test_error"].dropna().iloc[-1] <= 0.01

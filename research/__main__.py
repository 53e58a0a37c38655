"""Run studies: ``python -m research --only gradient_signal`` (every study runs only when named;
records go to ``records/<study>.jsonl``, then the report is rebuilt)."""
from types import SimpleNamespace

import hflab  # noqa: F401

from benchmarks.__main__ import main

from . import (curriculum, fixed_readout, gradient_signal, initial_sensitivity,
               plateau_curvature)

# gradient_signal: does the paper-scale RNN runs' first gradient know the task (~5 minutes);
# plateau_curvature: does the Hessian's negative curvature lead off HF's plateau (~10 minutes);
# fixed_readout: does XOR leave its plateau when the readout cannot shrink (~20 minutes);
# initial_sensitivity: how much of an early input reaches the last hidden state at init (~1 minute);
# curriculum: HF+SD on XOR through T = 20 → 50 → 100, each stage continuing the last (~25 minutes);
# curriculum_signal: does a stage's first gradient know the task where a fresh net's does not
STUDIES = {"gradient_signal": gradient_signal, "plateau_curvature": plateau_curvature,
           "fixed_readout": fixed_readout, "initial_sensitivity": initial_sensitivity,
           "curriculum": curriculum,
           "curriculum_signal": SimpleNamespace(run=curriculum.run_signal)}
# paper-scale RNN runs with one change: their records are marked mode "papers"
PAPERS = {"fixed_readout", "curriculum"}

if __name__ == "__main__":
    main(suites={}, on_demand=STUDIES, papers=PAPERS, prog="python -m research")

"""Run the benchmarks: quick mode (≤ 10 minutes on 2 cores) or ``--full``; JSON lines go to
stdout and are appended to benchmarks/results/results.jsonl; then the report is rebuilt."""
import argparse
import time
from types import SimpleNamespace

import hflab  # noqa: F401

from . import (autoencoders, curriculum, feedback, fixed_readout, gradient_signal, gv_cost,
               hf_update, initial_sensitivity, lr_sweep, peer, plateau_curvature, rnn_cost,
               rnn_problems, scaling)
from .common import emit

SUITES = {"gv_cost": gv_cost, "hf_update": hf_update, "rnn_problems": rnn_problems,
          "autoencoders": autoencoders, "scaling": scaling}
# run only when asked (--only lr_sweep / peer / feedback): the sweep sets the presets' learning
# rates; the peer comparison installs hessianfree 0.4.0 into its own environment (needs PyPI);
# feedback times Start → first point for every preset in fresh processes (~15 minutes);
# rnn_cost splits an RNN CG iteration's time against the matmul roofline (~3 minutes);
# gradient_signal asks whether the paper-scale RNN runs' first gradient knows the task (~5 minutes);
# plateau_curvature whether the Hessian's negative curvature points off HF's plateau (~10 minutes);
# fixed_readout whether XOR leaves its plateau when the readout cannot shrink (~20 minutes);
# initial_sensitivity how much of an early input reaches the last hidden state at init (~1 minute);
# curriculum HF+SD on XOR through T = 20 → 50 → 100, each stage continuing the last (~25 minutes);
# curriculum_signal whether a stage's first gradient knows the task where a fresh net's does not
ON_DEMAND = {"lr_sweep": lr_sweep, "peer": peer, "feedback": feedback, "rnn_cost": rnn_cost,
             "gradient_signal": gradient_signal, "plateau_curvature": plateau_curvature,
             "fixed_readout": fixed_readout, "initial_sensitivity": initial_sensitivity,
             "curriculum": curriculum,
             "curriculum_signal": SimpleNamespace(run=curriculum.run_signal),
             "lr_check": SimpleNamespace(run=lr_sweep.verify),
             "rnn_papers": SimpleNamespace(run=rnn_problems.run_papers),
             "autoencoder_papers": SimpleNamespace(run=autoencoders.run_papers)}
# their records are marked mode "papers" (fixed_readout, curriculum: paper-scale RNN runs with
# one change)
PAPERS = {"rnn_papers", "autoencoder_papers", "fixed_readout", "curriculum"}


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("--full", action="store_true", help="paper-scale settings (hours on a CPU)")
    p.add_argument("--only", nargs="+", choices=list(SUITES) + list(ON_DEMAND),
                   help="run only these suites")
    p.add_argument("--no-report", action="store_true")
    args = p.parse_args()
    mode = ("papers" if args.only and set(args.only) <= PAPERS else
            "full" if args.full else "quick")
    t0 = time.time()
    for name in args.only or SUITES:
        for result in {**SUITES, **ON_DEMAND}[name].run(args.full):
            emit(result, mode)
    print(f"# benchmarks done in {time.time() - t0:.0f} s")
    if not args.no_report:
        from . import report   # needs plotly, which a bare GPU machine may lack (--no-report)
        report.main()


if __name__ == "__main__":
    main()

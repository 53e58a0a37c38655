"""Run the benchmarks: quick mode (≤ 10 minutes on 2 cores) or ``--full``; JSON lines go to
stdout and are appended to ``records/<suite>.jsonl``; then the report is rebuilt.

Benchmarks measure the product (speed against the roofline and the peers, the comparisons the
README's summary cites); the studies of particular questions live in ``research/``
(``python -m research``)."""
import argparse
import time
from types import SimpleNamespace

import hflab  # noqa: F401

from . import (autoencoders, cg_floor, class_load, curvature_instrument, feedback, gv_cost,
               hf_update, loop_cost, lr_sweep, peer, rnn_cost, rnn_problems, scaling)
from .common import emit

SUITES = {"gv_cost": gv_cost, "hf_update": hf_update, "loop_cost": loop_cost,
          "rnn_problems": rnn_problems,
          "autoencoders": autoencoders, "scaling": scaling}
# run only when asked (--only lr_sweep / peer / feedback): the sweep sets the presets' learning
# rates; the peer comparison installs its peers into environments of their own (needs PyPI);
# feedback times Start → first point for every preset in fresh processes (~15 minutes);
# rnn_cost splits an RNN CG iteration's time against the matmul roofline (~3 minutes);
# cg_floor: λ floors against float32 CG's noise floor on the default run (~5 minutes, --full 3
# seeds); curvature_instrument: the density's cost at 10³…10⁶ parameters and the edge of stability
# (~5 minutes); class_load: 1–16 browser sessions on one server (~6 minutes; chromium);
# rnn_papers / autoencoder_papers are the paper-scale comparisons (hours)
ON_DEMAND = {"lr_sweep": lr_sweep, "cg_floor": cg_floor,
             "curvature_instrument": curvature_instrument, "peer": peer, "class_load": class_load,
             "feedback": feedback, "rnn_cost": rnn_cost,
             "lr_check": SimpleNamespace(run=lr_sweep.verify),
             "rnn_papers": SimpleNamespace(run=rnn_problems.run_papers),
             "autoencoder_papers": SimpleNamespace(run=autoencoders.run_papers)}
# their records are marked mode "papers"
PAPERS = {"rnn_papers", "autoencoder_papers"}


def main(argv=None, suites=None, on_demand=None, papers=None, prog="python -m benchmarks"):
    """The runner shared with ``python -m research`` (which passes its own suite tables)."""
    suites = SUITES if suites is None else suites
    on_demand = ON_DEMAND if on_demand is None else on_demand
    papers = PAPERS if papers is None else papers
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--full", action="store_true", help="paper-scale settings (hours on a CPU)")
    p.add_argument("--only", nargs="+", choices=list(suites) + list(on_demand),
                   help="run only these suites")
    p.add_argument("--no-report", action="store_true")
    args = p.parse_args(argv)
    mode = ("papers" if args.only and set(args.only) <= papers else
            "full" if args.full else "quick")
    t0 = time.time()
    for name in args.only or suites:
        for result in {**suites, **on_demand}[name].run(args.full):
            emit(result, mode, name)
    print(f"# done in {time.time() - t0:.0f} s")
    if not args.no_report:
        from . import report   # needs plotly, which a bare GPU machine may lack (--no-report)
        report.main()


if __name__ == "__main__":
    main()

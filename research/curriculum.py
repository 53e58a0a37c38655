"""HF with structural damping through a length curriculum (``--only curriculum``; XOR at
T = 20 → 50 → 100, 3 seeds: about 25 minutes on one core).

From scratch at T = 100, XOR stays at chance here on every seed and every setting tried (the
paper-scale records), and Sutskever's released HF-RNN code says the same of its own XOR at
T = 100: solvable with HF, "but success is very rare"; the nets usually notice no long-range
dependency at all.  XOR gives no signal one bit at a time — either marked bit alone is
uncorrelated with the target — so the gradient only appears once the net already carries both
bits to the end, which a random net does not at T = 100 (``initial_sensitivity``).  A net that
has solved the problem over a shorter span has that pathway.

So: HF+SD at the paper-scale settings (:data:`benchmarks.rnn_problems.PAPERS_DATA`, the presets'
μ, λ₀ and CG limits) trains at the first length until solved (test success ≥ 99 %) or its
stage budget is spent, then the same network continues at the next length on fresh sequences
of that length — the optimiser restarting as at any run's start (:func:`continue_from`) — and so
on.  Every stage is scored exactly as a from-scratch run at its length (its own test set, the
same criterion), so the last stage's success is comparable with the paper-scale records — only
the route differs, and the records say so: ``rnn_problem`` lines labelled
``hf+structural (length curriculum)``, one per stage, with ``curriculum`` (the lengths so far),
``updates`` and ``seconds`` *cumulative over the stages so far* (the shorter stages are part of
the cost), ``stage_updates``, ``stage_seconds``, ``transfer_success`` (the stage's test success
before its first update: how much of the shorter solution carries over unchanged) and curves on
the cumulative axes.

The lab runs the same protocol as one run (``RunConfig.curriculum``, the Train page's field,
``--curriculum`` on the command line; :class:`hflab.experiment.CurriculumTrainer`), each stage's
data stream and evaluations counted from the stage's start as here — the test suite checks that
the two give the same stages.

``HFLAB_PAPERS_PROBLEMS`` (default ``xor``), ``HFLAB_PAPERS_OPTIMIZERS`` (default
``hf+structural``; ``adam`` asks whether the curriculum alone does it), ``HFLAB_PAPERS_SEEDS``,
``HFLAB_PAPERS_BUDGET`` (seconds per stage, default 1200), ``HFLAB_PAPERS_SETTINGS`` (RunConfig
fields for every stage), ``HFLAB_FINAL_STAGE_SETTINGS`` (RunConfig fields for the last stage
alone, its records labelled e.g. ``(T = 200: rho_batch gradient)``) and ``HFLAB_CURRICULUM``
(the lengths, default ``20,50,100``) choose the runs.
"""
from __future__ import annotations

import os

from hflab.experiment import build

from . import gradient_signal
from benchmarks.common import env_list, env_settings
from benchmarks.rnn_problems import PAPERS_DATA, SOLVED_ERROR, train_one, variants

SUFFIX = " (length curriculum)"


def continue_from(params):
    """A ``start`` hook for :func:`benchmarks.rnn_problems.train_one`: the run's network is
    ``params`` (an RNN's parameters do not depend on T), its optimiser state fresh — for HF λ back
    at λ₀ and no warm start.  Why fresh: λ measures how far the *last* problem's quadratic model
    could be trusted, and the longer problem's curvature is another (deeper unrolling).  Carried
    over, addition seed 1's λ of 0.0034 from T = 20 let the first T = 50 steps run into an
    exploding-gradient regime (‖g‖ 58 → 2·10¹² in 32 updates, ‖W_rec‖ 10 → 42, the stage lost);
    restarted at λ₀ = 1 the same network solves T = 50 in 20 updates, ‖W_rec‖ steady at 9."""
    def start(cfg):
        built = build(cfg)
        return built, params, built.optimizer.init(params)
    return start


def stages(problem, lengths, seed, budget, settings, label="hf+structural" + SUFFIX,
           final_settings=None):
    """The records of one curriculum run, one per stage (see the module docstring);
    ``settings`` (RunConfig fields) choose the optimiser, HF with structural damping by
    default.  ``final_settings`` change the last stage alone — on the same network as the
    plain protocol reaches there (the earlier stages are unchanged), so a change meant for the
    longest T is measured on the very net that failed without it."""
    params = None
    spent_seconds, spent_updates = 0.0, 0
    for k, seq_len in enumerate(lengths):
        start = continue_from(params) if k else None
        last = final_settings if k == len(lengths) - 1 else None
        record, out = train_one(problem, seq_len, label, {**PAPERS_DATA, "optimizer": "hf",
                                                          **settings, **(last or {})},
                                seed, budget, curve=True, target_error=SOLVED_ERROR, start=start)
        params = out.params
        stage_seconds, stage_updates = record["seconds"] or 0.0, record["updates"]
        record.update(
            curriculum=list(lengths[:k + 1]), stage_start="fresh optimiser state",
            stage_seconds=stage_seconds,
            stage_updates=stage_updates, transfer_success=record["curve_success"][0],
            seconds=spent_seconds + stage_seconds, updates=spent_updates + stage_updates,
            seconds_to_99=None if record["seconds_to_99"] is None
            else spent_seconds + record["seconds_to_99"],
            curve_seconds=[spent_seconds + s for s in record["curve_seconds"]],
            curve_updates=[spent_updates + u for u in record["curve_updates"]])
        if last:
            record["final_stage_settings"] = last
        spent_seconds, spent_updates = record["seconds"], record["updates"]
        yield record


def run(full: bool):
    problems = env_list("HFLAB_PAPERS_PROBLEMS", ["xor"])
    lengths = env_list("HFLAB_CURRICULUM", [20, 50, 100], int)
    seeds = env_list("HFLAB_PAPERS_SEEDS", [0, 1, 2], int)
    budget = float(os.environ.get("HFLAB_PAPERS_BUDGET", "1200"))
    extra, suffix = env_settings("HFLAB_PAPERS_SETTINGS")
    final, final_suffix = env_settings("HFLAB_FINAL_STAGE_SETTINGS")
    if final:
        suffix += f" (T = {lengths[-1]}: {final_suffix[2:]}"
    table = variants(True)
    chosen = env_list("HFLAB_PAPERS_OPTIMIZERS", ["hf+structural"])
    unknown = sorted(set(chosen) - set(table))
    if unknown:
        raise SystemExit(f"HFLAB_PAPERS_OPTIMIZERS: {', '.join(unknown)} not among "
                         f"{', '.join(table)}")
    data = {k: extra.get(k, v) for k, v in PAPERS_DATA.items()}
    for problem in problems:
        for name in chosen:
            for seed in seeds:
                for record in stages(problem, lengths, seed, budget, {**table[name], **extra},
                                     name + SUFFIX + suffix, final):
                    yield {**record, **data, **({"settings": extra} if extra else {})}


def run_signal(full: bool):
    """``--only curriculum_signal`` (about 5 minutes on one core): does the gradient at the
    start of a curriculum stage know the task when a from-scratch run's does not?  Per XOR seed:
    HF+SD solves T = 20 as the curriculum's first stage does, then
    :func:`research.gradient_signal.measure` at T = 50 at that network — whose T = 50 test
    success is at chance — and at T = 50's own initial network.  ``gradient_signal`` records,
    the trained one carrying ``trained_at`` (the length it was trained at)."""
    short, long = 20, 50
    for seed in env_list("HFLAB_PAPERS_SEEDS", [0, 1, 2], int):
        _, out = train_one("xor", short, "hf+structural" + SUFFIX,
                           {**PAPERS_DATA, "optimizer": "hf"}, seed, 1200.0,
                           target_error=SOLVED_ERROR)
        yield {**gradient_signal.measure("xor", long, seed, params=out.params),
               "trained_at": short, "trained_updates": out.steps_done}
        yield gradient_signal.measure("xor", long, seed)

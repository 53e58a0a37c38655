"""How fast the lab answers: seconds from Start to the first plotted point for every preset, and
seconds from opening the Curvature page to its first heatmap for 24 to 100,000 parameters.

Start → first point (each preset's default comparison from the Train page's form: its default
optimisers, its preset settings): measured on the lab's own scheduler (:class:`hflab.lab.Lab`,
what the page's Start button calls) until the store holds the first metrics row (update 0, the
initial loss, is what the chart draws first).  Three situations, each in a fresh Python process
so imports count as they do for a person:

* ``cold``     — a new store: nothing compiled, the persistent compilation cache empty;
* ``restart``  — a new process on the same store: the cache on disk (an app restart);
* ``warm``     — the same process presses Start again (programs in memory).

Curvature page → first heatmap: :func:`hflab.view.analysis.curvature_view` and the H heatmap's figure
serialised as the browser receives it, for a fresh model of 24 (the notebook's 3-3-3 net), 610,
~5,000 and ~100,000 parameters; first call (compiling) and second call; the whole view and the
H heatmap's part alone (what a page following a live run computes for each checkpoint; measured
after the whole view, so its first call may reuse a program the whole view compiled).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time

from hflab.config import PRESETS

from .common import env_list

START_SCRIPT = textwrap.dedent('''
    import json, sys, time
    t0 = time.perf_counter()
    from hflab.view import formstate
    from hflab.lab import Lab
    task, home, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = []
    lab = Lab(home)
    for _ in range(rounds):
        form = formstate.task_defaults(task)
        configs = formstate.configs_from_form(form)
        start = time.perf_counter()
        ids = lab.start_many(configs)
        while lab.store.metrics(ids).empty and time.perf_counter() - start < 600:
            time.sleep(0.02)
        out.append(time.perf_counter() - start)
        for i in ids:
            lab.stop(i)
        for i in ids:
            lab.wait(i, 600)
    print(json.dumps({"seconds": out, "import_seconds": start - t0 if rounds == 1 else None,
                      "optimizers": [c.optimizer for c in configs]}))
''')


def start_to_first_point(task: str, home: str, rounds: int) -> dict:
    done = subprocess.run([sys.executable, "-c", START_SCRIPT, task, home, str(rounds)],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


CURVATURE_CASES = [("seed-333", "3", 24), ("digits", "8", 610), ("digits", "70", 5260),
                   ("mnist", "126", 100_180)]


def curvature_seconds(task: str, layers: str) -> tuple[list[float], list[float], int]:
    """Seconds to the H heatmap (first call, compiling, and again) with every part of the view
    computed, as a page opened on a model asks, and with only the H heatmap's part, as a page
    following a live run asks for each new checkpoint (the model built once: a followed run's
    model is kept)."""
    from hflab.view import analysis, plots
    whole, part = [], []
    for times, parts in ((whole, None), (part, ("H",))):
        for _ in range(2):
            t0 = time.perf_counter()
            if parts is None or not times:
                built, params = analysis.fresh_model(task, layers)
            t1 = time.perf_counter() if parts else t0
            snap = analysis.curvature_view(built, params, 16, parts=parts)
            plots.matrix_heatmap(snap["H"], "H", snap["names"], snap["blocks"]).to_json()
            times.append(time.perf_counter() - t1)
    return whole, part, snap["n_params"]


def run(full: bool):
    """The Curvature page's cases, then every preset's Start → first point;
    ``HFLAB_FEEDBACK_TASKS`` (a comma list of presets) runs only those presets' Start → first
    point, ``none`` only the Curvature page's cases."""
    only = env_list("HFLAB_FEEDBACK_TASKS", None)
    for task, layers, expected in CURVATURE_CASES if not only else []:
        whole, part, n = curvature_seconds(task, layers)
        assert n == expected, (task, layers, n)
        yield {"benchmark": "curvature_page", "task": task, "layers": layers, "n_params": n,
               "first_seconds": whole[0], "again_seconds": whole[1],
               "one_figure_first_seconds": part[0], "one_figure_again_seconds": part[1]}
    for task in PRESETS if only is None else only:
        with tempfile.TemporaryDirectory() as home:
            cold = start_to_first_point(task, home, 1)
            restart = start_to_first_point(task, home, 2)     # second round: warm
        yield {"benchmark": "start_to_first_point", "task": task,
               "optimizers": cold["optimizers"], "cold_seconds": cold["seconds"][0],
               "restart_seconds": restart["seconds"][0], "warm_seconds": restart["seconds"][1],
               "import_seconds": cold["import_seconds"]}

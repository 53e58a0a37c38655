"""The benchmark report's selections and figures, on hand-made result rows (no training but
one tiny run of the long autoencoder benchmark's evaluation schedule)."""
import math

import pandas as pd
import pytest

from benchmarks import autoencoders, paper_lines, report


def _rnn(problem, T, seed, budget, success, mode="papers", n_train=None, time="2026-12-01T10"):
    row = {"benchmark": "rnn_problem", "problem": problem, "T": T, "optimizer": "hf+structural",
           "seed": seed, "budget_seconds": budget, "success_rate": success, "mode": mode,
           "device": "cpu", "time": time}
    if n_train is not None:
        row["n_train"] = n_train
    return row


def test_superseded_paper_runs_are_not_drawn_and_the_longest_budget_wins():
    df = pd.DataFrame([
        _rnn("addition", 100, 0, 1200.0, 0.06),                       # old regime: no n_train
        _rnn("addition", 100, 0, 900.0, 0.997, n_train=40000),
        _rnn("addition", 100, 1, 900.0, 0.995, n_train=40000),
        _rnn("addition", 20, 0, 12.0, 1.0, mode="quick"),             # quick rows stay
        _rnn("addition", 20, 0, 10.0, 0.5, mode="quick"),             # shorter budget: not drawn
    ])
    shown = report.rnn_runs_to_show(df)
    t100 = shown[shown["T"] == 100]
    assert sorted(t100["seed"]) == [0, 1]
    assert (t100["budget_seconds"] == 900.0).all() and (t100["success_rate"] > 0.99).all()
    t20 = shown[shown["T"] == 20]
    assert list(t20["budget_seconds"]) == [12.0]
    fig = report.success_against_t(df)
    (trace,) = fig.data
    assert list(trace.x) == [20, 100]
    assert math.isclose(trace.y[1], (0.997 + 0.995) / 2)               # median over two seeds


def test_without_any_new_regime_row_old_paper_runs_are_dropped():
    df = pd.DataFrame([_rnn("xor", 100, 0, 720.0, 0.48), _rnn("xor", 20, 0, 12.0, 1.0, "quick")])
    assert list(report.current_papers_runs(df)["mode"]) == ["quick"]


def _ae_row(task, optimizer):
    """A long autoencoder run's record with a three-point curve (seed 0)."""
    return {"benchmark": "autoencoder", "task": task, "optimizer": optimizer, "seed": 0,
            "budget_seconds": 600.0, "curve_updates": [0, 1, 2], "curve_passes": [0, 5, 9],
            "curve_seconds": [0, 1.0, 2.0], "curve_test_error": [9.0, 8.0, 7.0],
            "curve_train_error": [9.0, 6.0, 5.0], "time": "2026-12-02T10"}


def test_autoencoder_cost_curves_draw_every_seed_on_all_three_axes():
    rows = []
    for opt in ("hf", "adam"):
        for seed in (0, 1):
            rows.append({"benchmark": "autoencoder", "task": "curves", "optimizer": opt,
                         "seed": seed, "budget_seconds": 600.0, "mode": "papers",
                         "device": "cpu", "time": f"2026-12-01T1{seed}",
                         "curve_updates": [0, 5, 10], "curve_passes": [0, 300, 600],
                         "curve_seconds": [0.0, 1.5, 3.0],
                         "curve_train_error": [50.0, 20.0, 10.0 + seed],
                         "curve_test_error": [51.0, 21.0, 11.0 + seed]})
    fig = report.autoencoder_cost_curves(pd.DataFrame(rows))
    # optimisers × seeds × cost axes × (training error, test error)
    assert len(_runs(fig)) == 2 * 2 * 3 * 2
    by_axis = {}
    for trace in _runs(fig):
        by_axis.setdefault(trace.xaxis, []).append(list(trace.x))
    # the initial point (cost 0) is left out: the axes are logarithmic
    assert {tuple(v[0]) for v in by_axis.values()} == {(5, 10), (300, 600), (1.5, 3.0)}
    # training error on the first row's three axes, test error on the second's
    first_row = {"x", "x2", "x3"}
    train = [list(t.y) for t in _runs(fig) if t.xaxis in first_row]
    test = [list(t.y) for t in _runs(fig) if t.xaxis not in first_row]
    assert len(train) == len(test) == 12
    assert all(y in ([20.0, 10.0], [20.0, 11.0]) for y in train)
    assert all(y in ([21.0, 11.0], [21.0, 12.0]) for y in test)
    assert sum(t.showlegend for t in _runs(fig)) == 2         # one legend entry per optimiser
    # every panel's error axis is logarithmic (a row shares one range: a linear axis beside a
    # log one reads the log range as plain numbers and draws every line off its place)
    layout = fig.to_plotly_json()["layout"]
    y_axes = [k for k in layout if k.startswith("yaxis")]
    assert len(y_axes) == 6 and all(layout[k]["type"] == "log" for k in y_axes)


def test_autoencoder_cost_curves_draw_any_number_of_settings_variants():
    """Six labels once broke a five-colour list (KeyError on the sixth)."""
    labels = ["adam", "hf", "momentum"] + [f"hf (grad_batch {b})" for b in (500, 1000, 2500)]
    fig = report.autoencoder_cost_curves(pd.DataFrame([_ae_row("curves", lab) for lab in labels]))
    assert len(_runs(fig)) == 6 * 3 * 2
    style = {t.name: (t.line.color, t.line.dash) for t in _runs(fig)}
    assert len({c for c, _ in style.values()}) == 6         # no two labels share a colour
    assert {lab for lab, (_, d) in style.items() if d == "dash"} == set(labels[3:])


def test_long_autoencoder_runs_reject_an_unknown_optimiser(monkeypatch):
    monkeypatch.setenv("HFLAB_AE_OPTIMIZERS", "hf,adamw")
    with pytest.raises(SystemExit, match="'adamw' is not one of"):
        next(autoencoders.run_papers())


def test_success_against_t_draws_any_number_of_optimiser_labels():
    rows = []
    for i in range(12):                      # more labels than the palette has colours
        row = _rnn("xor", 50, 0, 600.0, 0.5 + i / 100, n_train=40000)
        row["optimizer"] = f"hf+structural (layers {i})"
        rows.append(row)
    fig = report.success_against_t(pd.DataFrame(rows))
    assert len(fig.data) == 12
    assert sorted(t.y[0] for t in fig.data) == [0.5 + i / 100 for i in range(12)]
    assert len({t.line.color for t in fig.data}) == 12     # no two labels share a colour
    assert {t.line.dash for t in fig.data} == {"dash"}      # settings variants are dashed


def test_compared_optimisers_are_solid_and_distinct():
    colours, dashes = report.label_styles(
        ["adam", "hf", "hf+structural", "hf+structural (layers 100)", "momentum"]
        + [f"hf+structural (v {i})" for i in range(8)])
    assert len(set(colours.values())) == 13
    assert [dashes[k] for k in ("adam", "hf", "hf+structural", "momentum")] == ["solid"] * 4
    assert dashes["hf+structural (layers 100)"] == "dash"
    # no variant is drawn in a near-copy of the compared optimisers' blue, green or red
    variant_colours = {c for lab, c in colours.items() if "(" in lab}
    assert len(variant_colours) == 9
    assert not variant_colours & {"#2E91E5", "#1CA71C", "#FB0D0D"}


def test_paper_runs_with_settings_carry_them_and_a_suffixed_label(monkeypatch):
    from benchmarks import rnn_problems
    seen = []

    def fake_one(problem, seq_len, label, settings, seed, budget, **kw):
        seen.append(settings)
        return {"benchmark": "rnn_problem", "problem": problem, "T": seq_len,
                "optimizer": label, "seed": seed}
    monkeypatch.setattr(rnn_problems, "one", fake_one)
    monkeypatch.setenv("HFLAB_PAPERS_PROBLEMS", "xor")
    monkeypatch.setenv("HFLAB_PAPERS_T", "50")
    monkeypatch.setenv("HFLAB_PAPERS_SEEDS", "0")
    monkeypatch.setenv("HFLAB_PAPERS_OPTIMIZERS", "hf+structural")
    monkeypatch.setenv("HFLAB_PAPERS_SETTINGS", '{"layers": "100", "grad_batch": 8000}')
    (record,) = list(rnn_problems.run_papers())
    assert record["optimizer"] == "hf+structural (grad_batch 8000, layers 100)"
    assert record["settings"] == {"layers": "100", "grad_batch": 8000}
    assert record["grad_batch"] == 8000 and record["n_train"] == 40_000
    assert seen[0] == {"n_train": 40_000, "grad_batch": 8000, "optimizer": "hf", "layers": "100"}
    # first-order runs evaluate less often (evaluation counts against the budget); HF as before
    monkeypatch.setenv("HFLAB_PAPERS_OPTIMIZERS", "adam,hf")
    monkeypatch.delenv("HFLAB_PAPERS_SETTINGS")
    seen.clear()
    list(rnn_problems.run_papers())
    assert [s.get("eval_every") for s in seen] == [None, rnn_problems.FIRST_ORDER_EVAL_EVERY]
    monkeypatch.setenv("HFLAB_PAPERS_SETTINGS", '["layers"]')
    with pytest.raises(SystemExit, match="not a JSON object"):
        list(rnn_problems.run_papers())
    monkeypatch.setenv("HFLAB_PAPERS_SETTINGS", "{layers: 100}")
    with pytest.raises(SystemExit, match="is not JSON"):
        list(rnn_problems.run_papers())


def test_every_label_has_one_legend_entry_even_when_it_is_absent_from_the_first_panel():
    base = _rnn("addition", 20, 0, 60.0, 1.0, n_train=40000)
    variant = {**_rnn("xor", 50, 0, 600.0, 1.0, n_train=40000), "optimizer": "hf (variant)"}
    plain_xor = _rnn("xor", 50, 0, 600.0, 0.5, n_train=40000)
    fig = report.success_against_t(pd.DataFrame([base, variant, plain_xor]))
    legend = sorted(t.name for t in fig.data if t.showlegend)
    assert legend == ["hf (variant)", "hf+structural"]


def test_success_curves_have_a_panel_per_problem_and_a_line_per_seed():
    rows = []
    for problem in ("addition", "xor"):
        for seed in (0, 1):
            row = _rnn(problem, 100, seed, 900.0, 0.99, n_train=40000)
            row.update(curve_seconds=[0.0, 10.0 + seed], curve_success=[0.1, 0.99])
            rows.append(row)
    rows.append({**rows[0], "optimizer": "adam", "seed": 0})
    fig = report.success_curves(pd.DataFrame(rows))
    assert len(fig.data) == 5
    panels = {t.xaxis for t in fig.data}
    assert len(panels) == 2                                  # one per problem
    assert sorted(t.name for t in fig.data if t.showlegend) == ["T=100 adam", "T=100 hf+structural"]
    assert {t.line.dash for t in fig.data} == {"solid", "dot"}


def test_long_autoencoder_runs_take_a_settings_variant(monkeypatch):
    seen = []

    def fake_case(task, label, opt, seed, budget, extra, settings=None, suffix=""):
        seen.append((task, label + suffix, settings, extra))
        return {"benchmark": "autoencoder", "task": task, "optimizer": label + suffix}
    monkeypatch.setattr(autoencoders, "_papers_case", fake_case)
    monkeypatch.setenv("HFLAB_AE_TASKS", "mnist-ae")
    monkeypatch.setenv("HFLAB_AE_SEEDS", "1")
    monkeypatch.setenv("HFLAB_AE_OPTIMIZERS", "hf")
    monkeypatch.setenv("HFLAB_AE_SETTINGS", '{"grad_batch": 2500}')
    list(autoencoders.run_papers())
    assert seen == [("mnist-ae", "hf (grad_batch 2500)", {"grad_batch": 2500},
                     {"grad_batch": 1000})]
    monkeypatch.setenv("HFLAB_AE_SETTINGS", "[2500]")
    with pytest.raises(SystemExit, match="HFLAB_AE_SETTINGS: .* not a JSON object"):
        list(autoencoders.run_papers())


def test_a_long_first_order_run_also_evaluates_at_the_powers_of_two_before_its_first_evaluation():
    """A real (tiny) run: evaluated at 0 (the start), 1, 2, 4, 8, 16, 32, then every 40 updates
    and at the end — each early point the error of the network after that update, as the
    training loop's own evaluation gives it (the run repeated with evaluations every update)."""
    small = {"n_train": 64, "n_test": 32}
    tiny = {"layers": "8-4", "steps": 45, "eval_every": 40}
    adam = autoencoders.variants(True)["adam"]
    rec = autoencoders._papers_case("curves", "adam", adam, 0, 600.0, small, tiny)
    assert rec["curve_updates"] == [0, 1, 2, 4, 8, 16, 32, 40, 45]
    every = autoencoders._papers_case("curves", "adam", adam, 0, 600.0, small,
                                      {**tiny, "eval_every": 1})
    assert every["curve_updates"] == list(range(46))
    for u, e in zip(rec["curve_updates"], rec["curve_train_error"]):
        assert e == pytest.approx(every["curve_train_error"][u], rel=1e-6)
    assert [autoencoders.early_evaluation(s, 1000) for s in (1, 3, 512, 768, 1024)] == \
        [True, False, True, False, False]


def test_a_long_run_evaluates_less_often_per_update_where_its_updates_are_fast():
    """The large set every 1,000 first-order updates, the digits every 1,000 and 100."""
    big = autoencoders.PAPER_CASES["curves-20k"][1]
    assert [autoencoders.eval_interval("curves", {}, fo) for fo in (True, False)] == [50, 5]
    assert autoencoders.eval_interval("curves", big, True) == 1000
    assert [autoencoders.eval_interval("digits-ae", {}, fo) for fo in (True, False)] == [1000, 100]


def test_an_autoencoder_variant_only_on_the_second_task_still_gets_a_legend_entry():
    fig = report.autoencoder_cost_curves(pd.DataFrame(
        [_ae_row("curves", "hf"), _ae_row("mnist-ae", "hf"),
         _ae_row("mnist-ae", "hf (grad_batch 2500)")]))
    assert sorted(t.name for t in _runs(fig) if t.showlegend) == ["hf", "hf (grad_batch 2500)"]


def test_long_runs_report_each_evaluation_on_stderr_and_keep_stdout_for_records(capsys):
    from benchmarks.common import progress
    progress("xor T=100 hf+structural seed 0", {"step": 35, "wall_seconds": 161.4,
                                                "test_error": 0.4875, "damping": 0.0123,
                                                "rho": 0.3141, "cg_iters": 100})
    progress("mnist-ae adam seed 2", {"step": 50, "wall_seconds": 3.2, "test_error": 9.6812})
    progress("xor T=20 hf seed 1", {"step": 1, "wall_seconds": 0.4, "test_error": 0.5,
                                    "damping": 1.0, "rho": None, "cg_iters": 7})
    out, err = capsys.readouterr()
    assert out == ""                        # stdout carries the JSON records alone
    hf_line, adam_line, no_rho = err.splitlines()
    assert hf_line == ("# xor T=100 hf+structural seed 0: update 35, 161 s, test error 0.4875, "
                       "λ 0.0123, ρ 0.31, CG 100")
    assert adam_line == "# mnist-ae adam seed 2: update 50, 3 s, test error 9.681"
    assert no_rho.endswith("λ 1, ρ —, CG 7")


def test_readout_figure_draws_only_runs_that_record_it_solved_solid_unsolved_dotted():
    solved = {**_rnn("xor", 50, 0, 600.0, 1.0, n_train=40000), "seconds_to_99": 41.0,
              "curve_updates": [0, 1, 5], "curve_readout_norm": [3.9, 3.8, 3.5]}
    stuck = {**_rnn("xor", 50, 2, 600.0, 0.5, n_train=40000), "seconds_to_99": None,
             "curve_updates": [0, 1, 5, 10], "curve_readout_norm": [4.0, 3.9, 3.0, 2.1]}
    old = _rnn("addition", 50, 0, 600.0, 1.0, n_train=40000)       # recorded before the field
    figs = report.figures(pd.DataFrame([solved, stuck, old]))
    fig = figs["rnn-readout"]
    assert len(fig.data) == 2
    by_dash = {t.line.dash: t for t in fig.data}
    assert list(by_dash["solid"].y) == [3.9, 3.8, 3.5]
    assert list(by_dash["dot"].x) == [0, 1, 5, 10] and list(by_dash["dot"].y)[-1] == 2.1
    assert "rnn-readout" not in report.figures(pd.DataFrame([old]))


def test_a_seed_given_a_longer_second_try_does_not_hide_the_other_seeds():
    variant = "hf+structural (layers 100)"
    rows = [{**_rnn("temporal-order-2", 100, s, b, ok, n_train=40000), "optimizer": variant}
            for s, b, ok in ((0, 900.0, 0.25), (1, 900.0, 1.0), (2, 900.0, 0.996),
                             (0, 1400.0, 0.26))]
    shown = report.rnn_runs_to_show(pd.DataFrame(rows))
    assert sorted(shown["seed"]) == [0, 1, 2]
    assert shown.set_index("seed").loc[0, "budget_seconds"] == 1400.0
    (trace,) = report.success_against_t(pd.DataFrame(rows)).data
    assert list(trace.y) == [0.996]                        # the median of 0.26, 1.0 and 0.996


def test_curriculum_table_lists_the_stages_alone_with_their_lengths():
    rows = [_rnn("xor", 100, 0, 1200.0, 0.51, n_train=40000)]           # a from-scratch run
    for k, (T, success) in enumerate(((20, 0.99), (50, 1.0), (100, 0.999))):
        rows.append({**_rnn("xor", T, 0, 1200.0, success, n_train=40000),
                     "optimizer": "hf+structural (length curriculum)",
                     "curriculum": [20, 50, 100][:k + 1], "transfer_success": 0.5,
                     "stage_start": "fresh optimiser state"})
    # a stage recorded before stages restarted their optimiser (no stage_start): superseded
    rows.append({**rows[-1], "T": 200, "curriculum": [20, 50, 100, 200],
                 "stage_start": float("nan")})
    stages = report.curriculum_stages(pd.DataFrame(rows))
    assert list(stages["curriculum"]) == ["20", "20 → 50", "20 → 50 → 100"]
    assert list(stages["T"]) == [20, 50, 100]
    assert report.curriculum_stages(pd.DataFrame(rows[:1])).empty
    shown = report.rnn_runs_to_show(pd.DataFrame(rows))
    assert sorted(shown["T"]) == [20, 50, 100, 100] and 200 not in set(shown["T"])


def test_rnn_comparisons_leave_out_optimisers_that_refuse_rnn_tasks():
    """K-FAC has no factors for recurrent weights: the RNN suites must not schedule it (its run
    would end in a configuration error), while the autoencoder suites do."""
    from benchmarks import rnn_problems
    assert "kfac" not in rnn_problems.variants(True)
    assert {"sophia", "muon"} <= set(rnn_problems.variants(True))
    assert "kfac" in autoencoders.variants(True)


def test_class_row_gives_8_and_the_most_sessions_with_the_queue_on_and_foreground_tabs():
    from benchmarks import summary

    def rec(n, p95, limit=2, foreground=True, time="2026-12-06T01:00:00", arenas=None):
        return {"benchmark": "class_load", "sessions": n, "limit": limit, "time": time,
                "foreground_tabs": foreground, "first_point_p95_s": p95,
                "first_point_all_p95_s": 10 * p95, "queue_shown_max_s": 1.5,
                "all_done_s": 90.0, "rss_peak_mb": 1800.0, "lost": 0,
                "machine": "x86_64 · 2 cores", "malloc_arena_max": arenas}
    # the newest 8-session record is a variant of the server (malloc arenas capped): not shown
    df = pd.DataFrame([rec(1, 3.0), rec(8, 99.0, time="2026-12-05T01:00:00"), rec(8, 8.5),
                       rec(16, 20.6), rec(32, 1.0, limit="off"), rec(24, 1.0, foreground=False),
                       rec(8, 77.0, time="2026-12-06T02:00:00", arenas=2)])
    [(measure, figure, section)] = summary._class_rows(df)
    assert "≤ 2 comparisons" in measure and section == "A class on one server"
    # the newest 8-session record and the 16-session one; not the queue-off or throttled ones
    assert figure.startswith("8 sessions: first point p95 8.5 s") and "16 sessions: first " \
        "point p95 20.6 s" in figure, figure
    assert len(measure) + len(figure) < 330, "a README line stays under 400 characters"
    assert "99.0" not in figure and "32 sessions" not in figure and "24 sessions" not in figure
    assert "77.0" not in figure


def test_follow_row_gives_the_newest_record_alone_browser_apart_and_beside_three_sessions():
    from benchmarks import summary

    def rec(alone, watched, seen, pinned=None, time="2026-12-06T01:00:00", others=0,
            wait=None):
        return {"benchmark": "follow_live", "other_sessions": others, "time": time,
                "seconds_per_update_alone": alone, "seconds_per_update_watched": watched,
                "checkpoints_seen": seen, "checkpoint_lag_median_s": 4.5 if seen else None,
                "unshown_wait_p95_s": wait, "views_cores_watched": 0.04,
                "server_cores_watched": 0.9, "pinned": pinned}
    df = pd.DataFrame([rec(0.007, 0.011, 7, wait=8.25),
                       rec(0.007, 0.02, 7, time="2026-12-05T01:00:00"),
                       rec(0.0072, 0.0073, 0, pinned="server core 0, browser core 1"),
                       rec(0.009, 0.0105, 3, others=3, time="2026-12-07T01:00:00", wait=4.4),
                       rec(0.009, 0.5, 3, others=3, time="2026-12-04T01:00:00"),
                       rec(0.009, 0.6, 3, others=1, time="2026-12-08T01:00:00")])
    [(measure, figure, section)] = summary._follow_rows(df)
    assert section == "Following a live run"
    assert "on the server: 7.00 → 11.00 ms, views 4.5 s late (median), all within 8.2 s " \
        "(p95)" in figure, figure
    assert "apart: 7.20 → 7.30 ms, no view (view process 0.04 core)" in figure, figure
    assert figure.endswith("3 others training: 9.00 → 10.50 ms, views 4.5 s late (median), "
                           "all within 4.4 s (p95)"), figure
    assert "20.00" not in figure and "500.00" not in figure and "600.00" not in figure
    assert len(measure) + len(figure) < 330, "a README line stays under 400 characters"


def test_autoencoder_rows_give_median_training_and_test_error_and_who_leads():
    from benchmarks import summary
    rows = []
    for opt, train, test in (("hf", [3.0, 2.0, 4.0], [5.0, 4.0, 6.0]),
                             ("kfac", [0.01, 0.03, 0.02], [20.0, 19.0, 21.0]),
                             ("adam", [0.1, 0.2, 0.3], [1.0, 2.0, 3.0]),
                             ("hf (grad_batch 500)", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])):
        for seed, (tr, te) in enumerate(zip(train, test)):
            rows.append({"benchmark": "autoencoder", "mode": "papers", "task": "curves",
                         "optimizer": opt, "seed": seed, "budget_seconds": 600.0,
                         "train_error": tr, "test_error": te, "time": f"2026-12-06T0{seed}:00"})
    [(measure, figure, _)] = summary._autoencoder_rows(pd.DataFrame(rows))
    assert "HF behind kfac" in measure and "3 seeds" in measure
    # ordered by median training error, each with its median test error (training / test); of
    # HF's labelled settings only the best, named after the defaults where it beats them
    assert figure == "kfac 0.02 / 20, adam 0.2 / 2, hf 3 / 5; best HF: " \
        "batch 500 → 0", figure
    worse = [{**r, "train_error": 9.0} if r["optimizer"].startswith("hf (") else r for r in rows]
    [(_, figure, _)] = summary._autoencoder_rows(pd.DataFrame(worse))
    assert figure == "kfac 0.02 / 20, adam 0.2 / 2, hf 3 / 5", figure
    one = [r for r in rows if not (r["optimizer"].startswith("hf (") and r["seed"] > 0)]
    [(_, figure, _)] = summary._autoencoder_rows(pd.DataFrame(one))
    assert figure.endswith("; best HF: batch 500 → 0 (1 seed)"), figure
    # an optimiser run on fewer seeds than the others says so beside its figure
    rows.append({**rows[0], "optimizer": "muon", "train_error": 0.001, "test_error": 7.0})
    [(measure, figure, _)] = summary._autoencoder_rows(pd.DataFrame(rows))
    assert "1–3 seeds" in measure and figure.startswith("muon 0.001 / 7 (1 seed), kfac 0.02 / 20, "
                                                        "adam"), figure


def test_the_papers_size_curves_set_is_a_case_of_its_own():
    """The 20,000-image CURVES-like runs neither replace nor mix with the 2,000-image ones (same
    task, optimiser, seed and budget): their own summary row, their own rows of panels."""
    from benchmarks import summary
    rows = []
    for n_train, (hf, adam) in ((None, (3.0, 0.1)), (20000, (11.0, 2.8))):
        for opt, err in (("hf", hf), ("adam", adam)):
            rows.append({**_ae_row("curves", opt), "mode": "papers", "n_train": n_train,
                         "train_error": err, "test_error": err + 1})
    df = pd.DataFrame(rows)
    measures = {m: f for m, f, _ in summary._autoencoder_rows(df)}
    assert len(measures) == 2
    (small,) = [f for m, f in measures.items() if "(20,000 images)" not in m]
    (large,) = [f for m, f in measures.items() if m.startswith("curves (20,000 images)")]
    assert small == "adam 0.1 / 1.1, hf 3 / 4"
    assert large == "adam 2.8 / 3.8, hf 11 / 12"
    fig = report.autoencoder_cost_curves(df)
    titles = {a.text.split(":")[0] for a in fig.layout.annotations}
    assert titles == {"curves", "curves (20,000 images)"}
    assert len(_runs(fig)) == 2 * 2 * 3 * 2          # cases × optimisers × axes × (train, test)


def test_long_autoencoder_runs_reject_an_unknown_case(monkeypatch):
    monkeypatch.setenv("HFLAB_AE_TASKS", "curves-60k")
    with pytest.raises(SystemExit, match="'curves-60k' is not one of"):
        next(autoencoders.run_papers())


def test_a_speed_measure_is_one_row_with_the_cpu_first_then_each_accelerator():
    from benchmarks import summary
    base = {"benchmark": "gv_cost", "case": "mnist-autoencoder-1000", "batch": 1000}
    df = pd.DataFrame([{**base, "device": "NVIDIA H200", "gv_over_grad": 0.95, "time": "2"},
                       {**base, "device": "cpu", "gv_over_grad": 1.3, "time": "1"},
                       {**base, "device": "cpu", "gv_over_grad": 1.2, "time": "3"},
                       {**base, "device": "NVIDIA H100", "gv_over_grad": 0.88, "time": "2"}])
    (row,) = summary._speed_rows(df)
    assert row[0] == "Gauss-Newton product ÷ gradient time (MNIST autoencoder, batch 1000)"
    # the newest CPU figure first (not the older 1.3), then each accelerator once
    assert row[1].startswith("CPU 1.20 · ") and "1.30" not in row[1], row[1]
    assert "NVIDIA H100 0.88" in row[1] and "NVIDIA H200 0.95" in row[1]
    # the HF update's throughput shares the row, each measure's figures after the other's
    update = {"benchmark": "hf_update", "case": "digits-autoencoder 64-32-16-32-64",
              "seconds_per_update": 0.2, "time": "4"}
    (row,) = summary._speed_rows(pd.concat([df, pd.DataFrame([
        {**update, "device": "cpu"}, {**update, "device": "NVIDIA H200",
                                      "seconds_per_update": 0.024}])]))
    assert row[0].endswith("; one HF update of 250 CG iterations (digits autoencoder)")
    gv, hf = row[1].split("; ")
    assert gv.startswith("CPU 1.20") and hf == "CPU 0.2 s · NVIDIA H200 0.024 s"
    assert row[2] == "Gv cost"


def _runs(fig):
    """The figure's run traces, without the papers' reference lines (tested on their own in
    test_paper_lines.py)."""
    return [t for t in fig.data if not t.name.startswith(paper_lines.SOURCE)]


def test_the_autoencoder_table_gives_each_run_s_best_point_beside_its_end():
    base = {"benchmark": "autoencoder", "task": "curves", "optimizer": "adam", "seed": 0,
            "budget_seconds": 600.0, "n_train": None, "train_error": 1.0, "test_error": 9.0}
    curved = {**base, "curve_updates": [0, 10, 20, 30], "curve_train_error": [50.0, 3, 2, 1],
              # test error lowest at update 10, then rising: the run overfits
              "curve_test_error": [50.0, 6, 7, 9]}
    t = report.autoencoder_table(pd.DataFrame([curved, {**base, "seed": 1}])).set_index("seed")
    assert (t.loc[0, "best_train_error"], t.loc[0, "best_test_error"],
            t.loc[0, "best_test_update"]) == (1.0, 6.0, 10.0)
    assert math.isnan(t.loc[1, "best_test_error"]) and math.isnan(t.loc[1, "best_test_update"])


def test_a_long_run_asks_for_the_most_updates_a_run_may_take():
    """The budget, not an update cap, must end a long run: the cap is RunConfig's largest."""
    from hflab.config import ConfigError, preset_config
    preset_config("digits-ae", steps=autoencoders.MAX_STEPS).validate()
    with pytest.raises(ConfigError, match="steps"):
        preset_config("digits-ae", steps=autoencoders.MAX_STEPS + 1).validate()

"""Turn the records (``records/*.jsonl``) into the generated report: docs/benchmarks.md (tables),
Plotly figures (docs/bench-*.html, and PNG screenshots of them taken with headless chromium when it
is there), each study's page under docs/studies/ and the README's results summary."""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from . import cg_floor, class_load, loop_cost, paper_lines, peer, standing, summary
from .common import PAPERS_LENGTHS, read_records

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load(mode: str | None = None, suites=None) -> pd.DataFrame:
    """The records of ``suites`` (all when None) as one frame, optionally of one ``mode``."""
    rows = read_records(suites)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    if "eval_every" in df:      # RNN-problem runs recorded before the field were evaluated every 5
        df.loc[(df["benchmark"] == "rnn_problem") & df["eval_every"].isna(), "eval_every"] = 5
    if mode:
        df = df[df["mode"] == mode]
    return df


def latest(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The newest row per key and device (CPU and GPU results are kept apart)."""
    keys = keys + (["device"] if "device" in df and "device" not in keys else [])
    return df.sort_values("time").groupby(keys, dropna=False).tail(1).sort_values(keys)


def _md(df: pd.DataFrame, cols: list[str]) -> str:
    cols = [c for c in cols if c in df]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("—" if pd.isna(v) else f"{v:.4g}")
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def curriculum_stages(df: pd.DataFrame) -> pd.DataFrame:
    """The current length-curriculum stages (``rnn_problem`` rows that carry ``curriculum``, from
    ``--only curriculum``; see :func:`current_papers_runs`), the lengths shown as
    ``20 → 50 → 100``."""
    if "curriculum" not in df:
        return df.iloc[0:0]
    d = current_papers_runs(df[df["benchmark"] == "rnn_problem"])
    d = d[d["curriculum"].notna()].copy()
    d["curriculum"] = d["curriculum"].map(lambda c: " → ".join(f"{t:.0f}" for t in c))
    return d


def figures(df: pd.DataFrame) -> dict[str, go.Figure]:
    figs = {}
    df = df[df["device"] == "cpu"] if "device" in df else df     # the reference machine
    g = df[df["benchmark"] == "gv_cost"]
    if not g.empty:
        g = latest(g, ["case"])
        figs["gv-cost"] = go.Figure([go.Bar(x=g["case"], y=g["gv_over_grad"], name="Gv / gradient"),
                                     ]).add_hline(y=1.33, line_dash="dot",
                                                  annotation_text="arithmetic limit 1.33")
        figs["gv-cost"].update_layout(title="Gauss-Newton-vector product ÷ gradient (time)",
                                      yaxis_title="ratio")
    r = df[df["benchmark"] == "rnn_problem"]
    if not r.empty:
        figs["rnn-success"] = success_against_t(r)
        r = current_papers_runs(r)
        # the long runs only (T ≥ 50): the T = 20 runs end in seconds and would bury them
        curves = (r[(r["mode"] == "papers") & (r["T"] >= 50)] if "curve_seconds" in r
                  else r.iloc[0:0])
        if not curves.empty:
            figs["rnn-curves"] = success_curves(curves)
        traced = (r[r["curve_readout_norm"].apply(lambda v: isinstance(v, list) and bool(v))]
                  if "curve_readout_norm" in r else r.iloc[0:0])
        if not traced.empty:
            figs["rnn-readout"] = readout_curves(traced)
    a = df[df["benchmark"] == "autoencoder"]
    if not a.empty:
        a = latest(summary.autoencoder_cases(a), ["case", "optimizer"])
        fig = go.Figure()
        for opt, d in a.groupby("optimizer"):
            fig.add_trace(go.Bar(x=d["case"], y=d["train_error"], name=opt))
        # training error: what an optimiser minimises, and what Martens (2010) reports
        fig.update_layout(title="Autoencoders: training reconstruction error at equal wall time",
                          yaxis_title="squared error summed over pixels", yaxis_type="log",
                          barmode="group")
        figs["autoencoders"] = fig
    long_runs = df[(df["benchmark"] == "autoencoder") & (df["mode"] == "papers")]
    if not long_runs.empty and "curve_seconds" in long_runs:
        figs["autoencoder-curves"] = autoencoder_cost_curves(long_runs)
    s = df[(df["benchmark"] == "scaling") & df.get("seconds_per_update", pd.Series()).notna()] \
        if "seconds_per_update" in df else pd.DataFrame()
    if not s.empty:
        s = latest(s, ["devices"]).sort_values("devices")
        figs["scaling"] = go.Figure(go.Scatter(x=s["devices"], y=s["seconds_per_update"],
                                               mode="lines+markers"))
        figs["scaling"].update_layout(title="Seconds per HF update vs devices",
                                      xaxis_title="devices", yaxis_title="seconds")
    return {**figs, **peer.figures(df)}


def current_papers_runs(r: pd.DataFrame) -> pd.DataFrame:
    """Paper-scale RNN rows without superseded ones, which remain in the records but are not
    drawn: those recorded before the paper-scale data regime (rows with no ``n_train``: 2,000
    fixed sequences and hidden biases of 0.5, which stayed at chance at T = 100), and length-
    curriculum stages recorded before each stage restarted its optimiser (no ``stage_start``:
    they carried the last stage's λ over)."""
    new_regime = r["n_train"].notna() if "n_train" in r else False
    r = r[(r["mode"] != "papers") | new_regime]
    if "curriculum" in r:
        carried = r["curriculum"].notna() & (r["stage_start"].isna() if "stage_start" in r
                                             else True)
        r = r[~carried]
    return r


def rnn_runs_to_show(r: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, T, optimizer, seed): the run with the longest budget (a 30-minute run says
    more than a 10-second one), its newest row.  Per seed, not per group: a seed given a longer
    second try must not hide the seeds that were solved within the first budget."""
    r = latest(current_papers_runs(r), ["problem", "T", "optimizer", "seed", "budget_seconds"])
    longest = r.groupby(["problem", "T", "optimizer", "seed"])["budget_seconds"].transform("max")
    return r[r["budget_seconds"] == longest]


def legend_once():
    """A predicate true the first time it sees a label: one legend entry per label across the
    panels of a figure (later traces join it through their ``legendgroup``)."""
    seen = set()

    def first(label) -> bool:
        new = label not in seen
        seen.add(label)
        return new
    first.seen = seen              # the labels so far (a figure sizes its legend by them)
    return first


def legend_height(first, minimum: int) -> int:
    """A figure's height that shows every legend entry ``first`` has seen (~30 px each at font
    size 10, plus the title and axis margins), at least ``minimum``."""
    return max(minimum, 200 + 30 * len(first.seen))


# Dark24's blue, green and red: near D3's blue, green and red of Adam, HF+SD and momentum
VARIANT_COLOURS_LEFT_OUT = ("#2E91E5", "#1CA71C", "#FB0D0D")


def label_styles(labels: list[str]) -> tuple[dict, dict]:
    """Colour and dash per optimiser label: the compared optimisers solid, in the ten D3 colours;
    each settings variant (``"hf+structural (layers 100)"``) dashed, in Dark24's less its blue,
    green and red (too near the first compared optimisers' D3 colours to tell a variant from
    them) — distinct until a palette is used up (then it cycles), so Adam and momentum never
    share a colour."""
    from plotly.colors import qualitative
    solid = [lab for lab in labels if "(" not in lab]
    dashed = [lab for lab in labels if "(" in lab]
    variant_palette = [c for c in qualitative.Dark24 if c not in VARIANT_COLOURS_LEFT_OUT]
    colours = {lab: qualitative.D3[i % len(qualitative.D3)] for i, lab in enumerate(solid)}
    colours.update({lab: variant_palette[i % len(variant_palette)]
                    for i, lab in enumerate(dashed)})
    dashes = {lab: "dash" if lab in dashed else "solid" for lab in labels}
    return colours, dashes


def success_against_t(r: pd.DataFrame) -> go.Figure:
    """Success rate against T for every problem and optimiser: the median over seeds, with a
    bar from the worst to the best seed (the seeds' spread)."""
    from plotly.subplots import make_subplots
    r = rnn_runs_to_show(r)
    problems = sorted(r["problem"].unique())
    fig = make_subplots(rows=1, cols=len(problems), subplot_titles=problems, shared_yaxes=True)
    colours, dashes = label_styles(sorted(r["optimizer"].unique()))
    first = legend_once()
    for col, problem in enumerate(problems, start=1):
        for opt, d in r[r["problem"] == problem].groupby("optimizer"):
            g = d.groupby("T")["success_rate"]
            med, lo, hi = g.median(), g.min(), g.max()
            info = d.groupby("T").agg(seeds=("seed", "count"), budget=("budget_seconds", "max"))
            fig.add_trace(go.Scatter(
                x=med.index, y=med.values, mode="lines+markers", name=opt, legendgroup=opt,
                showlegend=first(opt), line_color=colours[opt], line_dash=dashes[opt],
                error_y=dict(type="data", symmetric=False, array=(hi - med).values,
                             arrayminus=(med - lo).values),
                customdata=info[["seeds", "budget"]].values,
                hovertemplate="T=%{x}: median %{y:.1%} over %{customdata[0]} seed(s), "
                              "%{customdata[1]:.0f} s each<extra>" + opt + "</extra>"),
                row=1, col=col)
        ts = sorted(r["T"].unique())
        # lengths between the papers' (60, 75, 90) crowd a narrow log axis: label the papers'
        # lengths and any other at least 0.07 decades (~8 px) from them; hover gives every T
        text = [f"{t:.0f}" if t in PAPERS_LENGTHS
                or min(abs(math.log10(t / p)) for p in PAPERS_LENGTHS) >= 0.07 else "" for t in ts]
        fig.update_xaxes(type="log", title_text="T", tickvals=ts, ticktext=text,
                         tickangle=-90, tickfont=dict(size=9), range=[1.2, 2.4], row=1, col=col)
    fig.update_yaxes(title_text="test success rate", tickformat=".0%", row=1, col=1)
    fig.update_layout(title="RNN problems: success rate against T (median over seeds, bars: "
                            "worst–best seed; each at its longest budget)", width=1300,
                      height=legend_height(first, 420), legend=dict(font=dict(size=10)))
    return fig


T_COLOURS = {20: "#2ca02c", 50: "#1f77b4", 100: "#d62728", 200: "#000000"}


def _problem_panels(r: pd.DataFrame):
    """A figure with one panel per problem, its panel count, and the newest row of each run as
    ``(panel column, problem, row, the colour of its T)`` in panel order."""
    from plotly.subplots import make_subplots
    r = latest(r, ["problem", "T", "optimizer", "seed", "budget_seconds"])
    problems = sorted(r["problem"].unique())
    fig = make_subplots(rows=1, cols=len(problems), subplot_titles=problems, shared_yaxes=True)

    def runs():
        for col, problem in enumerate(problems, start=1):
            for _, row in r[r["problem"] == problem].sort_values(["T", "optimizer"]).iterrows():
                yield col, problem, row, T_COLOURS.get(int(row["T"]), "#7f7f7f")
    return fig, len(problems), runs()


def success_curves(r: pd.DataFrame) -> go.Figure:
    """The paper-scale runs' test success against optimisation seconds: a panel per problem, a
    colour per T, a line per seed; HF with structural damping solid, every other optimiser
    dotted."""
    fig, n_panels, runs = _problem_panels(r)
    first = legend_once()
    for col, problem, row, colour in runs:
        label = f"T={int(row['T'])} {row['optimizer']}"
        fig.add_trace(go.Scatter(
            x=row["curve_seconds"], y=row["curve_success"], mode="lines", name=label,
            legendgroup=label, showlegend=first(label),
            line=dict(color=colour, width=1.5,
                      dash="solid" if row["optimizer"] == "hf+structural" else "dot"),
            hovertemplate=f"{problem} {label} seed {int(row['seed'])}: "
                          "%{y:.1%} at %{x:.0f} s<extra></extra>"), row=1, col=col)
    for col in range(1, n_panels + 1):
        fig.update_xaxes(title_text="optimisation seconds", row=1, col=col)
    fig.update_yaxes(title_text="test success rate", tickformat=".0%", row=1, col=1)
    fig.update_layout(title="Paper-scale RNN runs (T ≥ 50): test success against optimisation "
                            "time; a line per seed, HF+SD solid, other optimisers dotted",
                      height=legend_height(first, 520), width=1300,
                      legend=dict(font=dict(size=10)))
    return fig


def readout_curves(r: pd.DataFrame) -> go.Figure:
    """‖W_out‖ against updates for the RNN runs that record it: a panel per problem, a colour
    per T, a line per optimiser label and seed; solved runs solid, unsolved dotted.  On a plateau
    the readout shrinks towards predicting the mean; the gradient and Gauss-Newton blocks of the
    recurrent weights scale with it."""
    fig, n_panels, runs = _problem_panels(r)
    first = legend_once()
    for col, problem, row, colour in runs:
        solved = row["seconds_to_99"] is not None and not pd.isna(row["seconds_to_99"])
        label = f"T={int(row['T'])}, {'solved' if solved else 'not solved'}"
        fig.add_trace(go.Scatter(
            x=row["curve_updates"], y=row["curve_readout_norm"], mode="lines", name=label,
            legendgroup=label, showlegend=first(label),
            line=dict(color=colour, width=1.5, dash="solid" if solved else "dot"),
            hovertemplate=f"{problem} T={int(row['T'])} {row['optimizer']} seed "
                          f"{int(row['seed'])}: %{{y:.2f}} at update %{{x}}<extra></extra>"),
            row=1, col=col)
    for col in range(1, n_panels + 1):
        fig.update_xaxes(title_text="updates", row=1, col=col)
    fig.update_yaxes(title_text="‖W_out‖ (Frobenius)", rangemode="tozero", row=1, col=1)
    fig.update_layout(title="RNN readout norm against updates: solved runs solid, unsolved dotted",
                      height=legend_height(first, 460), width=1300)
    return fig


def autoencoder_table(df: pd.DataFrame) -> pd.DataFrame:
    """The autoencoder records, each run's best point beside its end: the lowest training and
    test error its curve reached, and the update of the lowest test error (where stopping early
    would have kept the network).  Records without a curve leave them empty."""
    a = summary.autoencoder_cases(df[df["benchmark"] == "autoencoder"])

    def best(column, at=None):
        out = []
        for _, r in a.iterrows():
            ys = r.get(column)
            if not isinstance(ys, list) or not ys:
                out.append(float("nan"))
                continue
            i = min(range(len(ys)), key=ys.__getitem__)
            out.append(float(r["curve_updates"][i]) if at else float(ys[i]))
        return out
    if "curve_test_error" not in a:
        return a
    return a.assign(best_train_error=best("curve_train_error"),
                    best_test_error=best("curve_test_error"),
                    best_test_update=best("curve_test_error", at=True))


AXES = (("updates", "updates"), ("passes", "forward+backward passes"),
        ("seconds", "optimisation seconds"))


def _check_budgets_apart(a: pd.DataFrame) -> pd.DataFrame:
    """A case's runs at its defaults under a budget other than its standing one (a check that the
    ranking holds with more time) get panels of their own, ``"digits-ae, 600 s"``, so that two
    budgets' curves of one optimiser are not drawn as one; labelled settings stay with the case."""
    budgets = a["case"].map(standing.standing_budgets(a))
    apart = a["optimizer"].isin(standing.DEFAULTS) & (a["budget_seconds"] != budgets)
    return a.assign(case=[f"{c}, {b:.0f} s" if x else c
                          for c, b, x in zip(a["case"], a["budget_seconds"], apart)])


def autoencoder_cost_curves(a: pd.DataFrame) -> go.Figure:
    """Training and test reconstruction error of the long autoencoder runs against all three
    cost axes (updates, forward+backward passes, optimisation seconds): for each task a row of
    training error (what an optimiser is for, and what the papers' tables report) above a row of
    test error, a line per optimiser and seed, the same colour for an optimiser throughout
    (settings variants dashed, any number of them: :func:`label_styles`)."""
    from plotly.subplots import make_subplots
    a = _check_budgets_apart(latest(summary.autoencoder_cases(a),
                                    ["case", "optimizer", "seed", "budget_seconds"]))
    tasks = sorted(a["case"].unique())
    panels = [(t, err) for t in tasks for err in ("train", "test")]
    fig = make_subplots(rows=len(panels), cols=len(AXES), shared_yaxes="rows",
                        # a row's title over its first panel only: the x-axis titles name
                        # the cost, and three "case: error / axis" titles overlapped
                        subplot_titles=[f"{t}: {err} error" if i == 0 else ""
                                        for t, err in panels for i in range(len(AXES))])
    colours, dashes = label_styles(sorted(a["optimizer"].unique()))
    first = legend_once()
    for row, (task, err) in enumerate(panels, start=1):
        for _, r in a[a["case"] == task].sort_values(["optimizer", "seed"]).iterrows():
            ys = r.get(f"curve_{err}_error")
            if not isinstance(ys, list):
                continue                        # a record from before that curve was kept
            new_label = first(r["optimizer"])
            for col, (axis, _) in enumerate(AXES, start=1):
                xs = list(r[f"curve_{axis}"])
                fig.add_trace(go.Scatter(
                    x=xs[1:], y=list(ys)[1:], mode="lines",
                    line=dict(color=colours[r["optimizer"]], dash=dashes[r["optimizer"]]),
                    name=r["optimizer"],
                    legendgroup=r["optimizer"], showlegend=bool(new_label and col == 1),
                    hovertemplate=f"{r['optimizer']} seed {r['seed']}: {err} error %{{y:.3g}} "
                                  f"at %{{x:.4g}}<extra></extra>"), row=row, col=col)
                fig.update_xaxes(type="log", title_text=AXES[col - 1][1], row=row, col=col)
        if err == "train":
            _paper_lines(fig, a[a["case"] == task], row, first)
        # every column of the row on the log scale: the columns share the row's range, and a
        # linear axis would read col 1's log range as plain numbers (every line off the chart)
        for col in range(1, len(AXES) + 1):
            fig.update_yaxes(type="log", row=row, col=col)
        fig.update_yaxes(title_text=f"{err} error", row=row, col=1)
    fig.update_layout(title="Deep autoencoders: squared error (summed over pixels, mean over "
                            "cases), a line per seed; grey: the papers' training errors"
                            + (f" ({paper_lines.CAVEAT})" if paper_lines.CAVEAT else ""),
                      height=330 * len(panels), width=1200)
    return fig


def _paper_lines(fig: go.Figure, runs: pd.DataFrame, row: int, first):
    """The papers' published training errors (:mod:`benchmarks.paper_lines`) across each panel
    of a training-error row, dotted and grey.  Drawn as two-point traces spanning the runs'
    costs, not layout shapes, so that each is a legend entry and a hover naming its source and
    provenance."""
    if runs.empty:
        return
    for line in paper_lines.lines_for(runs["task"].iloc[0]):
        new_label = first(paper_lines.label(line))
        for col, (axis, _) in enumerate(AXES, start=1):
            xs = [x for curve in runs[f"curve_{axis}"] if isinstance(curve, list)
                  for x in curve[1:] if x and x > 0]
            if not xs:
                continue
            fig.add_trace(go.Scatter(
                x=[min(xs), max(xs)], y=[line.train_error] * 2, mode="lines",
                line=dict(color="grey", dash="dot" if line.method == "HF" else "dashdot",
                          width=1.5),
                name=paper_lines.label(line), legendgroup=paper_lines.label(line),
                showlegend=bool(new_label and col == 1),
                hovertemplate=paper_lines.label(line) + "<extra></extra>"),
                row=row, col=col)


def _png(html: Path, png: Path, width: int = 900, height: int = 500):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return
    try:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium,
                                  args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = b.new_page(viewport={"width": width, "height": height})
            page.goto(html.as_uri())
            page.wait_for_selector(".js-plotly-plot", timeout=30_000)
            page.screenshot(path=str(png))
            b.close()
    except Exception as e:  # noqa: BLE001 — a missing PNG must not lose the tables
        print(f"# no PNG for {html.name}: {e}")


def main(mode: str | None = None):
    df = load(mode)
    if df.empty:
        print("# no results yet")
        return
    DOCS.mkdir(exist_ok=True)
    parts = ["# Benchmark results", ""]
    m = df.iloc[-1]
    parts.append(f"Latest machine: {m['machine']}, device {m['device']}, JAX {m['jax']} "
                 f"({m['mode']} mode, {m['time']}).")
    sections = [
        ("Gv cost", "gv_cost", ["case"], ["case", "batch", "n_params", "grad_seconds",
                                         "gv_seconds", "gv_over_grad", "grad_gflops",
                                         "gv_gflops", "matmul_gflops", "device"]),
        ("HF update throughput (250 CG iterations)", "hf_update", ["case"],
         ["case", "seconds_per_update", "ms_per_cg_iteration", "n_params", "device"]),
        *loop_cost.REPORT_SECTIONS,
        ("RNN CG iteration against the matmul roofline", "rnn_cg_cost", ["case"],
         ["case", "n_params", "ms_per_cg_iteration", "gv_ms", "gv_share", "gv_gflops",
          "peak_roof_ms", "sequential_roof_ms", "cg_over_peak_roof", "cg_over_sequential_roof",
          "cores_used", "device"]),
        ("Pathological RNN problems", "rnn_problem",
         ["problem", "T", "optimizer", "seed", "budget_seconds"],
         ["problem", "T", "optimizer", "seed", "budget_seconds", "n_train", "updates",
          "eval_every", "seconds", "success_rate", "best_success_rate", "seconds_to_99",
          "cores_used", "device"]),
        ("Length curriculum — each stage continues the last one's network (updates and seconds "
         "cumulative; transfer = test success before the stage's first update)",
         curriculum_stages, ["problem", "curriculum", "optimizer", "seed", "budget_seconds"],
         ["problem", "curriculum", "optimizer", "seed", "budget_seconds", "transfer_success",
          "stage_updates", "stage_seconds", "updates", "seconds", "success_rate"]),
        ("Does the first gradient know the task? (true against permuted targets; ≈ 1: no)",
         "gradient_signal", ["problem", "T", "seed", "trained_at"],
         ["problem", "T", "seed", "trained_at", "n_sequences", "grad_norm", "signal_norm",
          "noise_norm", "signal_to_noise"]),
        ("How much of an early input reaches the last hidden state at initialisation? "
         "(‖∂h_last/∂x_10‖ over 200 training sequences)", "initial_sensitivity",
         ["problem", "T", "seed", "init_scale", "rec_scale"],
         ["problem", "T", "seed", "init_scale", "rec_scale", "sensitivity", "sensitivity_q10",
          "sensitivity_q90"]),
        ("Does the Hessian's negative curvature lead off HF's plateau? (test loss change: lowest "
         "over steps 0.3–30 along each kind of direction)", "plateau_curvature",
         ["problem", "T", "seed"],
         ["problem", "T", "seed", "updates", "n_sequences", "test_error", "hessian_min",
          "gauss_newton_max", "best_test_error_along", "best_change_along_eigenvectors",
          "best_change_along_random", "best_change_along_steepest_descent"]),
        ("Deep autoencoders", autoencoder_table, ["case", "optimizer", "seed", "budget_seconds"],
         ["case", "optimizer", "seed", "budget_seconds", "learning_rate", "updates",
          "train_error", "test_error", "best_train_error", "best_test_error", "best_test_update",
          "device"]),
        *standing.REPORT_SECTIONS, *paper_lines.REPORT_SECTIONS,
        ("Spectral density cost (SLQ, 10 probes × 50 Lanczos steps, Hessian on 64 cases)",
         "density_cost", ["target_params", "device"],
         ["n_params", "seconds_first", "seconds", "hutchinson_seconds_first", "cores_used",
          "device"]),
        ("Edge of stability: full-batch gradient descent, λ_max(H) against 2/η",
         "edge_of_stability", ["learning_rate"],
         ["learning_rate", "threshold", "steps", "peak_lambda_max", "final_lambda_max",
          "final_ratio_to_threshold", "final_loss", "n_params", "cases"]),
        ("Scaling over devices", "scaling", ["devices"],
         ["devices", "seconds_per_update", "simulated", "case"]),
        *peer.REPORT_SECTIONS, *cg_floor.REPORT_SECTIONS,
        ("Start → first plotted point (seconds)", "start_to_first_point", ["task"],
         ["task", "cold_seconds", "restart_seconds", "warm_seconds"]),
        *class_load.REPORT_SECTIONS,
        ("Curvature page → first heatmap (seconds)", "curvature_page", ["n_params"],
         ["task", "layers", "n_params", "first_seconds", "again_seconds",
          "one_figure_first_seconds", "one_figure_again_seconds"]),
        ("Learning-rate sweep (chosen per preset in hflab/learning_rates.py)", "lr_sweep_best",
         ["task", "optimizer"], ["task", "optimizer", "learning_rate", "train_loss", "steps"]),
    ]
    studies = {"Length curriculum": "curriculum", "Does the first gradient": "gradient_signal",
               "How much of an early input": "initial_sensitivity",
               "Does the Hessian's negative": "plateau_curvature"}
    (DOCS / "studies").mkdir(exist_ok=True)
    for title, bench, keys, cols in sections:
        d = bench(df) if callable(bench) else df[df["benchmark"] == bench]
        if d.empty:
            continue
        d = latest(d, [k for k in keys if k in d])    # a key no row has yet is left out
        table = _md(d, cols)
        study = next((v for k, v in studies.items() if title.startswith(k)), None)
        link = [f"The study's question and method: [studies/{study}.md](studies/{study}.md)",
                ""] if study else []
        parts += ["", f'<a id="{summary.anchor(title)}"></a>', "", f"## {title}", "", *link,
                  table]
        if study:
            (DOCS / "studies" / f"{study}.md").write_text(summary.study_page(study, d, table))
    for study in ("fixed_readout",):           # studies shown in a figure, not a table
        d = load(suites=[study])
        if not d.empty:
            cols = [c for c in d.columns if not c.startswith("curve_") and c not in
                    ("benchmark", "machine", "cpu", "jax", "n_devices", "time", "mode")]
            (DOCS / "studies" / f"{study}.md").write_text(summary.study_page(
                study, d, _md(d.sort_values("time"), cols)))
    for name, fig in figures(df).items():
        # the committed HTML loads plotly.js from its CDN (small repository); the PNG is rendered
        # offline from a self-contained copy
        html = DOCS / f"bench-{name}.html"
        fig.write_html(html, include_plotlyjs="cdn")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / html.name
            fig.write_html(local, include_plotlyjs=True)
            _png(local, DOCS / f"bench-{name}.png", int(fig.layout.width or 900),
                 int(fig.layout.height or 500))
        parts += ["", f"![{name}](bench-{name}.png)"]
    (DOCS / "benchmarks.md").write_text("\n".join(parts) + "\n")
    summary.write_readme_summary(df)
    print(f"# wrote {DOCS / 'benchmarks.md'}, docs/studies/ and the README's results summary")


if __name__ == "__main__":
    main()

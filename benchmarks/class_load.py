"""A class on one server: N browser sessions open the lab at once and each starts a comparison.

For N = 1, 4, 8, 16 sessions (separate browser contexts, as separate students are), each opens
``?task=regression&layers=16-16&steps=40&optimizers=hf,adam&seed=i`` on one ``streamlit run``
server and presses Start within a few seconds of the others.  Recorded per N, with the lab's
concurrency limit at its default (the cores) and off:

- ``first_point``: seconds from a session's Start to the first point drawn on its loss chart —
  median and p95 over the sessions whose comparison was admitted at once (never shown queued),
  and over all sessions;
- ``queue_shown``: for the sessions shown "queued — k ahead", the seconds from Start until their
  page said so (the largest);
- both stamped by each page itself (a 50-ms check in the page, :data:`STAMPS`): records without
  ``stamped_in_page`` were taken when the harness polled its pages one after another, each poll
  late by the time it spent on the others (up to a second with 8 pages and the probe);
- ``all_done``: seconds from the first Start until every run of every session had finished;
- ``rerun``: a probe session toggles a checkbox on its Train page every few seconds while the
  runs train and times the rerun until the page is idle again (median, p95);
- ``rss_peak_mb``: the server's peak resident memory (VmHWM);
- ``lost``: runs not finished; ``inversions``: comparisons admitted out of order (a comparison
  ``limit`` or more places later that started training before an earlier one);
- the breakdown of an admitted session's first point (medians): ``admit`` (Start → the run
  marked running), ``first_row`` (running → its first metric row in the store: data, model,
  compilation, update 0), ``draw`` (row stored → point drawn by the page); and the CPU seconds the
  measurement cost the server process (``server_cpu_s``: pages and training together) and the
  harness's own browsers (``browser_cpu_s``), which share the same cores.

Following a live run (:func:`follow_live`): HF's seconds per update alone and with the
Curvature page and CG inspector open on it, how late the page shows each new checkpoint, and the
cores used meanwhile by the server (training and pages), the view process and the harness's
chromium (``*_cores_*``); once with everything on the machine's cores and once
(``HFLAB_CLASS_PINNED``, on by default) with the server on one core and the harness on
another — a class's browsers run on the students' machines, not on the server's cores.

Each session is a separate browser context kept in the foreground (``foreground_tabs``): records
without that field were taken while chromium slowed the timers of all but one page, so their
pages stopped refreshing — they measure the harness, and the README's summary skips them.

Not a timed test: a benchmark with its own target (``make bench-class``, ~6 minutes on 2
cores).  Needs Debian's chromium and Playwright (the browser tests' setup).
"""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .common import env_list

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUERY = "/?task=regression&layers=16-16&steps=40&optimizers=hf,adam&seed={i}"
# the report's sections: (title, benchmark, key columns, shown columns)
REPORT_SECTIONS = [
    ("A class on one server (browser sessions starting HF + Adam at once; seconds, MB)",
     "class_load", ["sessions", "limit", "foreground_tabs", "malloc_arena_max"],
     ["sessions", "limit", "foreground_tabs", "malloc_arena_max", "first_point_median_s",
      "first_point_p95_s", "first_point_all_p95_s", "queued_sessions", "queue_shown_max_s",
      "all_done_s", "rerun_median_s", "rerun_p95_s", "rss_peak_mb", "lost", "inversions",
      "admit_median_s", "first_row_median_s", "draw_median_s", "server_cpu_s", "browser_cpu_s"]),
    ("Following a live run (the Curvature page and CG inspector open on an HF run)",
     "follow_live", ["other_sessions", "malloc_arena_max", "pinned"],
     ["other_sessions", "pinned", "foreground_tabs", "malloc_arena_max", "seconds_per_update_alone",
      "seconds_per_update_watched", "checkpoints", "checkpoints_seen", "first_view_s",
      "checkpoint_lag_median_s", "checkpoint_lag_max_s", "unshown_wait_p95_s", "rss_peak_mb",
      "server_cores_alone",
      "server_cores_watched", "views_cores_watched", "browser_cores_watched"]),
]
POINTS = """() => { const g = document.querySelector('.js-plotly-plot');
    return g && g._fullData ? g._fullData.reduce((n, t) => n + (t._length || 0), 0) : 0; }"""
# In each session's page: the moment (ms since the epoch, the machine's clock) its page first
# showed a plotted point and a queue position, checked every 50 ms by the page itself — the
# harness reads the stamps later, so its own polling of many pages does not delay them
STAMPS = """() => { window.__stamps = {point: null, queued: null};
    setInterval(() => { const s = window.__stamps;
        if (s.point === null && (%s)() > 0) s.point = Date.now();
        if (s.queued === null && document.body.textContent.includes('queued —'))
            s.queued = Date.now(); }, 50); }""" % POINTS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values, q):
    """The q-quantile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))], 2)


def _rss_peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _children_rss_peak_mb(pid: int) -> float | None:
    """The peak memory of the server's child processes (the background view process), summed."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    peaks = [_rss_peak_mb(int(k)) for k in kids]
    return round(sum(p for p in peaks if p), 1)


class _Server:
    """One ``streamlit run`` of the lab with its own store and concurrency limit."""

    def __init__(self, limit: int | None, cores: set[int] | None = None):
        self.home = tempfile.mkdtemp(prefix="hflab-class-")
        self.port = _free_port()
        env = {**os.environ, "HFLAB_HOME": self.home, "PYTHONPATH": str(ROOT)}
        if limit is not None:
            env["HFLAB_MAX_CONCURRENT"] = str(limit)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=None if cores is None else lambda: os.sched_setaffinity(0, cores))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(self.url + "/_stcore/health", timeout=2).read() == b"ok":
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the lab's server did not become healthy")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.home, ignore_errors=True)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` and its finished children, from /proc (0 once gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # u, s, cu, cs time


class _Cpu:
    """Cores used since it was made (CPU seconds over wall seconds) by the server process
    (training and every page's reruns: one process), its children (the background view
    process) and the harness's chromium (a student's own browser, on their own machine in a
    class, but on these cores here)."""

    def __init__(self, server_pid: int):
        self.pid, self.t0 = server_pid, time.time()
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        try:
            kids = [int(k) for k in Path(f"/proc/{self.pid}/task/{self.pid}/children")
                    .read_text().split()]
        except OSError:
            kids = []
        return {"server": {self.pid: _cpu_seconds(self.pid)},
                "views": {k: _cpu_seconds(k) for k in kids},
                "browser": {b: _cpu_seconds(b) for b in _browser_pids()}}

    def seconds(self) -> dict[str, float]:
        """CPU seconds used since the start, per process summed (a process started since counts
        whole; one ended since is lost: the windows here end before anything is closed)."""
        now = self._sample()
        return {k: sum(t - self.start[k].get(p, 0.0) for p, t in now[k].items()) for k in now}

    def cores(self) -> dict[str, float]:
        """:meth:`seconds` over the wall seconds since the start."""
        wall = max(time.time() - self.t0, 1e-9)
        return {k: round(v / wall, 2) for k, v in self.seconds().items()}


def _browser_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if "chrom" in (d / "comm").read_text():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _idle(page, timeout_ms=120_000):
    page.wait_for_function("() => { const a = document.querySelector('[data-testid=stApp]');"
                           " return a && a.getAttribute('data-test-script-state') !== 'running'; }",
                           timeout=timeout_ms)


def measure(browser, n: int, limit: int | None) -> dict:
    """One class of ``n`` sessions on a fresh server (``limit``: HFLAB_MAX_CONCURRENT; None =
    the lab's default, the cores)."""
    from hflab.scheduler import default_limit
    from hflab.store import Store
    server = _Server(limit)
    contexts = []
    try:
        pages = []
        for i in range(n):
            ctx = browser.new_context(viewport={"width": 1300, "height": 900})
            ctx.set_default_timeout(120_000)      # a loaded server answers late, not never
            contexts.append(ctx)
            page = ctx.new_page()
            page.goto(server.url + QUERY.format(i=i), wait_until="networkidle")
            page.get_by_role("button", name="▶ Start").wait_for(timeout=120_000)
            pages.append(page)
        probe_ctx = browser.new_context(viewport={"width": 1300, "height": 900})
        probe_ctx.set_default_timeout(120_000)
        contexts.append(probe_ctx)
        probe = probe_ctx.new_page()
        probe.goto(server.url + "/?task=regression", wait_until="networkidle")
        probe.get_by_role("button", name="▶ Start").wait_for(timeout=120_000)

        cpu = _Cpu(server.proc.pid)
        clicked = []
        for page in pages:
            page.evaluate(STAMPS)
        for page in pages:                        # Start in every session, a person at a time
            page.get_by_role("button", name="▶ Start").click(no_wait_after=True)
            clicked.append(time.time())
        t0 = clicked[0]
        first = [None] * n
        queued = [None] * n
        store = Store(server.home)
        reruns, last_probe, done_at = [], 0.0, None
        row_seen: dict[int, float] = {}              # run id → when its first row was seen
        deadline = t0 + 600
        while time.time() < deadline:
            now = time.time()
            runs = store.runs()                    # one read of the runs table per poll
            for run_id in runs["id"]:
                if run_id not in row_seen and len(store.metrics(int(run_id))):
                    row_seen[int(run_id)] = now
            for i, page in enumerate(pages):
                if first[i] is None:
                    stamps = page.evaluate("() => window.__stamps")
                    if stamps["point"] is not None:
                        first[i] = stamps["point"] / 1e3 - clicked[i]
                    # a queue position shown before the first point (an admitted session
                    # never shows one)
                    if queued[i] is None and stamps["queued"] is not None and (
                            stamps["point"] is None or stamps["queued"] < stamps["point"]):
                        queued[i] = stamps["queued"] / 1e3 - clicked[i]
            finished = len(runs) == 2 * n and set(runs["status"]) <= {"finished", "failed",
                                                                     "diverged", "stopped"}
            if finished and all(f is not None for f in first):
                done_at = (runs["finished"].max() - t0) if len(runs) else None
                break
            if now - last_probe > 3.0 and not finished:          # a rerun while runs train
                last_probe = now
                box = probe.get_by_text("log y").first
                start = time.time()
                box.click()
                probe.wait_for_timeout(50)
                _idle(probe)
                reruns.append(time.time() - start)
            time.sleep(0.2)
        runs = store.runs().sort_values("id")
        lost = int((runs["status"] != "finished").sum()) + max(0, 2 * n - len(runs))
        # each session's comparison (its seed) in the order the server took them (first id)
        started = runs.groupby("seed").agg(first=("id", "min"), started=("started", "min")) \
            .sort_values("first")["started"].tolist()
        # comparisons `gap` places apart cannot be admitted together: the later one starting
        # first is a queue out of order (no limit: nothing to check)
        effective = default_limit() if limit is None else limit
        gap = effective if effective else n
        inversions = sum(1 for a in range(len(started)) for b in range(a + gap, len(started))
                         if started[b] is not None and started[a] is not None
                         and started[b] < started[a])
        admitted = [f for f, q in zip(first, queued) if q is None and f is not None]
        used = cpu.seconds()
        browser_cpu, server_cpu = used["browser"], used["server"]
        # session i's runs are those of seed i (the server may take near-simultaneous Starts
        # in another order than the clicks, so their ids need not be 2i+1, 2i+2)
        admit, first_row, draw = [], [], []
        for i in range(n):
            mine = runs[runs["seed"] == i]
            ids = [int(j) for j in mine["id"]]
            if queued[i] is not None or first[i] is None or not ids:
                continue
            started = mine["started"].dropna()
            seen = [row_seen[j] for j in ids if j in row_seen]
            if started.empty or not seen:
                continue
            admit.append(float(started.min()) - clicked[i])
            first_row.append(min(seen) - float(started.min()))
            draw.append(clicked[i] + first[i] - min(seen))
        return {"benchmark": "class_load", "sessions": n, "foreground_tabs": True,
                "stamped_in_page": True,
                "limit": "off" if effective == 0 else effective,
                "first_point_median_s": _pct(admitted, 0.5),
                "first_point_p95_s": _pct(admitted, 0.95),
                "first_point_all_median_s": _pct([f for f in first if f is not None], 0.5),
                "first_point_all_p95_s": _pct([f for f in first if f is not None], 0.95),
                "queued_sessions": sum(q is not None for q in queued),
                "queue_shown_max_s": max((q for q in queued if q is not None), default=None),
                "all_done_s": None if done_at is None else round(float(done_at), 1),
                "rerun_median_s": _pct(reruns, 0.5), "rerun_p95_s": _pct(reruns, 0.95),
                "reruns_timed": len(reruns), "rss_peak_mb": _rss_peak_mb(server.proc.pid),
                "lost": lost, "inversions": inversions,
                "admit_median_s": _pct(admit, 0.5), "first_row_median_s": _pct(first_row, 0.5),
                "draw_median_s": _pct(draw, 0.5), "server_cpu_s": round(server_cpu, 1),
                "browser_cpu_s": round(browser_cpu, 1)}
    finally:
        for ctx in contexts:
            ctx.close()
        server.close()


FOLLOW = "/?task=regression&layers=64-64&steps=3000&max_seconds=45&optimizers=hf&seed={i}"


def _seconds_per_update(store, run_id) -> float:
    w = store.metrics(run_id)["wall_seconds"].to_numpy(float)
    return round(float(statistics.median(w[1:] - w[:-1])), 5)


def _checkpoint_times(home, run_id) -> dict[int, float]:
    import sqlite3
    with sqlite3.connect(Path(home) / "hflab.sqlite") as conn:
        return {int(s): float(c) for s, c in conn.execute(
            "SELECT step, created FROM checkpoints WHERE run_id=?", (run_id,))}


def _start(browser, url, contexts):
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    contexts.append(ctx)
    page = ctx.new_page()
    page.goto(url, wait_until="networkidle")
    page.get_by_role("button", name="▶ Start").wait_for(timeout=120_000)
    page.get_by_role("button", name="▶ Start").click()
    return page


def _pin_browser(core: int):
    """Every thread of the harness's chromium (and of its Playwright driver) on ``core``: the
    processes it starts later inherit it."""
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and any(n in (d / "comm").read_text()
                                        for n in ("chrom", "node")):
                for task in (d / "task").iterdir():
                    os.sched_setaffinity(int(task.name), {core})
        except OSError:
            pass


def follow_live(browser, others: int, pinned: bool = False) -> dict:
    """HF's seconds per update with nobody watching, then again with the Curvature page and
    the CG inspector following it (and ``others`` sessions training beside it): how late each
    new checkpoint reaches the Curvature page, and what watching costs the run.

    ``pinned``: the server (training, every page's reruns, the view process) on core 0 and the
    harness (its chromium, Playwright and itself) on core 1 — as in a class, where each
    student's browser runs on their own machine: what the lab's own work of following costs
    the run, without the harness's rendering of the pages taking the run's cores."""
    import re
    from hflab.store import Store
    if pinned:
        _pin_browser(1)
        os.sched_setaffinity(0, {1})
    server = _Server(None, cores={0} if pinned else None)
    contexts = []
    try:
        store = Store(server.home)
        _start(browser, server.url + FOLLOW.format(i=0), contexts)
        cpu = _Cpu(server.proc.pid)
        while len(store.runs()) < 1 or store.runs()["status"].iloc[0] != "finished":
            time.sleep(0.5)
        alone = _seconds_per_update(store, 1)
        cores_alone = cpu.cores()
        for i in range(others):                    # the class beside it (regression, 40 updates)
            _start(browser, server.url + QUERY.format(i=i + 10), contexts)
        _start(browser, server.url + FOLLOW.format(i=1), contexts)
        deadline = time.time() + 120
        while time.time() < deadline and (
                store.runs()["optimizer"].eq("hf").sum() < 2 + others):
            time.sleep(0.2)
        watched = int(store.runs().query("optimizer == 'hf'")["id"].max())
        curv = contexts[-1].new_page()
        opened = time.time()
        curv.goto(server.url + f"/curvature?run={watched}", wait_until="networkidle")
        cg = contexts[-1].new_page()
        cg.goto(server.url + f"/cg_inspector?run={watched}", wait_until="networkidle")
        cpu = _Cpu(server.proc.pid)
        seen: dict[int, float] = {}
        created: dict[int, float] = {}       # polled as the run goes: the store keeps only two
        ages = []                            # how old the newest checkpoint shown is, each poll
        while store.get_run(watched)["status"] in ("queued", "running"):
            for step, at in _checkpoint_times(server.home, watched).items():
                created.setdefault(step, at)
            shown = [int(v) for v in re.findall(rf"run #{watched} at update (\d+)",
                                                curv.inner_text("body"))]
            for step in shown:
                seen.setdefault(step, time.time())
            newer = [at for s, at in created.items() if shown and s > max(shown)]
            if newer:                        # the oldest checkpoint not shown yet waits since
                ages.append(time.time() - min(newer))
            time.sleep(0.2)
        cores_watched = cpu.cores()
        lags = [seen[s] - created[s] for s in created if s in seen and s > 0]
        first_view = round(min(seen.values()) - opened, 2) if seen else None
        return {"benchmark": "follow_live", "other_sessions": others, "foreground_tabs": True,
                **({"pinned": "server core 0, browser core 1"} if pinned else {}),
                "seconds_per_update_alone": alone,
                "seconds_per_update_watched": _seconds_per_update(store, watched),
                "checkpoints": len(created), "checkpoints_seen": len(lags),
                "first_view_s": first_view,
                "checkpoint_lag_median_s": _pct(lags, 0.5), "checkpoint_lag_max_s":
                    round(max(lags), 2) if lags else None,
                "unshown_wait_p95_s": _pct(ages, 0.95),
                "rss_peak_mb": _rss_peak_mb(server.proc.pid),
                "views_rss_peak_mb": _children_rss_peak_mb(server.proc.pid),
                **{f"{k}_cores_alone": v for k, v in cores_alone.items()},
                **{f"{k}_cores_watched": v for k, v in cores_watched.items()}}
    finally:
        for ctx in contexts:
            ctx.close()
        server.close()


def run(full: bool):
    """Every size with the lab's limit (the cores) and with none, then the follow-live runs;
    ``HFLAB_CLASS_SIZES``, ``HFLAB_CLASS_LIMITS`` (``cores`` or a number, 0 = none) and
    ``HFLAB_CLASS_FOLLOW`` (other sessions beside the followed run) pick a subset;
    ``HFLAB_CLASS_PINNED=0`` leaves out the follow-live run with server and harness on a core
    each (on by default where there are two cores or more)."""
    from playwright.sync_api import sync_playwright
    sizes = env_list("HFLAB_CLASS_SIZES", [1, 4, 8, 16], int)
    limits = [None if v == "cores" else int(v) for v in env_list("HFLAB_CLASS_LIMITS",
                                                                  ["cores", "0"])]
    follows = env_list("HFLAB_CLASS_FOLLOW", [0, 3], int)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-dev-shm-usage",
                                          # each session is a student's own foreground tab:
                                          # chromium must not slow the others' timers
                                          "--disable-background-timer-throttling",
                                          "--disable-renderer-backgrounding",
                                          "--disable-backgrounding-occluded-windows"])
        # glibc's malloc arenas (one per thread by default) as the server ran with them
        arenas = os.environ.get("MALLOC_ARENA_MAX")
        tag = {"malloc_arena_max": int(arenas)} if arenas else {}
        try:
            for limit in limits:
                for n in sizes:
                    yield {**measure(browser, n, limit), **tag}
            for others in follows:
                yield {**follow_live(browser, others), **tag}
            if os.environ.get("HFLAB_CLASS_PINNED", "1") != "0" and \
                    len(os.sched_getaffinity(0)) >= 2:
                yield {**follow_live(browser, 0, pinned=True), **tag}
        finally:
            browser.close()

"""Shared benchmark plumbing: timing, machine description, JSON-lines output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

# the records: one JSON-lines file per suite or study (``records/<name>.jsonl``), outside the
# Python packages, so one study's records are read without loading the others
RECORDS = Path(os.environ.get("HFLAB_RECORDS") or Path(__file__).resolve().parents[1] / "records")
# the sequence lengths of Martens & Sutskever's (2011) pathological RNN problems
PAPERS_LENGTHS = (20, 50, 100, 200)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def machine() -> dict:
    d = jax.devices()[0]
    return {"machine": platform.node() and f"{platform.machine()} · {os.cpu_count()} cores",
            "cpu": platform.processor() or platform.machine(), "jax": jax.__version__,
            "device": "cpu" if d.platform == "cpu" else d.device_kind,
            "n_devices": len(jax.devices()),
            # the machine instance (Linux's boot id): records that share it were timed on the
            # same hardware, so their seconds compare; "machine" alone does not tell two
            # 2-core machines apart, and one can be faster for one optimiser's work and slower
            # for another's
            "boot": _boot_id(),
            # a run pinned to fewer cores (taskset, so two runs share the machine without
            # contending) says so: its seconds are one core's
            "cores_used": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count()}


def emit(result: dict, mode: str, suite: str):
    """Print one record and append it to ``records/<suite>.jsonl``."""
    row = {"benchmark": result.pop("benchmark"), **result, "mode": mode, **machine(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    line = json.dumps(row, default=float)
    print(line, flush=True)
    RECORDS.mkdir(parents=True, exist_ok=True)
    with open(RECORDS / f"{suite}.jsonl", "a") as fh:
        fh.write(line + "\n")
    return row


def read_records(suites=None) -> list[dict]:
    """The records of ``suites`` (names of ``records/*.jsonl``; all of them when None)."""
    if not RECORDS.is_dir():
        return []
    paths = sorted(RECORDS.glob("*.jsonl")) if suites is None else \
        [RECORDS / f"{s}.jsonl" for s in suites if (RECORDS / f"{s}.jsonl").is_file()]
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()
            if line.strip()]


def progress(run: str, r: dict):
    """One line on stderr per evaluation of a long run (the paper-scale suites run for tens of
    minutes each and their record lands only at the end): update, seconds, test error and, for
    HF, λ, ρ and CG iterations.  stdout keeps the JSON records alone."""
    def num(key, spec):
        return "—" if r.get(key) is None else format(float(r[key]), spec)
    hf = f", λ {num('damping', '.3g')}, ρ {num('rho', '.2f')}, CG {num('cg_iters', '.0f')}" \
        if "damping" in r else ""
    print(f"# {run}: update {r['step']}, {r['wall_seconds']:.0f} s, test error "
          f"{r['test_error']:.4g}{hf}", file=sys.stderr, flush=True)


def timeit(fn, *args, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``fn(*args)`` (results waited for), after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compared_optimizers(skip=(), kind: str = "mlp") -> dict[str, dict]:
    """Every registered optimiser that takes a ``kind`` ("mlp" or "rnn") task as a benchmark
    variant; HF twice on RNN-capable benchmarks is added by the caller.  ``skip`` leaves names
    out (quick mode's time budget)."""
    from hflab import optimizers
    from hflab.core.settings import SettingError

    def takes(entry) -> bool:
        try:
            entry.check and entry.check(entry.defaults(), kind, 1_000_000)
        except SettingError:
            return False
        return True
    return {name: dict(optimizer=name) for name, entry in optimizers.REGISTRY.items()
            if name not in skip and takes(entry)}


def env_settings(name: str) -> tuple[dict, str]:
    """RunConfig fields from environment variable ``name`` (a JSON object, e.g.
    ``{"layers": "100"}``) and the label suffix its records carry, e.g. " (layers 100)"; ({}, "")
    when unset.  Malformed text ends the run with a message naming the variable."""
    text = os.environ.get(name) or "{}"
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{name}: {text!r} is not JSON ({e.msg}); give a JSON object of "
                         "RunConfig fields, e.g. '{\"layers\": \"100\"}'") from None
    if not isinstance(extra, dict):
        raise SystemExit(f"{name}: {extra!r} is not a JSON object of RunConfig fields")
    suffix = " (" + ", ".join(f"{k} {v}" for k, v in sorted(extra.items())) + ")" if extra else ""
    return extra, suffix


def env_list(name: str, default, cast=str):
    """A comma list from environment variable ``name`` (each item cast), else ``default``;
    ``none`` is the empty list."""
    text = os.environ.get(name, "")
    if text.strip().lower() == "none":
        return []
    return [cast(t.strip()) for t in text.split(",") if t.strip()] if text.strip() else default

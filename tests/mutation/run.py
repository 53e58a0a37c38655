"""`make mutants`: apply each mutant of mutants.py to a copy of the tree, run the core tier
against it, and report killed / survived (docs/mutants.md).  Exits non-zero if any survives.

The working tree is never modified: every mutant is applied inside a temporary copy (made from
`git ls-files`), so an interrupted run leaves nothing behind in the project.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS  # noqa: E402


def core_tests() -> list[str]:
    """The core tier as the Makefile names it (CORE_TESTS), so the two cannot drift apart."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("CORE_TESTS"))
    return line.split("=", 1)[1].split()


CORE = core_tests()
ENV = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}


def copy_tree(dest: Path):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


# the tests that check a module most directly run first for its mutants (-x stops at the first
# failure, so a killed mutant costs seconds; a survivor costs the whole tier)
FIRST = {"losses": ["tests/test_losses.py"], "models": ["tests/test_models.py"],
         "cg": ["tests/test_cg.py"], "hf": ["tests/test_hf.py"],
         "curvature": ["tests/test_hf.py", "tests/test_curvature.py"],
         "manual": ["tests/test_manual.py"], "parallel": ["tests/test_core_parallel.py"],
         "transform": ["tests/test_transform.py"], "spectra": ["tests/test_spectra.py"],
         "kfac": ["tests/test_kfac.py"], "sophia": ["tests/test_modern_optimizers.py"],
         "baselines": ["tests/test_modern_optimizers.py"],
         "experiment": ["tests/test_curriculum.py"],
         "datastream": ["tests/test_experiment.py"], "evaluation": ["tests/test_experiment.py"],
         "config": ["tests/test_bad_inputs.py"],
         "memory": ["tests/test_bad_inputs.py", "tests/test_experiment.py"]}


def ordered_core(rel: str) -> list[str]:
    first = FIRST.get(Path(rel).stem, [])
    return first + [t for t in CORE if t not in first]


def run_core(tree: Path, rel: str = "", timeout: int = 900) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           *ordered_core(rel)]
    env = {**os.environ, **ENV, "PYTHONPATH": str(tree)}
    try:
        out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    failed = [l.split(" ")[1] for l in out.stdout.splitlines() if l.startswith("FAILED")]
    return out.returncode, failed[0] if failed else out.stdout.strip().splitlines()[-1]


def _merge(rows):
    """The last report's rows with the re-run mutants' rows swapped in."""
    report = ROOT / "docs" / "mutants.md"
    old = {}
    if report.exists():
        for line in report.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 6 and cells[0].isdigit():
                old[int(cells[0])] = (int(cells[0]), cells[1].strip("`"), cells[2], cells[3],
                                      float(cells[4]), cells[5].strip("`"))
    old.update({r[0]: r for r in rows})
    return [old[k] for k in sorted(old)]


def main() -> int:
    only = {int(a) for a in sys.argv[1:]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="hflab-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for k, (rel, old, new, reason) in enumerate(MUTANTS, start=1):
            if only and k not in only:
                continue
            path = tree / rel
            pristine = (ROOT / rel).read_text()
            if pristine.count(old) != 1:
                rows.append((k, rel, reason, "STALE", 0.0, f"text found {pristine.count(old)}×"))
                continue
            path.write_text(pristine.replace(old, new))
            t0 = time.time()
            code, first = run_core(tree, rel)
            path.write_text(pristine)
            verdict = "killed" if code not in (0, 5) else "SURVIVED"
            rows.append((k, rel, reason, verdict, time.time() - t0, first))
            print(f"{k:2d} {verdict:8s} {time.time() - t0:6.1f}s  {rel}: {reason}  [{first}]",
                  flush=True)
    if only:                       # a partial re-run replaces its rows of the last report
        rows = _merge(rows)
    killed = sum(r[3].startswith("killed") for r in rows)      # "killed (re-check)" too
    lines = ["# Mutation check", "",
             f"`make mutants`: {len(rows)} mutants, {killed} killed, {len(rows) - killed} not "
             f"killed. Each mutant is one plausible bug applied to a copy of `hflab/`; the core "
             f"tier (`make test-core`) runs against it.", "",
             "| # | file | plausible bug | result | seconds | first failing test |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {k} | `{rel}` | {reason} | {verdict} | {secs:.0f} | `{first}` |"
              for k, rel, reason, verdict, secs, first in rows]
    (ROOT / "docs" / "mutants.md").write_text("\n".join(lines) + "\n")
    print(f"{killed}/{len(rows)} mutants killed")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

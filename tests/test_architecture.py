"""The shape of the project: import rules, module sizes, the product apart from the record, and a
README that is a user's guide whose results come from the records."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "hflab"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Fully qualified modules ``path`` imports (relative imports resolved; ``from pkg import
    mod`` counted as ``pkg.mod`` when that is a module)."""
    name = _module_name(path)
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _modules():
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def test_no_import_cycle_and_no_module_over_450_lines():
    modules = _modules()
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ importing lazily (inside functions) is not an import-time edge
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if n in ("hflab", "hflab.core", "hflab.view"):   # package roots: no code of theirs
                continue
            assert state.get(n) != 1, f"import cycle: {' → '.join(stack + [n])}"
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2
    for m in graph:
        if m not in state:
            visit(m, [m])
    lengths = {m: len(p.read_text().splitlines()) for m, p in modules.items()}
    assert max(lengths.values()) <= 450, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


def test_the_core_imports_nothing_from_the_rest_of_hflab():
    core = {m: p for m, p in _modules().items() if m.startswith("hflab.core")}
    assert {"hflab.core.hf", "hflab.core.curvature", "hflab.core.cg", "hflab.core.models",
            "hflab.core.losses", "hflab.core.transform"} <= set(core)
    for m, p in core.items():
        outside = {i for i in _imports(p) if i.startswith("hflab") and
                   not i.startswith("hflab.core") and i != "hflab"}
        assert not outside, (m, outside)
        assert not {i for i in _imports(p) if i.split(".")[0] in ("streamlit", "benchmarks",
                                                                   "research")}, m


def test_the_product_never_imports_the_record():
    """hflab/, pages/ and app.py import nothing from benchmarks/ or research/; the view
    package is the only one that may import Streamlit, and only its ui module does."""
    files = list(PKG.rglob("*.py")) + list((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    for p in files:
        roots = {i.split(".")[0] for i in _imports(p)}
        assert not roots & {"benchmarks", "research"}, p
        if p.is_relative_to(PKG) and p.name != "ui.py":
            assert "streamlit" not in roots, p


def test_the_readme_is_a_short_users_guide():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    long = [i + 1 for i, line in enumerate(lines) if len(line) > 400]
    assert not long, long
    text = "\n".join(lines)
    for section in ("## Two commands", "## Command line", "## HF on your own model",
                    "## Your own data", "## GPUs and several hosts", "## Results", "## Tests"):
        assert section in text, section


def test_the_readme_results_are_the_ones_the_records_give():
    """No hand-typed result: the summary block is exactly what the report makes of the records
    (a record added without `make report`, or an edited figure, fails here)."""
    from benchmarks import report, summary
    text = (ROOT / "README.md").read_text()
    assert text == summary.readme_with_summary(text, report.load())
    block = text[text.index(summary.BEGIN):text.index(summary.END)]
    rows = [r for r in block.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert 1 <= len(rows) <= 15
    assert all("](docs/benchmarks.md#" in r for r in rows)


def test_make_run_warns_when_the_lab_is_exposed_beyond_this_machine():
    """No login: ``make run ADDRESS=<non-loopback>`` says so before starting (``PY=true`` stands
    in for the interpreter, so nothing starts)."""
    import subprocess
    args = ["make", "-s", "run", "PY=true", "STAMP=Makefile"]
    exposed = subprocess.run(args + ["ADDRESS=0.0.0.0"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert exposed.returncode == 0 and "no login" in exposed.stderr
    local = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert local.returncode == 0 and local.stderr == ""

"""Fixtures of every test tier (tests/, research/tests/, benchmarks/tests/)."""
import os
import shutil
import tempfile

import jax
import pytest

import hflab  # noqa: F401  (enables x64)

# One persistent compilation cache for the whole session — both xdist workers and every
# subprocess a test starts (CLI runs, the streamlit server) inherit it through the environment —
# so a program compiled by one test module is loaded, not compiled again, by the next (the
# fixture below drops in-memory programs between modules).  A fresh folder per session: no test
# ever sees a cache from an earlier run.
if "HFLAB_TEST_JAX_CACHE" not in os.environ:
    os.environ["HFLAB_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="hflab-test-jax-cache-")
    os.environ["HFLAB_TEST_JAX_CACHE_OWNER"] = str(os.getpid())
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["HFLAB_TEST_JAX_CACHE"]
# every program, however small, goes to the shared cache: the suite compiles ~1,000 small ones
# per module (initialisers, eager float64 ops on new shapes) that other modules and the
# subprocesses compile again; loading one costs less than compiling it (~25 ms)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
# Tests are compilation-bound (~7,000 small programs, each run a few times; compiling is half
# of the suite's time): XLA's backend optimisation level 0, and XLA CPU's older fusion emitters
# in place of its MLIR ones, compile them faster (the presets' tiny runs: 14 s against 23 s with
# the MLIR emitters, the same losses to every printed digit); every result is still checked to
# its tolerance.  The lab itself keeps XLA's defaults: at full optimisation the older emitters run
# its updates slower (the CURVES preset's HF update 720 ms against 534 ms, Adam's 101 against 69).
for flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
# The per-checkpoint curvature profile (SLQ density, traces, blocks) compiles for seconds per
# model shape on a background thread: off for the suite, on (``curvature_profiles`` fixture, and
# the browser tests' server) in the tests that check it.
os.environ.setdefault("HFLAB_CURVATURE_PROFILE", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["HFLAB_TEST_JAX_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    """The process that made the session's cache removes it at the end."""
    if os.environ.get("HFLAB_TEST_JAX_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["HFLAB_TEST_JAX_CACHE"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own run store location."""
    monkeypatch.setenv("HFLAB_HOME", str(tmp_path / "hflab-home"))


@pytest.fixture
def curvature_profiles(monkeypatch):
    """Runs in this test measure the per-checkpoint curvature profile, as the lab does."""
    monkeypatch.setenv("HFLAB_CURVATURE_PROFILE", "1")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop JAX's compiled programs and the lab's caches of them: every
    compiled executable holds memory mappings of its machine code, and one process running the
    whole suite would otherwise approach the kernel's limit on mappings (vm.max_map_count),
    where LLVM fails with 'Cannot allocate memory'."""
    yield
    from hflab import compiled, experiment
    from hflab.core import spectra
    experiment._OPT_CACHE.clear()
    compiled.COMPILED.clear()
    spectra._programs.cache_clear()
    jax.clear_caches()

"""Fixtures of every test tier (tests/, research/tests/, benchmarks/tests/)."""
import pytest

import hflab  # noqa: F401  (enables x64)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own run store location."""
    monkeypatch.setenv("HFLAB_HOME", str(tmp_path / "hflab-home"))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop JAX's compiled programs and the lab's caches of them: every
    compiled executable holds memory mappings of its machine code, and one process running the
    whole suite would otherwise approach the kernel's limit on mappings (vm.max_map_count),
    where LLVM fails with 'Cannot allocate memory'."""
    yield
    import jax

    from hflab import compiled, experiment
    experiment._OPT_CACHE.clear()
    compiled.COMPILED.clear()
    jax.clear_caches()

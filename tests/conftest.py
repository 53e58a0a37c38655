"""Test-wide fixtures."""
import pytest

import hflab  # noqa: F401  (enables x64)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own run store location."""
    monkeypatch.setenv("HFLAB_HOME", str(tmp_path / "hflab-home"))

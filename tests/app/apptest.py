"""What the AppTest files share: opening a page with a URL query, waiting for the lab, reading
escaped text."""
import re
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from hflab.lab import get_lab


ROOT = Path(__file__).resolve().parents[2]
PAGES = ["train", "curvature", "cg_inspector", "derivations", "runs"]
# presets whose default networks are too large for a 2-core test: shrink the model, keep the task
SMALL_LAYERS = {"mnist": "16", "mnist-ae": "16-8", "curves": "16-8"}


def shown(text: str) -> str:
    """What a reader sees of escaped markdown source (user text is escaped before rendering)."""
    return re.sub(r"\\(.)", r"\1", text)


def page(name, query=None):
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    return at


def wait_idle(timeout=240):
    lab = get_lab()
    deadline = time.time() + timeout
    while lab.active() and time.time() < deadline:
        time.sleep(0.1)
    assert not lab.active(), "runs did not finish in time"

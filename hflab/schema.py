"""The run store's schema (versioned migrations) and its error vocabulary.

Schema versions are ``PRAGMA user_version``; :data:`MIGRATIONS` lists the scripts that take a
store from version *i* to *i + 1*.  SQLite's errors reach people as one-line
:class:`StoreError`s that name the cause (disk full, damaged file, read-only).
"""
from __future__ import annotations

import json
import math
import sqlite3

import numpy as np

STATUSES = ("queued", "running", "finished", "failed", "stopped", "interrupted", "diverged")
METRIC_COLUMNS = ("wall_seconds", "train_loss", "train_error", "test_loss", "test_error",
                  "n_grad", "n_gv", "n_forward", "n_passes")

MIGRATIONS = [
    # version 0 → 1
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL,
        task TEXT NOT NULL,
        optimizer TEXT NOT NULL,
        seed INTEGER NOT NULL,
        status TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        device TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        steps_done INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        host TEXT
    );
    CREATE TABLE metrics (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        wall_seconds REAL, train_loss REAL, train_error REAL, test_loss REAL, test_error REAL,
        n_grad INTEGER, n_gv INTEGER, n_forward INTEGER, n_passes INTEGER,
        extra TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (run_id, step)
    );
    CREATE TABLE cg_traces (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        residual_norms TEXT NOT NULL,
        quad_values TEXT NOT NULL,
        saved_iters TEXT NOT NULL,
        backtrack_index INTEGER NOT NULL,
        stop_reason TEXT NOT NULL,
        PRIMARY KEY (run_id, step)
    );
    CREATE TABLE checkpoints (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        path TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (run_id, step)
    );
    CREATE INDEX runs_status ON runs(status);
    """,
    # version 1 → 2: the writer's lease (pid + host were there) gets a heartbeat
    """
    ALTER TABLE runs ADD COLUMN heartbeat REAL;
    """,
    # version 2 → 3: the curvature instrument's per-checkpoint results (SLQ quadrature, traces,
    # per-block figures) as one small JSON document per checkpoint
    """
    CREATE TABLE spectra (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (run_id, step)
    );
    """,
    # version 3 → 4: who started the run (hflab.ownership): a browser session, the CLI, Python
    """
    ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    pass


def _rollback(conn):
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass              # no transaction was active: the original error is what matters


def _store_error(e: sqlite3.Error, path) -> StoreError:
    text = str(e)
    if "full" in text:
        return StoreError(f"the disk holding {path} is full ({text}); free some space — "
                          "nothing of this step was written")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path} cannot be written ({text})")
    if "malformed" in text or "not a database" in text:
        return StoreError(f"{path} is damaged ({text}); copy it away and set HFLAB_HOME to a "
                          "new folder")
    return StoreError(f"{path}: {text}")


class _as_store_error:
    """Context manager: SQLite errors become one-line :class:`StoreError`s."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if isinstance(value, sqlite3.Error):
            raise _store_error(value, self.path) from None
        return False


# ----------------------------------------------------------------------------- cells
def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.bool_,)):
        return bool(o)
    raise TypeError(type(o).__name__)


def _finite_or_none(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _json_list(a) -> str:
    # NaN/inf are not JSON: store them as null and read back as NaN
    return json.dumps([None if not math.isfinite(float(x)) else float(x) for x in np.asarray(a)])


def _from_json_list(text) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in json.loads(text)], np.float64)

"""SQLite run store: runs, per-step metrics, CG traces and checkpoints.

Location: ``$HFLAB_HOME/hflab.sqlite`` (default ``./runs``); checkpoints are ``.npz`` files in
``checkpoints/`` beside it, written atomically (temporary file + ``os.replace``).  The database is
in WAL mode, so the app's pages read while worker threads and CLI processes write; every write is
one short transaction, so a killed process loses at most the step it was writing.  Commits sync at
WAL checkpoints (a power cut may lose the last metric rows), a checkpoint's row at once (durable).

Schema versions are ``PRAGMA user_version``; :data:`MIGRATIONS` take a store from version *i* to
*i + 1*, applied in order on open.  Reads return pandas DataFrames.  Bundles (export/import of
runs as zip files) live in :mod:`hflab.bundles`; :meth:`Store.insert_runs` is an import's one
transaction.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import (METRIC_COLUMNS, MIGRATIONS, SCHEMA_VERSION, STATUSES, StoreError,
                     _as_store_error, _finite_or_none, _from_json_list, _json_default,
                     _json_list, _rollback, _store_error)

LEASE_SECONDS = 120.0     # a writer on another host is presumed dead after this much silence
KEEP_CHECKPOINTS = 16     # checkpoints kept per run before older ones are thinned by halves


def default_home() -> Path:
    return Path(os.environ.get("HFLAB_HOME") or "runs")


class Store:
    """One SQLite file.  Safe to share between threads (one connection, serialised by a lock);
    separate processes and separate ``Store`` objects coordinate through SQLite's WAL locking."""

    def __init__(self, home: str | os.PathLike | None = None):
        """``home`` is the store's folder, or the path of a ``.sqlite`` file inside one."""
        given = Path(home) if home is not None else default_home()
        self.path = given if given.suffix == ".sqlite" else given / "hflab.sqlite"
        self.home = self.path.parent
        self.checkpoint_dir = self.home / "checkpoints"
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store folder {self.home}: {e.strerror}") from None
        self._check_file()
        self._lock = threading.RLock()
        self.read_only = self.path.exists() and not (os.access(self.path, os.W_OK) and
                                                     os.access(self.home, os.W_OK))
        try:
            if self.read_only:     # list, show and export still work; writes say why they fail
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True,
                                             check_same_thread=False, isolation_level=None)
            else:
                self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False,
                                             isolation_level=None)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._conn.execute("PRAGMA busy_timeout=30000")
            self._check_integrity()
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a usable HF Lab run store: {e}") from None

    def _check_integrity(self):
        """``PRAGMA quick_check`` on open: damage inside the file is reported, not ignored."""
        rows = [r[0] for r in self._conn.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            raise StoreError(f"{self.path} is damaged ({'; '.join(rows[:3])}); copy it away and "
                             "recover the runs you need with `sqlite3 .recover`, or set "
                             "HFLAB_HOME to a new folder")

    def _check_file(self):
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                head = fh.read(16)
            if head != b"SQLite format 3\x00":
                raise StoreError(f"{self.path} is not an HF Lab run store (not an SQLite "
                                 "database); move it away or set HFLAB_HOME to another folder")

    def _migrate(self):
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if self.read_only:
                if version != SCHEMA_VERSION:
                    raise StoreError(f"{self.path} is read-only and needs a schema upgrade "
                                     f"(version {version} → {SCHEMA_VERSION})")
                return
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {version}, newer than this "
                                 f"HF Lab ({SCHEMA_VERSION}); upgrade HF Lab to open it")
            if version > 0:
                tables = {r[0] for r in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
                if "runs" not in tables:
                    raise StoreError(f"{self.path} is an SQLite file but not an HF Lab run store")
            elif self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path} is an SQLite database of another application, "
                                 "not an HF Lab run store")
            for v in range(version, SCHEMA_VERSION):
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in MIGRATIONS[v].split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {v + 1}")
                    self._conn.execute("COMMIT")
                except Exception:
                    self._conn.execute("ROLLBACK")
                    raise

    def close(self):
        with self._lock:
            self._conn.close()

    def _execute(self, sql, params=()):
        if not sql.lstrip().upper().startswith("SELECT"):
            self._writable()
        with self._lock, _as_store_error(self.path):
            return self._conn.execute(sql, params)

    def _writable(self):
        if self.read_only:
            raise StoreError(f"the run store {self.path} is read-only (no write permission on "
                             "it or its folder): runs can be listed, shown and exported, not "
                             "written")

    def _transaction(self, statements, durable: bool = False):
        self._writable()
        with self._lock:
            try:
                self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._conn.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                _rollback(self._conn)
                raise _store_error(e, self.path) from None
            except Exception:
                _rollback(self._conn)
                raise

    # -- runs -----------------------------------------------------------------------------
    def create_run(self, config, status: str = "queued", device: str = "",
                   owner: str = "") -> int:
        self._writable()
        cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        with self._lock, _as_store_error(self.path):
            cur = self._conn.execute(
                "INSERT INTO runs (name, config, task, optimizer, seed, status, device, created, "
                "pid, host, heartbeat, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (cfg.get("name", ""), json.dumps(cfg, sort_keys=True), cfg["task"],
                 cfg["optimizer"], int(cfg.get("seed", 0)), status, device, time.time(),
                 os.getpid(), socket.gethostname(), time.time(), owner))
            return int(cur.lastrowid)

    def set_owner(self, run_id: int, owner: str):
        """Hand the run to ``owner`` (:mod:`hflab.ownership`: a take-over)."""
        self._execute("UPDATE runs SET owner=? WHERE id=?", (owner, run_id))

    def set_status(self, run_id: int, status: str, error: str = ""):
        if status not in STATUSES:
            raise ValueError(f"status {status!r} not in {STATUSES}")
        now = time.time()
        if status in ("running", "queued"):      # this process takes the run's lease
            self._execute("UPDATE runs SET status=?, error='', started=CASE WHEN ?='running' "
                          "THEN COALESCE(started, ?) ELSE started END, finished=NULL, pid=?, "
                          "host=?, heartbeat=? WHERE id=?",
                          (status, status, now, os.getpid(), socket.gethostname(), now, run_id))
        else:
            self._execute("UPDATE runs SET status=?, error=?, finished=? WHERE id=?",
                          (status, error, now if status not in ("queued",) else None, run_id))

    def set_device(self, run_id: int, device: str):
        self._execute("UPDATE runs SET device=? WHERE id=?", (device, run_id))

    def get_run(self, run_id: int) -> dict:
        with self._lock:
            cur = self._conn.execute("SELECT * FROM runs WHERE id=?", (run_id,))
            row = cur.fetchone()
            if row is None:
                raise KeyError(f"no run with id {run_id}")
            out = dict(zip([c[0] for c in cur.description], row))
        out["config"] = json.loads(out["config"])
        return out

    def runs(self, status: str | None = None) -> pd.DataFrame:
        sql = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + " ORDER BY id"
        with self._lock:
            df = pd.read_sql_query(sql, self._conn, params=(status,) if status else ())
        return df

    def delete_run(self, run_id: int):
        paths = [r[0] for r in self._execute("SELECT path FROM checkpoints WHERE run_id=?",
                                             (run_id,)).fetchall()]
        self._transaction([("DELETE FROM metrics WHERE run_id=?", (run_id,)),
                           ("DELETE FROM cg_traces WHERE run_id=?", (run_id,)),
                           ("DELETE FROM checkpoints WHERE run_id=?", (run_id,)),
                           ("DELETE FROM runs WHERE id=?", (run_id,))])
        for p in paths:
            try:
                (self.home / p).unlink()
            except FileNotFoundError:
                pass

    def heartbeat(self, run_ids):
        """Renew the lease of runs this process writes (every step, and on a timer while a
        phase such as compiling takes long)."""
        ids = [int(i) for i in run_ids]
        if ids and not self.read_only:
            self._execute(f"UPDATE runs SET heartbeat=? WHERE id IN ({','.join('?' * len(ids))})"
                          " AND pid=? AND host=?", (time.time(), *ids, os.getpid(),
                                                    socket.gethostname()))

    def writer_alive(self, pid, host, heartbeat) -> bool:
        """The lease holds: on this host its process exists; on another host (a shared store)
        its heartbeat is younger than :data:`LEASE_SECONDS`."""
        if host == socket.gethostname():
            return pid is not None and _pid_alive(pid)
        return heartbeat is not None and time.time() - float(heartbeat) < LEASE_SECONDS

    def mark_dead_runs_interrupted(self) -> list[int]:
        """Runs left ``running``/``queued`` by a writer whose lease lapsed → ``interrupted`` (so
        they can be resumed or deleted: the next writer takes the lease over)."""
        rows = self._execute("SELECT id, pid, host, heartbeat FROM runs WHERE status IN "
                             "('running','queued')").fetchall()
        dead = [run_id for run_id, pid, host, beat in rows
                if not self.writer_alive(pid, host, beat)]
        for run_id in dead:
            self.set_status(run_id, "interrupted", "the process running it ended unexpectedly")
        return dead

    # -- steps ----------------------------------------------------------------------------
    def log_step(self, run_id: int, record: dict, trace: dict | None = None):
        """Store one update's metrics (and its CG trace) in a single transaction."""
        step = int(record["step"])
        cols = [_finite_or_none(record.get(c)) if c in ("wall_seconds", "train_loss",
                                                         "train_error", "test_loss",
                                                         "test_error")
                else (None if record.get(c) is None else int(record[c])) for c in METRIC_COLUMNS]
        extra = {k: v for k, v in record.items() if k not in METRIC_COLUMNS and k != "step"}
        extra = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in extra.items()}
        statements = [(
            "INSERT OR REPLACE INTO metrics (run_id, step, " + ", ".join(METRIC_COLUMNS) +
            ", extra) VALUES (" + ",".join("?" * (len(METRIC_COLUMNS) + 3)) + ")",
            (run_id, step, *cols, json.dumps(extra, default=_json_default)))]
        if trace is not None:
            statements.append((
                "INSERT OR REPLACE INTO cg_traces VALUES (?,?,?,?,?,?,?)",
                (run_id, step, _json_list(trace["residual_norms"]),
                 _json_list(trace["quad_values"]), json.dumps(list(trace["saved_iters"])),
                 int(trace["backtrack_index"]), str(trace["stop_reason"]))))
        statements.append(("UPDATE runs SET heartbeat=?, steps_done=MAX(steps_done, ?) "
                           "WHERE id=?", (time.time(), step, run_id)))
        self._transaction(statements)

    def log_spectra(self, run_id: int, step: int, payload: dict):
        """Store one checkpoint's curvature-instrument results (:mod:`hflab.core.spectra`)."""
        self._transaction([("INSERT OR REPLACE INTO spectra VALUES (?,?,?)",
                            (run_id, int(step), json.dumps(payload, default=_json_default)))])

    def spectra(self, run_id: int, after: int = -1) -> list[tuple[int, dict]]:
        """``[(step, payload)]`` of the run's checkpoints after step ``after``, in order."""
        rows = self._execute("SELECT step, payload FROM spectra WHERE run_id=? AND step>? "
                             "ORDER BY step", (int(run_id), int(after))).fetchall()
        return [(int(step), json.loads(text)) for step, text in rows]

    def truncate_after(self, run_id: int, step: int):
        """Drop steps after ``step`` (a resume from a checkpoint rewrites them)."""
        self._transaction([("DELETE FROM metrics WHERE run_id=? AND step>?", (run_id, step)),
                           ("DELETE FROM cg_traces WHERE run_id=? AND step>?", (run_id, step)),
                           ("DELETE FROM spectra WHERE run_id=? AND step>?", (run_id, step)),
                           ("UPDATE runs SET steps_done=? WHERE id=?", (step, run_id))])

    def metrics(self, run_ids, after: dict | None = None) -> pd.DataFrame:
        """Metric rows of ``run_ids``; with ``after`` ({run: step}) only the rows past it."""
        ids = [run_ids] if isinstance(run_ids, (int, np.integer)) else list(run_ids)
        if not ids:
            return pd.DataFrame(columns=["run_id", "step", *METRIC_COLUMNS])
        after = after or {}
        sql = ("SELECT * FROM metrics WHERE " + " OR ".join(["(run_id=? AND step>?)"] * len(ids))
               + " ORDER BY run_id, step")
        with self._lock:
            df = pd.read_sql_query(sql, self._conn, params=[v for i in ids for v in (
                int(i), int(after.get(int(i), -1)))])
        if df.empty:
            return df.drop(columns=["extra"])
        extra = pd.DataFrame([json.loads(e) for e in df.pop("extra")], index=df.index)
        df = pd.concat([df, extra], axis=1)
        for c in ("train_loss", "train_error", "test_loss", "test_error", "wall_seconds"):
            df[c] = df[c].astype(float)
        return df

    def final_metrics(self) -> pd.DataFrame:
        """Every run's newest step: ``run_id``, ``step``, ``train_loss``, ``wall_seconds``."""
        with self._lock:
            return pd.read_sql_query(
                "SELECT m.run_id, m.step, m.train_loss, m.wall_seconds FROM metrics m JOIN "
                "(SELECT run_id, MAX(step) AS step FROM metrics GROUP BY run_id) last "
                "ON m.run_id = last.run_id AND m.step = last.step", self._conn)

    def cg_traces(self, run_id: int, steps=None) -> pd.DataFrame:
        sql = "SELECT * FROM cg_traces WHERE run_id=?"
        params: list = [run_id]
        if steps is not None:
            steps = list(steps)
            sql += " AND step IN (" + ",".join("?" * len(steps)) + ")"
            params += [int(s) for s in steps]
        with self._lock:
            df = pd.read_sql_query(sql + " ORDER BY step", self._conn, params=params)
        df["residual_norms"] = df["residual_norms"].map(_from_json_list)
        df["quad_values"] = df["quad_values"].map(_from_json_list)
        df["saved_iters"] = df["saved_iters"].map(json.loads)
        return df

    def trace_steps(self, run_id: int) -> list[int]:
        return [r[0] for r in self._execute(
            "SELECT step FROM cg_traces WHERE run_id=? ORDER BY step", (run_id,)).fetchall()]

    # -- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, run_id: int, step: int, leaves: dict[str, np.ndarray]):
        """Write ``leaves`` (name → array) to ``checkpoints/run{id}-step{step}.npz`` atomically
        and record it; older checkpoints of the run are removed once the new one is in place."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        rel = f"checkpoints/run{run_id}-step{step}.npz"
        final = self.home / rel
        fd, tmp = tempfile.mkstemp(prefix=f".run{run_id}-", suffix=".npz.tmp",
                                   dir=self.checkpoint_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **leaves)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        # keep the newest two (a damaged newest still leaves one to resume from) and, for the
        # loss slices of past updates, older ones thinned by halves beyond KEEP_CHECKPOINTS
        rows = self._execute("SELECT step, path FROM checkpoints WHERE run_id=? AND step<>? "
                             "ORDER BY step DESC", (run_id, step)).fetchall()
        old = rows[1::2] if len(rows) + 1 > KEEP_CHECKPOINTS else []
        self._transaction([("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?)",
                            (run_id, step, rel, time.time()))] +
                          [("DELETE FROM checkpoints WHERE run_id=? AND step=?", (run_id, st))
                           for st, _ in old], durable=True)
        for _, p in old:
            try:
                (self.home / p).unlink()
            except FileNotFoundError:
                pass

    def checkpoint_steps(self, run_id: int) -> list[int]:
        return [int(r[0]) for r in self._execute(
            "SELECT step FROM checkpoints WHERE run_id=? ORDER BY step", (run_id,)).fetchall()]

    def latest_checkpoint(self, run_id: int, step: int | None = None) -> tuple[int, dict] | None:
        """The newest *readable* checkpoint ``(step, arrays)`` (or the one of ``step``); damaged
        or missing files are skipped (see :meth:`checkpoint_notes`), ``None`` when none can be
        read."""
        self.checkpoint_notes = []
        rows = self._execute("SELECT step, path FROM checkpoints WHERE run_id=? AND step=coalesce"
                             "(?, step) ORDER BY step DESC", (run_id, step)).fetchall()
        for step, rel in rows:
            try:
                with np.load(self.home / rel) as data:
                    return int(step), {k: data[k] for k in data.files}
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
                self.checkpoint_notes.append(f"checkpoint at step {step} unreadable "
                                             f"({type(e).__name__})")
        return None

    def remove_orphan_temporaries(self, run_id: int) -> int:
        """Delete half-written checkpoint files of a run that has no live writer."""
        count = 0
        for tmp in self.checkpoint_dir.glob(f".run{run_id}-*.npz.tmp"):
            try:
                tmp.unlink()
                count += 1
            except OSError:
                pass
        return count

    # -- imported runs --------------------------------------------------------------------
    def insert_runs(self, runs: list[dict], metrics: dict, traces: dict,
                    spectra: dict | None = None) -> list[int]:
        """Add already-validated runs in ONE transaction; returns their new ids.

        ``runs`` are dicts of the runs table's columns (without ``id``); ``metrics[i]`` and
        ``traces[i]`` are the metric / CG-trace rows of ``runs[i]`` (``step`` + columns, metrics
        with an ``extra`` dict).  On any error nothing is written.
        """
        new_ids = []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for i, r in enumerate(runs):
                    cols = list(r)
                    cur = self._conn.execute(
                        f"INSERT INTO runs ({', '.join(cols)}) VALUES "
                        f"({','.join('?' * len(cols))})", [r[c] for c in cols])
                    new_id = int(cur.lastrowid)
                    new_ids.append(new_id)
                    for row in metrics.get(i, []):
                        self._conn.execute(
                            "INSERT INTO metrics VALUES (" + ",".join("?" * (len(METRIC_COLUMNS)
                                                                           + 3)) + ")",
                            (new_id, row["step"], *[row.get(c) for c in METRIC_COLUMNS],
                             json.dumps(row["extra"], default=_json_default)))
                    for row in traces.get(i, []):
                        self._conn.execute(
                            "INSERT INTO cg_traces VALUES (?,?,?,?,?,?,?)",
                            (new_id, row["step"], row["residual_norms"], row["quad_values"],
                             row["saved_iters"], row["backtrack_index"], row["stop_reason"]))
                    for step, payload in (spectra or {}).get(i, []):
                        self._conn.execute("INSERT INTO spectra VALUES (?,?,?)",
                                           (new_id, step, json.dumps(payload)))
                self._conn.execute("COMMIT")
            except Exception:
                self._conn.execute("ROLLBACK")
                raise
        return new_ids


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed child not yet reaped) is dead for our purposes
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True

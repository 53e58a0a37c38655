"""Run bundles: export runs to a zip file and import them into another store.

A bundle holds ``manifest.json`` (format, version, table format, run ids), the runs, metrics,
CG-trace and curvature-profile tables as CSV or Parquet, the data sets the runs were trained on
and each run's newest checkpoint (so an imported run exports its trained model).  Import validates the *whole* bundle before anything is
written — manifest, member sizes (:data:`MAX_MEMBER_BYTES`), compression method, JSON depth,
every run's configuration through :func:`hflab.config.validate`, every metric and trace cell by
type, text lengths and row counts — and then adds every run in one transaction
(:meth:`hflab.store.Store.insert_runs`).  Anything wrong rejects the bundle whole, with the reason.
"""
from __future__ import annotations

import io
import json
import math
import re
import sqlite3
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import datasets
from .config import ConfigError, RunConfig
from .ownership import IMPORT
from .store import METRIC_COLUMNS, STATUSES, Store

BUNDLE_FORMAT = "hflab-bundle"
BUNDLE_VERSION = 1
MAX_MEMBER_BYTES = 64 * 2 ** 20     # uncompressed size of one table
MAX_ROWS = 2_000_000                # rows of one table
MAX_TEXT = 10_000                   # characters of a run's name, error or device text
MAX_JSON_DEPTH = 8
TABLES = ("runs", "metrics", "cg_traces")
OPTIONAL_TABLES = ("spectra",)      # absent from bundles written before the curvature instrument
MAX_PAYLOAD = 200_000               # characters of one checkpoint's curvature results


class BundleError(ValueError):
    """A bundle that cannot be imported; nothing was written."""


# ----------------------------------------------------------------------------- export
def _trace_cell(a) -> str:
    return json.dumps([None if isinstance(x, float) and not math.isfinite(x) else x
                       for x in np.asarray(a).tolist()])


def export(store: Store, run_ids, path, fmt: str = "csv") -> Path:
    """Write the runs, their metrics and CG traces to a zip bundle (CSV or Parquet tables)."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"export format {fmt!r}; allowed: 'csv', 'parquet'")
    ids = [int(i) for i in run_ids]
    runs = store.runs()
    runs = runs[runs["id"].isin(ids)]
    missing = sorted(set(ids) - set(runs["id"]))
    if missing:
        raise KeyError(f"no run with id {missing[0]}")
    traces = pd.concat([store.cg_traces(i).assign(run_id=i) for i in ids], ignore_index=True)
    for col in ("residual_norms", "quad_values", "saved_iters"):
        if col in traces:
            traces[col] = traces[col].map(_trace_cell)
    spectra = pd.DataFrame([{"run_id": i, "step": step, "payload": json.dumps(payload)}
                            for i in ids for step, payload in store.spectra(i)],
                           columns=["run_id", "step", "payload"])
    tables = {"runs": runs, "metrics": store.metrics(ids), "cg_traces": traces,
              "spectra": spectra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps({
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "table_format": fmt,
            "runs": ids, "created": time.time()}))
        for name, df in tables.items():
            buf = io.BytesIO()
            df.to_csv(buf, index=False) if fmt == "csv" else df.to_parquet(buf, index=False)
            zf.writestr(f"{name}.{fmt}", buf.getvalue())
        for ds_id in sorted({json.loads(c).get("data") or "" for c in runs["config"]} - {""}):
            zf.writestr(f"datasets/{ds_id}.npz", datasets.stored_bytes(ds_id))
        for i in ids:              # the newest checkpoint: an imported run keeps its weights
            ck = store.latest_checkpoint(i)
            if ck is not None:
                buf = io.BytesIO()
                np.savez(buf, **ck[1])
                zf.writestr(f"checkpoints/{i}-step{ck[0]}.npz", buf.getvalue())
    return path


_CHECKPOINT = re.compile(r"checkpoints/(-?\d+)-step(\d+)\.npz")
_LEAF = re.compile(r"(leaf_\d{5}|counter_\w{1,40}|curriculum_\w{1,40})")


def _checkpoints(zf: zipfile.ZipFile) -> dict[int, tuple[int, dict]]:
    """Bundled checkpoints by the run id they belong to: ``{id: (step, arrays)}``; plain numeric
    arrays under the lab's own names only (no pickles)."""
    out = {}
    for name in zf.namelist():
        m = _CHECKPOINT.fullmatch(name)
        if not m:
            continue
        try:
            with np.load(io.BytesIO(_member(zf, name)), allow_pickle=False) as data:
                leaves = {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise BundleError(f"{name} unreadable ({e})") from None
        bad = [k for k, a in leaves.items() if not _LEAF.fullmatch(k) or a.dtype.kind not in
               "fiub"]
        if bad:
            raise BundleError(f"{name}: array {bad[0]!r} is not a checkpoint array of HF Lab")
        out[int(m.group(1))] = (_required_step(int(m.group(2)), name), leaves)
    return out


def _datasets(zf: zipfile.ZipFile) -> list:
    """The data sets a bundle carries, each checked against its id (made known to this process
    so the configs that name them validate; written only once the whole bundle is valid)."""
    out = []
    for name in zf.namelist():
        if name.startswith("datasets/"):
            ds_id = name[len("datasets/"):].removesuffix(".npz")
            try:
                ds = datasets.load_bytes(_member(zf, name), ds_id)
            except datasets.DataError as e:
                raise BundleError(str(e)) from None
            datasets.register(ds)
            out.append(ds)
    return out


# ----------------------------------------------------------------------------- reading
def _json_depth(text: str) -> int:
    """Nesting depth of a JSON text, without parsing it (a deep text would recurse)."""
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _loads(text, what: str):
    if not isinstance(text, str):
        raise BundleError(f"{what}: expected JSON text, found {type(text).__name__}")
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise BundleError(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError as e:
        raise BundleError(f"{what}: not valid JSON ({e})") from None


def _member(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise BundleError(f"no {name} — not an HF Lab export bundle") from None
    if info.flag_bits & 0x1:
        raise BundleError(f"{name} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError(f"{name} uses compression method {info.compress_type}; bundles use "
                          "stored or deflated members")
    if info.file_size > MAX_MEMBER_BYTES:
        raise BundleError(f"{name} is {info.file_size:,} bytes; at most {MAX_MEMBER_BYTES:,}")
    try:
        data = zf.read(name)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as e:
        raise BundleError(f"{name} unreadable ({e})") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise BundleError(f"{name} is larger than {MAX_MEMBER_BYTES:,} bytes")
    return data


def _manifest(zf: zipfile.ZipFile) -> str:
    raw = _member(zf, "manifest.json")
    manifest = _loads(raw.decode("utf-8", "replace"), "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise BundleError(f"manifest format is {found!r}, expected {BUNDLE_FORMAT!r}")
    if manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"bundle version {manifest.get('version')!r} is not supported (this "
                          f"HF Lab reads version {BUNDLE_VERSION})")
    fmt = manifest.get("table_format")
    if fmt not in ("csv", "parquet"):
        raise BundleError(f"table format {fmt!r} unknown")
    return fmt


def _tables(zf: zipfile.ZipFile, fmt: str) -> dict[str, pd.DataFrame]:
    tables = {}
    present = set(zf.namelist())
    for name in TABLES + OPTIONAL_TABLES:
        if name in OPTIONAL_TABLES and f"{name}.{fmt}" not in present:
            tables[name] = pd.DataFrame()
            continue
        raw = _member(zf, f"{name}.{fmt}")
        try:
            df = (pd.read_csv(io.BytesIO(raw)) if fmt == "csv"
                  else pd.read_parquet(io.BytesIO(raw)))
        except pd.errors.EmptyDataError:
            df = pd.DataFrame()
        except Exception as e:  # noqa: BLE001 — any parse failure means a corrupt table
            raise BundleError(f"table {name}.{fmt} unreadable ({e})") from None
        if len(df) > MAX_ROWS:
            raise BundleError(f"table {name} has {len(df):,} rows; at most {MAX_ROWS:,}")
        tables[name] = df
    return tables


# ----------------------------------------------------------------------------- validating
def _absent(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _number(v, what: str, integer: bool = False):
    """A cell as int / float / None; text or other types reject the bundle."""
    if _absent(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and not integer:
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    raise BundleError(f"{what}: {str(v)[:40]!r} is not a {'whole ' if integer else ''}number")


def _text(v, what: str) -> str:
    if _absent(v):
        return ""
    text = str(v)
    if len(text) > MAX_TEXT:
        raise BundleError(f"{what}: {len(text):,} characters; at most {MAX_TEXT:,}")
    return text


def _run_row(r: pd.Series, i: int) -> dict:
    cfg = _loads(r["config"], f"run {i}'s config")
    try:
        config = RunConfig.from_dict(cfg).validate()
    except ConfigError as e:
        raise BundleError(f"run {i}'s configuration is invalid ({e})") from None
    status = str(r["status"]) if str(r["status"]) in STATUSES else "interrupted"
    return {"name": _text(r.get("name"), f"run {i} name"), "config": config.to_json(),
            "task": config.task, "optimizer": config.optimizer, "seed": config.seed,
            "status": "interrupted" if status in ("running", "queued") else status,
            "error": _text(r.get("error"), f"run {i} error"),
            "device": _text(r.get("device"), f"run {i} device"),
            "created": _number(r.get("created"), f"run {i} created") or time.time(),
            "started": _number(r.get("started"), f"run {i} started"),
            "finished": _number(r.get("finished"), f"run {i} finished"),
            "steps_done": _number(r.get("steps_done", 0), f"run {i} steps_done", True) or 0,
            "owner": IMPORT}


def _required_step(v, what: str) -> int:
    step = _number(v, what + " step", integer=True)
    if step is None or isinstance(step, bool) or not 0 <= step <= 10_000_000:
        raise BundleError(f"{what}: step {str(v)[:40]!r} is not a whole number in [0, 10000000]")
    return step


def _metric_row(row: pd.Series, i: int) -> dict:
    what = f"run {i} metrics step {row.get('step')}"
    out = {"step": _required_step(row["step"], what), "extra": {}}
    for c in METRIC_COLUMNS:
        out[c] = _number(row.get(c), f"{what} {c}", integer=c.startswith("n_"))
    for k, v in row.items():
        if k in ("run_id", "step", *METRIC_COLUMNS) or _absent(v):
            continue
        out["extra"][str(k)] = (_text(v, f"{what} {k}") if isinstance(v, str)
                                else _number(v, f"{what} {k}"))
    return out


def _trace_list(text, what: str, integer: bool = False) -> str:
    values = _loads(text, what)
    if not isinstance(values, list) or not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        raise BundleError(f"{what}: expected a list of numbers")
    if integer and not all(isinstance(v, int) for v in values):
        raise BundleError(f"{what}: expected whole numbers")
    return json.dumps(values)


def _trace_row(row: pd.Series, i: int) -> dict:
    what = f"run {i} CG trace step {row.get('step')}"
    bt = _number(row["backtrack_index"], f"{what} backtrack_index", True)
    if bt is None or isinstance(bt, bool):
        raise BundleError(f"{what}: backtrack_index {row['backtrack_index']!r} is not a whole "
                          "number")
    return {"step": _required_step(row["step"], what),
            "residual_norms": _trace_list(row["residual_norms"], f"{what} residual_norms"),
            "quad_values": _trace_list(row["quad_values"], f"{what} quad_values"),
            "saved_iters": _trace_list(row["saved_iters"], f"{what} saved_iters", True),
            "backtrack_index": bt,
            "stop_reason": _text(row["stop_reason"], f"{what} stop_reason")}


def _spectra_row(row: pd.Series, i: int) -> tuple[int, dict]:
    what = f"run {i} spectra step {row.get('step')}"
    text = row["payload"]
    payload = _loads(text, what) if isinstance(text, str) and len(text) <= MAX_PAYLOAD else None
    if not isinstance(payload, dict):
        raise BundleError(f"{what}: expected a JSON object of at most {MAX_PAYLOAD:,} characters")
    return _required_step(row["step"], what), payload


def _rows_of(df: pd.DataFrame, run_id, need: set, what: str) -> pd.DataFrame:
    if df.empty:
        return df
    if not need <= set(df.columns):
        raise BundleError(f"{what} table lacks columns {sorted(need - set(df.columns))}")
    return df[df["run_id"] == run_id]


def import_bundle(store: Store, path) -> list[int]:
    """Add the runs of a bundle as new runs; returns their new ids.  Nothing is written unless
    the whole bundle validates."""
    path = Path(path)
    try:
        try:
            with zipfile.ZipFile(path) as zf:
                tables = _tables(zf, _manifest(zf))
                carried = _datasets(zf)
                checkpoints = _checkpoints(zf)
        except (zipfile.BadZipFile, OSError, ValueError, RecursionError) as e:
            if isinstance(e, BundleError):
                raise
            raise BundleError(f"not an HF Lab export bundle ({e})") from None
        runs = tables["runs"]
        need = {"id", "config", "task", "optimizer", "seed", "status"}
        if runs.empty or not need <= set(runs.columns):
            raise BundleError(f"runs table lacks columns {sorted(need - set(runs.columns)) or 'rows'}")
        rows, metrics, traces, spectra = [], {}, {}, {}
        ids = [_number(v, f"runs row {i + 1} id", integer=True) for i, v in enumerate(runs["id"])]
        if None in ids or len(set(ids)) != len(ids):
            raise BundleError("runs table: every run needs its own whole-number id")
        for i, (_, r) in enumerate(runs.iterrows()):
            rows.append(_run_row(r, ids[i]))
            m = _rows_of(tables["metrics"], r["id"], {"run_id", "step"}, "metrics")
            metrics[i] = [_metric_row(row, r["id"]) for _, row in m.iterrows()]
            t = _rows_of(tables["cg_traces"], r["id"],
                         {"run_id", "step", "residual_norms", "quad_values", "saved_iters",
                          "backtrack_index", "stop_reason"}, "cg_traces")
            traces[i] = [_trace_row(row, r["id"]) for _, row in t.iterrows()]
            s = _rows_of(tables["spectra"], r["id"], {"run_id", "step", "payload"}, "spectra")
            spectra[i] = [_spectra_row(row, r["id"]) for _, row in s.iterrows()]
            for what, steps in (("metrics", [row["step"] for row in metrics[i]]),
                                ("cg_traces", [row["step"] for row in traces[i]]),
                                ("spectra", [step for step, _ in spectra[i]])):
                if len(set(steps)) != len(steps):
                    raise BundleError(f"{what}: run {r['id']} lists a step twice")
    except BundleError as e:
        raise BundleError(f"{path.name}: {e}") from None
    for ds in carried:
        datasets.save(ds, store.home)
    try:
        new_ids = store.insert_runs(rows, metrics, traces, spectra)
    except sqlite3.IntegrityError as e:         # one transaction: nothing was written
        raise BundleError(f"{path.name}: rows conflict ({e})") from None
    try:
        for old, new in zip(ids, new_ids):
            if old in checkpoints:
                store.save_checkpoint(new, *checkpoints[old])
    except OSError as e:                        # all or nothing: the runs go again
        for new in new_ids:
            store.delete_run(new)
        raise BundleError(f"{path.name}: a checkpoint could not be written ({e})") from None
    return new_ids

"""Your own data: a CSV or NPZ file read, checked whole, and kept in the store's folder.

Formats
  CSV  a header row, then one row per case; comma-separated numbers.  ``targets`` names the
       target columns (header names or 0-based indices, comma-separated); every other column is
       an input.  No targets: an autoencoder of all the columns.
  NPZ  arrays ``x`` (cases × features), optional ``y`` (cases × outputs, or a vector of integer
       labels), optional ``x_test`` / ``y_test``.

The kind follows from the data: one target column of whole numbers ≥ 0 (or an integer ``y``
vector) → softmax classification over ``max + 1`` classes; no targets, or ``y`` equal to ``x`` →
autoencoder (squared error, the standardised inputs as targets); otherwise regression (squared
error).  Inputs are standardised with the *training* cases' mean and standard deviation
(constant columns are left centred); regression targets likewise.  Without a test set a seeded
20 % of the cases is held out (the run's seed picks it).

Each data set is identified by the first 16 hex digits of the SHA-256 of its arrays, stored as
``$HFLAB_HOME/datasets/<id>.npz`` (written atomically) and named by that id in the run's
configuration and in the URL, so resume, export and shared links find it again.  A file is refused
whole, with a message naming the row, column or array, before anything is written.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_BYTES = 50 * 2 ** 20        # the largest file accepted (50 MiB)
MAX_CELLS = 20_000_000          # cases × columns over all arrays
MAX_COLUMNS = 10_000
MAX_CLASSES = 1_000
ID_LENGTH = 16


class DataError(ValueError):
    """A data file that cannot be used, with the reason."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Arrays in float64 (``y`` already one-hot for classification) and what they are."""
    name: str
    kind: str                   # "classification" | "regression" | "autoencoder"
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    columns: tuple = ()         # CSV: (input columns, target columns) names

    @functools.cached_property
    def id(self) -> str:
        h = hashlib.sha256(self.kind.encode())
        for a in (self.x, self.y, self.x_test, self.y_test):
            h.update(b"-" if a is None else np.ascontiguousarray(a, np.float64).tobytes()
                     + str(a.shape).encode())
        return h.hexdigest()[:ID_LENGTH]

    @property
    def loss(self) -> str:
        return "softmax" if self.kind == "classification" else "squared"

    @property
    def metric(self) -> str:
        return {"classification": "classification", "regression": "mse"}.get(self.kind,
                                                                               "reconstruction")

    def summary(self) -> str:
        test = (f"{len(self.x_test)} given test cases" if self.x_test is not None
                else "a seeded 20 % held out for testing")
        what = {"classification": f"classification into {self.y.shape[1]} classes (softmax)",
                "regression": f"regression of {self.y.shape[1]} target(s) (squared error)",
                "autoencoder": "an autoencoder of the inputs (squared error)"}[self.kind]
        return (f"{self.name}: {len(self.x)} cases × {self.x.shape[1]} inputs, {what}; {test}. "
                "Inputs are standardised with the training cases' mean and standard deviation"
                + ("; so are the regression targets." if self.kind == "regression" else "."))


# ----------------------------------------------------------------------------- reading
def _check_finite(name, a):
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{name}: entry {idx} is {float(a[idx])}; every value must be a finite "
                        "number")


def _as_matrix(name, a, allow_vector=False) -> np.ndarray:
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{name}: dtype {a.dtype} is not numeric")
    if a.ndim == 1 and allow_vector:
        return a
    if a.ndim != 2:
        raise DataError(f"{name}: shape {a.shape} — expected (cases, features)")
    return a


def _labels_or_none(y) -> np.ndarray | None:
    """Integer class labels from a vector or one column of whole numbers ≥ 0, else None."""
    col = y if y.ndim == 1 else (y[:, 0] if y.shape[1] == 1 else None)
    if col is None or not np.all(col == np.round(col)) or col.min() < 0:
        return None
    if np.issubdtype(y.dtype, np.floating) and y.ndim == 2 and len(np.unique(col)) < 2:
        return None
    return col.astype(np.int64)


def _finish(name, x, y, x_test=None, y_test=None, columns=()) -> Dataset:
    """Infer the kind, one-hot the labels and check the shapes agree."""
    if len(x) < 2:
        raise DataError(f"{name}: {len(x)} case(s); at least 2 are needed (one to train on, one "
                        "to test)")
    if x.shape[1] < 1 or x.shape[1] > MAX_COLUMNS:
        raise DataError(f"{name}: {x.shape[1]} input columns; 1 to {MAX_COLUMNS} are allowed")
    cells = sum(a.size for a in (x, y, x_test, y_test) if a is not None)
    if cells > MAX_CELLS:
        raise DataError(f"{name}: {cells:,} values; at most {MAX_CELLS:,} are allowed")
    for label, a in (("x", x), ("y", y), ("x_test", x_test), ("y_test", y_test)):
        if a is not None:
            _check_finite(label, a)
    if y is not None and len(y) != len(x):
        raise DataError(f"y has {len(y)} cases but x has {len(x)}; they must match")
    if (x_test is None) != (y_test is None) and y is not None:
        raise DataError("give both x_test and y_test, or neither")
    if x_test is not None and x_test.shape[1] != x.shape[1]:
        raise DataError(f"x_test has {x_test.shape[1]} columns but x has {x.shape[1]}")
    if y_test is not None and len(y_test) != len(x_test):
        raise DataError(f"y_test has {len(y_test)} cases but x_test has {len(x_test)}")
    if y is None or (y.shape == x.shape and np.array_equal(y, x)):
        return Dataset(name, "autoencoder", x.astype(np.float64), x.astype(np.float64),
                       None if x_test is None else x_test.astype(np.float64),
                       None if x_test is None else x_test.astype(np.float64), columns)
    labels = _labels_or_none(y)
    test_labels = None if y_test is None else _labels_or_none(y_test)
    if labels is not None and (y_test is None or test_labels is not None):
        k = int(max(labels.max(), -1 if test_labels is None else test_labels.max())) + 1
        if k < 2 or k > MAX_CLASSES:
            raise DataError(f"y: {k} classes (labels 0..{k - 1}); 2 to {MAX_CLASSES} allowed")
        eye = np.eye(k)
        return Dataset(name, "classification", x.astype(np.float64), eye[labels],
                       None if x_test is None else x_test.astype(np.float64),
                       None if test_labels is None else eye[test_labels], columns)
    y2 = y.reshape(len(y), -1).astype(np.float64)
    if y_test is not None and y_test.reshape(len(y_test), -1).shape[1] != y2.shape[1]:
        raise DataError("y_test has a different number of target columns than y")
    return Dataset(name, "regression", x.astype(np.float64), y2,
                   None if x_test is None else x_test.astype(np.float64),
                   None if y_test is None else y_test.reshape(len(y_test), -1).astype(np.float64),
                   columns)


def _target_indices(targets: str, header: list[str]) -> list[int]:
    out = []
    for t in (s.strip() for s in targets.split(",")):
        if not t:
            continue
        if t in header:
            out.append(header.index(t))
        elif t.isascii() and t.isdigit() and int(t) < len(header):
            out.append(int(t))
        else:
            raise DataError(f"targets: {t!r} is not a column; columns are {header} (names or "
                            f"0-based indices)")
    if len(set(out)) != len(out):
        raise DataError(f"targets: {targets!r} names a column twice")
    if len(out) == len(header):
        raise DataError("targets: every column is a target; leave at least one input column")
    return out


def read_csv(data: bytes, name: str, targets: str = "") -> Dataset:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{name}: the file is empty; a header row and at least 2 data rows are "
                        "needed")
    header = [h.strip() for h in rows[0]]
    if len(header) == 1:
        for sep, word in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            if sep in rows[0][0]:
                raise DataError(f"{name}: the header is split by {word}, not commas; HF Lab reads"
                                " comma-separated files")
    if len(set(header)) != len(header) or any(not h for h in header):
        raise DataError(f"{name}: the header row needs a distinct, non-empty name per column; "
                        f"got {header[:20]}")
    cells = np.empty((len(rows) - 1, len(header)))
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{name}: row {i} has {len(row)} cells but the header has "
                            f"{len(header)}")
        for j, cell in enumerate(row):
            try:
                cells[i - 2, j] = float(cell) if cell.strip().lower() not in (
                    "", "nan", "inf", "-inf", "infinity", "-infinity") else np.nan
            except ValueError:
                raise DataError(f"{name}: row {i}, column {header[j]!r}: {cell[:40]!r} is not a "
                                "number") from None
            if not np.isfinite(cells[i - 2, j]):
                raise DataError(f"{name}: row {i}, column {header[j]!r}: {cell[:40]!r} — missing "
                                "or non-finite values are not allowed")
    t_idx = _target_indices(targets, header)
    x_idx = [j for j in range(len(header)) if j not in t_idx]
    y = cells[:, t_idx] if t_idx else None
    return _finish(name, cells[:, x_idx], y,
                   columns=(tuple(header[j] for j in x_idx), tuple(header[j] for j in t_idx)))


def read_npz(data: bytes, name: str) -> Dataset:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{name}: not a readable .npz file ({type(e).__name__}: "
                        f"{str(e)[:120]})") from None
    unknown = sorted(set(arrays) - {"x", "y", "x_test", "y_test"})
    if unknown or "x" not in arrays:
        raise DataError(f"{name}: arrays {sorted(arrays)}; expected x and optionally y, x_test, "
                        "y_test")
    x = _as_matrix("x", arrays["x"])
    y = arrays.get("y")
    y = None if y is None else _as_matrix("y", y, allow_vector=True)
    xt = arrays.get("x_test")
    xt = None if xt is None else _as_matrix("x_test", xt)
    yt = arrays.get("y_test")
    yt = None if yt is None else _as_matrix("y_test", yt, allow_vector=True)
    return _finish(name, x, y, xt, yt)


def read(data: bytes, name: str, targets: str = "") -> Dataset:
    """Read a CSV or NPZ file's bytes (the kind follows the name's extension)."""
    if len(data) > MAX_BYTES:
        raise DataError(f"{name}: {len(data) / 2 ** 20:.1f} MiB; at most "
                        f"{MAX_BYTES // 2 ** 20} MiB are accepted")
    suffix = Path(name).suffix.lower()
    if suffix == ".npz":
        if targets:
            raise DataError("targets: only for CSV files (an NPZ names its arrays x and y)")
        return read_npz(data, name)
    if suffix == ".csv":
        return read_csv(data, name, targets)
    raise DataError(f"{name}: unknown file type {suffix or '(none)'!r}; give a .csv or .npz file")


def read_path(path: str, targets: str = "") -> Dataset:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise DataError(f"{path}: {size / 2 ** 20:.1f} MiB; at most "
                            f"{MAX_BYTES // 2 ** 20} MiB are accepted")
        data = p.read_bytes()
    except OSError as e:
        raise DataError(f"data: cannot read {path!r} ({e.strerror or type(e).__name__})") from None
    return read(data, p.name, targets)


# ----------------------------------------------------------------------------- the store's copy
_KNOWN: dict[str, Dataset] = {}
_FOLDERS: list[Path] = []


def folders() -> list[Path]:
    """Where stored data sets are looked for: ``$HFLAB_HOME/datasets`` and every store opened
    by a :class:`hflab.lab.Lab` in this process."""
    from .store import default_home
    return [default_home() / "datasets"] + [f for f in _FOLDERS]


def add_folder(home) -> None:
    path = Path(home) / "datasets"
    if path not in _FOLDERS:
        _FOLDERS.append(path)


def register(ds: Dataset) -> str:
    """Make ``ds`` known to this process (validation needs it before anything is written)."""
    _KNOWN[ds.id] = ds
    return ds.id


def save(ds: Dataset, home) -> str:
    """Write ``ds`` to the store ``home``'s folder (atomically; a no-op if it is there); its id."""
    ds_id = register(ds)
    path = Path(home) / "datasets" / f"{ds_id}.npz"
    if path.exists():
        return ds_id
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(ds, k) for k in ("x", "y", "x_test", "y_test")
              if getattr(ds, k) is not None}
    meta = json.dumps({"name": ds.name, "kind": ds.kind, "columns": list(map(list, ds.columns))})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(meta), **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return ds_id


def load_bytes(data: bytes, ds_id: str) -> Dataset:
    """A stored data set from its file's bytes (also used by bundle import); checked whole."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test") if k in f.files}
        ds = Dataset(str(meta["name"])[:200], str(meta["kind"]), arrays["x"], arrays["y"],
                     arrays.get("x_test"), arrays.get("y_test"),
                     tuple(tuple(c) for c in meta.get("columns", ())))
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"dataset {ds_id}: unreadable ({type(e).__name__})") from None
    if ds.kind not in ("classification", "regression", "autoencoder") or ds.id != ds_id:
        raise DataError(f"dataset {ds_id}: its contents do not match its id")
    return ds


def get(ds_id: str) -> Dataset:
    """The data set ``ds_id``: known to this process, or read from the store's folder."""
    if ds_id in _KNOWN:
        return _KNOWN[ds_id]
    if not (isinstance(ds_id, str) and len(ds_id) == ID_LENGTH
            and all(c in "0123456789abcdef" for c in ds_id)):
        raise DataError(f"{str(ds_id)[:40]!r} is not a dataset id ({ID_LENGTH} hex digits)")
    data = _read_stored(ds_id)
    if data is None:
        raise DataError(f"dataset {ds_id} is not in this store (upload the file again or import "
                        "the bundle that carries it)")
    return _KNOWN.setdefault(ds_id, load_bytes(data, ds_id))


def _read_stored(ds_id: str) -> bytes | None:
    """The bytes of ``ds_id``'s file in the first store folder that has it, else None."""
    for path in (f / f"{ds_id}.npz" for f in folders()):
        try:
            return path.read_bytes()
        except OSError:
            continue
    return None


def stored_bytes(ds_id: str) -> bytes:
    """The stored file of ``ds_id`` (what an export bundle carries)."""
    get(ds_id)                   # checks the id (and the file, if not known yet)
    data = _read_stored(ds_id)
    if data is None:
        raise DataError(f"dataset {ds_id} is known but not stored in any store folder")
    return data


def keep(configs, home) -> None:
    """Store the data set of every ``custom`` config in ``home`` (before its run is created)."""
    for c in configs:
        if getattr(c, "data", ""):
            save(get(c.data), home)


def sizes(ds: Dataset) -> tuple[int, int]:
    """(total cases, default test cases): the given test set, or 20 % held out."""
    if ds.x_test is not None:
        return len(ds.x) + len(ds.x_test), len(ds.x_test)
    return len(ds.x), max(1, len(ds.x) // 5)


def split(ds: Dataset, seed: int, n_train: int, n_test: int):
    """((x, y), (x_test, y_test)) standardised with the training cases' statistics: the given
    test set, or the last ``n_test`` cases of a seeded permutation (train: the first
    ``n_train``)."""
    if ds.x_test is not None:
        x, y, xt, yt = ds.x[:n_train], ds.y[:n_train], ds.x_test[:n_test], ds.y_test[:n_test]
    else:
        perm = np.random.default_rng(seed).permutation(len(ds.x))
        tr, te = perm[:n_train], perm[len(perm) - n_test:]
        x, y, xt, yt = ds.x[tr], ds.y[tr], ds.x[te], ds.y[te]

    def standardiser(a):
        mean, std = a.mean(axis=0), a.std(axis=0)
        return lambda b: (b - mean) / np.where(std > 0, std, 1.0)
    sx = standardiser(x)
    if ds.kind == "autoencoder":
        return (sx(x), sx(x)), (sx(xt), sx(xt))
    if ds.kind == "regression":
        sy = standardiser(y)
        return (sx(x), sy(y)), (sx(xt), sy(yt))
    return (sx(x), y), (sx(xt), yt)

"""Generated hostile input at every door — CLI arguments, config files, URL query strings and
bundle members (hypothesis, derandomised so every run draws the same cases).

For each input: no traceback, a specific message (naming the field, the member or the value),
exit status 2 from the CLI, no new rows, and the store's integrity intact (PRAGMA quick_check).

By default each door gets :data:`EXAMPLES` cases (a sampled subset that fits CI); set
``HFLAB_HOSTILE_EXAMPLES`` (e.g. 150) for the long run; ``--hypothesis-show-statistics`` prints
how many inputs each door received.
"""
import io
import json
import os
import sqlite3
import zipfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hflab import bundles, cli
from hflab.view import formstate
from hflab.bundles import BundleError
from hflab.config import FIELDS, ConfigError, RunConfig, preset_config
from hflab.lab import run_to_store
from hflab.store import Store

EXAMPLES = int(os.environ.get("HFLAB_HOSTILE_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much, HealthCheck.too_slow])

NASTY_TEXT = ["", " ", "-", "--", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "0x10", "1_000",
              "١٢", "²", "3.5.1", "32--16", "-5", "10--5", "32-²", "[x](https://evil.example/)",
              "![t](https://evil.example/t.png)", "<script>alert(1)</script>", "{}", "[]", "null",
              "true", "\x00", "a" * 300, "9" * 400, "1e-400", "😀", "32,,16", "0", "-0.0"]


def integrity_ok(store_path) -> bool:
    if not store_path.exists():
        return True
    with sqlite3.connect(store_path) as conn:
        return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def row_count(home) -> int:
    path = home / "hflab.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def valid_config(data: dict) -> bool:
    try:
        RunConfig.from_dict({**data}).validate()
        return True
    except (ConfigError, ValueError):
        return False


# ----------------------------------------------------------------------------- CLI arguments
FLAGS = [name for name in FIELDS if name != "data"]


@st.composite
def bad_cli_args(draw):
    field = draw(st.sampled_from(FLAGS))
    value = draw(st.one_of(st.sampled_from(NASTY_TEXT),
                           st.text(min_size=0, max_size=40),
                           st.integers(-10 ** 12, -1).map(str),
                           st.floats(allow_nan=True, allow_infinity=True).map(repr)))
    return field, value


@SETTINGS
@given(case=bad_cli_args())
def test_cli_arguments(case, tmp_path, monkeypatch, capsys):
    field, value = case
    home = tmp_path / "home"
    monkeypatch.setenv("HFLAB_HOME", str(home))
    data = {**preset_config("seed-333").to_dict(), field: value}
    try:
        assume(not valid_config(RunConfig.from_dict(data).to_dict()))
    except ConfigError:
        pass                                       # not even coercible: certainly bad
    before = row_count(home)
    args = ["run", "--task", "seed-333", "--steps", "1", "--quiet",
            "--" + field.replace("_", "-"), value]
    try:
        code = cli.main(args)
    except SystemExit as e:                        # argparse itself (e.g. a value like '--')
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (field, value, err)
    assert "Traceback" not in err and err.strip(), (field, value)
    assert field.replace("_", "-") in err or field in err, (field, value, err)
    assert row_count(home) == before and integrity_ok(home / "hflab.sqlite")


# ----------------------------------------------------------------------------- config files
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10 ** 20, 10 ** 20),
              st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(NASTY_TEXT),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


@st.composite
def bad_config_files(draw):
    kind = draw(st.sampled_from(["fields", "not-object", "raw-bytes", "deep"]))
    if kind == "fields":
        keys = draw(st.lists(st.one_of(st.sampled_from(list(FIELDS)), st.text(max_size=12)),
                             min_size=1, max_size=4, unique=True))
        obj = {k: draw(JSON_VALUES) for k in keys}
        return json.dumps(obj).encode(), obj
    if kind == "not-object":
        return json.dumps(draw(st.one_of(st.lists(JSON_VALUES, max_size=3), st.text(),
                                         st.integers()))).encode(), None
    if kind == "deep":
        depth = draw(st.integers(50, 200_000))
        return ("[" * depth + "]" * depth).encode(), None
    return draw(st.binary(max_size=200)), None


@SETTINGS
@given(case=bad_config_files())
def test_config_files(case, tmp_path, monkeypatch, capsys):
    raw, obj = case
    if obj is not None:
        try:
            assume(not valid_config({"task": "seed-333", **obj}))
        except (ConfigError, TypeError):
            pass
    home = tmp_path / "home"
    monkeypatch.setenv("HFLAB_HOME", str(home))
    path = tmp_path / "config.json"
    path.write_bytes(raw)
    code = cli.main(["run", "--config", str(path), "--steps", "1", "--quiet", "--no-preset"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("error: "), (raw[:80], err)
    assert row_count(home) == 0 and integrity_ok(home / "hflab.sqlite")


# ----------------------------------------------------------------------------- URL queries
URL_KEYS = list(formstate.all_keys()) + ["run", "evil", "task"]


@st.composite
def bad_queries(draw):
    keys = draw(st.lists(st.sampled_from(URL_KEYS), min_size=1, max_size=5, unique=True))
    return {k: draw(st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=30))) for k in keys}


@SETTINGS
@given(query=bad_queries())
def test_url_queries(query):
    form, warnings = formstate.form_from_query(query)       # must never raise
    for w in warnings:
        assert w.startswith("URL: ") and len(w) < 2000
    # what the URL could not use is named; the form that results is always startable
    named = " ".join(warnings)
    for key, raw in query.items():
        if key not in ("run",) and key not in formstate.all_keys():
            assert repr(key) in named
    formstate.configs_from_form(form)
    # and the URL it writes back reproduces the same form
    again, more = formstate.form_from_query(formstate.query_from_form(form))
    assert again == form and more == []


# ----------------------------------------------------------------------------- bundle members
@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    src = Store(tmp / "src")
    cfg = preset_config("regression", layers="3", steps=2, n_train=16, n_test=8,
                        checkpoint_every=0)
    rid = src.create_run(cfg)
    run_to_store(src, rid, cfg)
    path = bundles.export(src, [rid], tmp / "good.zip")
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@st.composite
def bundle_mutations(draw):
    member = draw(st.sampled_from(["manifest.json", "runs.csv", "metrics.csv", "cg_traces.csv"]))
    how = draw(st.sampled_from(["cell", "bytes", "drop", "truncate", "json-field"]))
    return member, how, draw(st.sampled_from(NASTY_TEXT)), draw(st.binary(max_size=64)), \
        draw(st.integers(0, 10_000))


def _mutate(members: dict, member, how, text, blob, pos) -> dict:
    out = dict(members)
    data = out[member]
    if how == "drop":
        del out[member]
    elif how == "bytes":
        out[member] = blob
    elif how == "truncate":
        out[member] = data[:pos % max(len(data), 1)]
    elif how == "json-field" and member == "manifest.json":
        manifest = json.loads(data)
        key = sorted(manifest)[pos % len(manifest)]
        manifest[key] = text
        out[member] = json.dumps(manifest).encode()
    else:                                      # replace one CSV cell (or a JSON value's text)
        lines = data.decode().splitlines()
        if len(lines) < 2:
            out[member] = text.encode()
            return out
        import csv
        rows = list(csv.reader(io.StringIO(data.decode())))
        r = 1 + pos % (len(rows) - 1)
        c = (pos // 7) % len(rows[r])
        rows[r][c] = text
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        out[member] = buf.getvalue().encode()
    return out


@SETTINGS
@given(case=bundle_mutations())
def test_bundle_members(case, good_bundle, tmp_path):
    mutated = _mutate(good_bundle, *case)
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in mutated.items():
            zf.writestr(name, data)
    store = Store(tmp_path / "dst")
    before = len(store.runs())
    try:
        ids = bundles.import_bundle(store, path)
    except BundleError as e:
        assert str(e).startswith("hostile.zip: ") and len(str(e)) > len("hostile.zip: ") + 5
        assert len(store.runs()) == before
    else:
        # accepted only if what was stored is fully valid: every config validates
        for i in ids:
            RunConfig.from_dict(store.get_run(i)["config"]).validate()
        store.metrics(ids)
        store.cg_traces(ids[0])
    assert integrity_ok(store.path)
    store.close()


@pytest.mark.parametrize("spare_pages", [0, 6])
def test_a_full_disk_is_reported_as_a_full_disk(spare_pages, tmp_path, monkeypatch, capsys):
    """SQLite's page limit stands in for a full disk: with no room the run cannot be created;
    with a little room it starts and the disk fills while it logs.  Either way the CLI says the
    disk is full, in one line, exit status 2 or 1 — and the store stays intact."""
    home = tmp_path / "home"
    monkeypatch.setenv("HFLAB_HOME", str(home))
    original = Store.__init__

    def tight(self, *a, **kw):
        original(self, *a, **kw)
        pages = self._execute("PRAGMA page_count").fetchone()[0]
        self._execute(f"PRAGMA max_page_count = {pages + spare_pages}")
    monkeypatch.setattr(Store, "__init__", tight)
    code = cli.main(["run", "--task", "regression", "--layers", "8", "--steps", "400",
                     "--quiet", "--checkpoint-every", "0"])
    out = capsys.readouterr()
    text = out.err + out.out
    assert code in (1, 2) and "Traceback" not in text, text
    assert "is full" in text and "cannot rollback" not in text, text
    monkeypatch.setattr(Store, "__init__", original)
    assert integrity_ok(home / "hflab.sqlite")
    runs = Store(home).runs()
    # nothing half-written: no run, or one marked failed with the cause
    assert runs.empty or (len(runs) == 1 and runs["status"].iloc[0] == "failed"
                          and "is full" in runs["error"].iloc[0]), runs[["status", "error"]]
    print(text.strip().splitlines()[-1])

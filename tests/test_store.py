"""Run store: round trips, concurrency, checkpoints, bundles, crash safety and resume."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hflab.config import RunConfig, preset_config
from hflab.lab import Lab, run_to_store
from hflab import bundles
from hflab.bundles import BundleError
from hflab.store import Store, StoreError

ROOT = Path(__file__).resolve().parents[1]


def small(**kw):
    base = dict(task="seed-333", steps=6, damping=1.0, checkpoint_every=2, n_train=64, n_test=32)
    base.update(kw)
    return RunConfig.from_dict(base)


def test_round_trip_of_every_field(tmp_path, curvature_profiles):
    store = Store(tmp_path)
    cfg = small(optimizer="hf", name="round trip")
    run_id = store.create_run(cfg)
    records = []
    status = run_to_store(store, run_id, cfg, on_record=records.append)
    assert status == "finished"
    info = store.get_run(run_id)
    assert info["status"] == "finished" and info["name"] == "round trip"
    assert RunConfig.from_dict(info["config"]) == cfg
    assert info["device"] and info["finished"] >= info["started"] >= info["created"]
    m = store.metrics(run_id)
    assert list(m["step"]) == list(range(0, 7))         # update 0: the initial evaluation
    assert m["train_loss"].iloc[0] > m["train_loss"].iloc[-1]
    for rec, (_, row) in zip(records, m.iterrows()):
        for k, v in rec.items():
            if isinstance(v, float) and not np.isfinite(v):
                assert pd.isna(row[k])
            elif isinstance(v, float):
                assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-300), k
            else:
                assert row[k] == v, k
    traces = store.cg_traces(run_id)
    assert list(traces["step"]) == list(range(1, 7))
    t = traces.iloc[0]
    first = m[m["step"] == 1].iloc[0]
    assert len(t["residual_norms"]) == len(t["quad_values"]) == first["cg_iters"] + 1
    assert t["backtrack_index"] == first["backtrack_index"]
    assert t["stop_reason"] == first["cg_stop_reason"]
    ck = store.latest_checkpoint(run_id)
    assert ck is not None and ck[0] == 6
    assert store.checkpoint_steps(run_id) == [2, 4, 6]
    assert len(list((tmp_path / "checkpoints").glob("*.npz"))) == 3
    assert store.latest_checkpoint(run_id, step=4)[0] == 4
    # the curvature instrument: extremes at update 0 and every checkpoint, the profile at those
    # the monitor kept up with, the last one always
    assert m.dropna(subset=["spectrum_G_max"])["step"].tolist() == [0, 2, 4, 6]
    profiles = store.spectra(run_id)
    profiled = [step for step, _ in profiles]
    assert set(profiled) <= {0, 2, 4, 6} and profiled[-1] == 6
    kinds = profiles[-1][1]["kinds"]
    assert set(kinds) == {"G", "H"} and len(kinds["G"]["nodes"]) == 5
    names = [b[0] for b in kinds["G"]["blocks"]]
    assert names == [name for name, _, _ in cfg.model().parameter_blocks()]
    assert m.dropna(subset=["trace_G"])["step"].tolist() == profiled


def test_old_checkpoints_are_thinned_by_halves_keeping_the_newest_two(tmp_path):
    from hflab.store import KEEP_CHECKPOINTS
    store = Store(tmp_path)
    rid = store.create_run(small())
    for step in range(1, 41):
        store.save_checkpoint(rid, step, {"leaf_00000": np.full(3, float(step))})
        kept = store.checkpoint_steps(rid)
        assert len(kept) <= KEEP_CHECKPOINTS and kept[-1] == step
        assert step < 2 or kept[-2] == step - 1
    assert len(list((tmp_path / "checkpoints").glob("*.npz"))) == len(kept)
    assert kept[0] < 20                           # old updates stay reachable, thinned
    assert store.latest_checkpoint(rid, step=kept[0])[1]["leaf_00000"][0] == kept[0]
    assert store.latest_checkpoint(rid, step=kept[0] + 1000) is None


def test_four_concurrent_writers_lose_no_step(tmp_path):
    ids, threads = [], []
    for i, opt in enumerate(["hf", "sgd", "momentum", "adam"]):
        store = Store(tmp_path)              # separate connections, like separate workers
        cfg = small(optimizer=opt, steps=25, seed=i, checkpoint_every=5)
        rid = store.create_run(cfg)
        ids.append(rid)
        threads.append(threading.Thread(target=run_to_store, args=(store, rid, cfg)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = Store(tmp_path)
    for rid in ids:
        assert store.get_run(rid)["status"] == "finished"
        assert list(store.metrics(rid)["step"]) == list(range(0, 26))
    assert len(store.cg_traces(ids[0])) == 25


def test_lab_runs_in_background_and_stops_within_one_update(tmp_path):
    lab = Lab(tmp_path)
    ids = lab.start_many([small(optimizer="hf", steps=100000, checkpoint_every=0),
                          small(optimizer="adam", steps=100000, checkpoint_every=0)])
    deadline = time.time() + 60
    while time.time() < deadline and min(lab.progress(i)["steps_done"] for i in ids) < 3:
        time.sleep(0.05)
    assert set(lab.active()) == set(ids)
    for i in ids:
        done_before = lab.store.get_run(i)["steps_done"]
        lab.stop(i)
        assert lab.wait(i, timeout=30)
        info = lab.store.get_run(i)
        assert info["status"] == "stopped"
        assert info["steps_done"] <= done_before + 2         # the update in flight, at most
    assert lab.active() == []
    # a stopped run stays readable and exportable, and resumes
    bundle = bundles.export(lab.store, ids, tmp_path / "b.zip")
    assert zipfile.ZipFile(bundle).namelist()
    assert not lab.store.metrics(ids[0]).empty


@pytest.mark.parametrize("optimizer, columns", [
    ("hf", ("train_loss", "damping", "rho", "cg_iters")),
    # K-FAC's state (moving-average factors, their inverses, λ, the last step, the probe key)
    # must come back whole, or α, μ and λ after the resume differ
    ("kfac", ("train_loss", "damping", "rho", "learning_rate", "momentum"))])
def test_resume_joins_the_curve_exactly(tmp_path, optimizer, columns):
    """Stop at a checkpoint, resume: the continued run equals an uninterrupted one."""
    store = Store(tmp_path)
    cfg = small(optimizer=optimizer, steps=8, checkpoint_every=4)
    full = store.create_run(cfg)
    run_to_store(store, full, cfg)
    # a run that got to step 4 (its last checkpoint) and was then interrupted
    part2 = store.create_run(cfg)
    run_to_store(store, part2, cfg.replace(steps=4))
    store.set_status(part2, "interrupted")
    run_to_store(store, part2, cfg, resume=True)
    a, b = store.metrics(full), store.metrics(part2)
    assert list(b["step"]) == list(range(0, 9))
    for col in columns:
        assert np.allclose(a[col].astype(float), b[col].astype(float), rtol=1e-5,
                           equal_nan=True), col
    assert store.get_run(part2)["status"] == "finished"


def test_killed_cli_run_is_interrupted_and_resumes(tmp_path):
    env = {**os.environ, "HFLAB_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "hflab", "run", "--task", "regression", "--optimizer", "adam",
           "--learning-rate", "0.001", "--steps", "600", "--checkpoint-every", "5",
           "--n-train", "64", "--n-test", "32", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = Store(tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = store.runs()
        if not runs.empty and runs["steps_done"].iloc[0] >= 12:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = int(store.runs()["id"].iloc[0])
    committed = store.metrics(run_id)
    assert len(committed) >= 12 and list(committed["step"]) == list(range(0, len(committed)))
    assert Store(tmp_path).mark_dead_runs_interrupted() == [run_id]
    assert store.get_run(run_id)["status"] == "interrupted"
    out = subprocess.run([sys.executable, "-m", "hflab", "runs", "resume", str(run_id), "--quiet"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert store.get_run(run_id)["status"] == "finished"
    m = store.metrics(run_id)
    assert list(m["step"]) == list(range(0, 601))


def test_export_import_round_trip_csv_and_parquet(tmp_path, curvature_profiles):
    store = Store(tmp_path / "a")
    cfg = small(optimizer="hf", steps=3)
    rid = store.create_run(cfg)
    run_to_store(store, rid, cfg)
    for fmt in ("csv", "parquet"):
        path = bundles.export(store, [rid], tmp_path / f"bundle-{fmt}.zip", fmt)
        other = Store(tmp_path / f"b-{fmt}")
        (new_id,) = bundles.import_bundle(other, path)
        a, b = store.metrics(rid), other.metrics(new_id)
        assert np.allclose(a["train_loss"], b["train_loss"])
        assert list(a["cg_stop_reason"]) == list(b["cg_stop_reason"])
        ta, tb = store.cg_traces(rid), other.cg_traces(new_id)
        assert np.allclose(np.concatenate(ta["residual_norms"].tolist()),
                           np.concatenate(tb["residual_norms"].tolist()), equal_nan=True)
        assert other.get_run(new_id)["config"] == store.get_run(rid)["config"]
        assert other.spectra(new_id) == store.spectra(rid) != []     # the curvature profiles


def test_schema_version_and_migration_on_open(tmp_path):
    from hflab.schema import MIGRATIONS, SCHEMA_VERSION
    # a version-1 store (before the lease's heartbeat) with one run in it
    old = tmp_path / "old"
    old.mkdir()
    conn = sqlite3.connect(old / "hflab.sqlite")
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO runs (config, task, optimizer, seed, status, created) VALUES "
                 "('{}', 'seed-333', 'hf', 0, 'finished', 1.0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store(old)
    assert SCHEMA_VERSION == 4
    assert store._execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store._execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.get_run(1)["status"] == "finished" and store.get_run(1)["heartbeat"] is None
    assert store.get_run(1)["owner"] == ""            # version 4: started before owners were kept
    store.close()
    Store(old)                             # reopening an up-to-date store changes nothing


def test_resume_falls_back_to_an_older_checkpoint_then_to_step_zero(tmp_path):
    store = Store(tmp_path)
    cfg = small(optimizer="adam", steps=6, checkpoint_every=2)
    rid = store.create_run(cfg)
    run_to_store(store, rid, cfg.replace(steps=4))          # checkpoints at 2 and 4
    steps = [r[0] for r in store._execute("SELECT step FROM checkpoints WHERE run_id=?",
                                          (rid,)).fetchall()]
    assert sorted(steps) == [2, 4]                          # the newest two are kept
    newest = tmp_path / f"checkpoints/run{rid}-step4.npz"
    newest.write_bytes(newest.read_bytes()[:100])           # truncated
    (tmp_path / "checkpoints" / f".run{rid}-orphan.npz.tmp").write_bytes(b"half")
    store.set_status(rid, "interrupted")
    assert run_to_store(store, rid, cfg, resume=True) == "finished"
    info = store.get_run(rid)
    assert "step 4 unreadable" in info["error"]
    assert list(store.metrics(rid)["step"]) == list(range(0, 7))
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    for p in (tmp_path / "checkpoints").glob("*.npz"):
        p.unlink()                                          # every checkpoint gone
    store.set_status(rid, "interrupted")
    assert run_to_store(store, rid, cfg.replace(steps=8), resume=True) == "finished"
    assert "restarted from step 0" in store.get_run(rid)["error"]


def test_a_read_only_store_lists_shows_and_exports_but_refuses_writes(tmp_path, monkeypatch):
    store = Store(tmp_path / "ro")
    rid = store.create_run(small())
    store.close()
    # root ignores file modes, so the missing write permission is what os.access reports
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK
                        else real_access(p, mode))
    ro = Store(tmp_path / "ro")
    assert ro.read_only and ro.get_run(rid)["id"] == rid and len(ro.runs()) == 1
    assert zipfile.ZipFile(bundles.export(ro, [rid], tmp_path / "ro.zip")).namelist()
    with pytest.raises(StoreError, match="read-only"):
        ro.create_run(small())
    with pytest.raises(StoreError, match="read-only"):
        ro.set_status(rid, "stopped")


def test_garbage_inside_the_store_is_reported_on_open(tmp_path):
    damaged = tmp_path / "bad"
    s2 = Store(damaged)
    for _ in range(30):
        s2.create_run(small(name="x" * 2000))
    s2.close()
    path = damaged / "hflab.sqlite"
    data = bytearray(path.read_bytes())
    data[4096 * 2:4096 * 2 + 4096] = os.urandom(4096)       # 4 KB of garbage inside
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged|not a usable"):
        Store(damaged)


def test_sigterm_while_preparing_stops_the_cli_run_within_a_second(tmp_path):
    env = {**os.environ, "HFLAB_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "hflab", "run", "--task", "mnist-ae",
                             "--layers", "3000-3000", "--grad-batch", "200", "--steps", "5"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    store = Store(tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and (store.runs().empty or
                                      store.runs()["status"].iloc[0] != "running"):
        time.sleep(0.05)
    assert not store.runs().empty
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert time.time() - t0 < 1.5
    assert store.get_run(int(store.runs()["id"].iloc[0]))["status"] == "stopped"


def _claim(store, run_id, pid, host, heartbeat):
    """Make ``run_id`` look written by (pid, host) with the given heartbeat."""
    store._execute("UPDATE runs SET status='running', pid=?, host=?, heartbeat=? WHERE id=?",
                   (pid, host, heartbeat, run_id))


def test_one_writer_per_run_a_live_lease_is_refused_a_dead_one_taken_over(tmp_path, capsys,
                                                                          monkeypatch):
    import socket

    from hflab.cli import main
    monkeypatch.setenv("HFLAB_HOME", str(tmp_path))
    store = Store(tmp_path)
    cfg = small(steps=2)
    rid = store.create_run(cfg)
    run_to_store(store, rid, cfg)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _claim(store, rid, other.pid, socket.gethostname(), time.time())
        lab = Lab(tmp_path)                                  # opening does not take it over
        assert store.get_run(rid)["status"] == "running"
        with pytest.raises(ValueError, match="still training"):
            lab.check_resumable(rid)
        with pytest.raises(ValueError, match="still training"):
            lab.delete([rid])
        assert main(["runs", "resume", str(rid), "--quiet"]) == 2
        assert "still training" in capsys.readouterr().err
        assert main(["runs", "delete", str(rid)]) == 2
    finally:
        other.kill()
        other.wait()
    # its writer is gone: the next lab marks it interrupted and may resume it (taking the lease)
    lab = Lab(tmp_path)
    assert store.get_run(rid)["status"] == "interrupted"
    lab.resume(rid)
    assert lab.wait(rid, 60)
    info = store.get_run(rid)
    assert info["status"] == "finished" and info["pid"] == os.getpid()
    # a writer on another host (a shared store) lives while its heartbeat is fresh
    _claim(store, rid, 12345, "another-host", time.time())
    assert Store(tmp_path).mark_dead_runs_interrupted() == []
    _claim(store, rid, 12345, "another-host", time.time() - 10_000)
    assert Store(tmp_path).mark_dead_runs_interrupted() == [rid]


def test_the_lab_renews_its_lease_while_a_run_trains(tmp_path, monkeypatch):
    import hflab.lab as lab_module
    monkeypatch.setattr(lab_module, "HEARTBEAT_SECONDS", 0.1)
    lab = Lab(tmp_path)
    rid = lab.start(small(optimizer="adam", steps=100_000))   # HF here converges within seconds
    try:
        deadline = time.time() + 60
        while lab.store.get_run(rid)["status"] != "running" and time.time() < deadline:
            time.sleep(0.05)
        first = lab.store.get_run(rid)["heartbeat"]
        time.sleep(0.6)
        assert lab.store.get_run(rid)["heartbeat"] > first
    finally:
        lab.stop(rid)
        lab.wait(rid, 30)


def _flat_config(cfg: RunConfig) -> dict:
    """``cfg`` as versions before namespaced settings wrote it: every optimiser's setting a flat
    field (at that version's defaults for the ones the run's optimiser does not read), T unset."""
    old = {k: v for k, v in cfg.to_dict().items() if k != "settings"}
    old.update(learning_rate=0.01, momentum=0.9, curvature="gauss_newton", damping=45.0,
               structural_damping=0.0, max_cg_iters=250, cg_decay=0.95, backtracking=True,
               line_search=True, preconditioner=False, rho_batch="curvature", n_chunks=1,
               seq_len=None)
    # the settings of that version only (later ones — HF's min_damping, Nesterov's schedule — did
    # not exist)
    old.update({k: v for k, v in cfg.optimizer_settings().items()
                if k not in ("min_damping", "schedule")})
    return old


@pytest.mark.parametrize("optimizer, settings", [
    ("hf", dict(damping=2.5, max_cg_iters=7, line_search=False)),
    ("adam", dict(learning_rate=0.02)), ("momentum", dict(learning_rate=0.05, momentum=0.5))])
def test_bundles_and_stores_written_before_namespaced_settings_still_load(tmp_path, optimizer,
                                                                         settings):
    """An old bundle's configuration (flat settings, no stored T) opens as the same set-up."""
    cfg = preset_config("xor", optimizer=optimizer, steps=2, n_train=64, n_test=32, layers="4",
                        checkpoint_every=0, **settings).validate()
    store = Store(tmp_path / "a")
    rid = store.create_run(cfg)
    run_to_store(store, rid, cfg)
    path = bundles.export(store, [rid], tmp_path / "new.zip", "csv")
    old_path = tmp_path / "old.zip"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(old_path, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "runs.csv":
                runs = pd.read_csv(zin.open(name))
                runs["config"] = [json.dumps(_flat_config(cfg))]
                data = runs.to_csv(index=False).encode()
            zout.writestr(name, data)
    other = Store(tmp_path / "b")
    (new_id,) = bundles.import_bundle(other, old_path)
    loaded = RunConfig.from_dict(other.get_run(new_id)["config"])
    assert loaded == cfg and loaded.seq_len == 20
    assert RunConfig.from_dict(_flat_config(cfg)).validate() == cfg      # an old store's row


def test_a_live_view_reads_only_the_rows_past_each_runs_newest_step(tmp_path):
    """``metrics(ids, after={run: step})`` — the incremental read of a refreshing page: the rows
    read before plus the new ones are exactly the full read, for each run on its own step."""
    store = Store(tmp_path)
    a, b = (store.create_run(small(optimizer=o, steps=5)) for o in ("adam", "sgd"))
    for rid in (a, b):
        run_to_store(store, rid, small(optimizer="adam" if rid == a else "sgd", steps=5))
    full = store.metrics([a, b])
    new = store.metrics([a, b], after={a: 2, b: 4})
    assert list(zip(new["run_id"], new["step"])) == [(a, 3), (a, 4), (a, 5), (b, 5)]
    seen = full[((full["run_id"] == a) & (full["step"] <= 2)) |
                ((full["run_id"] == b) & (full["step"] <= 4))]
    both = pd.concat([seen, new]).sort_values(["run_id", "step"], ignore_index=True)
    none_is_nan = {None: float("nan")}    # a batch of rows with a missing value reads None
    pd.testing.assert_frame_equal(both[full.columns].replace(none_is_nan),
                                  full.reset_index(drop=True).replace(none_is_nan),
                                  check_dtype=False)
    assert store.metrics([a, b], after={a: 5, b: 5}).empty

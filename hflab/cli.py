"""Command line: ``python -m hflab run …`` and
``python -m hflab runs list|show|export|export-model|import|delete|resume``.

Every RunConfig field is a flag (``--seq-len 20``), and every optimiser's own setting a flag
namespaced by the optimiser (``--hf.damping 1``, ``--hf.line-search false``,
``--adam.learning-rate 0.003``); the flat flags of earlier versions (``--damping``) still work
and apply to the run's optimiser.  Settings are layered: the task's recommended preset
(:func:`hflab.config.preset_dict`, skipped with ``--no-preset``), then ``--config FILE`` (a JSON
object of fields), then the flags.  Runs go to the same store as the app
(``$HFLAB_HOME``, default ``./runs``).  Bad input exits with status 2 and a message naming the
field, the value and what is allowed.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import jax

from . import bundles, datasets, ownership
from .bundles import BundleError
from . import optimizers
from .config import FIELDS, LEGACY_OPTIMIZER_FIELDS, ConfigError, RunConfig, merge, preset_dict
from .core.settings import allowed_text, fields_of
from .compiled import enable_compilation_cache
from .lab import Lab, StoredRun, device_description
from .store import Store, StoreError, default_home


def _config_parser(sub):
    p = sub.add_parser("run", help="train one configuration, writing every step to the store")
    p.add_argument("--config", help="JSON file of RunConfig fields (flags override it)")
    p.add_argument("--data", help="your own data: a CSV or NPZ file (implies --task custom; see "
                   "README 'Bring your own data'), or a stored data set's id")
    p.add_argument("--targets", help="with a CSV --data: the target columns, comma-separated names"
                   " or 0-based indices (none: an autoencoder of all columns)")
    for name, f in FIELDS.items():
        if name == "data":
            continue
        choices = f.metadata.get("choices")
        allowed = f"; one of {', '.join(c for c in choices if c)}" if choices else ""
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                       metavar=name.upper(),
                       help=f"{f.metadata['help']}{allowed} (default: {f.default!r})")
    for opt, entry in optimizers.REGISTRY.items():
        group = p.add_argument_group(f"{entry.label} settings (--optimizer {opt})")
        for name, f in fields_of(entry.settings).items():
            group.add_argument(f"--{opt}.{name.replace('_', '-')}", dest=f"{opt}.{name}",
                               default=None, metavar=name.upper(),
                               help=f"{f.metadata['help']}; {allowed_text(f)} "
                                    f"(default: {f.default!r})")
    for name in LEGACY_OPTIMIZER_FIELDS:         # earlier versions' flat flags, still read
        p.add_argument("--" + name.replace("_", "-"), dest=f"legacy:{name}", default=None,
                       help=argparse.SUPPRESS)
    p.add_argument("--csv", help="also write the step metrics to this CSV file")
    p.add_argument("--json", dest="json_out", help="also write the step metrics to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-preset", action="store_true",
                   help="start from RunConfig's plain defaults, not the task's recommended settings")
    several = p.add_argument_group(
        "several processes", "one data-parallel run over the devices of several processes or "
        "hosts (jax.distributed; CPU processes talk through gloo). Start the same command once "
        "per process with its own --process-id; process 0 writes the store, the others only "
        "compute. Use with --devices all.")
    several.add_argument("--coordinator", metavar="HOST:PORT",
                         help="address of process 0's coordinator, reachable from every process")
    several.add_argument("--num-processes", metavar="N", help="how many processes take part")
    several.add_argument("--process-id", metavar="I", help="this process's index, 0 … N−1")
    return p


def start_processes(args) -> tuple[int, int]:
    """``jax.distributed.initialize`` from ``--coordinator/--num-processes/--process-id``
    (before anything touches a JAX backend); returns ``(process index, process count)``.
    All three flags or none; bad values are ConfigErrors naming the flag."""
    given = {k: getattr(args, k) for k in ("coordinator", "num_processes", "process_id")}
    if all(v is None for v in given.values()):
        return 0, 1
    missing = [k.replace("_", "-") for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(missing[0], "(not given)", "--coordinator, --num-processes and "
                          "--process-id go together")
    host, _, port = str(args.coordinator).rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("coordinator", args.coordinator, "HOST:PORT with a port 1–65535")
    n = _whole(args.num_processes, "num-processes", 1, 4096)
    i = _whole(args.process_id, "process-id", 0, n - 1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(f"{host}:{port}", num_processes=n, process_id=i,
                                   initialization_timeout=120)
    except Exception as e:               # the coordinator's own errors, in one line
        raise ConfigError("coordinator", args.coordinator,
                          f"a reachable coordinator ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'no answer'})") from None
    return jax.process_index(), jax.process_count()


def _whole(text, flag, low, high) -> int:
    t = str(text).strip()
    if not (t.isascii() and t.isdigit()) or not low <= int(t) <= high:
        raise ConfigError(flag, text, f"a whole number from {low} to {high}")
    return int(t)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hflab",
                                     description="HF Lab: Hessian-free optimisation in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    _config_parser(sub)
    runs = sub.add_parser("runs", help="list, show, export, delete or resume stored runs")
    rsub = runs.add_subparsers(dest="action", required=True)
    rsub.add_parser("list", help="all runs in the store")
    show = rsub.add_parser("show", help="one run's configuration and last metrics")
    show.add_argument("run_id", type=int)
    exp = rsub.add_parser("export", help="write runs to a zip bundle (CSV or Parquet tables)")
    exp.add_argument("run_ids", type=int, nargs="+")
    exp.add_argument("--out", required=True)
    exp.add_argument("--format", choices=("csv", "parquet"), default="csv")
    exm = rsub.add_parser("export-model", help="a run's newest parameters (.npz) and a "
                          "standalone JAX script that evaluates them on the task's test set")
    exm.add_argument("run_id", type=int)
    exm.add_argument("--out", required=True, help="the zip to write (model.npz + evaluate.py)")
    imp = rsub.add_parser("import", help="add the runs of an exported bundle")
    imp.add_argument("bundle")
    dele = rsub.add_parser("delete", help="delete runs and their checkpoints")
    dele.add_argument("run_ids", type=int, nargs="+")
    res = rsub.add_parser("resume", help="continue an interrupted or stopped run")
    res.add_argument("run_id", type=int)
    res.add_argument("--quiet", action="store_true")
    return parser


def _data_from_args(args, data: dict):
    """``--data FILE [--targets COLS]``: read and check the file (nothing is written yet)."""
    if args.targets is not None and not args.data:
        raise ConfigError("targets", args.targets, "only with --data FILE.csv")
    if not args.data:
        return
    if Path(args.data).is_file() or not (len(args.data) == datasets.ID_LENGTH
                                         and args.data.isascii() and args.data.isalnum()):
        try:
            data["data"] = datasets.register(datasets.read_path(args.data, args.targets or ""))
        except datasets.DataError as e:
            raise ConfigError("data", args.data, str(e)) from None
    else:
        data["data"] = args.data
    data.setdefault("task", "custom")


def config_from_args(args) -> RunConfig:
    data: dict = {}
    if args.config:
        path = Path(args.config)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("config", args.config, "an existing JSON file") from None
        except IsADirectoryError:
            raise ConfigError("config", args.config, "a JSON file, not a folder") from None
        except PermissionError:
            raise ConfigError("config", args.config, "a JSON file you may read") from None
        except RecursionError:
            raise ConfigError("config", args.config, "JSON nested less deeply") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError("config", args.config, f"valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError("config", args.config, "a JSON object of RunConfig fields")
    flags = {}
    for dest, v in vars(args).items():
        if v is None:
            continue
        if dest in FIELDS and dest != "data":
            flags[dest] = v
        elif dest.startswith("legacy:"):
            flags[dest.split(":", 1)[1]] = v
        elif "." in dest and dest.split(".", 1)[0] in optimizers.REGISTRY:
            flags[dest] = v
    data = merge(data, flags, RunConfig.optimizer)
    _data_from_args(args, data)
    if not args.no_preset:
        task, opt = data.get("task", RunConfig.task), data.get("optimizer", RunConfig.optimizer)
        if isinstance(task, str) and isinstance(opt, str):
            data = merge(preset_dict(task, opt), data, RunConfig.optimizer)
    return RunConfig.from_dict(data).validate()


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, quiet: bool = False, every: float = 0.5):
        self.total, self.quiet, self.every = total, quiet, every
        self.last_print = 0.0
        self.tty = sys.stderr.isatty()
        self.t0 = time.time()

    def __call__(self, r: dict):
        if self.quiet:
            return
        now = time.time()
        if now - self.last_print < self.every and r["step"] != self.total:
            return
        self.last_print = now
        frac = r["step"] / max(self.total, 1)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        parts = [f"[{bar}] {r['step']}/{self.total}", f"{now - self.t0:6.1f}s"]
        if "stage" in r:                        # a length curriculum
            parts.append(f"T {r['seq_len']}")
        if r.get("train_loss") is not None:
            parts.append(f"loss {r['train_loss']:.4g}")
        if r.get("test_error") is not None:
            parts.append(f"test err {r['test_error']:.4g}")
        if "damping" in r:
            parts.append(f"λ {r['damping']:.3g} ρ {r['rho']:.3g} cg {r['cg_iters']}")
        line = "  ".join(parts)
        sys.stderr.write(("\r" + line + " " * 4) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self):
        if not self.quiet and self.tty:
            sys.stderr.write("\n")


def _train(store, run_id, config, resume, progress) -> str:
    """Train in a worker thread so that Ctrl-C / SIGTERM is honoured at once: between updates
    the run stops cleanly; while preparing or compiling (which cannot be interrupted) the run is
    marked stopped immediately and the process leaves without waiting for that phase."""
    stop = threading.Event()

    def handle(signum, frame):
        stop.set()
    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    stored = StoredRun(store, run_id, config, resume, on_record=progress)

    def work():
        while stored.advance(stop.is_set):
            pass
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    last_beat = time.time()
    while worker.is_alive():
        worker.join(0.1)
        if time.time() - last_beat > 10.0:          # the run's lease, also while compiling
            last_beat = time.time()
            store.heartbeat([run_id])
        if stop.is_set() and stored.phase in ("queued", "preparing", "compiling"):
            store.set_status(run_id, "stopped", f"stopped by a signal while {stored.phase}")
            progress.close()
            print(f"run {run_id}: stopped while {stored.phase}", flush=True)
            os._exit(1)        # the phase's result is discarded; the store is consistent
    return stored.status


def _execute(store, run_id, config, quiet, resume=False) -> int:
    progress = Progress(config.steps, quiet)
    status = _train(store, run_id, config, resume, progress)
    progress.close()
    info = store.get_run(run_id)
    m = store.metrics(run_id)
    print(f"run {run_id}: {status}" + (f" — {info['error'].splitlines()[0]}" if info["error"] else ""))
    evals = m.dropna(subset=["test_error"]) if not m.empty else m
    if not evals.empty:
        last = evals.iloc[-1]
        compile_s = m["compile_seconds"].max() if "compile_seconds" in m else 0.0
        print(f"steps {int(m['step'].max())}, optimisation time {m['wall_seconds'].max():.2f} s "
              f"(+ {compile_s:.1f} s compiling), "
              f"train loss {last['train_loss']:.6g}, test loss {last['test_loss']:.6g}, "
              f"test error {last['test_error']:.6g}")
        if config.spec.metric == "success":
            print(f"final test success rate: {100 * (1 - last['test_error']):.2f}%")
    return 0 if status in ("finished", "stopped") else 1


def _run_command(args) -> int:
    config = config_from_args(args)
    for flag, out in (("csv", args.csv), ("json", args.json_out)):
        if out and not Path(out).resolve().parent.is_dir():
            raise ConfigError(flag, out, "a file in an existing folder")
    index, count = start_processes(args)
    where = device_description(config)       # fails before anything is stored
    if index > 0:
        return _follow(config, index, count)
    store = Store()
    store.mark_dead_runs_interrupted()
    enable_compilation_cache(store.home)
    datasets.keep([config], store.home)
    run_id = store.create_run(config, status="queued", owner=ownership.CLI)
    print(f"run {run_id} → {store.path} on {where}", flush=True)
    code = _execute(store, run_id, config, args.quiet)
    m = store.metrics(run_id)
    if args.csv:
        m.to_csv(args.csv, index=False)
    if args.json_out:
        m.to_json(args.json_out, orient="records", indent=1)
    return code


def _follow(config, index, count) -> int:
    """Process ``index`` > 0 of a multi-process run: the same updates, evaluations and
    checkpoints as process 0 (every collective must be entered by all processes), written to a
    private temporary store that is discarded — the run is stored once, by process 0."""
    import tempfile
    datasets.add_folder(default_home())       # a custom data set is found there (read only)
    with tempfile.TemporaryDirectory(prefix=f"hflab-process-{index}-") as tmp:
        private = Store(tmp)
        run_id = private.create_run(config, status="queued")
        print(f"process {index} of {count}: computing with process 0, which stores the run "
              f"in its store", flush=True)
        status = _train(private, run_id, config, False, Progress(config.steps, True))
    print(f"process {index} of {count}: {status}", flush=True)
    return 0 if status in ("finished", "stopped") else 1


def _show(store, run_id):
    info = store.get_run(run_id)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=1, default=str))
    print(json.dumps(info["config"], indent=1))
    m = store.metrics(run_id)
    if not m.empty:
        print(m.tail(5).to_string(index=False))


def _runs_command(args) -> int:
    store = Store()
    if not store.read_only:
        store.mark_dead_runs_interrupted()
    if args.action == "list":
        df = store.runs()
        cols = ["id", "name", "task", "optimizer", "seed", "status", "steps_done", "device"]
        print("no runs" if df.empty else df[cols].to_string(index=False))
    elif args.action == "show":
        _show(store, args.run_id)
    elif args.action == "export":
        print(f"wrote {bundles.export(store, args.run_ids, args.out, args.format)}")
    elif args.action == "export-model":
        from .export_model import export_model
        print(f"wrote {export_model(store, args.run_id, args.out)} (unzip it, then run "
              "python evaluate.py)")
    elif args.action == "import":
        ids = bundles.import_bundle(store, args.bundle)
        print("imported as runs " + ", ".join(map(str, ids)))
    elif args.action == "delete":
        Lab(store.home).delete(args.run_ids)
        print("deleted " + ", ".join(map(str, args.run_ids)))
    elif args.action == "resume":
        info = store.get_run(args.run_id)
        if info["status"] == "finished":
            print(f"run {args.run_id} is already finished")
            return 0
        Lab(store.home).check_resumable(args.run_id)
        store.set_owner(args.run_id, ownership.CLI)      # named on the command line: taken over
        config = RunConfig.from_dict(info["config"])
        return _execute(store, args.run_id, config, args.quiet, resume=True)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run_command(args) if args.command == "run" else _runs_command(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (StoreError, BundleError, KeyError, ValueError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else (
            f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e))
        print(f"error: {msg}", file=sys.stderr)
        return 2

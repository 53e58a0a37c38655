"""The one description of a run: :class:`RunConfig`, its validation, coercion and presets.

A run's own settings (task, model, data, budget, seed, devices) are :class:`RunConfig` fields;
the chosen optimiser's settings are its own frozen dataclass (:mod:`hflab.optimizers`) held in
``RunConfig.settings`` and namespaced by the optimiser wherever they are written down:
``{"optimizer": "hf", "settings": {"damping": 1.0, …}}`` in the store and bundles,
``hf.damping`` in URLs and config files, ``--hf.damping`` on the command line.

Every way into the lab — the CLI flags, config files, the Train page's form and its URL, bundle
import — builds a :class:`RunConfig` here and validates it once, at the door (``Lab.start`` / the
CLI), before anything is written.  A bad value raises :class:`ConfigError`, whose message names
the field, the value and what is allowed.  Memory is estimated before any array is allocated.
The sequence length T is resolved here and nowhere else (:meth:`RunConfig.final_seq_len`), and a
validated config stores it.

Settings layer as: the optimiser's defaults → the task's preset for that optimiser (its registry
entry's presets, the learning-rate sweep's rate) and the task's run settings (:data:`PRESETS`,
Martens 2010 and Martens & Sutskever 2011) → what the user gives.

Links and files made before optimisers owned their settings name them flat (``damping``,
``learning_rate``); they are still read (:mod:`hflab.keys`), each applied to the run's optimiser
when it has that setting and ignored otherwise (old stored configs carry every one).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import optimizers, tasks
from .core.losses import LOSSES
from .core.models import ACTIVATIONS, INITS, Model
from .core.settings import SettingError as ConfigError  # noqa: F401  (one error type, end to end)
from .core.settings import as_dict, coerce_value, kind_of
from .keys import LEGACY_OPTIMIZER_FIELDS, merge, split_settings  # noqa: F401
from .memory import MEMORY_BUDGET_BYTES, largest_batch, memory_estimate_bytes
from .parsing import MAX_TEXT, parse_curriculum, parse_layers

DTYPES = ("float32", "float64")
MAX_PARAMS = 50_000_000


def _f(default, help: str, choices=None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class RunConfig:
    task: str = _f("digits-ae", "task preset", tasks.TASK_NAMES)
    data: str = _f("", "task 'custom': the data set's id (from --data or an upload)")
    name: str = _f("", "a label for the run")
    # model
    layers: str = _f("", "hidden widths '32-16' (MLP) or hidden size '64' (RNN); '' = task default")
    mirrored: bool | None = _f(None, "autoencoders: mirror the hidden layers (unset = task default)")
    activation: str = _f("", "hidden activation ('' = task default)", ("",) + tuple(ACTIVATIONS))
    loss: str = _f("", "matching output/loss pair ('' = task default)", ("",) + tuple(LOSSES))
    init: str = _f("sparse", "initialisation", INITS)
    init_scale: float = _f(1.0, "scale of the initial weights")
    rec_scale: float = _f(0.0, "RNN: rescale W_rec to this spectral radius (0 = leave)")
    seq_len: int | None = _f(None, "RNN tasks: sequence length T (unset = task default)")
    curriculum: str = _f("", "RNN tasks: a length curriculum '20,50,100' — train at each T in "
                             "turn, moving on once the test error reaches target_error, the "
                             "network kept and the optimiser restarted ('' = none)")
    n_train: int = _f(0, "training cases (0 = task default)")
    n_test: int = _f(0, "test cases (0 = task default)")
    weight_cost: float = _f(0.0, "L2 weight cost in the objective")
    # optimiser and budget
    optimizer: str = _f("hf", "optimiser", optimizers.NAMES)
    steps: int = _f(100, "number of updates")
    max_seconds: float = _f(0.0, "optimisation-time budget in seconds (0 = none)")
    target_error: float = _f(-1.0, "stop once the test error is at most this (< 0 = never)")
    grad_batch: int = _f(0, "gradient batch size (0 = the whole training set)")
    grad_batch_doubling: int = _f(0, "double the gradient batch every this many updates, up to "
                                     "the whole training set (0 = a fixed size)")
    curvature_batch_fixed: bool = _f(False, "with a growing gradient batch, keep the curvature "
                                            "batch at its first size: the batch is cut into more "
                                            "chunks as it doubles (off = n_chunks chunks always)")
    # numerics, bookkeeping
    dtype: str = _f("float32", "floating-point type used end to end", DTYPES)
    seed: int = _f(0, "seed of data and initialisation")
    eval_every: int = _f(1, "evaluate train/test loss every this many updates")
    checkpoint_every: int = _f(10, "checkpoint every this many updates (0 = only at the end)")
    devices: str = _f("1", "'1', 'all', 'cpu' or a device count (data-parallel mesh)")
    # the chosen optimiser's own settings (its registry entry's frozen dataclass)
    settings: Any = _f(None, "the optimiser's own settings")

    def __post_init__(self):
        entry = optimizers.REGISTRY.get(self.optimizer)
        if entry is not None and not isinstance(self.settings, entry.settings):
            self.settings = entry.defaults()

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in FIELDS}
        out["settings"] = as_dict(self.settings) if self.settings is not None else {}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """From a stored, exported or typed mapping: run fields, the optimiser's ``settings``
        (a mapping), ``<optimizer>.<setting>`` keys, and the flat names of older links."""
        if not isinstance(data, dict):
            raise ConfigError("config", type(data).__name__, "a JSON object of RunConfig fields")
        run, own = split_settings(data, FIELDS, RunConfig.optimizer)
        values = {k: coerce(k, v) for k, v in run.items()}
        optimizer = values.get("optimizer", RunConfig.optimizer)
        entry = optimizers.REGISTRY.get(optimizer)
        if entry is None:
            raise ConfigError("optimizer", optimizer, f"one of {list(optimizers.NAMES)}")
        return cls(**values, settings=entry.from_mapping(own.get(optimizer, {})))

    def replace(self, **kw) -> "RunConfig":
        """A copy with ``kw`` changed: run fields, ``settings``, ``<optimizer>.<setting>`` or a
        flat setting name (applied to the run's optimiser).  Changing the optimiser without
        settings starts from the new optimiser's defaults."""
        return RunConfig.from_dict(merge(self.to_dict(), kw, RunConfig.optimizer))

    # -- derived --------------------------------------------------------------------------
    @property
    def spec(self) -> tasks.TaskSpec:
        return tasks.get_spec(self.task, self.data)

    @property
    def entry(self) -> optimizers.OptimizerEntry:
        return optimizers.REGISTRY[self.optimizer]

    def optimizer_settings(self) -> dict:
        """The optimiser's settings as a mapping of its fields."""
        return as_dict(self.settings)

    @property
    def curvature_chunks(self) -> int:
        """Curvature batches the first gradient batch is cut into (1 for optimisers without
        one); :func:`hflab.datastream.curvature_chunks` gives a growing batch's count."""
        return self.settings.n_chunks if self.entry.curvature_batch else 1

    def resolved_loss(self) -> str:
        return self.loss or self.spec.loss

    def resolved_activation(self) -> str:
        return self.activation or self.spec.default_activation

    def hidden_sizes(self) -> list[int]:
        return parse_layers(self.layers or self.spec.default_layers)

    def model(self) -> Model:
        spec, act = self.spec, self.resolved_activation()
        if spec.kind == "rnn":
            return Model("rnn", (spec.n_in, self.hidden_sizes()[0], spec.n_out), (act,),
                         self.init, self.init_scale, self.rec_scale or None)
        hidden = self.hidden_sizes()
        mirrored = spec.mirrored if self.mirrored is None else self.mirrored
        acts = [act] * len(hidden)
        if mirrored:
            if spec.mirrored:
                acts[-1] = spec.code_activation      # Martens' code layer
            hidden = hidden + hidden[-2::-1]
            acts = acts + [act] * (len(hidden) - len(acts))
        return Model("mlp", tuple([spec.n_in] + hidden + [spec.n_out]), tuple(acts), self.init,
                     self.init_scale)

    def curriculum_lengths(self) -> list[int]:
        """The curriculum's sequence lengths, or ``[]`` without one."""
        return parse_curriculum(self.curriculum) if self.curriculum.strip() else []

    def final_seq_len(self) -> int | None:
        """T — the one place it is resolved: the curriculum's last length, else the given T,
        else the task's default; None for a task that is not a sequence problem."""
        if self.spec.kind != "rnn":
            return None
        lengths = self.curriculum_lengths()
        return lengths[-1] if lengths else self.seq_len or self.spec.default_seq_len

    def stage(self, length: int) -> "RunConfig":
        """The plain run a curriculum stage at ``length`` trains (no curriculum of its own)."""
        return self.replace(seq_len=length, curriculum="")

    def validate(self) -> "RunConfig":
        """Check every field; then store the resolved T (so every stored run names its T)."""
        validate(self)
        self.seq_len = self.final_seq_len()
        return self


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)
                                        if f.name != "settings"}


# ----------------------------------------------------------------------------- presets
# A task's run settings (the app's presets and the CLI start from them; anything given explicitly
# overrides them).  Optimiser settings per task live in each optimiser's registry entry.  RNN
# problems follow Martens & Sutskever (2011): W_rec scaled to spectral radius 1.2.
_RNN_PRESET = dict(rec_scale=1.2, steps=300, eval_every=5, target_error=0.005)
PRESETS: dict[str, dict] = {
    "seed-333": dict(steps=30, init="gaussian"),
    "regression": dict(steps=50),
    "spirals": dict(steps=100, init="gaussian", init_scale=2.0),
    "digits": dict(steps=40), "digits-ae": dict(steps=50),
    "mnist": dict(steps=40),
    "mnist-ae": dict(steps=30, grad_batch=1000, eval_every=5),
    "curves": dict(steps=30, eval_every=5),
    "seed-rnn": dict(steps=30),
    **{t: dict(_RNN_PRESET) for t in ("addition", "multiplication", "xor", "temporal-order-2",
                                      "temporal-order-3", "memorization")},
}


def preset_dict(task: str, optimizer: str | None = None) -> dict:
    """A task's preset for ``optimizer`` as a config mapping (not coerced, not validated): the
    task's run settings and the optimiser's settings for the task."""
    optimizer = optimizer or RunConfig.optimizer
    entry = optimizers.REGISTRY.get(optimizer)
    own = {"settings": as_dict(entry.preset(task))} if entry else {}
    return {"optimizer": optimizer, **PRESETS.get(task, {}), **own}


def preset_config(task: str, **overrides) -> RunConfig:
    """A RunConfig for ``task`` with its recommended settings, then ``overrides`` (run fields,
    ``settings``, ``<optimizer>.<setting>`` or flat setting names)."""
    optimizer = overrides.get("optimizer", RunConfig.optimizer)
    base = {"task": task, **preset_dict(task, optimizer if isinstance(optimizer, str) else None)}
    return RunConfig.from_dict(merge(base, overrides, RunConfig.optimizer))


# ----------------------------------------------------------------------------- parsing
def validate_devices(devices: str):
    text = str(devices).strip().lower()
    if text in ("all", "cpu") or (text.isascii() and text.isdigit() and 1 <= int(text) <= 4096):
        return
    raise ConfigError("devices", devices, "'all', 'cpu' or a device count in [1, 4096]")


def field_kind(name: str) -> str:
    """'bool', 'int', 'float' or 'str' — what the form and the CLI ask for."""
    return kind_of(FIELDS[name])


def coerce(name: str, value):
    """A JSON / CLI / URL value to the run field's type; :class:`ConfigError` naming the field."""
    return coerce_value(name, field_kind(name), value, "None" in str(FIELDS[name].type))


# ----------------------------------------------------------------------------- validation
def _check_choice(name, value, allowed):
    if value not in allowed:
        named = [a for a in allowed if a]
        default = " (or '' for the task's default)" if "" in allowed else ""
        raise ConfigError(name, value, f"one of {named}{default}")


def _interval(lo, hi, open_low, open_high):
    return f"{'(' if open_low else '['}{lo}, {hi}{')' if open_high else ']'}"


def _check_number(name, value, lo, hi, open_low=False, open_high=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)):
        raise ConfigError(name, value, "a finite number in " +
                          _interval(lo, hi, open_low, open_high))
    v = float(value)
    if v < lo or v > hi or (open_low and v == lo) or (open_high and v == hi):
        raise ConfigError(name, value, "a number in " + _interval(lo, hi, open_low, open_high))


def _check_int(name, value, lo, hi, message=None):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or \
            not lo <= value <= hi:
        raise ConfigError(name, value, message or f"a whole number in [{lo}, {hi}]")


def _validate_choices(c: RunConfig):
    for name in ("task", "optimizer", "init", "dtype", "activation", "loss"):
        value = getattr(c, name)
        if name in ("activation", "loss") and value == "":
            continue
        _check_choice(name, value, FIELDS[name].metadata["choices"])
    for name in ("name", "layers", "devices", "data", "curriculum"):
        if not isinstance(getattr(c, name), str) or len(getattr(c, name)) > MAX_TEXT:
            raise ConfigError(name, getattr(c, name), f"text of at most {MAX_TEXT} characters")


def _validate_loss(c: RunConfig):
    spec = c.spec
    if not c.loss or c.loss == spec.loss:
        return
    if spec.loss == "softmax":
        raise ConfigError("loss", c.loss, f"task {c.task!r} has one-hot class targets; use "
                          "'softmax' (softmax output + cross-entropy)")
    if c.loss == "softmax":
        raise ConfigError("loss", c.loss, f"task {c.task!r} has no class targets; use 'squared' "
                          "(linear output) or 'logistic' (targets in [0, 1])")
    if c.loss == "logistic" and spec.loss == "squared" and spec.metric == "success":
        raise ConfigError("loss", c.loss, f"task {c.task!r} has targets outside [0, 1]; use "
                          "'squared'")


def _validate_model(c: RunConfig):
    spec = c.spec
    try:
        hidden = c.hidden_sizes()
    except ValueError as e:
        raise ConfigError("layers", c.layers, str(e)) from None
    if spec.kind == "rnn" and len(hidden) != 1:
        raise ConfigError("layers", c.layers, f"task {c.task!r} is an RNN problem: give one "
                          "hidden size like '64' (an MLP layer string does not apply)")
    _check_number("init_scale", c.init_scale, 0.0, 1e3, open_low=True)
    _check_number("rec_scale", c.rec_scale, 0.0, 10.0)
    if spec.kind == "rnn":
        if c.seq_len is not None:
            _check_int("seq_len", c.seq_len, spec.min_seq_len, 10_000,
                       f"a whole number of time steps in [{spec.min_seq_len}, 10000] (leave it "
                       f"unset for the task's default {spec.default_seq_len})")
        _validate_curriculum(c)
    elif c.seq_len is not None:
        raise ConfigError("seq_len", c.seq_len,
                          f"no sequence length: task {c.task!r} is not a sequence problem")
    elif c.curriculum:
        raise ConfigError("curriculum", c.curriculum,
                          f"empty: task {c.task!r} is not a sequence problem")
    if c.mirrored is not None and not isinstance(c.mirrored, bool):
        raise ConfigError("mirrored", c.mirrored, "true, false or unset")


def _validate_curriculum(c: RunConfig):
    if not c.curriculum.strip():
        return
    try:
        lengths = parse_curriculum(c.curriculum, c.spec.min_seq_len, 10_000)
    except ValueError as e:
        raise ConfigError("curriculum", c.curriculum, f"{e} (task {c.task!r})") from None
    if c.seq_len is not None and c.seq_len != lengths[-1]:
        raise ConfigError("seq_len", c.seq_len, f"unset or {lengths[-1]}, the curriculum's "
                          "last length")
    if not isinstance(c.target_error, (int, float)) or c.target_error < 0:
        raise ConfigError("target_error", c.target_error, "a test error ≥ 0: a curriculum "
                          "moves to its next length once a stage reaches it")


def _validate_numbers(c: RunConfig):
    for name, lo, hi in (("n_train", 0, 1_000_000), ("n_test", 0, 1_000_000),
                         ("steps", 1, 10_000_000), ("eval_every", 1, 1_000_000),
                         ("checkpoint_every", 0, 1_000_000), ("seed", 0, 2 ** 31 - 1),
                         ("grad_batch_doubling", 0, 1_000_000)):
        _check_int(name, getattr(c, name), lo, hi)
    _check_number("max_seconds", c.max_seconds, 0.0, 30 * 86400.0)
    _check_number("target_error", c.target_error, -1.0, 1e12)
    _check_number("weight_cost", c.weight_cost, 0.0, 1e3)


def _validate_sizes(c: RunConfig):
    n_train, _ = c.spec.sizes(c.n_train, c.n_test)
    _check_int("grad_batch", c.grad_batch, 0, n_train,
               f"0 (whole training set) or 1..{n_train} (the training set has {n_train} cases)")
    _validate_settings(c, c.grad_batch or n_train)
    _check_memory(c, n_train)


def _validate_settings(c: RunConfig, grad_batch: int):
    """The optimiser's settings: their own ranges and rules, then the entry's checks against
    this run; messages name the setting as ``<optimizer>.<setting>``."""
    from .core.settings import check
    entry = c.entry
    if not isinstance(c.settings, entry.settings):
        raise ConfigError("settings", c.settings, f"{entry.settings.__name__} for optimizer "
                          f"{c.optimizer!r}")
    check(c.settings, f"{c.optimizer}.")
    if entry.check is not None:
        try:
            entry.check(c.settings, c.spec.kind, grad_batch)
        except ConfigError as e:          # a run field (e.g. the task) keeps its own name
            name = e.field if e.field in FIELDS else f"{c.optimizer}.{e.field}"
            raise ConfigError(name, e.value, e.allowed) from None


def _check_memory(c: RunConfig, n_train: int):
    n_params = c.model().n_params
    layers = c.layers or c.spec.default_layers
    if n_params > MAX_PARAMS:
        raise ConfigError("layers", layers, f"the network would have {n_params:,} parameters; "
                          f"at most {MAX_PARAMS:,} are allowed")
    total = memory_estimate_bytes(c, n_train)
    if total > MEMORY_BUDGET_BYTES:
        batch = largest_batch(c, n_train)
        raise ConfigError("layers", layers, f"this run would need about {total / 2**30:.1f} GiB "
                          f"({n_params:,} parameters, batch {batch}); the limit is "
                          f"{MEMORY_BUDGET_BYTES / 2**30:.0f} GiB — use fewer/narrower layers "
                          "or a smaller grad_batch")


def _validate_data(c: RunConfig):
    if c.task != tasks.CUSTOM and c.data:
        raise ConfigError("data", c.data, "only with task 'custom' (your own data)")
    try:
        c.spec
    except ValueError as e:
        raise ConfigError("data", c.data, str(e)) from None


def validate(c: RunConfig):
    """Check every field of ``c``; raise :class:`ConfigError` for the first bad one."""
    _validate_choices(c)
    _validate_data(c)
    _validate_loss(c)
    _validate_model(c)
    _validate_numbers(c)
    validate_devices(c.devices)
    _validate_sizes(c)

"""The one description of a run: :class:`RunConfig`, its validation, coercion and presets.

Every way into the lab — the CLI flags, config files, the Train page's form and its URL, bundle
import — builds a :class:`RunConfig` from this module's field list (names, types, defaults, help,
allowed choices) and validates it here, once, at the door (``Lab.start`` / the CLI), before
anything is written.  A bad value raises :class:`ConfigError`, whose message names the field,
the value and what is allowed.  Memory is estimated before any array is allocated.

Settings layer as: RunConfig's defaults → the optimiser's own defaults (:mod:`hflab.optimizers`)
→ the learning-rate sweep's rate for the pair (:mod:`hflab.learning_rates`)
→ the task's recommended preset (:data:`PRESETS`, Martens 2010 and Martens & Sutskever 2011) →
what the user gives.  This module sits on the ground floor: it imports the task, model, loss,
curvature and optimiser name tables, and nothing above them.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import optimizers, tasks
from .learning_rates import LEARNING_RATES
from .core.curvature import KINDS as CURVATURE_KINDS
from .core.hf import RHO_BATCHES
from .core.losses import LOSSES
from .memory import MEMORY_BUDGET_BYTES, largest_batch, memory_estimate_bytes
from .core.models import ACTIVATIONS, INITS, Model
from .parsing import MAX_TEXT, number_text, parse_curriculum, parse_layers  # noqa: F401

DTYPES = ("float32", "float64")
MAX_PARAMS = 50_000_000


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``field`` names it."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field_name, value, allowed
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "…"
        super().__init__(f"{field_name}: {shown} is not allowed — {allowed}")


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
    learning_rate: float = _f(0.01, "first-order learning rate")
    momentum: float = _f(0.9, "momentum coefficient")
    steps: int = _f(100, "number of updates")
    max_seconds: float = _f(0.0, "optimisation-time budget in seconds (0 = none)")
    target_error: float = _f(-1.0, "stop once the test error is at most this (< 0 = never)")
    grad_batch: int = _f(0, "gradient batch size (0 = the whole training set)")
    grad_batch_doubling: int = _f(0, "double the gradient batch every this many updates, up to "
                                     "the whole training set (0 = a fixed size)")
    n_chunks: int = _f(1, "HF: curvature chunks of the gradient batch")
    curvature: str = _f("gauss_newton", "HF curvature matrix", CURVATURE_KINDS)
    damping: float = _f(45.0, "HF: initial damping λ")
    structural_damping: float = _f(0.0, "HF: structural damping μ (RNN)")
    max_cg_iters: int = _f(250, "HF: CG iterations at most")
    cg_decay: float = _f(0.95, "HF: warm-start decay ζ")
    backtracking: bool = _f(True, "HF: CG backtracking")
    line_search: bool = _f(True, "HF: Armijo line search")
    preconditioner: bool = _f(False, "HF: diagonal preconditioner")
    rho_batch: str = _f("curvature", "HF: batch on which ρ's actual reduction is measured",
                        RHO_BATCHES)
    # numerics, bookkeeping
    dtype: str = _f("float32", "floating-point type used end to end", DTYPES)
    seed: int = _f(0, "seed of data and initialisation")
    eval_every: int = _f(1, "evaluate train/test loss every this many updates")
    checkpoint_every: int = _f(10, "checkpoint every this many updates (0 = only at the end)")
    devices: str = _f("1", "'1', 'all', 'cpu' or a device count (data-parallel mesh)")

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        if not isinstance(data, dict):
            raise ConfigError("config", type(data).__name__, "a JSON object of RunConfig fields")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ConfigError(unknown[0], data[unknown[0]],
                              f"not a RunConfig field; fields are {sorted(FIELDS)}")
        return cls(**{k: coerce(k, v) for k, v in data.items()})

    def replace(self, **kw) -> "RunConfig":
        return dataclasses.replace(self, **kw)

    # -- derived --------------------------------------------------------------------------
    @property
    def spec(self) -> tasks.TaskSpec:
        return tasks.get_spec(self.task, self.data)

    @property
    def entry(self) -> optimizers.OptimizerEntry:
        return optimizers.REGISTRY[self.optimizer]

    def optimizer_settings(self) -> dict:
        """The fields this config's optimiser reads, with their values."""
        return {k: getattr(self, k) for k in self.entry.settings}

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

    def final_seq_len(self) -> int:
        """The longest T this run trains at (the last stage's with a curriculum)."""
        lengths = self.curriculum_lengths()
        return lengths[-1] if lengths else self.seq_len or self.spec.default_seq_len

    def stage(self, length: int) -> "RunConfig":
        """The plain run a curriculum stage at ``length`` trains (no curriculum of its own)."""
        return self.replace(seq_len=length, curriculum="")

    def validate(self) -> "RunConfig":
        validate(self)
        return self


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}


# ----------------------------------------------------------------------------- presets
# Recommended settings per task (the app's presets and the CLI start from them; anything given
# explicitly overrides them).  RNN problems follow Martens & Sutskever (2011): structural damping
# μ = 0.03, W_rec scaled to spectral radius 1.2, curvature on a quarter of the data.
_RNN_PRESET = dict(damping=1.0, structural_damping=0.03, rec_scale=1.2, n_chunks=4,
                   max_cg_iters=100, steps=300, eval_every=5, target_error=0.005)
PRESETS: dict[str, dict] = {
    "seed-333": dict(damping=1.0, steps=30, init="gaussian"),
    "regression": dict(damping=1.0, steps=50),
    "spirals": dict(damping=1.0, steps=100, init="gaussian", init_scale=2.0),
    "digits": dict(damping=1.0, steps=40), "digits-ae": dict(damping=1.0, steps=50),
    "mnist": dict(damping=1.0, steps=40, n_chunks=4),
    "mnist-ae": dict(damping=45.0, steps=30, grad_batch=1000, n_chunks=4, eval_every=5),
    "curves": dict(damping=45.0, steps=30, n_chunks=4, eval_every=5),
    "seed-rnn": dict(damping=1.0, steps=30),
    **{t: dict(_RNN_PRESET) for t in ("addition", "multiplication", "xor", "temporal-order-2",
                                      "temporal-order-3", "memorization")},
}


def optimizer_defaults(optimizer: str) -> dict:
    """The optimiser's own defaults for the fields it reads (registry entry)."""
    entry = optimizers.REGISTRY.get(optimizer)
    return {k: v for k, v in entry.settings.items() if v is not None} if entry else {}


def preset_dict(task: str, optimizer: str | None = None) -> dict:
    """Field values a task's preset sets for ``optimizer`` (not coerced, not validated).

    Settings another optimiser reads are left at RunConfig's defaults, so a first-order run's
    stored config does not pretend to use HF's curvature chunks or structural damping.
    """
    optimizer = optimizer or RunConfig.optimizer
    preset = dict(PRESETS.get(task, {}))
    own = set(optimizers.REGISTRY[optimizer].settings) if optimizer in optimizers.REGISTRY \
        else set()
    others = {k for e in optimizers.REGISTRY.values() for k in e.settings} - own
    preset = {k: v for k, v in preset.items() if k not in others}
    swept = LEARNING_RATES.get(task, {}).get(optimizer)        # the sweep's rate for this pair
    rate = {"learning_rate": swept} if swept and "learning_rate" in own else {}
    return {**optimizer_defaults(optimizer), **rate, **preset}


def preset_config(task: str, **overrides) -> RunConfig:
    """A RunConfig for ``task`` with its recommended settings, then ``overrides``."""
    optimizer = overrides.get("optimizer", RunConfig.optimizer)
    data = {"task": task, **preset_dict(task, optimizer if isinstance(optimizer, str) else None),
            **overrides}
    return RunConfig.from_dict(data)


# ----------------------------------------------------------------------------- parsing
def validate_devices(devices: str):
    text = str(devices).strip().lower()
    if text in ("all", "cpu") or (text.isascii() and text.isdigit() and 1 <= int(text) <= 4096):
        return
    raise ConfigError("devices", devices, "'all', 'cpu' or a device count in [1, 4096]")


def field_kind(name: str) -> str:
    """'bool', 'int', 'float' or 'str' — what the form and the CLI ask for."""
    t = str(FIELDS[name].type)
    return "bool" if t.startswith("bool") else "int" if t.startswith("int") else \
        "float" if t == "float" else "str"


def coerce(name: str, value):
    """A JSON / CLI / URL value to the field's type; :class:`ConfigError` naming the field."""
    kind = field_kind(name)
    optional = "None" in str(FIELDS[name].type)
    try:
        if value is None and optional:
            return None
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(value, bool):
            raise ValueError
        if kind == "int":
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(number_text(value))
            if isinstance(value, (int, np.integer)):
                return int(value)
            raise ValueError
        if kind == "float":
            if isinstance(value, str):
                return float(number_text(value))
            if isinstance(value, (int, float, np.integer, np.floating)):
                return float(value)
            raise ValueError
        if isinstance(value, (str, int)):
            return str(value)
        raise ValueError
    except (ValueError, TypeError, OverflowError):
        what = {"int": "a whole number", "float": "a number", "str": "text",
                "bool": "true or false"}[kind]
        raise ConfigError(name, value, what) from None


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
    for name in ("task", "optimizer", "init", "curvature", "rho_batch", "dtype", "activation",
                 "loss"):
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
                         ("steps", 1, 10_000_000), ("max_cg_iters", 1, 5000),
                         ("n_chunks", 1, 10_000), ("eval_every", 1, 1_000_000),
                         ("checkpoint_every", 0, 1_000_000), ("seed", 0, 2 ** 31 - 1),
                         ("grad_batch_doubling", 0, 1_000_000)):
        _check_int(name, getattr(c, name), lo, hi)
    _check_number("max_seconds", c.max_seconds, 0.0, 30 * 86400.0)
    _check_number("target_error", c.target_error, -1.0, 1e12)
    _check_number("learning_rate", c.learning_rate, 0.0, 100.0, open_low=True)
    _check_number("momentum", c.momentum, 0.0, 1.0, open_high=True)
    _check_number("damping", c.damping, 0.0, 1e10, open_low=c.curvature != "gauss_newton")
    _check_number("structural_damping", c.structural_damping, 0.0, 1e4)
    if c.structural_damping and c.spec.kind != "rnn":
        raise ConfigError("structural_damping", c.structural_damping,
                          "only RNN tasks (it damps hidden-state changes); use 0 for an MLP")
    _check_number("weight_cost", c.weight_cost, 0.0, 1e3)
    _check_number("cg_decay", c.cg_decay, 0.0, 1.0)
    for name in ("backtracking", "line_search", "preconditioner"):
        if not isinstance(getattr(c, name), bool):
            raise ConfigError(name, getattr(c, name), "true or false")


def _validate_sizes(c: RunConfig):
    n_train, _ = c.spec.sizes(c.n_train, c.n_test)
    _check_int("grad_batch", c.grad_batch, 0, n_train,
               f"0 (whole training set) or 1..{n_train} (the training set has {n_train} cases)")
    gb = c.grad_batch or n_train
    if c.entry.curvature_batch and c.n_chunks > gb:
        raise ConfigError("n_chunks", c.n_chunks, f"at most the gradient batch size ({gb}): "
                          "each curvature chunk needs at least one case")
    _check_memory(c, n_train)


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

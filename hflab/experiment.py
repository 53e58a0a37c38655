"""Run configuration (validated) and the one run loop shared by every optimiser.

:class:`RunConfig` is a flat, JSON-friendly dataclass: the app's forms, the CLI flags, config files
and the run store all speak it.  :meth:`RunConfig.validate` rejects bad input with
:class:`ConfigError`, whose message names the field, the value and what is allowed — before any
array is allocated (parameter and activation memory are estimated first).

:func:`run` drives an optimiser over a task's data stream.  The stream is a pure function of
(seed, step): full batch, or fixed-size minibatches cut from a per-epoch permutation; HF's
curvature batch is chunk ``step mod n_chunks`` of the gradient batch (Martens 2010 §4.5), fixed
within one update.  So a resumed run sees exactly the data it would have seen.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import baselines, hf, tasks
from .losses import Batch, get_loss
from .models import ACTIVATIONS, INITS, Model

OPTIMIZERS = ("hf",) + baselines.OPTIMIZERS
DTYPES = ("float32", "float64")
MAX_LAYER_WIDTH = 100_000
MAX_PARAMS = 50_000_000
MEMORY_BUDGET_BYTES = 8 * 2 ** 30          # what one run may plan to hold
MAX_CONSECUTIVE_REJECTIONS = 25


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``field`` names it."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field_name, value, allowed
        super().__init__(f"{field_name}: {value!r} is not allowed — {allowed}")


@dataclass
class RunConfig:
    task: str = "digits-ae"
    name: str = ""
    # model
    layers: str = ""              # hidden widths "32-16" (MLP) or hidden size "64" (RNN); "" = task default
    mirrored: bool | None = None  # autoencoders: mirror the hidden layers (None = task default)
    activation: str = ""          # hidden activation ("" = task default)
    loss: str = ""                # matching output/loss pair ("" = task default)
    init: str = "sparse"
    init_scale: float = 1.0
    rec_scale: float = 0.0        # RNN: rescale W_rec to this spectral radius (0 = leave)
    seq_len: int | None = None    # RNN tasks: T (None = the task's default)
    n_train: int = 0
    n_test: int = 0
    # optimiser
    optimizer: str = "hf"
    learning_rate: float = 0.01
    momentum: float = 0.9
    steps: int = 100
    max_seconds: float = 0.0      # optimisation-time budget in seconds (0 = none)
    target_error: float = -1.0    # stop once the test error is at most this (< 0 = never)
    grad_batch: int = 0           # 0 = the whole training set
    n_chunks: int = 1             # HF curvature chunks of the gradient batch
    curvature: str = "gauss_newton"
    damping: float = 45.0
    structural_damping: float = 0.0
    weight_cost: float = 0.0
    max_cg_iters: int = 250
    cg_decay: float = 0.95
    backtracking: bool = True
    line_search: bool = True
    preconditioner: bool = False
    # numerics, bookkeeping
    dtype: str = "float32"
    seed: int = 0
    eval_every: int = 1
    checkpoint_every: int = 10
    devices: str = "1"            # "1", "all", "cpu" or a number (data-parallel mesh)

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        if not isinstance(data, dict):
            raise ConfigError("config", type(data).__name__, "a JSON object of RunConfig fields")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(unknown[0], data[unknown[0]],
                              f"not a RunConfig field; fields are {sorted(names)}")
        kwargs = {}
        for key, value in data.items():
            kwargs[key] = _coerce(key, value, names[key].type)
        return cls(**kwargs)

    def replace(self, **kw) -> "RunConfig":
        return dataclasses.replace(self, **kw)

    # -- derived --------------------------------------------------------------------------
    @property
    def spec(self) -> tasks.TaskSpec:
        return tasks.SPECS[self.task]

    def resolved_loss(self) -> str:
        return self.loss or self.spec.loss

    def resolved_activation(self) -> str:
        return self.activation or self.spec.default_activation

    def hidden_sizes(self) -> list[int]:
        return parse_layers(self.layers or self.spec.default_layers)

    def model(self, n_in: int, n_out: int) -> Model:
        act = self.resolved_activation()
        if self.spec.kind == "rnn":
            return Model("rnn", (n_in, self.hidden_sizes()[0], n_out), (act,), self.init,
                         self.init_scale, self.rec_scale or None)
        hidden = self.hidden_sizes()
        mirrored = self.spec.mirrored if self.mirrored is None else self.mirrored
        acts = [act] * len(hidden)
        if mirrored:
            if self.spec.mirrored:
                acts[-1] = self.spec.code_activation      # Martens' linear code layer
            hidden = hidden + hidden[-2::-1]
            acts = acts + [act] * (len(hidden) - len(acts))
        return Model("mlp", tuple([n_in] + hidden + [n_out]), tuple(acts), self.init,
                     self.init_scale)

    def task_sizes(self) -> tuple[int, int, int, int]:
        """(n_train, n_test, n_in, n_out) without generating the data."""
        d_train, d_test = tasks.default_sizes(self.task)
        n_train, n_test = self.n_train or d_train, self.n_test or d_test
        if self.task in tasks.FIXED_DATA:
            total = tasks.FIXED_DATA[self.task]
            n_test = min(n_test, total - 1)
            n_train = min(n_train, total - n_test)
        n_in, n_out = TASK_DIMS[self.task]
        return n_train, n_test, n_in, n_out

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        _check_choice("task", self.task, tasks.TASK_NAMES)
        spec = self.spec
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("init", self.init, INITS)
        _check_choice("curvature", self.curvature, hf.CURVATURES)
        _check_choice("dtype", self.dtype, DTYPES)
        if self.activation:
            _check_choice("activation", self.activation, tuple(ACTIVATIONS))
        if self.loss:
            _check_choice("loss", self.loss, ("squared", "logistic", "softmax"))
            if spec.loss == "softmax" and self.loss != "softmax":
                raise ConfigError("loss", self.loss, f"task {self.task!r} has one-hot class targets; "
                                  "use 'softmax' (softmax output + cross-entropy)")
            if self.loss == "softmax" and spec.loss != "softmax":
                raise ConfigError("loss", self.loss, f"task {self.task!r} has no class targets; use "
                                  "'squared' (linear output) or 'logistic' (targets in [0, 1])")
            if self.loss == "logistic" and spec.loss == "squared" and spec.metric == "success":
                raise ConfigError("loss", self.loss, f"task {self.task!r} has targets outside "
                                  "[0, 1]; use 'squared'")
        try:
            hidden = self.hidden_sizes()
        except ValueError as e:
            raise ConfigError("layers", self.layers, str(e)) from None
        if spec.kind == "rnn" and len(hidden) != 1:
            raise ConfigError("layers", self.layers, f"task {self.task!r} is an RNN problem: give "
                              "one hidden size like '64' (an MLP layer string does not apply)")
        _check_number("init_scale", self.init_scale, 0.0, 1e3, open_low=True)
        _check_number("rec_scale", self.rec_scale, 0.0, 10.0)
        if spec.kind == "rnn":
            if self.seq_len is not None:
                _check_int("seq_len", self.seq_len, 1, 10_000,
                           "a whole number of time steps in [1, 10000] (leave it unset for the "
                           f"task's default {spec.default_seq_len})")
        elif self.seq_len is not None:
            raise ConfigError("seq_len", self.seq_len,
                              f"no sequence length: task {self.task!r} is not a sequence problem")
        _check_int("n_train", self.n_train, 0, 1_000_000)
        _check_int("n_test", self.n_test, 0, 1_000_000)
        _check_int("steps", self.steps, 1, 10_000_000)
        _check_number("max_seconds", self.max_seconds, 0.0, 30 * 86400.0)
        _check_number("target_error", self.target_error, -1.0, 1e12)
        _check_number("learning_rate", self.learning_rate, 0.0, 100.0, open_low=True)
        _check_number("momentum", self.momentum, 0.0, 1.0, open_high=True)
        _check_number("damping", self.damping, 0.0, 1e10, open_low=self.curvature != "gauss_newton")
        _check_number("structural_damping", self.structural_damping, 0.0, 1e4)
        if self.structural_damping and spec.kind != "rnn":
            raise ConfigError("structural_damping", self.structural_damping,
                              "only RNN tasks (it damps hidden-state changes); use 0 for an MLP")
        _check_number("weight_cost", self.weight_cost, 0.0, 1e3)
        _check_int("max_cg_iters", self.max_cg_iters, 1, 5000)
        _check_number("cg_decay", self.cg_decay, 0.0, 1.0)
        _check_int("n_chunks", self.n_chunks, 1, 10_000)
        _check_int("eval_every", self.eval_every, 1, 1_000_000)
        _check_int("checkpoint_every", self.checkpoint_every, 0, 1_000_000)
        _check_int("seed", self.seed, 0, 2 ** 31 - 1)
        n_train, n_test, n_in, n_out = self.task_sizes()
        _check_int("grad_batch", self.grad_batch, 0, n_train,
                   f"0 (whole training set) or 1..{n_train} (the training set has {n_train} cases)")
        gb = self.grad_batch or n_train
        if self.optimizer == "hf" and self.n_chunks > gb:
            raise ConfigError("n_chunks", self.n_chunks, f"at most the gradient batch size ({gb}): "
                              "each curvature chunk needs at least one case")
        validate_devices(self.devices)
        self._check_memory(n_train, n_in, n_out)
        return self

    def _check_memory(self, n_train, n_in, n_out):
        model = self.model(n_in, n_out)
        n_params = model.n_params
        if n_params > MAX_PARAMS:
            raise ConfigError("layers", self.layers or self.spec.default_layers,
                              f"the network would have {n_params:,} parameters; at most "
                              f"{MAX_PARAMS:,} are allowed")
        width = max(model.sizes)
        if width > MAX_LAYER_WIDTH:
            raise ConfigError("layers", self.layers, f"layer widths up to {MAX_LAYER_WIDTH:,}")
        itemsize = 4 if self.dtype == "float32" else 8
        # HF keeps ~16 saved CG iterates + ~10 work vectors; activations are stored per case
        vectors = 30 if self.optimizer == "hf" else 4
        steps = (int(1.1 * (self.seq_len or self.spec.default_seq_len)) + 10
                 if self.spec.kind == "rnn" else 1)
        batch = self.grad_batch or n_train
        act_bytes = 3 * batch * steps * sum(model.sizes) * itemsize
        param_bytes = vectors * n_params * itemsize
        total = act_bytes + param_bytes
        if total > MEMORY_BUDGET_BYTES:
            raise ConfigError("layers", self.layers or self.spec.default_layers,
                              f"this run would need about {total / 2**30:.1f} GiB "
                              f"({n_params:,} parameters, batch {batch}); the limit is "
                              f"{MEMORY_BUDGET_BYTES / 2**30:.0f} GiB — use fewer/narrower layers "
                              "or a smaller grad_batch")


# Recommended settings per task (what the app's presets and the CLI start from; any field given
# explicitly overrides them).  RNN problems follow Martens & Sutskever (2011): structural damping
# μ = 0.03, W_rec scaled to spectral radius 1.2, curvature on a quarter of the data.
_RNN_PRESET = dict(damping=1.0, structural_damping=0.03, rec_scale=1.2, n_chunks=4,
                   max_cg_iters=100, steps=300, eval_every=5, target_error=0.005)
PRESETS: dict[str, dict] = {
    "seed-333": dict(damping=1.0, steps=30, init="gaussian"),
    "regression": dict(damping=1.0, steps=50),
    "spirals": dict(damping=1.0, steps=100, init="gaussian", init_scale=2.0),
    "digits": dict(damping=1.0, steps=40),
    "digits-ae": dict(damping=1.0, steps=50),
    "mnist": dict(damping=1.0, steps=40, n_chunks=4),
    "mnist-ae": dict(damping=45.0, steps=30, grad_batch=1000, n_chunks=4, eval_every=5),
    "curves": dict(damping=45.0, steps=30, n_chunks=4, eval_every=5),
    "seed-rnn": dict(damping=1.0, steps=30),
    **{t: dict(_RNN_PRESET) for t in ("addition", "multiplication", "xor", "temporal-order-2",
                                      "temporal-order-3", "memorization")},
}


def preset_config(task: str, **overrides) -> RunConfig:
    """A RunConfig for ``task`` with its recommended settings, then ``overrides``."""
    data = {"task": task, **PRESETS.get(task, {}), **overrides}
    return RunConfig.from_dict(data)


TASK_DIMS = {"seed-333": (3, 3), "regression": (1, 1), "spirals": (2, 2), "digits": (64, 10),
             "digits-ae": (64, 64), "mnist": (784, 10), "mnist-ae": (784, 784),
             "curves": (784, 784), "seed-rnn": (3, 2), "addition": (2, 1),
             "multiplication": (2, 1), "xor": (2, 1), "temporal-order-2": (6, 4),
             "temporal-order-3": (6, 8), "memorization": (4, 2)}


def parse_layers(text: str) -> list[int]:
    """'400-200-100' → [400, 200, 100]; commas or spaces also separate."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a layer string like '32-16' (hidden widths separated by '-')")
    parts = [p for p in text.replace(",", "-").replace(" ", "-").split("-") if p != ""]
    out = []
    for p in parts:
        if not p.isdigit():
            raise ValueError(f"layer sizes must be whole numbers; {p!r} is not (e.g. '32-16')")
        v = int(p)
        if v < 1:
            raise ValueError("every layer needs at least 1 unit")
        if v > MAX_LAYER_WIDTH:
            raise ValueError(f"layer width {v:,} exceeds the limit of {MAX_LAYER_WIDTH:,} units")
        out.append(v)
    if not out:
        raise ValueError("a layer string like '32-16' (hidden widths separated by '-')")
    return out


def validate_devices(devices: str):
    text = str(devices).strip().lower()
    if text in ("all", "cpu") or (text.isdigit() and 1 <= int(text) <= 4096):
        return
    raise ConfigError("devices", devices, "'all', 'cpu' or a device count ≥ 1")


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(name, value, f"one of {list(allowed)}")


def _is_number(v):
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def _check_number(name, value, lo, hi, open_low=False, open_high=False):
    if not _is_number(value) or not math.isfinite(float(value)):
        raise ConfigError(name, value, f"a finite number in {'(' if open_low else '['}{lo}, {hi}"
                          f"{')' if open_high else ']'}")
    v = float(value)
    if v < lo or v > hi or (open_low and v == lo) or (open_high and v == hi):
        raise ConfigError(name, value, f"a number in {'(' if open_low else '['}{lo}, {hi}"
                          f"{')' if open_high else ']'}")


def _check_int(name, value, lo, hi, message=None):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ConfigError(name, value, message or f"a whole number in [{lo}, {hi}]")
    if value < lo or value > hi:
        raise ConfigError(name, value, message or f"a whole number in [{lo}, {hi}]")


def _coerce(name, value, type_name):
    """JSON/CLI values to the field's type, with a ConfigError naming the field on failure."""
    t = str(type_name)
    try:
        if t == "bool" or t.startswith("bool"):
            if value is None and "None" in t:
                return None
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if t.startswith("int") and "None" in t and value is None:
            return None
        if t.startswith("int"):
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
            if isinstance(value, (int, np.integer)):
                return int(value)
            raise ValueError
        if t == "float":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str):
                return float(value.strip())
            if _is_number(value):
                return float(value)
            raise ValueError
        if t == "str":
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                return str(value)
            raise ValueError
    except (ValueError, TypeError):
        kind = {"int": "a whole number", "float": "a number", "str": "text"}.get(
            t, "true or false")
        raise ConfigError(name, value, kind) from None
    return value


# ----------------------------------------------------------------------------- building
@dataclass
class Built:
    config: RunConfig
    task: tasks.Task
    model: Model
    loss: Any
    optimizer: Any
    dtype: Any


_OPT_CACHE: dict = {}


def build(config: RunConfig) -> Built:
    """Task data, model and optimiser for a validated config.

    Optimisers are cached by (model, loss, settings) so runs with matching configurations share
    their compiled update (JAX's jit cache lives on the function object).
    """
    config.validate()
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    task = tasks.load_task(config.task, config.seed, config.seq_len or 0, config.n_train,
                           config.n_test, dtype)
    model = config.model(task.n_in, task.n_out)
    loss = get_loss(config.resolved_loss())
    if config.optimizer == "hf":
        hf_cfg = hf.HFConfig(curvature=config.curvature, damping=config.damping,
                             structural_damping=config.structural_damping,
                             weight_cost=config.weight_cost, max_cg_iters=config.max_cg_iters,
                             cg_decay=config.cg_decay, backtracking=config.backtracking,
                             line_search=config.line_search, preconditioner=config.preconditioner)
        key = ("hf", model, loss, hf_cfg)
        if key not in _OPT_CACHE:
            _OPT_CACHE[key] = hf.HessianFree(model, loss, hf_cfg)
    else:
        key = (config.optimizer, model, loss, config.learning_rate, config.momentum,
               config.weight_cost)
        if key not in _OPT_CACHE:
            _OPT_CACHE[key] = baselines.first_order(model, loss, config.optimizer,
                                                    config.learning_rate,
                                                    momentum=config.momentum,
                                                    weight_cost=config.weight_cost)
    return Built(config, task, model, loss, _OPT_CACHE[key], dtype)


def init_params(built: Built):
    return built.model.init_params(jax.random.PRNGKey(built.config.seed), built.dtype)


# ----------------------------------------------------------------------------- data stream
def batches_for_step(built: Built, step: int) -> tuple[Batch, Batch]:
    """(gradient batch, curvature batch) of update ``step`` — a pure function of (seed, step)."""
    cfg, train = built.config, built.task.train
    n = train.size
    gb = cfg.grad_batch or n
    if gb >= n:
        grad = train
    else:
        per_epoch = n // gb
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng((cfg.seed, epoch)).permutation(n)[k * gb:(k + 1) * gb]
        idx = jnp.asarray(np.sort(perm))
        grad = Batch(train.x[idx], train.y[idx], train.mask[idx])
    if cfg.optimizer != "hf" or cfg.n_chunks == 1:
        return grad, grad
    size = gb // cfg.n_chunks
    c = step % cfg.n_chunks
    sl = slice(c * size, (c + 1) * size)
    return grad, Batch(grad.x[sl], grad.y[sl], grad.mask[sl])


# ----------------------------------------------------------------------------- evaluation
_EVAL_CACHE: dict = {}


def evaluator(built: Built) -> Callable:
    key = (built.model, built.loss, built.task.spec, built.config.weight_cost)
    if key not in _EVAL_CACHE:
        model, loss, spec = built.model, built.loss, built.task.spec

        @jax.jit
        def evaluate(params, batch: Batch):
            z = model.apply(params, batch.x)
            return loss.value(z, batch.y, batch.mask), tasks.task_error(spec, z, batch)
        _EVAL_CACHE[key] = evaluate
    return _EVAL_CACHE[key]


def _evaluation(evaluate: Callable, params, task) -> dict:
    tr_loss, tr_err = evaluate(params, task.train)
    te_loss, te_err = evaluate(params, task.test)
    return {"train_loss": float(tr_loss), "train_error": float(tr_err),
            "test_loss": float(te_loss), "test_error": float(te_err)}


# ----------------------------------------------------------------------------- the loop
STEP_FIELDS = ("step", "wall_seconds", "train_loss", "train_error", "test_loss", "test_error",
               "n_grad", "n_gv", "n_forward", "n_passes")


@dataclass
class RunOutcome:
    status: str                     # finished | stopped | diverged | failed
    reason: str
    steps_done: int
    params: Any
    opt_state: Any
    last: dict = field(default_factory=dict)


def info_to_record(info) -> tuple[dict, dict | None]:
    """Split an optimiser info record into scalar metrics and (for HF) the CG trace."""
    scalars, trace = {}, None
    d = info._asdict()
    if "cg_residuals" in d:
        iters = int(d["cg_iters"])
        trace = {"residual_norms": np.asarray(d["cg_residuals"])[:iters + 1].astype(float),
                 "quad_values": np.asarray(d["cg_quad_values"])[:iters + 1].astype(float),
                 "saved_iters": [int(i) for i in np.asarray(d["saved_iters"]) if i >= 0],
                 "backtrack_index": int(d["backtrack_index"]),
                 "stop_reason": hf_stop_reason(int(d["cg_stop_reason"]))}
    for k, v in d.items():
        if k in ("cg_residuals", "cg_quad_values", "saved_iters"):
            continue
        a = np.asarray(v)
        if k == "cg_stop_reason":
            scalars[k] = hf_stop_reason(int(a))
        elif a.dtype == bool:
            scalars[k] = bool(a)
        elif np.issubdtype(a.dtype, np.integer):
            scalars[k] = int(a)
        else:
            scalars[k] = float(a)
    return scalars, trace


def hf_stop_reason(i: int) -> str:
    from .cg import STOP_REASONS
    return STOP_REASONS[i]


_COMPILED: dict = {}


def _signature(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((a.shape, str(a.dtype), getattr(a, "sharding", None)) for a in leaves)


def compiled_update(opt, args) -> tuple[Callable, float]:
    """The optimiser's update compiled ahead of time for these argument shapes, and the seconds
    compiling took (0 when cached).  Compiling apart from the first call keeps compilation out of
    the optimisation time that curves and wall-clock budgets use; compiled programs are shared
    by every run with the same optimiser and shapes."""
    key = (id(opt), _signature(args))
    if key in _COMPILED:
        return _COMPILED[key][1], 0.0
    t0 = time.perf_counter()
    compiled = opt.update.lower(*args).compile()
    _COMPILED[key] = (opt, compiled)          # keep `opt` alive so its id stays unique
    return compiled, time.perf_counter() - t0


def run(config: RunConfig, on_step: Callable | None = None, should_stop: Callable | None = None,
        start_step: int = 0, params=None, opt_state=None, counters: dict | None = None,
        built: Built | None = None, place: Callable | None = None) -> RunOutcome:
    """Train; call ``on_step(record, trace, params, opt_state)`` after every update.

    ``record`` holds the step's metrics (train/test loss and error at evaluation steps, wall
    seconds of optimisation, cumulative gradient / Gv / forward counts, and every scalar of the
    optimiser's info record); ``trace`` is the HF CG trace (``None`` for first-order runs).
    ``should_stop()`` is polled between updates (a clean stop takes at most one update).
    ``wall_seconds`` is optimisation time (compilation, reported as ``compile_seconds``, and
    evaluation left out).  ``config.max_seconds`` budgets elapsed wall-clock time less
    compilation, so optimisers with cheap and with expensive steps get the same real time.
    ``place`` optionally maps (params, opt_state, batches) onto a device mesh.
    """
    built = built or build(config)
    opt = built.optimizer
    if params is None:
        params = init_params(built)
        opt_state = opt.init(params)
    counters = dict(counters or {})
    wall = float(counters.get("wall_seconds", 0.0))
    totals = {k: int(counters.get(k, 0)) for k in ("n_grad", "n_gv", "n_forward", "n_passes")}
    evaluate = evaluator(built)
    rejections, nonfinite = 0, False
    compile_seconds = float(counters.get("compile_seconds", 0.0))
    session_compile = 0.0
    start_time = time.perf_counter()
    last: dict = {}
    step = start_step
    status, reason = "finished", ""
    while step < config.steps:
        if should_stop is not None and should_stop():
            status, reason = "stopped", "stopped by the user"
            break
        if config.max_seconds and (time.perf_counter() - start_time - session_compile
                                   >= config.max_seconds):
            status, reason = "finished", f"wall-clock budget of {config.max_seconds:g} s reached"
            break
        grad_b, curv_b = batches_for_step(built, step)
        if place is not None:
            params, opt_state, grad_b, curv_b = place(params, opt_state, grad_b, curv_b)
        update, compile_s = compiled_update(opt, (params, opt_state, grad_b, curv_b))
        compile_seconds += compile_s
        session_compile += compile_s
        t0 = time.perf_counter()
        params, opt_state, info = update(params, opt_state, grad_b, curv_b)
        # waiting here keeps at most one program in flight (see DESIGN: sharded CPU all-reduces)
        jax.block_until_ready((params, info))
        wall += time.perf_counter() - t0
        scalars, trace = info_to_record(info)
        totals["n_grad"] += scalars["n_grad"]
        totals["n_gv"] += scalars["n_gv"]
        totals["n_forward"] += scalars["n_forward"]
        totals["n_passes"] += scalars["n_forward_backward_passes"]
        step += 1
        record = {"step": step, "wall_seconds": wall, "compile_seconds": compile_seconds,
                  **scalars,
                  "n_grad": totals["n_grad"], "n_gv": totals["n_gv"],
                  "n_forward": totals["n_forward"], "n_passes": totals["n_passes"],
                  "step_n_grad": scalars["n_grad"], "step_n_gv": scalars["n_gv"]}
        if step % config.eval_every == 0 or step == config.steps or step == 1:
            record.update(_evaluation(evaluate, params, built.task))
        last = record
        if on_step is not None:
            on_step(record, trace, params, opt_state)
        if not scalars["accepted"]:
            if opt.kind == "first_order":
                return RunOutcome("diverged", f"loss or gradient became non-finite at step {step}",
                                  step, params, opt_state, last)
            rejections += 1
            nonfinite = nonfinite or not math.isfinite(scalars["loss_before"])
            if rejections >= MAX_CONSECUTIVE_REJECTIONS:
                if nonfinite:
                    return RunOutcome("failed", f"{rejections} consecutive HF steps rejected with "
                                      f"non-finite values (last λ = {scalars['new_damping']:.3g}) "
                                      f"at step {step}", step, params, opt_state, last)
                # finite loss, no decrease found however much λ grows: a (local) minimum
                return RunOutcome("finished", f"converged: no decrease in {rejections} "
                                  f"consecutive HF updates (loss {scalars['loss_before']:.6g})",
                                  step, params, opt_state, last)
        else:
            rejections, nonfinite = 0, False
        if "train_loss" in record and not math.isfinite(record["train_loss"]):
            return RunOutcome("diverged", f"training loss became non-finite at step {step}",
                              step, params, opt_state, last)
        if "test_error" in record and record["test_error"] <= config.target_error:
            return RunOutcome("finished", f"target test error {config.target_error:g} reached "
                              f"at step {step}", step, params, opt_state, last)
    if last and "test_error" not in last:
        # the run ended between evaluations (budget, stop): evaluate where it ended
        last.update(_evaluation(evaluate, params, built.task))
        if on_step is not None:
            on_step(last, None, params, opt_state)
    return RunOutcome(status, reason, step, params, opt_state, last)

"""The Train page's form as plain data: defaults from task presets, the URL query string (like
TensorFlow Playground: copying the URL reproduces the set-up), and the RunConfigs it starts.

No Streamlit here, so the parsing and its warnings are unit-tested directly.
"""
from __future__ import annotations

from .experiment import PRESETS, ConfigError, RunConfig, preset_config
from .tasks import SPECS, TASK_NAMES

OPTIMIZER_CHOICES = ("hf", "sgd", "momentum", "adam")
DEFAULT_LR = {"sgd": 0.05, "momentum": 0.01, "adam": 0.003}

# form field → (type, RunConfig field or None)
FIELDS = {
    "task": str, "optimizers": list, "steps": int, "seed": int, "layers": str,
    "activation": str, "loss": str, "init": str, "seq_len": int, "damping": float,
    "structural_damping": float, "max_cg_iters": int, "n_chunks": int, "weight_cost": float,
    "curvature": str, "preconditioner": bool, "backtracking": bool, "line_search": bool,
    "lr_sgd": float, "lr_momentum": float, "lr_adam": float, "dtype": str, "devices": str,
}


def task_defaults(task: str) -> dict:
    """Form values for a task: its preset, the model it implies, default learning rates."""
    spec = SPECS[task]
    cfg = preset_config(task)
    return {
        "task": task, "optimizers": ["hf", "sgd"], "steps": cfg.steps, "seed": 0,
        "layers": spec.default_layers, "activation": spec.default_activation, "loss": spec.loss,
        "init": cfg.init, "seq_len": spec.default_seq_len if spec.kind == "rnn" else 0,
        "damping": cfg.damping, "structural_damping": cfg.structural_damping,
        "max_cg_iters": cfg.max_cg_iters, "n_chunks": cfg.n_chunks, "weight_cost": cfg.weight_cost,
        "curvature": cfg.curvature, "preconditioner": cfg.preconditioner,
        "backtracking": cfg.backtracking, "line_search": cfg.line_search,
        "lr_sgd": DEFAULT_LR["sgd"], "lr_momentum": DEFAULT_LR["momentum"],
        "lr_adam": DEFAULT_LR["adam"], "dtype": "float32", "devices": "1",
    }


DEFAULT_TASK = "digits-ae"


def _parse(name: str, text: str):
    kind = FIELDS[name]
    if kind is list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in OPTIMIZER_CHOICES]
        if bad or not items:
            raise ValueError(f"optimizers must be from {list(OPTIMIZER_CHOICES)}")
        return items
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("true or false")
    if kind is int:
        return int(text)
    if kind is float:
        v = float(text)
        if v != v:
            raise ValueError("a number")
        return v
    return text


def form_from_query(query: dict) -> tuple[dict, list[str]]:
    """Form values from URL query parameters; bad or stale values give warnings and fall back
    to the task's defaults (an unknown task falls back to the default task)."""
    warnings = []
    task = query.get("task", DEFAULT_TASK)
    if task not in TASK_NAMES:
        warnings.append(f"URL: task {task!r} is unknown — using {DEFAULT_TASK!r}")
        task = DEFAULT_TASK
    form = task_defaults(task)
    for key, raw in query.items():
        if key in ("task", "run"):
            continue
        if key not in FIELDS:
            warnings.append(f"URL: parameter {key!r} is not a setting of this page — ignored")
            continue
        try:
            form[key] = _parse(key, str(raw))
        except ValueError as e:
            warnings.append(f"URL: {key}={raw!r} is not valid ({e}) — using the default "
                            f"{form[key]!r}")
    return form, warnings


def query_from_form(form: dict) -> dict[str, str]:
    """Only the values that differ from the task's defaults, so URLs stay short."""
    defaults = task_defaults(form["task"])
    out = {"task": form["task"]}
    for key, value in form.items():
        if key == "task" or key not in FIELDS or value == defaults.get(key):
            continue
        out[key] = ",".join(value) if isinstance(value, list) else str(value).lower() \
            if isinstance(value, bool) else str(value)
    return out


def configs_from_form(form: dict) -> list[RunConfig]:
    """One validated RunConfig per chosen optimiser, sharing task, data and seed.

    Raises :class:`ConfigError` (naming the field) for the first bad value.
    """
    if not form.get("optimizers"):
        raise ConfigError("optimizers", [], f"choose at least one of {list(OPTIMIZER_CHOICES)}")
    spec = SPECS[form["task"]]
    configs = []
    for opt in form["optimizers"]:
        base = dict(PRESETS.get(form["task"], {}))
        base.update(task=form["task"], optimizer=opt, steps=form["steps"], seed=form["seed"],
                    layers=form["layers"], activation=form["activation"], loss=form["loss"],
                    init=form["init"], dtype=form["dtype"], devices=form["devices"],
                    weight_cost=form["weight_cost"], name=f"{form['task']} · {opt}")
        if not str(form["layers"]).strip():
            raise ConfigError("layers", form["layers"], "a layer string like '32-16' "
                              "(hidden widths separated by '-')")
        if spec.kind == "rnn":
            base["seq_len"] = form["seq_len"]
        if opt == "hf":
            base.update(damping=form["damping"], structural_damping=form["structural_damping"],
                        max_cg_iters=form["max_cg_iters"], n_chunks=form["n_chunks"],
                        curvature=form["curvature"], preconditioner=form["preconditioner"],
                        backtracking=form["backtracking"], line_search=form["line_search"])
        else:
            base.update(learning_rate=form[f"lr_{opt}"], structural_damping=0.0, n_chunks=1)
        # first-order runs compare at equal data: same stream, no target-based early stop
        configs.append(RunConfig.from_dict(base).validate())
    return configs

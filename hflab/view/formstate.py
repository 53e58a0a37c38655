"""The Train page's form as plain data, derived from the config and the optimiser registry.

A form is a flat dict: the task, the chosen optimisers, the fields every run of a comparison
shares (:data:`COMMON_FIELDS`), and each registered optimiser's own settings under
``<optimizer>.<setting>`` (:func:`form_key`: ``hf.damping``, ``adam.learning_rate``), so two
optimisers may share a setting's name without renaming anything.  Types, ranges and help come
from :data:`hflab.config.FIELDS` and each optimiser's settings dataclass; defaults from the
task's preset.  The URL query string mirrors the form (like TensorFlow Playground: copying the
URL reproduces the set-up); links made before settings were namespaced (``damping``,
``lr_adam``) still open the same set-up (:data:`hflab.keys.LEGACY_URL_KEYS`).  Invalid or
out-of-range URL values are named in a warning and fall back to the task's default.  No
Streamlit here, so all of it is unit-tested directly.
"""
from __future__ import annotations

import dataclasses

from .. import optimizers
from ..config import FIELDS, ConfigError, RunConfig, coerce, field_kind, preset_config
from ..core.settings import coerce_value, fields_of, kind_of
from ..keys import LEGACY_URL_KEYS
from ..tasks import CUSTOM, TASK_NAMES, TaskSpec, get_spec

DEFAULT_TASK = "digits-ae"
DEFAULT_OPTIMIZERS = ["hf", "sgd"]
# the settings every run of one comparison shares (what the page offers besides optimisers)
COMMON_FIELDS = ("steps", "max_seconds", "seed", "layers", "activation", "loss", "init",
                 "seq_len", "curriculum", "weight_cost", "dtype", "devices", "data")


# What to look for in each preset's default comparison, and why.  No measured numbers here: what
# past runs measured is in the generated report (docs/benchmarks.md), never in product text.
COMMENTARY: dict[str, str] = {
    "digits-ae": "A small autoencoder whose narrow code layer gives the objective badly scaled "
                 "curvature: compare the curves against seconds and passes as well as updates — "
                 "an HF update costs many first-order steps.  HF takes its curvature products "
                 "on a quarter of the batch, a different quarter each update (Martens' "
                 "curvature mini-batch; 1 curvature chunk in HF's settings takes the whole batch) "
                 "and judges each step (ρ) on the whole batch.",
    "curves": "Martens' (2010) CURVES-like deep autoencoder: the pathological curvature HF was "
              "designed for.  Compare training error (what an optimiser minimises) at equal "
              "time; the first-order methods' learning rates come from the recorded sweep.",
    "addition": "A long-range dependency: the target depends on two marked inputs far apart.  "
                "Watch whether the error leaves the predict-the-mean plateau; structural "
                "damping keeps HF's steps from changing the hidden states too much.",
    "xor": "Neither marked bit alone says anything about the target, so a random net gets no "
           "gradient signal until it carries both bits to the end.  Compare HF with and "
           "without structural damping; at long T try the length curriculum (e.g. 20,50,100).",
    "seed-333": "The notebook's 3-3-3 net: small enough that every curvature matrix is shown "
                "exactly on the Curvature page.",
    "spirals": "A classic case where curvature helps: the two spirals need many first-order "
               "steps to separate.",
    "regression": "A smooth 1-d fit: watch λ fall as the quadratic model becomes trustworthy "
                  "(ρ near 1).",
    "digits": "Classification of the 8×8 digits: compare the curves against forward+backward "
              "passes, where an HF update costs tens of passes and a first-order step two.",
    "mnist": "Real MNIST images, 10 classes: curvature chunks (a quarter of the batch) keep "
             "each CG iteration's cost near one gradient's worth.",
    "mnist-ae": "Martens' deep MNIST autoencoder (λ₀ = 45, 4 curvature chunks): deep, with a "
                "narrow code layer; expect minutes, not seconds.",
    "seed-rnn": "The notebook's 3-3-2 tanh RNN as a teacher: small enough to see the full "
                "Hessian of an RNN on the Curvature page.",
    "multiplication": "Like addition but the product of the marked values (right when within "
                      "0.04); a model that predicts the mean product stays far from 100 %.",
    "temporal-order-2": "Order of two symbols among distractors (4 classes): chance is 25 %, "
                        "so an error curve near 0.75 has learnt nothing yet.",
    "temporal-order-3": "Three symbols, 8 classes: harder than 2-bit; chance is 12.5 %.",
    "memorization": "Reproduce 5 bits after T blank steps; guessing gets all 5 right once in "
                    "32 cases — a long-range memory test.",
}


def form_key(optimizer: str, field: str) -> str:
    """Form / URL key of an optimiser's setting: ``hf.damping``, ``adam.learning_rate``."""
    return f"{optimizer}.{field}"


def optimizer_keys() -> dict[str, tuple[str, str]]:
    """form key → (optimizer, setting) for every registered optimiser's settings."""
    return {form_key(o, f): (o, f) for o, e in optimizers.REGISTRY.items()
            for f in e.field_names()}


def _setting_field(key: str) -> dataclasses.Field:
    optimizer, name = optimizer_keys()[key]
    return fields_of(optimizers.REGISTRY[optimizer].settings)[name]


def all_keys() -> tuple[str, ...]:
    return ("task", "optimizers", *COMMON_FIELDS, *optimizer_keys())


def spec_of(task: str, data: str = "") -> TaskSpec:
    """The task's spec; for ``custom`` without a (known) data set, a plain MLP placeholder."""
    try:
        return get_spec(task, data)
    except ValueError:
        return TaskSpec(CUSTOM, "mlp", "squared", "mse", "Your own data: upload a CSV or NPZ "
                        "file.", "32", "tanh")


def task_defaults(task: str, data: str = "") -> dict:
    """Form values for a task: its preset, the model it implies, each optimiser's settings."""
    spec = spec_of(task, data)
    cfg = preset_config(task)
    form = {"task": task, "optimizers": list(DEFAULT_OPTIMIZERS)}
    for name in COMMON_FIELDS:
        form[name] = getattr(cfg, name)
    form.update(layers=spec.default_layers, activation=spec.default_activation, loss=spec.loss,
                seq_len=(cfg.final_seq_len() or 0) if spec.kind == "rnn" else 0,
                data=data if task == CUSTOM else "")
    for key, (opt, name) in optimizer_keys().items():
        form[key] = getattr(optimizers.REGISTRY[opt].preset(task), name)
    return form


def _parse(key: str, text: str):
    if key == "optimizers":
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in optimizers.NAMES]
        if bad or not items:
            raise ValueError(f"a comma-separated list from {list(optimizers.NAMES)}")
        return items
    if key == "seq_len" and text.strip() in ("", "0"):
        return 0
    field = _setting_field(key) if key in optimizer_keys() else FIELDS[key]
    try:
        value = coerce(key, text) if key in FIELDS else coerce_value(key, kind_of(field), text)
    except ConfigError as e:
        raise ValueError(e.allowed) from None
    choices = field.metadata.get("choices")
    if choices and value not in choices:
        raise ValueError(f"one of {[c for c in choices if c]}")
    return value


def configs_from_form(form: dict) -> list:
    """One validated RunConfig per chosen optimiser, sharing task, data and seed.

    Raises :class:`ConfigError` (naming the form's field) for the first bad value.
    """
    if not form.get("optimizers"):
        raise ConfigError("optimizers", [], f"choose at least one of {list(optimizers.NAMES)}")
    task = form["task"]
    if task not in TASK_NAMES:
        raise ConfigError("task", task, f"one of {list(TASK_NAMES)}")
    configs = []
    for opt in form["optimizers"]:
        cfg = preset_config(task, optimizer=opt)
        data = {**cfg.to_dict(), "name": f"{task} · {opt}"}
        for name in COMMON_FIELDS:
            data[name] = form[name]
        rnn = spec_of(task, form.get("data", "")).kind == "rnn"
        data["curriculum"] = str(form.get("curriculum", "")).strip() if rnn else ""
        # with a curriculum T comes from it (its last length); the T field is not used
        data["seq_len"] = (form["seq_len"] or None) if rnn and not data["curriculum"] else None
        data["data"] = form.get("data", "") if task == CUSTOM else ""
        if not str(form["layers"]).strip():
            raise ConfigError("layers", form["layers"], "a layer string like '32-16' "
                              "(hidden widths separated by '-')")
        data["settings"] = {name: form[form_key(opt, name)]
                            for name in optimizers.get(opt).field_names()}
        configs.append(RunConfig.from_dict(data).validate())
    return configs


def form_from_query(query: dict) -> tuple[dict, list[str]]:
    """Form values from URL query parameters, and warnings for what was not used.

    Unknown keys, unparsable values and values the config rejects (out of range, inconsistent)
    are each named and fall back to the task's default; an unknown task falls back to the
    default task.
    """
    warnings = []
    task = query.get("task", DEFAULT_TASK)
    if task not in TASK_NAMES:
        warnings.append(f"URL: task {task!r} is unknown — using {DEFAULT_TASK!r}")
        task = DEFAULT_TASK
    defaults = task_defaults(task, str(query.get("data", "")) if task == CUSTOM else "")
    form, from_url = dict(defaults), set()
    keys = set(all_keys())
    renamed = {LEGACY_URL_KEYS.get(k, k): v for k, v in query.items()
               if LEGACY_URL_KEYS.get(k, k) == k or LEGACY_URL_KEYS[k] not in query}
    for key, raw in renamed.items():
        if key in ("task", "run"):
            continue
        if key not in keys:
            warnings.append(f"URL: parameter {key!r} is not a setting of this page — ignored")
            continue
        if key == "data" and task != CUSTOM:
            warnings.append(f"URL: data={raw!r} is only for the task 'custom' — ignored")
            continue
        try:
            form[key] = _parse(key, str(raw))
            from_url.add(key)
        except ValueError as e:
            warnings.append(f"URL: {key}={raw!r} is not valid ({e}) — using the task default "
                            f"{defaults[key]!r}")
    for _ in range(len(from_url) + 1):          # out-of-range values, one at a time
        try:                                     # every optimiser's settings, chosen or not
            configs_from_form({**form, "optimizers": list(optimizers.NAMES)})
            break
        except ConfigError as e:
            if e.field not in from_url:
                break
            warnings.append(f"URL: {e.field}={form[e.field]!r} is not allowed ({e.allowed}) — "
                            f"using the task default {defaults[e.field]!r}")
            form[e.field] = defaults[e.field] if e.field != "data" else ""
            from_url.discard(e.field)
    return form, warnings


def _text(value) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def query_from_form(form: dict) -> dict[str, str]:
    """Only the values that differ from the task's defaults, so URLs stay short."""
    defaults = task_defaults(form["task"])
    out = {"task": form["task"]}
    for key in all_keys():
        if key == "data" and form["task"] != CUSTOM:
            continue
        if key != "task" and key in form and form[key] != defaults.get(key):
            out[key] = _text(form[key])
    return out


def widget_kind(key: str) -> tuple[str, tuple | None]:
    """('bool' | 'int' | 'float' | 'str', choices) of a form key, from the config's fields or
    the optimiser's settings dataclass."""
    if key in optimizer_keys():
        field = _setting_field(key)
        kind = kind_of(field)
    else:
        field, kind = FIELDS[key], field_kind(key)
    choices = field.metadata.get("choices")
    return kind, (tuple(c for c in choices if c) if choices else None)


def field_help(key: str) -> str:
    field = _setting_field(key) if key in optimizer_keys() else FIELDS[key]
    return field.metadata["help"]

"""How settings are named when written down: a run's optimiser settings under ``settings`` or as
``<optimizer>.<setting>`` keys (``hf.damping``, ``adam.learning_rate``), and the names that links,
config files and bundles used before each optimiser owned its settings.

Before, every optimiser setting was a flat run field (``damping``, ``learning_rate``), and the
Train page's URL renamed a setting once two optimisers shared it (``lr_adam``).  Those names
are read here forever, so every link and bundle made before keeps opening the same set-up.
"""
from __future__ import annotations

import dataclasses

from . import optimizers
from .core.settings import SettingError as ConfigError
from .core.settings import as_dict

# the optimiser settings that were flat RunConfig fields before each optimiser owned its own
LEGACY_OPTIMIZER_FIELDS = ("learning_rate", "momentum", "curvature", "damping",
                           "structural_damping", "max_cg_iters", "cg_decay", "backtracking",
                           "line_search", "preconditioner", "rho_batch", "n_chunks")
# the Train page's URL keys of optimiser settings before, as they were (a frozen table)
LEGACY_URL_KEYS = {
    **{f"lr_{o}": f"{o}.learning_rate" for o in ("sgd", "momentum", "adam", "lbfgs")},
    "momentum": "momentum.momentum",
    **{f: f"hf.{f}" for f in ("curvature", "damping", "structural_damping", "max_cg_iters",
                             "cg_decay", "backtracking", "line_search", "preconditioner",
                             "rho_batch", "n_chunks")},
}


def split_settings(data: dict, run_fields, default_optimizer: str) -> tuple[dict, dict[str, dict]]:
    """``data`` → (run fields, {optimizer: its settings}).  Reads a ``settings`` mapping (the
    run's optimiser's), ``<optimizer>.<setting>`` keys, and flat legacy names (applied to the
    run's optimiser if it has them, else dropped).  Unknown keys raise :class:`ConfigError`."""
    optimizer = data.get("optimizer", default_optimizer)
    run, own = {}, {}
    given = data.get("settings", {})
    if not isinstance(given, dict):
        raise ConfigError("settings", given, "a JSON object of the optimiser's settings")
    entry = optimizers.REGISTRY.get(optimizer) if isinstance(optimizer, str) else None
    legacy = {k: v for k, v in data.items() if k in LEGACY_OPTIMIZER_FIELDS}
    if entry is not None:
        own[optimizer] = {**{k: v for k, v in legacy.items() if k in entry.field_names()},
                          **given}
    for key, value in data.items():
        if key in run_fields:
            run[key] = value
        elif key in ("settings",) or key in LEGACY_OPTIMIZER_FIELDS:
            continue
        elif "." in key and key.split(".", 1)[0] in optimizers.REGISTRY:
            name, field = key.split(".", 1)
            if name != optimizer:
                raise ConfigError(key, value, f"a setting of optimizer {name!r}; this run's "
                                  f"optimizer is {optimizer!r}")
            own.setdefault(name, {})[field] = value
        else:
            raise ConfigError(key, value, f"not a RunConfig field; fields are {sorted(run_fields)} "
                              "and '<optimizer>.<setting>'")
    return run, own


def merge(data: dict, overrides: dict, default_optimizer: str) -> dict:
    """``data`` (a config mapping) with ``overrides`` applied on top.  Settings merge field by
    field: a ``settings`` mapping, flat setting names and ``<optimizer>.<setting>`` keys of the
    run's optimiser all go into its ``settings``; a flat name it does not read is dropped (old
    configs carry every optimiser's), a namespaced key of another optimiser is left for
    :func:`split_settings` to refuse by name."""
    out = dict(data)
    optimizer = overrides.get("optimizer", out.get("optimizer", default_optimizer))
    settings = dict(out.get("settings") or {})
    if isinstance(optimizer, str) and optimizer != out.get("optimizer", default_optimizer):
        settings = {}                   # another optimiser: the old one's settings do not apply
    for key, value in overrides.items():
        if key == "settings":
            given = as_dict(value) if dataclasses.is_dataclass(value) else value
            if not isinstance(given, dict):
                raise ConfigError("settings", given, "a JSON object of the optimiser's settings")
            settings.update(given)
        elif key in LEGACY_OPTIMIZER_FIELDS:
            settings[key] = value
        elif isinstance(key, str) and key.startswith(f"{optimizer}."):
            settings[key.split(".", 1)[1]] = value
        else:
            out[key] = value
    entry = optimizers.REGISTRY.get(optimizer) if isinstance(optimizer, str) else None
    if entry is not None:
        settings = {k: v for k, v in settings.items()
                    if k in entry.field_names() or k not in LEGACY_OPTIMIZER_FIELDS}
    out["settings"] = settings
    return out

"""An optimiser's own settings: a frozen dataclass whose fields carry their help text, range and
allowed choices, with coercion and checking driven by those fields alone.

Each optimiser module declares one such class (``HFSettings``, ``AdamSettings``, …) next to the
optimiser; the lab's registry (:mod:`hflab.optimizers`) names it, and the form, the CLI, the URL,
bundles and the store all go through the helpers here, so a new optimiser's settings reach every
one of them without code of their own.  Written by hand (instead of, say, pydantic) because the
lab needs exactly this much — ranges, choices, four kinds — and the messages must name the field,
the value and what is allowed in the lab's own words.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

MAX_TEXT = 200                              # longest name / layer / devices string accepted


class SettingError(ValueError):
    """A setting's value that cannot be used; ``field`` names it, ``allowed`` says what can."""

    def __init__(self, field_name: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field_name, value, allowed
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "…"
        super().__init__(f"{field_name}: {shown} is not allowed — {allowed}")


def setting(default, help: str, *, lo=None, hi=None, open_low=False, open_high=False,
            choices=None):
    """A settings field: its default, help text and what is allowed (``[lo, hi]`` with open ends
    as asked, or ``choices``)."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, lo=lo, hi=hi, open_low=open_low, open_high=open_high, choices=choices))


def kind_of(field: dataclasses.Field) -> str:
    """'bool', 'int', 'float' or 'str' — what a form widget or a flag asks for."""
    t = str(field.type)
    return "bool" if t.startswith("bool") else "int" if t.startswith("int") else \
        "float" if t.startswith("float") else "str"


def number_text(value: str) -> str:
    """A number's text without surrounding space; ValueError unless it is ASCII (Python's int
    and float also read other scripts' digits, which no field should take)."""
    text = value.strip()
    if not text.isascii():
        raise ValueError
    return text


def coerce_value(name: str, kind: str, value, optional: bool = False):
    """A JSON / CLI / URL value to ``kind``; :class:`SettingError` naming ``name`` if it cannot be."""
    try:
        if value is None and optional:
            return None
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = value.strip().lower() if isinstance(value, str) else None
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
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
        raise SettingError(name, value, what) from None


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def allowed_text(field: dataclasses.Field) -> str:
    """What ``field`` allows, in words."""
    m, kind = field.metadata, kind_of(field)
    if m.get("choices"):
        return f"one of {list(m['choices'])}"
    if kind == "bool":
        return "true or false"
    if m.get("lo") is not None:
        left, right = "(" if m["open_low"] else "[", ")" if m["open_high"] else "]"
        what = "a whole number" if kind == "int" else "a number"
        return f"{what} in {left}{m['lo']}, {m['hi']}{right}"
    return f"text of at most {MAX_TEXT} characters" if kind == "str" else kind


def check_value(name: str, field: dataclasses.Field, value):
    """Raise :class:`SettingError` unless ``value`` is of the field's kind and in its range."""
    m, kind = field.metadata, kind_of(field)
    allowed = allowed_text(field)
    if m.get("choices"):
        if value not in m["choices"]:
            raise SettingError(name, value, allowed)
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise SettingError(name, value, allowed)
        return
    if kind == "str":
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise SettingError(name, value, allowed)
        return
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and \
        not isinstance(value, bool)
    if not numeric or (kind == "int" and not isinstance(value, (int, np.integer))):
        raise SettingError(name, value, allowed)
    if not math.isfinite(float(value)):
        raise SettingError(name, value, allowed.replace("a number", "a finite number", 1))
    lo, hi = m.get("lo"), m.get("hi")
    if lo is not None:
        v = float(value)
        if v < lo or v > hi or (m["open_low"] and v == lo) or (m["open_high"] and v == hi):
            raise SettingError(name, value, allowed)


def from_mapping(cls, data: dict, prefix: str = ""):
    """An instance of the settings class ``cls`` from a mapping of its fields (coerced, checked);
    messages name the field as ``prefix + name`` (e.g. ``hf.damping``)."""
    if not isinstance(data, dict):
        raise SettingError(prefix.rstrip(".") or "settings", data,
                           "a JSON object of the optimiser's settings")
    known = fields_of(cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingError(prefix + str(unknown[0]), data[unknown[0]],
                           f"not a setting of this optimiser; its settings are {sorted(known)}")
    values = {k: coerce_value(prefix + k, kind_of(known[k]), v) for k, v in data.items()}
    return check(cls(**values), prefix)


def check(settings, prefix: str = ""):
    """Check every field of a settings instance against its range; then its own cross-field
    rules (a ``check_fields()`` method, if it has one).  Returns ``settings``."""
    for name, field in fields_of(type(settings)).items():
        check_value(prefix + name, field, getattr(settings, name))
    own = getattr(settings, "check_fields", None)
    if own is not None:
        try:
            own()
        except SettingError as e:
            raise SettingError(prefix + e.field, e.value, e.allowed) from None
    return settings


def as_dict(settings) -> dict:
    return dataclasses.asdict(settings)

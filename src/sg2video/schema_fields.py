"""Schema fields with their rules (`key`), and the check of a config node against its schema's rules.

The typed dataclasses of sg2video.schema and sg2video.entry_schemas declare every field with `key(...)`: no
default of its own (the YAML gives it) and its range (`ge`, `gt`, `le`, `lt`) or accepted names (`choices`),
which `check_node` enforces with one line per mistake.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any, Callable

from omegaconf import MISSING

from sg2video.errors import ConfigError


def key(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
        choices: tuple | Callable[[], tuple] | None = None, each: bool = False) -> Any:
    """A schema field (no default: the YAML gives it) with its range or accepted names. `each`: the rule holds for
    every element of a list."""
    rules = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices).items() if v is not None}
    return field(default=MISSING, metadata={"rules": rules, "each": each})


def probability() -> Any:
    return key(ge=0.0, le=1.0)


# -- ranges and names ---------------------------------------------------------------------------------


def _describe(rules: dict) -> str:
    parts = []
    for name, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if name in rules:
            parts.append(f"{sign} {rules[name]:g}")
    return " and ".join(parts)


def _check_value(where: str, value: Any, rules: dict, noun: str = "a number") -> None:
    choices = rules.get("choices")
    if choices is not None:
        names = choices() if callable(choices) else choices
        if value not in names:
            shown = ", ".join("null" if n is None else str(n) for n in names)
            raise ConfigError(f"{where}={value!r} is not accepted (accepted: {shown})")
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    bad = (("ge" in rules and not value >= rules["ge"]) or ("gt" in rules and not value > rules["gt"])
           or ("le" in rules and not value <= rules["le"]) or ("lt" in rules and not value < rules["lt"])
           or (isinstance(value, float) and not math.isfinite(value)))
    if bad:
        shown = int(value) if isinstance(value, float) and value.is_integer() else value
        raise ConfigError(f"{where}={shown!r} must be {noun} {_describe(rules)}")


def check_node(node: Any, schema: type, prefix: str) -> None:
    """Every field of `schema` in the config node `node` against its rules (nested schemas included)."""
    for f in dataclasses.fields(schema):
        if f.name not in node:
            continue
        where = f"{prefix}{f.name}"
        if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            check_node(node[f.name], f.default_factory, f"{where}.")
            continue
        rules = f.metadata.get("rules", {})
        if not rules:  # read only what has rules: other values may interpolate what exists only in a run
            continue
        value = node[f.name]
        noun = "an integer" if "int" in str(f.type) else "a number"
        if f.metadata.get("each") and value is not None:
            for i, element in enumerate(value):
                _check_value(f"{where}[{i}]", element, rules, noun)
        else:
            _check_value(where, value, rules, noun)



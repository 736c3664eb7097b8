"""Dataclass configs parsed from YAML with `--key value` CLI overrides (alignment-handbook style)."""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path

import yaml


def _coerce(value, annotation):
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return None
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _coerce(value, a)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"cannot read {value!r} as {annotation}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{value!r} is not a boolean (use true/false)")
    if annotation in (int, float, str):
        return annotation(value)
    if origin in (list, tuple):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v]
        return origin(_coerce(v, args[0]) if args else v for v in items)
    return value


def parse_config(cls, argv: list[str] | None = None):
    """`[--config file.yaml] [--key value ...]` -> an instance of dataclass `cls`; CLI wins over YAML."""
    argv = list(sys.argv[1:] if argv is None else argv)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict = {}
    if "--config" in argv:
        i = argv.index("--config")
        path = Path(argv[i + 1])
        if not path.exists():
            raise FileNotFoundError(f"config file {path} not found; see recipes/configs/ for examples")
        loaded = yaml.safe_load(path.read_text()) or {}
        unknown = set(loaded) - names
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; valid keys: {sorted(names)}")
        values.update(loaded)
        del argv[i:i + 2]
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; use --key value")
        key = arg[2:]
        if "=" in key:  # split first: the value may be negative ("--target_balance_point=-0.5")
            key, val = key.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            val = argv[i + 1]
            i += 2
        else:  # a bare flag means true
            val, i = "true", i + 1
        key = key.replace("-", "_")
        if key not in names:
            raise ValueError(f"unknown option --{key}; valid options: {sorted(names)}")
        values[key] = val
    try:
        return cls(**{k: _coerce(v, hints[k]) for k, v in values.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad config value: {e}") from e

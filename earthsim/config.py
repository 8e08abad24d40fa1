"""Typed configs: dataclasses built from mappings (YAML, ``--set key=value``) and exposed as CLI flags.

Building checks every key and type, so a typo or a wrong type fails before any work starts with a
message naming the key and what is valid.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

from earthsim.errors import EarthsimError

T = TypeVar("T")


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against ``annotation`` (a simple type, Optional, tuple, list, dict or dataclass)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except EarthsimError as error:
                errors.append(str(error))
        raise EarthsimError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise EarthsimError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise EarthsimError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise EarthsimError(f"{where}: expected float, got {value!r}") from None
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation in (int, float, bool, str):
        raise EarthsimError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def build(cls: type[T], raw: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys (unknown, missing) and types."""
    if dataclasses.is_dataclass(raw) and isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise EarthsimError(f"{where}: expected a mapping for {cls.__name__}, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise EarthsimError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in raw]
    if missing:
        raise EarthsimError(f"{where}: missing key(s) {missing}; required: {required}")
    hints = _field_types(cls)
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise EarthsimError(f"{where}: {error}") from error


def to_dict(config: Any) -> dict:
    """A plain (YAML/JSON-serialisable) mapping of a config dataclass."""
    return dataclasses.asdict(config)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` (scalars and lists of scalars)."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        help_text = (f.metadata.get("help", "") + f" (default: {default})").strip()
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (tuple, list):
            parser.add_argument(flag, dest=f.name, nargs="+", type=args[0], default=None, help=help_text)
        elif annotation is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = args[0] if origin in (typing.Union, types.UnionType) else annotation
            choices = f.metadata.get("choices")
            parser.add_argument(flag, dest=f.name, type=kind, default=None, choices=choices, help=help_text)


def from_arguments(cls: type[T], namespace: argparse.Namespace, base: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from ``base`` overridden by the flags given on the command line."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        given = getattr(namespace, f.name, None)
        if given is not None:
            values[f.name] = given
    return build(cls, values, cls.__name__)

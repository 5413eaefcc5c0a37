"""Configs back from their records: the plain JSON values `fsd2d.io.jsonable` wrote (run.json's "config") turned
into the typed config again, so that a run can be rerun from Python exactly (STYLE.md 10, diffusers' ConfigMixin).

    config == from_jsonable(type(config), json.loads(json.dumps(jsonable(config))))

holds for every config dataclass of the package: dataclasses by their fields' annotations, enums by value, tuples
(fixed length or `tuple[X, ...]`), `X | None`, paths and plain numbers. A record that does not fit its type is an
InputError naming the field.
"""
from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from fsd2d.errors import InputError

T = TypeVar("T")

__all__ = ["from_jsonable", "plain", "typed"]


def from_jsonable(cls: type[T], value: Any, where: str = "config", text: bool = False) -> T:
    """`value` (plain JSON: dicts, lists, str, numbers, None) as an instance of `cls` (a type annotation). With
    `text`, values as a command line or a sweep file gives them are taken too: a number as text for a number
    ('5', '0.5'), a number for a text (a prompt 123)."""
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(cls)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return from_jsonable(option, value, where, text)
            except InputError as e:
                errors.append(str(e))
        raise InputError(errors[0] if errors else f"{where}: {value!r} does not fit {cls}")
    if origin is tuple:
        args = typing.get_args(cls)
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v, f"{where}[{i}]", text) for i, v in enumerate(value))
        if len(args) != len(value):
            raise InputError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(from_jsonable(a, v, f"{where}[{i}]", text) for i, (a, v) in enumerate(zip(args, value)))
    if origin in (list, dict):
        return value
    if cls is typing.Any:
        return value
    if dataclasses.is_dataclass(cls):
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected an object, got {value!r}")
        hints = typing.get_type_hints(cls)  # each field's annotation in the module that declares it
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
        return cls(**{k: from_jsonable(hints[k], v, f"{where}.{k}", text) for k, v in value.items()})
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        try:
            return cls(value)
        except ValueError:
            raise InputError(f"{where}: {value!r} is not one of {', '.join(str(e.value) for e in cls)}") from None
    if cls is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if text and cls in (int, float) and isinstance(value, str):
        try:
            return cls(value.strip())
        except ValueError:
            pass
    if text and cls is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if cls is Path and isinstance(value, str):
        return Path(value)
    if cls in (int, str, bool) and type(value) is cls:
        return value
    if cls is type(None) and value is None:
        return None
    raise InputError(f"{where}: expected {getattr(cls, '__name__', cls)}, got {value!r}")


def plain(obj: Any) -> Any:
    """A config as plain values (dicts, lists, enum values), every number as it is (inf and NaN kept, unlike
    fsd2d.io.jsonable, which writes them as JSON's null): what `typed` reads back."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def typed(config: T, where: str = "option") -> T:
    """`config` with each value of its field's type, from a command line's or a sweep's text where need be ('5' for
    an int, 45 for a float: 45.0); a value that is not one is an InputError naming the field."""
    return from_jsonable(type(config), plain(config), where, text=True)

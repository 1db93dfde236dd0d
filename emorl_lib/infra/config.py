"""Config classes and their settings: the machinery every profile section goes through.

Every section of a profile has exactly one config class (TRL's own config classes for the trainers, the kit's
dataclasses for the rest; the schema is `emorl_lib/profile.py`); the class holds each setting's default and checks its
range, and the YAML lists only what differs from it. Here: reading a YAML mapping into a class (`from_dict`: unknown,
renamed and mistyped keys are a `ConfigError` naming the file, the section and the key), reading it without building
the class (`resolve`), provenance tags on defaults (`setting`), and the values a settings digest hashes
(`settings_values`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import types
import typing
import warnings
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A profile that cannot be read as written; the message names the file and the key."""


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert YAML values into the dataclass field's type (nested dataclasses, tuples, paths)."""
    origin = typing.get_origin(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            if dataclasses.is_dataclass(a) and isinstance(value, dict):
                return from_dict(a, value, where)
        if len(args) == 1:
            return _coerce(args[0], value, where)
        return value
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        seq = [_coerce(inner, v, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(tp)
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(inner, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is Path:
        return Path(value)
    return value


# Where a default comes from: the paper (via a third party), related work, or the kit's own choice.
PROVENANCE = ("quoted", "inferred", "kit")


def setting(default: Any, tag: str, why: str, observes: bool = False) -> Any:
    """A config field whose default carries its provenance: `quoted` (from the paper, via a third party),
    `inferred` (our reading of related work), `kit` (the kit's own choice). `emorl config` prints them.
    `observes`: the field changes what is logged, kept or how fast, never a result (a log interval, a worker
    count): it is left out of every settings digest, so changing it recomputes nothing."""
    if tag not in PROVENANCE:
        raise ValueError(f"tag {tag!r}: expected one of {PROVENANCE}")
    meta = {"tag": tag, "why": why, "observes": observes}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", tuple: "a list"}
    return names.get(origin or tp, getattr(tp, "__name__", str(tp)))


def _matches(tp: Any, value: Any) -> bool:
    """Whether a YAML value fits a field's type hint (what is not a plain type is accepted as is)."""
    if tp is Any or isinstance(tp, typing.TypeVar):
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(a, value) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is Path:
        return isinstance(value, (str, Path))
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return not args or all(_matches(args[0], v) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False
        args = typing.get_args(tp)
        return len(args) != 2 or all(_matches(args[1], v) for v in value.values())
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (dict, tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return value in {m.value for m in tp} or isinstance(value, tp)
    return True


def _checked(cls: type, data: dict | None, where: str) -> dict[str, Any]:
    """A YAML mapping as keyword arguments of `cls`: unknown, renamed and kit-owned keys refused, types checked,
    values coerced to the field types. Every error is a ConfigError naming `where`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for k in sorted(set(data) & set(getattr(cls, "RENAMED", {}))):
        raise ConfigError(f"{where}.{k}: renamed; write {cls.RENAMED[k]!r} instead")
    owned = getattr(cls, "SET_ELSEWHERE", {})
    for k in sorted(set(data) & set(owned)):
        raise ConfigError(f"{where}.{k}: not a setting of this section: {owned[k]}")
    unknown = sorted(set(data) - names)
    if unknown:
        hint = "; ".join(f"{k!r}: did you mean {m[0]!r}?" for k in unknown
                         if (m := difflib.get_close_matches(k, names, n=1)))
        known = (f"expected some of {sorted(names)}" if len(names) <= 40 else
                 f"{cls.__name__} has {len(names)} fields: `emorl config --all` lists them")
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}" + (f" ({hint})" if hint else "")
                          + f"; {known}")
    for k, v in data.items():
        if v is not None and dataclasses.is_dataclass(hints[k]) and isinstance(v, dict):
            continue  # checked by its own from_dict
        if not _matches(hints[k], v):
            raise ConfigError(f"{where}.{k}: expected {_type_name(hints[k])}, got {v!r}")
    return {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}


def from_dict(cls: type[T], data: dict | None, where: str = "", runtime: dict | None = None) -> T:
    """Build config class `cls` from a YAML mapping (checked: unknown keys, types, the class's own range checks),
    plus `runtime` values that the kit sets itself (never from YAML). Every error is a ConfigError naming `where`."""
    if hasattr(cls, "from_mapping"):  # a section of named entries (comparisons): the class reads it itself
        return cls.from_mapping(data, where)
    kwargs = _checked(cls, data, where)
    kwargs.update(runtime or {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation notices, not the user's
            return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return copy.deepcopy(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def resolve(cls: type, data: dict | None, where: str = "") -> types.SimpleNamespace:
    """A section's settings as they will be, WITHOUT building the class: the YAML's values (checked and coerced as
    `from_dict` does) over the class defaults. For the trainers' configs, whose construction sets up devices (TRL's
    and transformers' `__post_init__`): a profile is checked, described, planned and digested from these values, and
    each run builds its trainer config once, from them. A class with a `check(values)` static method has it run."""
    values = {f.name: _default(f) for f in dataclasses.fields(cls) if f.init}
    values.update(_checked(cls, data, where))
    ns = types.SimpleNamespace(**values)
    check = getattr(cls, "check", None)
    if check is not None:
        try:
            check(ns)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return ns


def observed_fields(cls: type) -> set[str]:
    """Fields declared with `setting(..., observes=True)`: left out of settings digests."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("observes")}


def settings_values(obj: Any, cls: type | None = None) -> dict[str, Any]:
    """A config (built, or `resolve`d values of `cls`) as plain values without its observing fields: what a
    settings digest hashes. A value written out equal to its default changes nothing; a changed default does."""
    cls = cls or type(obj)
    skip = observed_fields(cls) if dataclasses.is_dataclass(cls) else set()
    values = vars(obj) if isinstance(obj, types.SimpleNamespace) else {
        f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return {k: to_dict(v.value if isinstance(v, enum.Enum) else v) for k, v in values.items() if k not in skip}


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML-able dict (paths as strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else to_dict(value)


def _inherited(cls: type, name: str) -> bool:
    """Whether a field comes from a library base class (TRL, transformers) rather than the kit's class."""
    return any(name in vars(base).get("__annotations__", {}) for base in cls.__mro__[1:]
               if not base.__module__.startswith("emorl_lib"))


def describe_section(values: Any, cls: type, raw: dict, prefix: str, everything: bool) -> list[dict[str, Any]]:
    """Rows (setting, value, from, tag, why) of one section: the profile's own values, and the defaults that carry a
    tag or belong to the kit; `everything` adds every other field of TRL's and transformers' config classes."""
    own = {f.name for f in dataclasses.fields(cls) if f.name in vars(cls).get("__annotations__", {})}
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in getattr(cls, "SET_ELSEWHERE", {}):
            continue
        value = getattr(values, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe_section(value, type(value), raw.get(f.name) or {}, f"{prefix}.{f.name}", everything)
            continue
        tag, why = f.metadata.get("tag", ""), f.metadata.get("why", "")
        if f.name not in raw and not (everything or tag or f.name in own):
            continue
        # an untagged default of the kit's own classes is the kit's choice; of TRL's or transformers', theirs
        tag = tag or ("kit" if f.name in own or not _inherited(cls, f.name) else "library")
        rows.append({"setting": f"{prefix}.{f.name}", "value": _plain(value), "default": _plain(_default(f)),
                     "from": "profile" if f.name in raw else "default",
                     "tag": "see profile" if f.name in raw else tag, "why": why})
    return rows

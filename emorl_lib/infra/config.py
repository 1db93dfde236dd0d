"""Profiles: named sets of parameters in `params/<name>.yaml`, read into dataclasses.

A profile is one YAML file of sections (`paths`, `data`, `backbone`, `prompt`, `reward`, `sft`, `grpo`,
`eval`, ...). `extends: <other profile>` deep-merges this file over another. Each module owns the dataclass
for its section (TRL style: one config dataclass per stage) and reads it with `profile.section(name, cls)`.
Unknown keys are an error that names the file and the key: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .paths import Paths, PathsConfig, repo_root

T = TypeVar("T")


class ConfigError(ValueError):
    """A profile that cannot be read as written; the message names the file and the key."""


def params_dir() -> Path:
    return repo_root() / "params"


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _profile_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p.resolve()
    cand = params_dir() / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    known = sorted(x.stem for x in params_dir().glob("*.yaml"))
    raise ConfigError(f"no profile '{name_or_path}': expected {cand} (known profiles: {', '.join(known) or 'none'})")


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    if path in chain:
        raise ConfigError(f"{path}: 'extends' loops back on itself ({' -> '.join(map(str, chain))})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at top level, found {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent:
        base = _read_yaml(_profile_path(parent), chain + (path,))
        raw = _deep_merge(base, raw)
    return raw


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


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys raise ConfigError naming `where`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; expected some of {sorted(names)}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


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


@dataclass
class Profile:
    """A loaded profile: its name, file and raw sections; typed views via `section`."""

    name: str
    path: Path | None
    sections: dict[str, Any] = field(default_factory=dict)

    def section(self, key: str, cls: type[T], overrides: dict | None = None) -> T:
        raw = self.sections.get(key) or {}
        if overrides:
            raw = _deep_merge(raw, overrides)
        return from_dict(cls, raw, where=f"{self.path or self.name}: {key}")

    @property
    def paths(self) -> Paths:
        return Paths.for_profile(self.name, self.section("paths", PathsConfig))

    def with_overrides(self, overrides: dict | None) -> "Profile":
        """A copy with `{section: {key: value}}` merged in (a notebook's parameters cell uses this)."""
        if not overrides:
            return self
        return Profile(self.name, self.path, _deep_merge(self.sections, overrides))


def load_profile(name_or_path: str | Path = "default", overrides: dict | None = None) -> Profile:
    path = _profile_path(name_or_path)
    sections = _read_yaml(path)
    name = path.stem
    prof = Profile(name=name, path=path, sections=sections)
    return prof.with_overrides(overrides)

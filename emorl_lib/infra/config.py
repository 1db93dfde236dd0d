"""Profiles: named sets of parameters in `params/<name>.yaml`, read into each section's config class.

A profile is one YAML file of sections. `extends: <other profile>` deep-merges this file over another. Every section
has exactly one config class (`SECTIONS`: TRL's own config classes for the trainers, the kit's dataclasses for the
rest); the class holds each setting's default and checks its range, and the YAML lists only what differs from it.

A profile is checked whole when it is loaded (`load_profile` -> `validate`): an unknown section or key, a value of the
wrong type (`num_generations: six`) or out of range (a negative learning rate) is a `ConfigError` that names the file,
the section, the key and what was expected, before any work starts.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import difflib
import enum
import importlib
import types
import typing
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TypeVar

import yaml

from .paths import Paths, repo_root

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


TAGS = ("quoted", "inferred", "kit")

# Building a transformers TrainingArguments (TRL's configs too) sets up devices and RESETS accelerate's global state,
# which breaks a trainer that is already running. Checking a profile and hashing a run's settings build the trainers'
# configs with the kit's own checks only (`check_only`); the one config a trainer gets is built in full.
_CHECK_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("emorl_check_only", default=False)


@contextmanager
def check_only() -> Iterator[None]:
    token = _CHECK_ONLY.set(True)
    try:
        yield
    finally:
        _CHECK_ONLY.reset(token)


def checking_only() -> bool:
    """True inside `check_only()`: a trainer config's __post_init__ stops after the kit's checks."""
    return _CHECK_ONLY.get()


def setting(default: Any, tag: str, why: str) -> Any:
    """A config field whose default carries its provenance: `quoted` (from the paper, via a third party),
    `inferred` (our reading of related work), `kit` (the kit's own choice). `emorl config` prints them."""
    if tag not in TAGS:
        raise ValueError(f"tag {tag!r}: expected one of {TAGS}")
    meta = {"tag": tag, "why": why}
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


def from_dict(cls: type[T], data: dict | None, where: str = "", runtime: dict | None = None) -> T:
    """Build config class `cls` from a YAML mapping (checked: unknown keys, types, the class's own range checks),
    plus `runtime` values that the kit sets itself (never from YAML). Every error is a ConfigError naming `where`."""
    if hasattr(cls, "from_mapping"):  # a section of named entries (comparisons): the class reads it itself
        return cls.from_mapping(data, where)
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
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
            continue  # checked by its own from_dict below
        if not _matches(hints[k], v):
            raise ConfigError(f"{where}.{k}: expected {_type_name(hints[k])}, got {v!r}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    kwargs.update(runtime or {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation notices, not the user's
            return cls(**kwargs)
    except ConfigError:
        raise
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

    def section(self, key: str, cls: type | None = None, **runtime: Any) -> Any:
        """The `key` section as its config class (`SECTIONS`); `runtime` adds values the kit sets itself (a trainer's
        output folder, say)."""
        known = section_class(key)
        if cls is not None and cls is not known:
            raise TypeError(f"section {key!r} is read as {known.__name__}, not {cls.__name__}")
        return from_dict(known, self.sections.get(key) or {}, where=f"{self.path or self.name}: {key}",
                         runtime=runtime)

    @property
    def paths(self) -> Paths:
        return Paths.for_profile(self.name, self.section("paths"))

    def with_overrides(self, overrides: dict | None) -> "Profile":
        """A checked copy with `{section: {key: value}}` merged in."""
        if not overrides:
            return self
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise ConfigError(f"overrides must be {{section: {{key: value}}}}, got {overrides!r}")
        return validate(Profile(self.name, self.path, _deep_merge(self.sections, overrides)))


# Each section of a profile and the one class that reads it ("module:Class", imported when first used: the trainers'
# classes import TRL).
SECTIONS: dict[str, str] = {
    "paths": "emorl_lib.infra.paths:PathsConfig",
    "data": "emorl_lib.data.prep:DataConfig",
    "backbone": "emorl_lib.training.backbones:BackboneConfig",
    "prompt": "emorl_lib.method.prompts:PromptConfig",
    "reward": "emorl_lib.method.rewards:RewardConfig",
    "descriptors": "emorl_lib.method.descriptors:DescriptorConfig",
    "rationale": "emorl_lib.method.rationales:RationaleConfig",
    "experiments": "emorl_lib.training.experiments:ExperimentsConfig",
    "sft": "emorl_lib.training.sft:EmoSFTConfig",
    "grpo": "emorl_lib.training.grpo:EmoGRPOConfig",
    "eval": "emorl_lib.evaluation.matrix:EvalConfig",
    "runtime": "emorl_lib.infra.determinism:RuntimeConfig",
    "comparisons": "emorl_lib.evaluation.compare:ComparisonsConfig",
}


def section_class(key: str) -> type:
    if key not in SECTIONS:
        raise ConfigError(f"unknown section {key!r}; a profile has the sections {', '.join(SECTIONS)}")
    module, _, name = SECTIONS[key].partition(":")
    return getattr(importlib.import_module(module), name)


def validate(prof: Profile) -> Profile:
    """Read every section as its class (types, ranges, unknown keys and sections), and the checks that span sections,
    so that a typo fails now and not after the stages before it have run."""
    where = prof.path or prof.name
    unknown = sorted(set(prof.sections) - set(SECTIONS))
    if unknown:
        hint = "; ".join(f"{k!r}: did you mean {m[0]!r}?" for k in unknown
                         if (m := difflib.get_close_matches(k, SECTIONS, n=1)))
        raise ConfigError(f"{where}: unknown section(s) {unknown}" + (f" ({hint})" if hint else "")
                          + f"; a profile has the sections {', '.join(SECTIONS)}")
    for key in SECTIONS:
        prof.section(key)
    from ..training.runs import (
        trainer_config,  # the trainers' configs as a run builds them (precision, output)
    )

    for stage in ("sft", "grpo"):
        trainer_config(prof, stage, output_dir=None)
    return prof


def load_profile(name_or_path: str | Path = "default", overrides: dict | None = None) -> Profile:
    """Read and check a profile (see `validate`); `overrides` ({section: {key: value}}) are merged in first."""
    path = _profile_path(name_or_path)
    prof = Profile(name=path.stem, path=path, sections=_read_yaml(path))
    return prof.with_overrides(overrides) if overrides else validate(prof)


def describe(prof: Profile, everything: bool = False) -> list[dict[str, Any]]:
    """Every setting of a profile as rows (section, key, value, where it comes from, provenance tag, why): the
    profile's own values, and the defaults that carry a tag or belong to the kit. `everything` adds every other field
    of TRL's and transformers' config classes too."""
    rows = []
    with check_only():
        for key in SECTIONS:
            cls = section_class(key)
            raw = prof.sections.get(key) or {}
            if hasattr(cls, "from_mapping"):  # named entries: one row each, as written
                rows += [{"setting": f"{key}.{name}", "value": spec, "from": "profile", "tag": "see profile",
                          "why": ""} for name, spec in raw.items()]
                continue
            rows += _describe(prof.section(key), cls, raw, key, everything)
    return rows


def _inherited(cls: type, name: str) -> bool:
    """Whether a field comes from a library base class (TRL, transformers) rather than the kit's class."""
    return any(name in vars(base).get("__annotations__", {}) for base in cls.__mro__[1:]
               if not base.__module__.startswith("emorl_lib"))


def _describe(obj: Any, cls: type, raw: dict, prefix: str, everything: bool) -> list[dict[str, Any]]:
    own = {f.name for f in dataclasses.fields(cls) if f.name in vars(cls).get("__annotations__", {})}
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in getattr(cls, "SET_ELSEWHERE", {}):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += _describe(value, type(value), raw.get(f.name) or {}, f"{prefix}.{f.name}", everything)
            continue
        tag, why = f.metadata.get("tag", ""), f.metadata.get("why", "")
        if f.name not in raw and not (everything or tag or f.name in own):
            continue
        # an untagged default of the kit's own classes is the kit's choice; of TRL's or transformers', theirs
        tag = tag or ("kit" if f.name in own or not _inherited(cls, f.name) else "library")
        rows.append({"setting": f"{prefix}.{f.name}", "value": to_dict(value) if not isinstance(value, enum.Enum)
                     else value.value, "from": "profile" if f.name in raw else "default",
                     "tag": "see profile" if f.name in raw else tag, "why": why})
    return rows

"""Profiles: named sets of parameters in `params/<name>.yaml`, and the setup of each stage built from one.

A profile is one YAML file of sections. `extends: <other profile>` deep-merges this file over another. Every section
has exactly one config class (`SECTIONS`: TRL's own config classes for the trainers, the kit's dataclasses for the
rest); the class holds each setting's default and checks its range, and the YAML lists only what differs from it.

A profile is checked whole when it is loaded (`load_profile` -> `validate`): an unknown section or key, a renamed key,
a value of the wrong type (`num_generations: six`) or out of range (a negative learning rate) is a `ConfigError` that
names the file, the section, the key and what was expected, before any work starts. The trainers' sections are
checked from their values (`infra.config.resolve`) without building TRL's config, whose construction sets up
devices: each training run builds its own once (`training.runs.RunSetup.args`).

The layers below never see a Profile: each stage gets one setup object, built here from the sections it reads
(`READS`, which the notebook runner also uses to decide what is stale):

    data_setup(prof)               data preparation: notebook 01, `emorl prepare`
    training_setup(prof, stage)    one setup per SFT or GRPO run of the matrix: notebooks 03 and 04, `emorl sft|grpo`
    run_setup(prof, run)           the setup of one training run
    eval_setup(prof)               evaluation, tables and figures: notebooks 05 and 06, `emorl evaluate`
"""

from __future__ import annotations

import copy
import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.prep import DataConfig, DataSetup
from .evaluation.compare import ComparisonsConfig
from .evaluation.matrix import EvalConfig, EvalSetup
from .infra.config import ConfigError, describe_section, from_dict, resolve
from .infra.determinism import RuntimeConfig
from .infra.paths import Paths, PathsConfig, repo_root
from .method.descriptors import DescriptorConfig
from .method.prompts import PromptConfig
from .method.rationales import RationaleConfig
from .method.rewards import RewardConfig
from .plan import fit
from .model.backbones import BackboneConfig, audio_window_seconds, is_smoke
from .training.experiments import ExperimentsConfig, Run, grpo_runs, sft_runs
from .training.grpo import EmoGRPOConfig, GRPOSetup
from .training.heldout import HeldOutSpec
from .training.runs import REASONING, RunSetup, TrainingSetup, condition_values
from .training.sft import EmoSFTConfig, SFTSetup

# Each section of a profile and the one class that reads it.
SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "data": DataConfig,
    "backbone": BackboneConfig,
    "prompt": PromptConfig,
    "reward": RewardConfig,
    "descriptors": DescriptorConfig,
    "rationale": RationaleConfig,
    "experiments": ExperimentsConfig,
    "sft": EmoSFTConfig,
    "grpo": EmoGRPOConfig,
    "eval": EvalConfig,
    "runtime": RuntimeConfig,
    "comparisons": ComparisonsConfig,
}
# Sections whose class is a trainer config (TRL / transformers): read as values, built once per run by its setup.
TRAINER_SECTIONS = ("sft", "grpo")

# What each stage's setup reads: the builders below see these sections and no others, and the notebook runner
# reruns a stage when one of them changes. (`paths` says where things are, `runtime` how the numbers are computed.)
READS: dict[str, tuple[str, ...]] = {
    "data": ("paths", "runtime", "data", "backbone"),  # backbone: the audio window clips are checked against
    "prior": ("paths", "runtime", "reward", "grpo"),  # notebook 02: the reward and the group size G
    "sft": ("paths", "runtime", "data", "backbone", "prompt", "sft", "rationale", "descriptors", "experiments", "eval"),
    "grpo": ("paths", "runtime", "data", "backbone", "prompt", "reward", "grpo", "experiments", "eval"),
    "eval": ("paths", "runtime", "data", "backbone", "prompt", "eval", "experiments", "comparisons"),
}


class SectionNotRead(KeyError):
    """A setup builder asked for a section its stage does not declare in READS (a bug of the kit)."""


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


@dataclass
class Profile:
    """A loaded profile: its name, file and sections as written; typed views through `section` and `values`."""

    name: str
    path: Path | None
    sections: dict[str, Any] = field(default_factory=dict)
    readable: tuple[str, ...] | None = None  # set by `reading`: the only sections a setup builder may read

    def _where(self, key: str) -> str:
        return f"{self.path or self.name}: {key}"

    def _raw(self, key: str) -> Any:
        if key not in SECTIONS:
            raise ConfigError(f"unknown section {key!r}; a profile has the sections {', '.join(SECTIONS)}")
        if self.readable is not None and key not in self.readable:
            raise SectionNotRead(f"section {key!r} is not among the sections this stage reads ({self.readable}): "
                                 "add it to profile.READS")
        return self.sections.get(key) or {}

    def section(self, key: str) -> Any:
        """The `key` section as its config class. The trainers' sections are not built here (see `values`)."""
        if key in TRAINER_SECTIONS:
            raise TypeError(f"section {key!r} is TRL's config, built once per run by its setup "
                            f"(training_setup); read its settings with values({key!r})")
        return from_dict(SECTIONS[key], self._raw(key), where=self._where(key))

    def values(self, key: str, condition: str | None = None) -> types.SimpleNamespace:
        """The `key` section's settings as they will be (YAML over the class defaults, checked), without building
        its class; `condition`: as that condition's runs read a trainer section (ESR/EUR: its `reasoning` mapping
        over it)."""
        raw = self._raw(key)
        if condition is not None and key in TRAINER_SECTIONS:
            return resolve(SECTIONS[key], condition_values(raw, condition),
                           where=self._where(key) + (f".{REASONING}" if raw.get(REASONING) else ""))
        return resolve(SECTIONS[key], raw, where=self._where(key))

    @property
    def paths(self) -> Paths:
        return Paths.for_profile(self.name, self.section("paths"))

    def reading(self, stage: str) -> "Profile":
        """This profile as the `stage` setup sees it: the sections READS declares, no others."""
        return Profile(self.name, self.path, self.sections, READS[stage])

    def with_overrides(self, overrides: dict | None) -> "Profile":
        """A checked copy with `{section: {key: value}}` merged in."""
        if not overrides:
            return self
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise ConfigError(f"overrides must be {{section: {{key: value}}}}, got {overrides!r}")
        return validate(Profile(self.name, self.path, _deep_merge(self.sections, overrides)))


def validate(prof: Profile) -> Profile:
    """Read every section as its class (types, ranges, unknown keys and sections), so that a typo fails now and not
    after the stages before it have run."""
    where = prof.path or prof.name
    unknown = sorted(set(prof.sections) - set(SECTIONS))
    if unknown:
        hint = "; ".join(f"{k!r}: did you mean {m[0]!r}?" for k in unknown
                         if (m := difflib.get_close_matches(k, SECTIONS, n=1)))
        raise ConfigError(f"{where}: unknown section(s) {unknown}" + (f" ({hint})" if hint else "")
                          + f"; a profile has the sections {', '.join(SECTIONS)}")
    for key in SECTIONS:
        prof.values(key) if key in TRAINER_SECTIONS else prof.section(key)
    for key in TRAINER_SECTIONS:  # what the reasoning runs read, checked as its own section
        prof.values(key, "ESR")
    return prof


def load_profile(name_or_path: str | Path = "default", overrides: dict | None = None) -> Profile:
    """Read and check a profile (see `validate`); `overrides` ({section: {key: value}}) are merged in first."""
    path = _profile_path(name_or_path)
    prof = Profile(name=path.stem, path=path, sections=_read_yaml(path))
    return prof.with_overrides(overrides) if overrides else validate(prof)


def describe(prof: Profile, everything: bool = False, sections: tuple[str, ...] | None = None
             ) -> list[dict[str, Any]]:
    """Every setting of a profile (or of `sections`) as rows (setting, value, default, from, tag, why): the profile's
    own values, and the defaults that carry a tag or belong to the kit. `everything` adds every other field of TRL's
    and transformers' config classes too."""
    rows = []
    for key in sections or SECTIONS:
        cls = SECTIONS[key]
        raw = prof.sections.get(key) or {}
        if hasattr(cls, "from_mapping"):  # named entries: one row each, as written
            rows += [{"setting": f"{key}.{name}", "value": spec, "default": "", "from": "profile",
                      "tag": "see profile", "why": ""} for name, spec in raw.items()]
            continue
        values = prof.values(key) if key in TRAINER_SECTIONS else prof.section(key)
        rows += describe_section(values, cls, raw, key, everything)
    return rows


def settings_table(prof: Profile, section: str, changed_only: bool = True):
    """One section's settings as a table (setting, value, default, tag, why): those the profile sets
    (`changed_only`), or every tagged one. `emorl config` prints them all."""
    import pandas as pd

    rows = [r for r in describe(prof, sections=(section,)) if not changed_only or r["from"] == "profile"]
    return pd.DataFrame(rows, columns=["setting", "value", "default", "tag", "why"])


# ----------------------------------------------------------------------------------------------------------------
# The setup of each stage
# ----------------------------------------------------------------------------------------------------------------
def data_setup(prof: Profile) -> DataSetup:
    p = prof.reading("data")
    return DataSetup(data=p.section("data"), paths=p.paths, runtime=p.section("runtime"),
                     window_s=audio_window_seconds(p.section("backbone")), profile=p.name)


def training_setup(prof: Profile, stage: str, only: list[str] | None = None) -> TrainingSetup:
    """One setup per `stage` ("sft" or "grpo") run of the profile's matrix (`only`: those run names), sized to this
    machine's GPU before any weights are loaded."""
    if stage not in TRAINER_SECTIONS:
        raise ValueError(f"stage {stage!r}: expected one of {TRAINER_SECTIONS}")
    prof, made = fit(prof, stage)  # the planner's recipe-keeping changes on a GPU (logged); the CPU: none
    p = prof.reading(stage)
    exp = p.section("experiments")
    runs = _select(sft_runs(exp) if stage == "sft" else grpo_runs(exp), only)
    setups = [run_setup(prof, run, made) for run in runs]
    smoke = is_smoke(p.section("backbone"), p.section("data").synthetic)
    return TrainingSetup(stage, setups, exp.workers, p.paths, smoke, [c.what for c in made])


def run_setup(prof: Profile, run: Run, sizing: list | None = None) -> RunSetup:
    """The setup of one SFT or GRPO run (`run.stage`), from the sections its stage reads (`sizing`: the changes
    `plan.fit` made to fit this GPU, recorded with the run)."""
    p = prof.reading(run.stage)
    paths, ev = p.paths, p.section("eval")
    common = dict(run=run, paths=paths, trainer=dict(p.sections.get(run.stage) or {}), data=p.section("data"),
                  backbone=p.section("backbone"), prompt=p.section("prompt"), runtime=p.section("runtime"),
                  heldout=HeldOutSpec(ev.max_new_tokens[run.condition], ev.batch_size, ev.generation_paths()),
                  profile=p.name, sizing=[c.what for c in sizing or []],
                  where=p._where(run.stage))
    if run.stage == "sft":
        return SFTSetup(rationale=p.section("rationale"), descriptors=p.section("descriptors"), **common)
    parent = run.sft_parent(p.section("experiments"))
    return GRPOSetup(reward=p.section("reward"), start_adapter=parent.adapter_dir(paths) if parent else None, **common)


def _select(runs: list[Run], only: list[str] | None) -> list[Run]:
    if not only:
        return runs
    chosen = [r for r in runs if r.name in only]
    unknown = sorted(set(only) - {r.name for r in chosen})
    if unknown:
        raise ValueError(f"unknown run(s) {unknown}; this profile's runs: {[r.name for r in runs]}")
    return chosen


def eval_setup(prof: Profile) -> EvalSetup:
    """What evaluation reads, sized to this machine's GPU (its batch) before any weights are loaded."""
    prof, _ = fit(prof, "eval")
    p = prof.reading("eval")
    return EvalSetup(profile=p.name, profile_file=str(p.path or ""), paths=p.paths, exp=p.section("experiments"),
                     eval=p.section("eval"), prompt=p.section("prompt"), backbone=p.section("backbone"),
                     runtime=p.section("runtime"), synthetic=p.section("data").synthetic,
                     comparisons=list(p.section("comparisons").entries.values()))

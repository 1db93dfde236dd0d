"""Train every run of a stage in a profile's experiment matrix (what notebooks 03/04 and `emorl sft|grpo` call).

Each run resumes from its last checkpoint and is skipped once its final adapter exists, so an interrupted
stage picks up where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..infra.config import Profile, load_profile
from .experiments import ExperimentsConfig, RunSpec, grpo_runs, sft_runs, validate


def _select(runs: list[RunSpec], only: list[str] | None) -> list[RunSpec]:
    if not only:
        return runs
    chosen = [r for r in runs if r.name in only]
    unknown = sorted(set(only) - {r.name for r in chosen})
    if unknown:
        raise ValueError(f"unknown run(s) {unknown}; this profile's runs: {[r.name for r in runs]}")
    return chosen


def stage_runs(profile: Profile, stage: str) -> list[RunSpec]:
    ecfg = profile.section("experiments", ExperimentsConfig)
    validate(ecfg)
    return sft_runs(ecfg) if stage == "sft" else grpo_runs(ecfg)


def train_stage(stage: str, profile: Profile | str = "default", overrides: dict | None = None,
                only: list[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Train the `sft` or `grpo` runs of the profile; returns run name -> final adapter folder."""
    from .grpo import run_grpo
    from .sft import run_sft

    prof = load_profile(profile, overrides) if isinstance(profile, str) else profile.with_overrides(overrides)
    runs = _select(stage_runs(prof, stage), only)
    train = run_sft if stage == "sft" else run_grpo
    out: dict[str, Path] = {}
    for i, run in enumerate(runs, 1):
        t0 = time.time()
        print(f"[{stage}] run {i}/{len(runs)}: {run.name}", flush=True)
        out[run.name] = train(prof, run, force=force)
        print(f"[{stage}] {run.name}: {time.time() - t0:.0f} s -> {out[run.name]}", flush=True)
    return out

"""The experiment matrix: which models a profile trains and evaluates, and where each one's files live.

One place names every run, so that training (notebooks 03, 04), evaluation (05) and figures (06) agree on
adapter folders, log files and prediction files. The paper's tables need, per in-corpus corpus:
  main:      zero-shot base model, SFT, GRPO + binary reward, GRPO + ESWR, GRPO + ESWR + ESR
  ablations: ESWR on/off (with ESR); IR / EUR / ESR prompts (with ESWR)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..infra.config import setting
from ..infra.paths import Paths
from ..method.prompts import CONDITIONS
from ..method.rewards import REWARDS

STAGES = ("zeroshot", "sft", "grpo")
STAGE_NAMES = {"zeroshot": "Zero-shot", "sft": "SFT", "grpo": "GRPO"}
REWARD_NAMES = {"eswr": "ESWR", "binary": "binary reward"}


@dataclass(frozen=True)
class Recipe:
    """What a model was trained with, whatever its corpus, fold and seed; written `<stage> [<reward>] <condition>`
    (`zeroshot IR`, `sft ESR`, `grpo eswr IR`) in profiles (comparisons, experiments.cross_corpus) and tables.
    `label` names it in a table or figure (not part of its identity)."""

    stage: str  # zeroshot | sft | grpo
    condition: str  # IR | EUR | ESR
    reward: str | None = None  # binary | eswr (grpo only)
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.label:
            reward = f" + {REWARD_NAMES[self.reward]}" if self.reward else ""
            object.__setattr__(self, "label", f"{STAGE_NAMES[self.stage]}{reward} ({self.condition})")

    def __str__(self) -> str:
        return " ".join(x for x in (self.stage, self.reward, self.condition) if x)

    @classmethod
    def parse(cls, text: str, where: str = "recipe") -> "Recipe":
        parts = str(text).split()
        ok = (len(parts) == 2 and parts[0] in ("zeroshot", "sft")) or \
             (len(parts) == 3 and parts[0] == "grpo" and parts[1] in REWARDS)
        if not ok or parts[-1] not in CONDITIONS:
            raise ValueError(f"{where}: {text!r} is not '<zeroshot|sft> <IR|EUR|ESR>' or "
                             "'grpo <binary|eswr> <IR|EUR|ESR>'")
        return cls(parts[0], parts[-1], parts[1] if len(parts) == 3 else None)

    def run(self, corpus: str, fold: int | None, seed: int | None = None) -> "Run":
        """This recipe's model on a corpus and fold (zero-shot models have no training seed)."""
        return Run(corpus, self.stage, self.condition, self.reward, fold, None if self.stage == "zeroshot" else seed)


@dataclass
class ExperimentsConfig:
    """The `experiments` section of a profile."""

    corpora: list[str] = field(default_factory=lambda: ["iemocap", "meld"])  # in-corpus training corpora
    iemocap_folds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])  # leave-one-session-out test folds
    # GRPO runs: each [reward, condition] for every corpus, or [reward, condition, corpus] for one corpus only
    # (e.g. [binary, IR, meld]: on IEMOCAP's 4 classes binary and ESWR rewards coincide). The binary-vs-ESWR and
    # IR/EUR/ESR ablations come from this list.
    grpo_runs: list[list[str]] = field(default_factory=lambda: [
        ["binary", "IR"], ["eswr", "IR"], ["binary", "ESR"], ["eswr", "ESR"], ["eswr", "EUR"]])
    # SFT warm-ups to train: a condition for every corpus, or [condition, corpus] for one corpus only (e.g. the
    # miniature's [ESR, iemocap]: reasoning where its GRPO run needs it, not on every corpus)
    sft_conditions: list[str | list[str]] = field(default_factory=lambda: ["IR", "EUR", "ESR"])
    sft_before_grpo: bool = setting(True, "inferred", "GRPO starts from the SFT adapter of the same condition: the "
                                                      "paper's warm-up is unknown; SARI needed one")
    cross_corpus: bool | list[str] = setting(True, "kit", "score models on the other corpora's balanced 4-class "
                                                          "sets: true (all), false, or the recipes to score "
                                                          "(Run.recipe: 'sft IR', 'grpo eswr ESR', ...)")
    seeds: list[int] | None = setting(None, "kit", "training seeds: null trains each recipe once with its section's "
                                                   "seed; a list trains it once per seed (SFT and the GRPO run "
                                                   "starting from it share it), run names ending in _s<seed>")
    workers: int = setting(1, "kit", "processes training a stage's runs (and evaluating models) side by side, one "
                                     "torch thread each; what a run trains does not depend on it", observes=True)

    def __post_init__(self) -> None:
        """Fail early, naming the bad entry, rather than after an hour of training."""
        for entry in self.grpo_runs:
            if len(entry) not in (2, 3) or entry[0] not in REWARDS or entry[1] not in CONDITIONS \
                    or entry[2:] not in ([], *[[c] for c in self.corpora]):
                raise ValueError(f"grpo_runs: {entry!r} is not [binary|eswr, IR|EUR|ESR] or "
                                 f"[binary|eswr, IR|EUR|ESR, <one of {self.corpora}>] (one corpus only)")
        for entry in self.sft_conditions:
            e = _as_list(entry)
            if len(e) not in (1, 2) or e[0] not in CONDITIONS \
                    or e[1:] not in ([], *[[c] for c in self.corpora]):
                raise ValueError(f"sft_conditions: {entry!r} is not IR|EUR|ESR or [IR|EUR|ESR, <one of "
                                 f"{self.corpora}>] (one corpus only)")
        bad = [c for c in self.corpora if c not in ("iemocap", "meld")]
        if bad:
            raise ValueError(f"corpora: {bad}; the in-corpus training corpora are iemocap and meld")
        if self.sft_before_grpo:
            trained = set(sft_runs(self))
            missing = sorted({f"{r.condition} on {r.corpus}" for r in grpo_runs(self)
                              if r.sft_parent(self) not in trained})
            if missing:
                raise ValueError(f"sft_before_grpo needs SFT runs for {missing} (add them to sft_conditions, or set "
                                 "sft_before_grpo: false)")
        for f in self.iemocap_folds:
            if f not in (1, 2, 3, 4, 5):
                raise ValueError(f"iemocap_folds: {f} is not a session 1-5")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)
                                       or not all(isinstance(x, int) and x >= 0 for x in self.seeds)):
            raise ValueError(f"seeds: {self.seeds!r} is not null or a list of distinct integers >= 0")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, not {self.workers}")
        if not isinstance(self.cross_corpus, bool):
            known = {str(r.recipe) for r in all_runs(self)}
            unknown = [x for x in self.cross_corpus if x not in known]
            if unknown:
                raise ValueError(f"cross_corpus: {unknown} are not recipes of this matrix (known: {sorted(known)})")


@dataclass(frozen=True)
class Run:
    """One trained (or zero-shot) model: corpus, fold (IEMOCAP) and recipe."""

    corpus: str
    stage: str  # zeroshot | sft | grpo
    condition: str  # IR | EUR | ESR
    reward: str | None = None  # binary | eswr (grpo only)
    fold: int | None = None  # IEMOCAP test session; None for MELD (official split)
    seed: int | None = None  # training seed (experiments.seeds); None: the stage section's seed

    @property
    def recipe(self) -> Recipe:
        """What was trained, whatever the corpus, fold and seed."""
        return Recipe(self.stage, self.condition, self.reward)

    @property
    def name(self) -> str:
        parts = [self.corpus + (f"-f{self.fold}" if self.fold is not None else ""), self.stage]
        if self.reward:
            parts.append(self.reward)
        parts.append(self.condition)
        if self.seed is not None:
            parts.append(f"s{self.seed}")
        return "_".join(parts)  # e.g. iemocap-f1_grpo_eswr_ESR, meld_sft_ESR, meld_zeroshot_IR, meld_sft_IR_s2

    def adapter_dir(self, paths: Paths) -> Path | None:
        """The final LoRA adapter (None for the zero-shot base model)."""
        return None if self.stage == "zeroshot" else paths.checkpoints / self.name / "final"

    def checkpoint_dir(self, paths: Paths) -> Path:
        return paths.checkpoints / self.name

    def log_csv(self, paths: Paths) -> Path:
        return paths.logs / f"{self.name}.csv"

    def heldout_csv(self, paths: Paths) -> Path:
        """Accuracy on the run's held-out set every few steps during training (training/heldout.py)."""
        return paths.logs / f"{self.name}.heldout.csv"

    def policy_csv(self, paths: Paths) -> Path:
        """The policy's expected accuracy and reward under its sampling temperature during training (policy.py)."""
        return paths.logs / f"{self.name}.policy.csv"

    def completions_log(self, paths: Paths) -> Path:
        """GRPO: one group of sampled completions with their rewards every `log_completions_every` steps."""
        return paths.logs / f"{self.name}.completions.jsonl"

    def step_logs(self, paths: Paths) -> list[Path]:
        """Everything a training attempt logs step by step: cleared when the run trains from scratch, so that no
        row of an older attempt (other settings, other code) stands in for one of this attempt."""
        return [self.log_csv(paths), self.heldout_csv(paths), self.policy_csv(paths), self.completions_log(paths)]

    def predictions(self, paths: Paths, test_set: str) -> Path:
        """Raw outputs + parsed labels of this model on `test_set` (e.g. 'iemocap-f1', 'meld-test', 'xc-savee')."""
        return paths.predictions / self.name / f"{test_set}.jsonl"

    def sft_parent(self, cfg: ExperimentsConfig) -> "Run | None":
        """The SFT run a GRPO run starts from, if any."""
        if self.stage != "grpo" or not cfg.sft_before_grpo:
            return None
        return Run(self.corpus, "sft", self.condition, None, self.fold, self.seed)


def _folds(cfg: ExperimentsConfig, corpus: str) -> list[int | None]:
    return list(cfg.iemocap_folds) if corpus == "iemocap" else [None]


def seeds(cfg: ExperimentsConfig) -> list[int | None]:
    return list(cfg.seeds) if cfg.seeds else [None]


def _as_list(entry: str | list[str]) -> list[str]:
    return [entry] if isinstance(entry, str) else list(entry)


def _on(corpus_tail: list[str], corpus: str) -> bool:
    """An entry's optional last item names the one corpus it is for; without it, it is for every corpus."""
    return corpus_tail in ([], [corpus])


def sft_runs(cfg: ExperimentsConfig) -> list[Run]:
    return [Run(c, "sft", e[0], None, f, sd) for sd in seeds(cfg) for c in cfg.corpora for f in _folds(cfg, c)
            for e in map(_as_list, cfg.sft_conditions) if _on(e[1:], c)]


def grpo_runs(cfg: ExperimentsConfig) -> list[Run]:
    return [Run(c, "grpo", entry[1], entry[0], f, sd) for sd in seeds(cfg)
            for c in cfg.corpora for f in _folds(cfg, c) for entry in cfg.grpo_runs if _on(entry[2:], c)]


def scored_cross_corpus(cfg: ExperimentsConfig, run: Run) -> bool:
    """Whether `run` is scored on the other corpora's 4-class sets (experiments.cross_corpus)."""
    return cfg.cross_corpus if isinstance(cfg.cross_corpus, bool) else str(run.recipe) in cfg.cross_corpus


def zeroshot_runs(cfg: ExperimentsConfig) -> list[Run]:
    """The base model, untrained, under every prompt condition a trained run of the same corpus uses."""
    trained = {(r.corpus, r.condition) for r in sft_runs(cfg) + grpo_runs(cfg)}
    return [Run(c, "zeroshot", cond, None, f) for c in cfg.corpora for f in _folds(cfg, c)
            for cond in sorted(k for corpus, k in trained if corpus == c)]


def all_runs(cfg: ExperimentsConfig) -> list[Run]:
    return zeroshot_runs(cfg) + sft_runs(cfg) + grpo_runs(cfg)

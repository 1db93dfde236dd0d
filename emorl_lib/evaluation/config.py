"""The `eval` section of a profile."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..method.prompts import CONDITIONS


@dataclass
class EvalConfig:
    batch_size: int = 8
    # Tokens each condition may generate: an answer alone is short, reasoning is not (R1-AQA caps completions at 256).
    max_new_tokens: dict[str, int] = field(default_factory=lambda: {"IR": 24, "EUR": 256, "ESR": 256})
    bootstrap: int = 1000          # bootstrap resamples for the 95 % CIs (0: no CIs)
    ci: float = 0.95
    seed: int = 0                  # bootstrap and the max_utterances subsample
    max_utterances: int | None = None  # per test set, for smoke runs (null: all); every table says when it is set
    # Read the label from <answer> only (true), or from the whole text when there is no tag (false): untrained
    # models often ignore the format; either way an output without exactly one known candidate label is wrong.
    require_answer_tag: bool = False
    meld_split: str = "test"       # MELD's held-out split scored in-corpus (test, or dev while developing)
    crosscorpus_all_folds: bool = False  # IEMOCAP: cross-corpus for every fold's model (true) or the first only
    # Rows of the main table other than "+ESR" use this prompt condition (the paper's baselines answer directly).
    main_condition: str = "IR"

    def __post_init__(self) -> None:
        missing = [c for c in CONDITIONS if c not in self.max_new_tokens]
        if missing:
            raise ValueError(f"eval.max_new_tokens lacks condition(s) {missing}")
        if self.batch_size < 1:
            raise ValueError(f"eval.batch_size must be >= 1, not {self.batch_size}")
        if self.max_utterances is not None and self.max_utterances < 1:
            raise ValueError(f"eval.max_utterances must be null or >= 1, not {self.max_utterances}")
        if self.main_condition not in CONDITIONS:
            raise ValueError(f"eval.main_condition: {self.main_condition!r} is not one of {CONDITIONS}")
        if self.meld_split not in ("test", "dev"):
            raise ValueError(f"eval.meld_split: expected test or dev, not {self.meld_split!r}")
        if not 0 < self.ci < 1:
            raise ValueError(f"eval.ci must be in (0, 1), not {self.ci}")

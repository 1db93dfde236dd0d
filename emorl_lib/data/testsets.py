"""Which utterances a model is scored on, and with which candidate labels and gold key.

In-corpus: IEMOCAP fold k tests Session k; MELD its official test split. Cross-corpus (EmoBox track 2): the
balanced 4-class sets of the OTHER corpora, answered with the 4 shared classes. A MELD-trained model never sees
the MELD set (its entries come from MELD train); no model is scored on its own corpus's set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..infra.paths import Paths
from .corpora.splits import train_heldout, train_test
from .labels import candidates
from .manifest import Utterance, read_manifest

XC_PREFIX = "xc-"


@dataclass
class TestSet:
    __test__ = False  # not a pytest class
    name: str                  # iemocap-f1 | meld-test | xc-savee (Run.predictions' test_set)
    corpus: str
    rows: list[Utterance]
    four_class: bool           # candidates restricted to the 4 shared classes; gold is label4
    n_total: int               # size before max_utterances

    @property
    def candidates(self) -> tuple[str, ...]:
        return candidates(self.corpus, self.four_class)

    @property
    def gold_key(self) -> str:
        return "label4" if self.four_class else "label"

    @property
    def truncated(self) -> bool:
        return len(self.rows) < self.n_total

    def gold(self, row: Utterance) -> str:
        return getattr(row, self.gold_key)


def subsample(rows: list[Utterance], n: int | None, seed: int, key: str = "label") -> list[Utterance]:
    """At most n rows, drawn class by class in turn (so a smoke subset still holds every class), deterministic
    for a seed; the original order is kept."""
    if n is None or len(rows) <= n:
        return list(rows)
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_class.setdefault(str(getattr(r, key)), []).append(i)
    for idx in by_class.values():
        rng.shuffle(idx)
    picked: list[int] = []
    queues = [by_class[k] for k in sorted(by_class)]
    while len(picked) < n:
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return [rows[i] for i in sorted(picked)]


def _manifest(path: Path) -> list[Utterance]:
    if not path.exists():
        raise FileNotFoundError(f"no manifest {path}: run notebook 01 (or `emorl prepare`) for this profile first")
    return read_manifest(path)


def in_corpus_name(corpus: str, fold: int | None, split: str = "test") -> str:
    """'iemocap-f1' (a leave-one-session-out fold) or 'meld-test' (an official split)."""
    return f"{corpus}-f{fold}" if fold is not None else f"{corpus}-{split}"


def in_corpus_set(paths: Paths, corpus: str, fold: int | None, max_utterances: int | None = None, seed: int = 0
                  ) -> TestSet:
    """The test side of a fold (IEMOCAP: Session `fold`) or MELD's official test split."""
    rows = _manifest(paths.manifests / f"{corpus}.jsonl")
    unit = fold if fold is not None else "test"
    _, test = train_test(rows, corpus, unit)
    if not test:
        raise ValueError(f"{paths.manifests / f'{corpus}.jsonl'}: no rows in test unit {unit!r}")
    return TestSet(in_corpus_name(corpus, fold), corpus, subsample(test, max_utterances, seed), False,
                   len(test))


def heldout_name(corpus: str, fold: int | None) -> str:
    """MELD's dev split (meld-dev), or the held-out slice of a fold's training side (e.g. iemocap-f1-val)."""
    return in_corpus_name(corpus, fold, "dev") if fold is None else f"{in_corpus_name(corpus, fold)}-val"


def heldout_set(paths: Paths, corpus: str, fold: int | None, fraction: float, seed: int = 0,
                max_utterances: int | None = None) -> TestSet | None:
    """Held-out TRAINING data, for choosing settings and for learning curves (never a test set): MELD's official
    dev split; elsewhere the `data.heldout_fraction` slice that training leaves out (None when the fraction is 0)."""
    manifest = paths.manifests / f"{corpus}.jsonl"
    _, held = train_heldout(_manifest(manifest), corpus, fold, fraction, seed)
    if not held:
        return None
    return TestSet(heldout_name(corpus, fold), corpus, subsample(held, max_utterances, seed), False, len(held))


def crosscorpus_path(paths: Paths, corpus: str) -> Path:
    return paths.manifests / f"crosscorpus_{corpus}.jsonl"


def crosscorpus_corpora(paths: Paths) -> list[str]:
    """Corpora whose balanced 4-class set exists for this profile (prepare writes them)."""
    return sorted(p.stem.removeprefix("crosscorpus_") for p in paths.manifests.glob("crosscorpus_*.jsonl"))


def crosscorpus_targets(train_corpus: str, available: list[str]) -> list[str]:
    """The sets a model trained on `train_corpus` is scored on: every other corpus's set."""
    return [c for c in available if c != train_corpus]


def crosscorpus_set(paths: Paths, corpus: str, max_utterances: int | None = None, seed: int = 0) -> TestSet:
    rows = _manifest(crosscorpus_path(paths, corpus))
    if not rows:
        raise ValueError(f"{crosscorpus_path(paths, corpus)}: empty (no track-2 entry resolved; see its report)")
    bad = [r.utt_id for r in rows if r.label4 is None]
    if bad:
        raise ValueError(f"{crosscorpus_path(paths, corpus)}: rows without label4: {bad[:5]}")
    return TestSet(XC_PREFIX + corpus, corpus, subsample(rows, max_utterances, seed, "label4"), True, len(rows))


def test_corpus(test_set: str) -> str:
    """'xc-savee' -> savee, 'iemocap-f1' -> iemocap, 'meld-test' -> meld."""
    return test_set.removeprefix(XC_PREFIX).split("-")[0]


def is_crosscorpus(test_set: str) -> bool:
    return test_set.startswith(XC_PREFIX)

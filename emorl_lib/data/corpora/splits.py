"""Folds and splits of the EmoBox protocol (docs/protocols.md): the one place that defines them.

IEMOCAP: leave-one-session-out, fold k tests Session k. MELD: the official train/dev/test split.
RAVDESS: six speaker-disjoint folds with fixed test actors (EmoBox drew them once at random, so they are
hard-coded). SAVEE: leave-one-speaker-out in EmoBox's order.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

IEMOCAP_SESSIONS: tuple[int, ...] = (1, 2, 3, 4, 5)
MELD_SPLITS: tuple[str, ...] = ("train", "dev", "test")
RAVDESS_TEST_ACTORS: dict[int, tuple[int, ...]] = {
    1: (1, 11, 20, 21), 2: (4, 10, 12, 14), 3: (8, 9, 19, 23),
    4: (3, 5, 7, 24), 5: (2, 15, 16, 18), 6: (6, 13, 17, 22),
}
SAVEE_TEST_SPEAKERS: dict[int, str] = {1: "JE", 2: "KL", 3: "DC", 4: "JK"}

_RAVDESS_FOLD_OF = {a: f for f, actors in RAVDESS_TEST_ACTORS.items() for a in actors}
_SAVEE_FOLD_OF = {s: f for f, s in SAVEE_TEST_SPEAKERS.items()}


def ravdess_fold(actor: int) -> int | None:
    return _RAVDESS_FOLD_OF.get(int(actor))


def savee_fold(speaker: str) -> int | None:
    return _SAVEE_FOLD_OF.get(speaker)


def folds(corpus: str) -> tuple:
    """The evaluation units of a corpus: fold numbers, or MELD's held-out split names."""
    return {
        "iemocap": IEMOCAP_SESSIONS,
        "meld": ("test", "dev"),
        "ravdess": tuple(RAVDESS_TEST_ACTORS),
        "savee": tuple(SAVEE_TEST_SPEAKERS),
    }[corpus]


R = TypeVar("R")


def _get(row, key):
    return row[key] if isinstance(row, dict) else getattr(row, key)


def train_test(rows: Sequence[R], corpus: str, fold: int | str) -> tuple[list[R], list[R]]:
    """(train, test) rows for one fold (IEMOCAP/RAVDESS/SAVEE) or held-out split (MELD: 'test' or 'dev';
    its train side is always the official train split). Rows are manifest rows (dicts or Utterance)."""
    if corpus == "meld":
        if fold not in ("test", "dev"):
            raise ValueError(f"MELD is scored on its official 'test' (or 'dev') split, not {fold!r}")
        return ([r for r in rows if _get(r, "split") == "train"],
                [r for r in rows if _get(r, "split") == fold])
    if fold not in folds(corpus):
        raise ValueError(f"{corpus} has folds {list(folds(corpus))}, not {fold!r}")
    fold = int(fold)
    return ([r for r in rows if _get(r, "fold") != fold], [r for r in rows if _get(r, "fold") == fold])


def heldout_slice(train: Sequence[R], fraction: float, seed: int = 0, key: str = "label"
                     ) -> tuple[list[R], list[R]]:
    """(train, held-out): a seeded, class-stratified `fraction` of a fold's training side held out for choosing
    settings and for learning curves, where the corpus has no official dev split (IEMOCAP, RAVDESS, SAVEE).

    Each class gives round(fraction x its count) rows (at least one where the fraction is positive and the class
    has two or more); the choice depends only on the rows' ids, the fraction and the seed, not on their order."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), not {fraction}")
    if fraction == 0.0:
        return list(train), []
    import random

    by_class: dict[str, list[R]] = {}
    for r in sorted(train, key=lambda r: _get(r, "utt_id")):
        by_class.setdefault(str(_get(r, key)), []).append(r)
    held: set[str] = set()
    for label in sorted(by_class):
        rows = by_class[label]
        k = round(fraction * len(rows))
        if k == 0 and len(rows) >= 2:
            k = 1
        rng = random.Random(f"{seed}:{label}")
        held.update(_get(r, "utt_id") for r in rng.sample(rows, min(k, len(rows) - 1)))
    return ([r for r in train if _get(r, "utt_id") not in held], [r for r in train if _get(r, "utt_id") in held])


def train_heldout(rows: Sequence[R], corpus: str, fold: int | str | None, fraction: float, seed: int = 0
                     ) -> tuple[list[R], list[R]]:
    """(train, held-out) of a fold: what a run trains on and the held-out TRAINING data it is tuned and
    plotted on (never its test side). MELD: official train and dev; elsewhere the fold's training side less
    `heldout_slice` (empty when `fraction` is 0)."""
    if corpus == "meld":
        train, _ = train_test(rows, corpus, "test")
        return train, [r for r in rows if _get(r, "split") == "dev"]
    train, _ = train_test(rows, corpus, fold)
    return heldout_slice(train, fraction, seed)

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

"""Label maps: the one place that says what each corpus's native labels mean.

Every manifest row carries the corpus's `native_label`, a unified `label` from UNIFIED (the names the model
is asked to choose from), and `label4` where the 4-class cross-corpus protocol defines one (EmoBox track 2:
neutral, happy, sad, angry).
"""

from __future__ import annotations

UNIFIED: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise", "calm")
FOUR_CLASS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")

# native label -> unified label; labels absent here are outside the kit's protocol for that corpus.
NATIVE_TO_UNIFIED: dict[str, dict[str, str]] = {
    # IEMOCAP 4-class protocol: exc merged into happy; fru, fea, sur, dis, oth, xxx are not kept.
    "iemocap": {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"},
    "meld": {
        "neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry",
        "surprise": "surprise", "fear": "fear", "disgust": "disgust",
    },
    # RAVDESS file-name emotion field (two digits).
    "ravdess": {
        "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
        "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
    },
    # SAVEE file-name codes (two-letter codes must be tried before one-letter ones when parsing).
    "savee": {"a": "angry", "d": "disgust", "f": "fear", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprise"},
}

# The candidate labels offered to the model for each corpus, in a fixed order.
CORPUS_LABELS: dict[str, tuple[str, ...]] = {
    "iemocap": ("neutral", "happy", "sad", "angry"),
    "meld": ("neutral", "happy", "sad", "angry", "surprise", "fear", "disgust"),
    "ravdess": ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise"),
    "savee": ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"),
}

IEMOCAP_ALL_CODES: tuple[str, ...] = ("neu", "hap", "exc", "ang", "sad", "fru", "fea", "sur", "dis", "oth", "xxx")


def to_unified(corpus: str, native: str) -> str | None:
    """Unified label of a native label, or None when the corpus's protocol does not keep it."""
    return NATIVE_TO_UNIFIED[corpus].get(native)


def to_four_class(label: str | None) -> str | None:
    return label if label in FOUR_CLASS else None


def candidates(corpus: str, four_class: bool = False) -> tuple[str, ...]:
    """Labels a model may answer for `corpus` (restricted to the 4 shared classes for cross-corpus tests)."""
    return FOUR_CLASS if four_class else CORPUS_LABELS[corpus]

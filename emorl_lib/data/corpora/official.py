"""Official counts of the real corpora (protocols.md) and the check a real-data run is held to.

Synthetic corpora do not have these counts, so the check runs only when the roots are real corpora;
a mismatch there is printed loudly and recorded in the report.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

# Each entry: a grouping of the kept manifest rows and the count expected for each group.
OFFICIAL_COUNTS: dict[str, dict[str, dict]] = {
    "iemocap": {
        "total": {"all": 5531},
        "native_label": {"neu": 1708, "ang": 1103, "sad": 1084, "exc": 1041, "hap": 595},
        "fold": {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241},
        "speakers": {"all": 10},
    },
    "meld": {
        "split": {"train": 9988, "dev": 1108, "test": 2610},
        "test_label": {"neutral": 1256, "joy": 402, "anger": 345, "surprise": 281, "sadness": 208,
                       "disgust": 68, "fear": 50},
    },
    "ravdess": {
        "total": {"all": 1440},
        "native_label": {"01": 96, **{f"{e:02d}": 192 for e in range(2, 9)}},
        "speakers": {"all": 24},
    },
    "savee": {
        "total": {"all": 480},
        "native_label": {"n": 120, "a": 60, "d": 60, "f": 60, "h": 60, "sa": 60, "su": 60},
        "speakers": {"all": 4},
    },
}

# MELD's CSVs hold one more row than is usable in train (dia125_utt3 does not decode) and dev (dia110_utt7 is
# missing); the loader's `found` is compared with these.
MELD_CSV_ROWS: dict[str, int] = {"train": 9989, "dev": 1109, "test": 2610}


def _get(row, key):
    return row[key] if isinstance(row, dict) else getattr(row, key)


def observed_counts(corpus: str, rows: Iterable) -> dict[str, dict]:
    rows = list(rows)
    out: dict[str, dict] = {}
    for group in OFFICIAL_COUNTS[corpus]:
        if group == "total":
            out[group] = {"all": len(rows)}
        elif group == "speakers":
            out[group] = {"all": len({_get(r, "speaker") for r in rows})}
        elif group == "test_label":
            out[group] = dict(Counter(_get(r, "native_label") for r in rows if _get(r, "split") == "test"))
        else:
            out[group] = dict(Counter(_get(r, group) for r in rows))
    return out


def compare_official(corpus: str, rows: Iterable) -> list[str]:
    """Every (group, key) whose count differs from the official one, as readable lines; [] when all match."""
    seen = observed_counts(corpus, rows)
    bad = []
    for group, expected in OFFICIAL_COUNTS[corpus].items():
        got = seen.get(group, {})
        for key in sorted(set(expected) | set(got), key=str):
            e, g = expected.get(key, 0), got.get(key, 0)
            if e != g:
                bad.append(f"{corpus} {group}[{key}]: expected {e}, got {g}")
    return bad

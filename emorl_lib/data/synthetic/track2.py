"""Which EmoBox track-2 entries a synthetic corpus of a given size contains.

The generator writes the utterances the shipped track-2 lists name (emorl_lib/data/emobox_track2_<corpus>.jsonl),
with native labels consistent with the list labels, so cross-corpus resolution runs on synthetic data as on real
data. A deterministic subset is written: per class the first min(60, max(2, ceil(30 * size))) entries in a fixed
order that does not depend on the seed: 30 of 60 per class at size 1.0 (the default, kept small so that all four
corpora generate in well under a minute), every entry from size 2.0 up.
"""

from __future__ import annotations

import math
import zlib

from ...infra.io import read_jsonl
from ...infra.paths import PACKAGE_DATA

PER_CLASS = 60           # entries per class in each list
PER_CLASS_AT_SIZE_1 = 30


def track2_list(corpus: str) -> list[dict]:
    path = PACKAGE_DATA / f"emobox_track2_{corpus}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EmoBox track-2 list for {corpus!r} not found (shipped with emorl_lib)")
    return list(read_jsonl(path))


def per_class(size: float) -> int:
    return min(PER_CLASS, max(2, math.ceil(PER_CLASS_AT_SIZE_1 * size)))


def inclusion_order(names: list[str]) -> list[str]:
    """The order in which a class's entries enter a synthetic corpus as its size grows (fixed, seed-free)."""
    return sorted(names, key=lambda n: (zlib.crc32(n.encode()), n))


def track2_included(corpus: str, size: float) -> list[dict]:
    """The track-2 entries (list rows) a synthetic corpus of this size contains, in list order."""
    rows = track2_list(corpus)
    k = per_class(size)
    keep: set[str] = set()
    for label in sorted({r["label"] for r in rows}):
        keep.update(inclusion_order([r["wav_filename"] for r in rows if r["label"] == label])[:k])
    return [r for r in rows if r["wav_filename"] in keep]

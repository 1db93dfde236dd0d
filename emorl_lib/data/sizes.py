"""Synthetic corpus sizes (`data.synthetic_size`): one number for every corpus, or a mapping {corpus: size}.

The one place that says which size a corpus is generated at (`size_of`) and which sizes are allowed
(`check_sizes`). Kept apart from the generator package (`synthetic/`, which loads scipy) so that reading a profile
stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

CORPORA: tuple[str, ...] = ("iemocap", "meld", "ravdess", "savee")
DEFAULT_SIZE = 1.0  # what a corpus left out of a size mapping gets
Sizes = float | Mapping[str, float]  # one size for every corpus, or {corpus: size}


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_sizes(size: Sizes, known: tuple[str, ...] = CORPORA, what: str = "size") -> None:
    """Raise ValueError unless `size` is a number or a {corpus: number} mapping of known corpora, every size finite
    and > 0 (a size of 0, a negative or an infinite one cannot be planned; a misspelt corpus name would silently
    leave that corpus at DEFAULT_SIZE)."""
    if isinstance(size, Mapping):
        unknown = [c for c in size if c not in known]
        if unknown:
            raise ValueError(f"{what}: unknown corpus {unknown}; known: {list(known)}")
        bad = {c: v for c, v in size.items() if not (_is_number(v) and math.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"{what}: every size must be a finite number > 0; got {bad}")
    elif not (_is_number(size) and math.isfinite(size) and size > 0):
        raise ValueError(f"{what} must be a finite number > 0 or a mapping {{corpus: size}}, got {size!r}")


def size_of(size: Sizes, corpus: str) -> float:
    """The size `corpus` is generated at: the number itself, or the mapping's entry (DEFAULT_SIZE if absent)."""
    return float(size.get(corpus, DEFAULT_SIZE)) if isinstance(size, Mapping) else float(size)


def canonical(size: Sizes, known: tuple[str, ...] = CORPORA, what: str = "size") -> float | dict[str, float]:
    """`size` checked, in one spelling per meaning, so that settings digests and folder names follow what is
    generated and not how the YAML wrote it: a number as a float; a mapping with every known corpus in order (those
    it does not name at DEFAULT_SIZE); a mapping that gives every corpus the same size, that number."""
    check_sizes(size, known, what)
    if not isinstance(size, Mapping):
        return float(size)
    full = {c: size_of(size, c) for c in known}
    return full[known[0]] if len(set(full.values())) == 1 else full

"""Corpus loaders: each takes a corpus root as users download it and returns manifest rows (before decoding: no wav yet) plus a report.

`LOADERS[name](root) -> (list[Utterance], CorpusReport)`; layouts are described in each module's docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..manifest import Utterance
from . import iemocap, meld, ravdess, savee
from .report import CorpusReport, LayoutError, format_table, summary_rows
from .splits import folds, train_test

Loader = Callable[[str | Path], tuple[list[Utterance], CorpusReport]]

LOADERS: dict[str, Loader] = {
    "iemocap": iemocap.load,
    "meld": meld.load,
    "ravdess": ravdess.load,
    "savee": savee.load,
}
CORPORA: tuple[str, ...] = tuple(LOADERS)


def load(corpus: str, root: str | Path) -> tuple[list[Utterance], CorpusReport]:
    """Read `root` with the named corpus's loader; an unknown name is an error listing the known ones."""
    if corpus not in LOADERS:
        raise KeyError(f"unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    return LOADERS[corpus](root)


__all__ = ["CORPORA", "LOADERS", "CorpusReport", "LayoutError", "folds", "format_table", "load",
           "summary_rows", "train_test"]

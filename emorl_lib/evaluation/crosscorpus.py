"""The cross-corpus transfer matrix, laid out like EmoBox's Table 5: rows the training corpus, columns the test
corpus (its balanced 4-class track-2 set), accuracy in each cell; a model is never scored on its own corpus's
set, so the diagonal is empty."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

CORPUS_ORDER = ("iemocap", "meld", "ravdess", "savee")
NAMES = {"iemocap": "IEMOCAP", "meld": "MELD", "ravdess": "RAVDESS", "savee": "SAVEE"}


def ordered(corpora) -> list[str]:
    known = [c for c in CORPUS_ORDER if c in corpora]
    return known + sorted(c for c in corpora if c not in CORPUS_ORDER)


def transfer_matrix(cells: Mapping[tuple[str, str], float], train: list[str], test: list[str]) -> pd.DataFrame:
    """DataFrame (index train corpus, columns test corpus) of `cells[(train, test)]`; NaN where a pair is missing
    and on the diagonal (not scored by protocol)."""
    train, test = ordered(train), ordered(test)
    m = pd.DataFrame(np.nan, index=pd.Index(train, name="train"), columns=pd.Index(test, name="test"))
    for (a, b), v in cells.items():
        if a == b:
            raise ValueError(f"transfer_matrix: a {a}-trained model scored on its own corpus's set")
        if a in m.index and b in m.columns:
            m.loc[a, b] = v
    return m


def with_mean(m: pd.DataFrame) -> pd.DataFrame:
    """The matrix with a row-mean column (average transfer from each training corpus)."""
    out = m.copy()
    out["mean"] = m.mean(axis=1, skipna=True)
    return out

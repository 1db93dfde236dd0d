"""A candidate row: what a loader knows about one utterance before its audio is decoded into the cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import labels
from ..manifest import Utterance


@dataclass
class Candidate:
    utt_id: str
    corpus: str
    speaker: str
    gender: str | None
    native_label: str
    label: str
    label4: str | None
    split: str | None
    fold: int | None
    source: str
    transcript: str | None = None

    def to_utterance(self, wav: str, duration: float) -> Utterance:
        d = asdict(self)
        return Utterance(**d, duration=round(float(duration), 4), wav=str(wav))


def make_candidate(corpus: str, utt_id: str, native: str, **kw) -> Candidate | None:
    """A candidate with labels from labels.py, or None when the corpus's protocol does not keep `native`."""
    label = labels.to_unified(corpus, native)
    if label is None:
        return None
    return Candidate(utt_id=utt_id, corpus=corpus, native_label=native, label=label,
                     label4=labels.to_four_class(label), **kw)

"""The manifest: one JSON object per utterance, one jsonl file per corpus (EmoBox style: plain, greppable).

Schema (every row has every key; null where the corpus has no such fact):
  utt_id        str   corpus-unique id (IEMOCAP turn name, MELD `dia{D}_utt{U}` prefixed by split,
                      RAVDESS/SAVEE file stem prefixed by speaker where needed)
  corpus        str   iemocap | meld | ravdess | savee
  speaker       str   corpus speaker id (IEMOCAP `Ses01F` = session + speaking actor's gender)
  gender        str?  "M" | "F" | null
  native_label  str   the corpus's own code (IEMOCAP `exc`, RAVDESS `03`, SAVEE `sa`, MELD `joy`)
  label         str   unified label (labels.UNIFIED)
  label4        str?  4-class label (neutral/happy/sad/angry) or null
  split         str?  MELD official split (train/dev/test); null for fold-based corpora
  fold          int?  the fold whose test set holds this utterance (IEMOCAP session 1-5, RAVDESS 1-6,
                      SAVEE 1-4); null for MELD
  duration      float seconds, measured on the cached 16 kHz wav
  wav           str   path of the 16 kHz mono wav in the cache (absolute)
  source        str   path of the original file under the corpus root (absolute)
  transcript    str?  what is said, where the corpus has it (IEMOCAP, MELD); never shown unless asked
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..infra.io import read_jsonl
from . import labels


@dataclass
class Utterance:
    """One manifest row. A loader makes it before the audio is decoded (`wav`, `duration` None); preparation fills
    them in with `with_audio` once the clip is in the 16 kHz cache."""

    utt_id: str
    corpus: str
    speaker: str
    gender: str | None
    native_label: str
    label: str
    label4: str | None
    split: str | None
    fold: int | None
    duration: float | None
    wav: str | None
    source: str
    transcript: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    def with_audio(self, wav: str | Path, duration: float) -> "Utterance":
        return replace(self, wav=str(wav), duration=round(float(duration), 4))


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Utterance))


def labelled_row(corpus: str, utt_id: str, native: str, **kw) -> Utterance | None:
    """A loader's row with labels from labels.py, or None when the corpus's protocol does not keep `native`."""
    label = labels.to_unified(corpus, native)
    if label is None:
        return None
    return Utterance(utt_id=utt_id, corpus=corpus, native_label=native, label=label,
                     label4=labels.to_four_class(label), duration=None, wav=None, **kw)


def read_manifest(path: Path) -> list[Utterance]:
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        missing = [k for k in FIELDS if k not in row and k != "transcript"]
        if missing:
            raise ValueError(f"{path}: row {i} lacks manifest field(s) {missing}")
        out.append(Utterance(**{k: row.get(k) for k in FIELDS}))
    return out

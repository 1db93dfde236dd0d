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
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator


@dataclass
class Utterance:
    utt_id: str
    corpus: str
    speaker: str
    gender: str | None
    native_label: str
    label: str
    label4: str | None
    split: str | None
    fold: int | None
    duration: float
    wav: str
    source: str
    transcript: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Utterance))


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so an interrupt never leaves a half file that looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: Iterable[dict | Utterance]) -> Path:
    lines = [r.to_json() if isinstance(r, Utterance) else json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(Path(path), "".join(l + "\n" for l in lines))
    return Path(path)


def read_jsonl(path: Path) -> Iterator[dict]:
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from None


def read_manifest(path: Path) -> list[Utterance]:
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        missing = [k for k in FIELDS if k not in row and k != "transcript"]
        if missing:
            raise ValueError(f"{path}: row {i} lacks manifest field(s) {missing}")
        out.append(Utterance(**{k: row.get(k) for k in FIELDS}))
    return out

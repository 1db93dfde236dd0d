"""SAVEE: 7 classes, 4 male speakers, leave-one-speaker-out.

Two layouts in the wild: original `AudioData/{DC,JE,JK,KL}/{code}NN.wav` and the flat re-upload
`ALL/{SPK}_{code}NN.wav`. Codes are parsed two-letter first (sa, su before s-less a).
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import labels
from ..manifest import Utterance, labelled_row
from .report import CorpusReport, LayoutError, listing
from .splits import SAVEE_TEST_SPEAKERS, savee_fold

CORPUS = "savee"
SPEAKERS = tuple(sorted(SAVEE_TEST_SPEAKERS.values()))
_CODES = "|".join(sorted(labels.NATIVE_TO_UNIFIED[CORPUS], key=lambda c: (-len(c), c)))
ORIGINAL_NAME = re.compile(rf"^({_CODES})(\d{{2}})$")
FLAT_NAME = re.compile(rf"^([A-Z]{{2}})_({_CODES})(\d{{2}})$")


def _wavs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".wav"
                  and not p.name.startswith("._")) if d.is_dir() else []


def find_layout(root: Path) -> tuple[str, Path]:
    """('original', folder holding DC/JE/JK/KL) or ('flat', folder holding SPK_codeNN.wav files)."""
    root = Path(root).expanduser()
    for cand in (root / "AudioData", root, root / "SAVEE" / "AudioData"):
        if any((cand / s).is_dir() for s in SPEAKERS):
            return "original", cand
    for cand in (root / "ALL", root, root / "SAVEE" / "ALL"):
        if any(FLAT_NAME.match(p.stem) for p in _wavs(cand)):
            return "flat", cand
    raise LayoutError(
        f"SAVEE: expected AudioData/{{DC,JE,JK,KL}}/ (files like sa01.wav) or ALL/ (files like JK_sa01.wav)"
        f" under {root}, {listing(root)}")


def _files(layout: str, base: Path) -> list[tuple[str | None, Path]]:
    if layout == "flat":
        return [(None, p) for p in _wavs(base)]
    out = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        out += [(d.name, p) for p in _wavs(d)]
    return out


def load(root: str | Path) -> tuple[list[Utterance], CorpusReport]:
    layout, base = find_layout(Path(root))
    report = CorpusReport(CORPUS, str(base.resolve()))
    report.notes.append(f"layout: {layout} ({base})")
    rows: list[Utterance] = []
    seen: set[str] = set()
    for spk, p in _files(layout, base):
        if spk is None:
            m = FLAT_NAME.match(p.stem)
            parts = m.groups() if m else None
        else:
            m = ORIGINAL_NAME.match(p.stem)
            parts = (spk, *m.groups()) if m else None
        if parts is None:
            report.skip("unparseable file name", str(p))
            continue
        spk, code, num = parts
        fold = savee_fold(spk)
        if fold is None:
            report.skip("unknown speaker", str(p))
            continue
        utt_id = f"{spk}_{code}{num}"
        if utt_id in seen:
            report.skip("duplicate utterance id", str(p))
            continue
        seen.add(utt_id)
        cand = labelled_row(CORPUS, utt_id, code, speaker=spk, gender="M", split=None, fold=fold,
                              source=str(p.resolve()))
        assert cand is not None  # the name pattern only admits known codes
        rows.append(cand)
        report.keep()
    return rows, report

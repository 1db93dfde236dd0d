"""RAVDESS speech, audio-only (Audio_Speech_Actors_01-24/Actor_NN/*.wav): 8 classes, 6 fixed actor folds.

Everything is in the file name: modality-channel-emotion-intensity-statement-repetition-actor. Only
modality 03 (audio-only) with channel 01 (speech) is kept; song and video files are counted and listed.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..manifest import Utterance, labelled_row
from .report import CorpusReport, LayoutError, listing
from .splits import ravdess_fold

CORPUS = "ravdess"
FOLDERS = ("Audio_Speech_Actors_01-24", "audio_speech_actors_01-24")
NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
ACTOR_DIR = re.compile(r"^actor_(\d{2})$", re.IGNORECASE)


def _actor_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and ACTOR_DIR.match(p.name)) if d.is_dir() else []


def find_root(root: Path) -> Path:
    """The folder holding Actor_01..Actor_24 (the root, or its Audio_Speech_Actors_01-24/ child in either case)."""
    root = Path(root).expanduser()
    for cand in (root, *(root / f for f in FOLDERS)):
        if _actor_dirs(cand):
            return cand
    raise LayoutError(
        f"RAVDESS: expected Actor_01..Actor_24/ (files like 03-01-01-01-01-01-01.wav) under {root}"
        f" (the {FOLDERS[0]}/ folder, also accepted lower-cased), {listing(root)}")


def load(root: str | Path) -> tuple[list[Utterance], CorpusReport]:
    base = find_root(Path(root))
    report = CorpusReport(CORPUS, str(base.resolve()))
    rows: list[Utterance] = []
    for adir in _actor_dirs(base):
        for p in sorted(adir.iterdir()):
            if p.name.startswith("._") or not p.is_file() or p.suffix.lower() != ".wav":
                continue
            m = NAME.match(p.stem)
            if not m:
                report.skip("unparseable file name", str(p))
                continue
            modality, channel, emotion, _, _, _, actor = m.groups()
            if modality != "03":
                report.skip("video file, not audio-only (modality 01/02)", str(p))
                continue
            if channel != "01":
                report.skip("song, not speech (channel 02)", str(p))
                continue
            a = int(actor)
            cand = labelled_row(CORPUS, p.stem, emotion, speaker=f"Actor_{a:02d}",
                                  gender="M" if a % 2 else "F", split=None, fold=ravdess_fold(a),
                                  source=str(p.resolve()))
            if cand is None:
                report.skip("unknown emotion code", str(p))
                continue
            if cand.fold is None:
                report.skip("actor outside 01-24 (no fold)", str(p))
                continue
            rows.append(cand)
            report.keep()
    return rows, report

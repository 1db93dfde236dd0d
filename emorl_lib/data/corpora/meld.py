"""MELD (MELD.Raw/): 7 classes, official train/dev/test split; labels and transcripts from the CSVs.

Variants accepted: train_sent_emo.csv in train/ or beside the others; audio as the official mp4 folders or as
wav-only copies `dia{D}_utt{U}.wav` beside the CSVs (or in a folder named for the split). The plain
`dia*_utt*` file is preferred over a `final_videos_testdia*_utt*` duplicate. MELD dialogue/utterance ids repeat
across splits, so audio is only ever looked up in its own split's folders.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from .. import labels
from ..manifest import Utterance, labelled_row
from .report import CorpusReport, LayoutError, listing
from .splits import MELD_SPLITS
from .text import clean_text, read_text

CORPUS = "meld"
FOLDER = "MELD.Raw"
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
AUDIO_NAME = re.compile(r"^(final_videos_test)?dia(\d+)_utt(\d+)\.(mp4|wav)$", re.IGNORECASE)
# Official folders first, then wav-only copies.
AUDIO_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train/train_splits", "train_splits"),
    "dev": ("dev_splits_complete", "dev/dev_splits_complete"),
    "test": ("output_repeated_splits_test", "test/output_repeated_splits_test"),
}


def csv_path(base: Path, split: str) -> Path | None:
    for cand in (base / split / f"{split}_sent_emo.csv", base / f"{split}_sent_emo.csv"):
        if cand.is_file():
            return cand
    return None


def find_root(root: Path) -> Path:
    root = Path(root).expanduser()
    for cand in (root, root / FOLDER):
        if cand.is_dir() and any(csv_path(cand, s) for s in MELD_SPLITS):
            return cand
    raise LayoutError(
        f"MELD: expected train_sent_emo.csv (in {root}/train/ or {root}/), dev_sent_emo.csv and test_sent_emo.csv"
        f" under {root} (the {FOLDER}/ folder, archives extracted), {listing(root)}")


def audio_dirs(base: Path, split: str, csv_file: Path) -> list[Path]:
    """Folders that may hold this split's audio, in order of preference."""
    names = list(AUDIO_DIRS[split])
    names += [f"{split}_wav", f"{split}_audio", f"wav/{split}", f"audio/{split}", split]
    dirs = [base / n for n in names] + [csv_file.parent]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def index_audio(dirs: list[Path]) -> tuple[dict[tuple[int, int], Path], int]:
    """(dia, utt) -> file; ranking: earlier folder, then plain name over final_videos_test copy, wav over mp4.
    Also returns how many duplicates were passed over."""
    best: dict[tuple[int, int], tuple[tuple, Path]] = {}
    dupes = 0
    for rank, d in enumerate(dirs):
        for p in d.iterdir():
            if p.name.startswith("._"):
                continue
            m = AUDIO_NAME.match(p.name)
            if not m or not p.is_file():
                continue
            key = (int(m.group(2)), int(m.group(3)))
            score = (rank, m.group(1) is not None, m.group(4).lower() != "wav")
            if key in best:
                dupes += 1
                if score >= best[key][0]:
                    continue
            best[key] = (score, p)
    return {k: v[1] for k, v in best.items()}, dupes


def read_csv_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every CSV record; header checked against what MELD ships."""
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise LayoutError(f"MELD: {path} lacks column(s) {missing}; expected a header like "
                          "'Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,...', found {header}")
    reader.fieldnames = header
    out = []
    line = reader.line_num
    for row in reader:
        out.append((line + 1, row))
        line = reader.line_num
    return out


def load(root: str | Path) -> tuple[list[Utterance], CorpusReport]:
    base = find_root(Path(root))
    report = CorpusReport(CORPUS, str(base.resolve()))
    rows: list[Utterance] = []
    for split in MELD_SPLITS:
        cpath = csv_path(base, split)
        if cpath is None:
            report.notes.append(f"no {split}_sent_emo.csv under {base}: split {split} not loaded")
            continue
        dirs = audio_dirs(base, split, cpath)
        audio, dupes = index_audio(dirs)
        if not dirs or not audio:
            report.notes.append(f"no dia*_utt* audio found for split {split} (looked in "
                                f"{', '.join(AUDIO_DIRS[split])}, or beside {cpath.name})")
        if dupes:
            report.notes.append(f"{split}: {dupes} duplicate clip(s) passed over (plain dia*_utt* preferred over "
                                "final_videos_test copies)")
        seen: set[tuple[int, int]] = set()
        for n, r in read_csv_rows(cpath):
            try:
                dia, utt = int(r["Dialogue_ID"]), int(r["Utterance_ID"])
                emotion = (r["Emotion"] or "").strip().lower()
            except (TypeError, ValueError, AttributeError):
                report.skip("unparseable CSV row", f"{cpath}:{n}: {str(r)[:80]}")
                continue
            utt_id = f"{split}_dia{dia}_utt{utt}"
            if (dia, utt) in seen:
                report.skip("duplicate CSV row", f"{cpath}:{n}: {utt_id}")
                continue
            seen.add((dia, utt))
            speaker = clean_text(r.get("Speaker") or "") or "unknown"
            cand = labelled_row(CORPUS, utt_id, emotion, speaker=speaker, gender=None, split=split, fold=None,
                                  source="", transcript=clean_text(r.get("Utterance")))
            if cand is None:
                report.skip("unknown emotion", f"{cpath}:{n}: {utt_id} {emotion!r} (expected one of "
                            f"{sorted(labels.NATIVE_TO_UNIFIED[CORPUS])})")
                continue
            src = audio.get((dia, utt))
            if src is None:
                report.skip("no audio file", f"{utt_id} (dia{dia}_utt{utt}.mp4/.wav not in "
                            f"{', '.join(str(d) for d in dirs) or 'any audio folder'})")
                continue
            cand.source = str(src.resolve())
            rows.append(cand)
            report.keep()
    return rows, report

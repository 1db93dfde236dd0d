"""IEMOCAP (IEMOCAP_full_release/): 4-class protocol (neu, hap+exc, ang, sad), leave-one-session-out.

Labels come from the per-dialogue EmoEvaluation files (one header line per utterance; annotator lines and the
Categorical/, Attribute/, Self-evaluation/ subfolders are ignored). The speaker of a turn is the LAST M/F of
its id (the first is the actor wearing motion capture), so speaker = session + last letter.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..labels import IEMOCAP_ALL_CODES
from ..manifest import Utterance, labelled_row
from .report import CorpusReport, LayoutError, listing
from .text import clean_text, read_text

CORPUS = "iemocap"
FOLDER = "IEMOCAP_full_release"
SESSIONS = tuple(f"Session{i}" for i in range(1, 6))

# "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]"
HEADER = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*$")
UTT_ID = re.compile(r"^Ses0([1-5])[MF]_(?:impro|script)\w*?_([MF])\d{3}$")
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
TRANSCRIPT = re.compile(r"^(Ses\S+)\s+\[[^\]]*\]:\s?(.*)$")


def find_root(root: Path) -> Path:
    """The folder holding Session1..Session5 (the root itself, or its IEMOCAP_full_release/ child)."""
    root = Path(root).expanduser()
    for cand in (root, root / FOLDER):
        if cand.is_dir() and any((cand / s).is_dir() for s in SESSIONS):
            return cand
    raise LayoutError(
        f"IEMOCAP: expected Session1..Session5/ (each with dialog/EmoEvaluation/ and sentences/wav/) under {root}"
        f" (the {FOLDER}/ folder), {listing(root)}")


def _visible(p: Path) -> bool:
    return not p.name.startswith("._") and not p.name.startswith(".")


def parse_emo_file(path: Path, report: CorpusReport) -> list[tuple[str, str, int]]:
    """(utt_id, code, line number) for each header line; lines that look like headers but do not parse are
    reported with file and line number."""
    out = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        s = line.strip()
        if not s.startswith("["):
            continue  # blank, '%' comment, annotator lines (C-E2:, A-E3:, ...)
        m = HEADER.match(s)
        if not m:
            report.skip("unparseable label line", f"{path}:{n}: {s[:80]!r}")
            continue
        utt, code = m.group(3), m.group(4)
        if code not in IEMOCAP_ALL_CODES:
            report.skip("unknown label code", f"{path}:{n}: {utt} {code!r}")
            continue
        out.append((utt, code, n))
    return out


def read_transcripts(session_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    tdir = session_dir / "dialog" / "transcriptions"
    if not tdir.is_dir():
        return out
    for f in sorted(tdir.glob("*.txt")):
        if not _visible(f):
            continue
        for line in read_text(f).splitlines():
            m = TRANSCRIPT.match(line.strip())
            if m:
                out[m.group(1)] = clean_text(m.group(2)) or ""
    return out


def load(root: str | Path) -> tuple[list[Utterance], CorpusReport]:
    base = find_root(Path(root))
    report = CorpusReport(CORPUS, str(base.resolve()))
    missing = [s for s in SESSIONS if not (base / s).is_dir()]
    if missing:
        report.notes.append(f"missing session folder(s): {', '.join(missing)}")
    rows: list[Utterance] = []
    seen: set[str] = set()
    for sess_name in SESSIONS:
        sess = base / sess_name
        if not sess.is_dir():
            continue
        session = int(sess_name[-1])
        wavs = {p.stem: p for p in (sess / "sentences" / "wav").glob("*/*.wav") if _visible(p)}
        transcripts = read_transcripts(sess)
        emo_dir = sess / "dialog" / "EmoEvaluation"
        if not emo_dir.is_dir():
            report.notes.append(f"{emo_dir} is missing: no labels for {sess_name}")
            continue
        labelled: set[str] = set()
        for f in sorted(emo_dir.glob("*.txt")):  # not recursive: Categorical/, Attribute/, ... are not labels
            if not _visible(f):
                continue
            for utt, code, n in parse_emo_file(f, report):
                m = UTT_ID.match(utt)
                if not m:
                    report.skip("unparseable utterance id", f"{f}:{n}: {utt!r}")
                    continue
                if utt in seen:
                    report.skip("duplicate utterance id", f"{f}:{n}: {utt}")
                    continue
                seen.add(utt)
                labelled.add(utt)
                if int(m.group(1)) != session:
                    report.notes.append(f"{f}:{n}: {utt} listed under {sess_name}")
                letter = m.group(2)
                cand = labelled_row(
                    CORPUS, utt, code, speaker=f"Ses0{m.group(1)}{letter}", gender=letter, split=None,
                    fold=int(m.group(1)), source="", transcript=transcripts.get(utt))
                if cand is None:
                    report.skip(f"label {code} not kept", utt)
                    continue
                wav = wavs.get(utt)
                if wav is None:
                    report.skip("no audio file", f"{utt} (expected {sess}/sentences/wav/{utt.rsplit('_', 1)[0]}/{utt}.wav)")
                    continue
                cand.source = str(wav.resolve())
                rows.append(cand)
                report.keep()
        for stem in sorted(set(wavs) - labelled):
            report.skip("audio without label line", str(wavs[stem]))
    return rows, report

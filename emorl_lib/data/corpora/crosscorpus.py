"""Cross-corpus test sets: the EmoBox track-2 lists, resolved to this kit's manifest rows.

The lists (emorl_lib/data/emobox_track2_<corpus>.jsonl) are copied unchanged from the EmoBox repository
(emo-box/EmoBox, MIT licence per its README; Ma et al., INTERSPEECH 2024, arXiv 2406.07162): 240 utterances
per corpus, 60 each of angry, happy, neutral, sad. Every entry that does not resolve to a manifest row is
counted and listed, never dropped without a word.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ...infra.io import atomic_write_text, read_jsonl, write_jsonl
from ...infra.paths import PACKAGE_DATA
from ..manifest import Utterance

ATTRIBUTION = ("EmoBox track-2 lists (emo-box/EmoBox, MIT licence; Ma et al., INTERSPEECH 2024, "
               "arXiv 2406.07162)")
# Two MELD entries name final_videos_test copies: those are test-split clips (plain names are train clips).
MELD_ENTRY = re.compile(r"^(final_videos_test)?dia(\d+)_utt(\d+)$")


def track2_path(corpus: str) -> Path:
    return PACKAGE_DATA / f"emobox_track2_{corpus}.jsonl"


def track2_entries(corpus: str) -> list[dict]:
    return list(read_jsonl(track2_path(corpus)))


def entry_utt_id(corpus: str, wav_filename: str) -> str | None:
    """The manifest utt_id an entry names, or None if the name is malformed. MELD: a plain dia*_utt* name is
    the train split (dialogue ids up to 1026); a final_videos_testdia*_utt* name is the test split."""
    p = Path(wav_filename)
    if corpus in ("iemocap", "ravdess"):
        return p.stem
    if corpus == "meld":
        m = MELD_ENTRY.match(p.stem)
        if not m:
            return None
        return f"{'test' if m.group(1) else 'train'}_dia{m.group(2)}_utt{m.group(3)}"
    if corpus == "savee":
        return f"{p.parent.name}_{p.stem}" if p.parent.name else None
    raise KeyError(corpus)


@dataclass
class CrossReport:
    corpus: str
    entries: int = 0
    resolved: int = 0
    unresolved: list[dict] = field(default_factory=list)  # {"entry": wav_filename, "reason": ...}
    attribution: str = ATTRIBUTION

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        s = f"{self.corpus}: {self.resolved}/{self.entries} track-2 entries resolved"
        if self.unresolved:
            s += f", {len(self.unresolved)} UNRESOLVED"
        return s + f"  [{ATTRIBUTION}]"


def _elsewhere(uid: str, elsewhere: dict[str, list[str]]) -> str:
    if not elsewhere or "_" not in uid:
        return ""
    split, key = uid.split("_", 1)
    others = [s for s in elsewhere.get(key, []) if not s.startswith(split)]
    return f"; same dia/utt in split(s): {', '.join(others)}" if others else ""


def resolve_track2(corpus: str, rows: Sequence[Utterance], entries: list[dict] | None = None
                   ) -> tuple[list[Utterance], CrossReport]:
    """Manifest rows for each track-2 entry, in the list's order, and a report of every unresolved entry."""
    entries = track2_entries(corpus) if entries is None else entries
    by_id = {r.utt_id: r for r in rows}
    # MELD ids repeat across splits: name the other splits holding the same dia/utt when an entry fails.
    elsewhere: dict[str, list[str]] = {}
    if corpus == "meld":
        for r in rows:
            elsewhere.setdefault(r.utt_id.split("_", 1)[1], []).append(f"{r.split} ({r.label4 or r.label})")
    rep = CrossReport(corpus, entries=len(entries))
    out: list[Utterance] = []
    for e in entries:
        name = e.get("wav_filename", "")
        uid = entry_utt_id(corpus, name)
        row = by_id.get(uid) if uid else None
        if uid is None:
            rep.unresolved.append({"entry": name, "reason": "malformed file name"})
        elif row is None:
            rep.unresolved.append({"entry": name, "reason": "not in the manifest (not found, or skipped by the "
                                                            "loader)" + _elsewhere(uid, elsewhere)})
        elif row.label4 != e.get("label"):
            rep.unresolved.append({"entry": name, "reason": f"label mismatch: list {e.get('label')!r}, manifest "
                                   f"{row.label4!r} ({row.native_label})" + _elsewhere(uid, elsewhere)})
        else:
            out.append(row)
    rep.resolved = len(out)
    return out, rep


def write_crosscorpus(corpus: str, rows: Sequence[Utterance], manifests_dir: Path
                      ) -> tuple[Path, CrossReport]:
    """runs/<profile>/manifests/crosscorpus_<corpus>.jsonl plus its .report.json."""
    resolved, rep = resolve_track2(corpus, rows)
    path = write_jsonl(Path(manifests_dir) / f"crosscorpus_{corpus}.jsonl", resolved)
    atomic_write_text(Path(manifests_dir) / f"crosscorpus_{corpus}.report.json",
                      json.dumps(rep.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return path, rep

"""Cross-corpus test sets: the EmoBox track-2 lists, resolved to this kit's manifest rows.

The lists (emorl_lib/data/emobox_track2_<corpus>.jsonl) are copied unchanged from the EmoBox repository
(emo-box/EmoBox, MIT licence per its README; Ma et al., INTERSPEECH 2024, arXiv 2406.07162): 240 utterances
per corpus, 60 each of angry, happy, neutral, sad. Every entry that does not resolve to a manifest row is
counted and listed, never dropped without a word.

MELD: the list names clips `audio/dia<D>_utt<U>.wav` with no split, and MELD's dialogue and utterance ids restart
in each split, so one name can exist in train, dev and test with different labels (e.g. `dia222_utt12`: joy in
train, anger in test). An entry is looked up in every split and resolved to the split whose 4-class label equals
the list's label; when several do, to the one whose speaker equals the list's speaker; when that still leaves
several, by a split preference order (`MELD_TIE_ORDER`, a parameter). Every such ambiguity is reported with how it
was settled. Checked against MELD's own CSVs (declare-lab/MELD, data/MELD/*_sent_emo.csv): 183 plain names match by
label only in train, 26 only in test, 16 only in dev; 13 match in train and test, the speaker settles 11 of them
(all to test) and 2 (same label, same speaker) are left to the preference order; the 2 `final_videos_test...`
names are test clips. Looking in train alone (the two `final_videos_test` names aside) resolves 196 of the 238 plain names and unbalances the set.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ...infra.io import atomic_write_text, read_jsonl, write_jsonl
from ...infra.paths import PACKAGE_DATA
from ..manifest import Utterance
from .splits import MELD_SPLITS

ATTRIBUTION = ("EmoBox track-2 lists (emo-box/EmoBox, MIT licence; Ma et al., INTERSPEECH 2024, "
               "arXiv 2406.07162)")
# A final_videos_test name is a test clip; a plain name may be any split's (see the module docstring).
MELD_ENTRY = re.compile(r"^(final_videos_test)?dia(\d+)_utt(\d+)$")
# Which split wins when label and speaker both match in several (the real lists have 2 such entries, whose source
# split cannot be told from the list): train, the split most of the list comes from.
MELD_TIE_ORDER: tuple[str, ...] = ("train", "dev", "test")


def track2_path(corpus: str) -> Path:
    return PACKAGE_DATA / f"emobox_track2_{corpus}.jsonl"


def track2_entries(corpus: str) -> list[dict]:
    return list(read_jsonl(track2_path(corpus)))


def entry_candidates(corpus: str, wav_filename: str) -> list[str] | None:
    """The manifest utt_ids an entry may name, or None if the name is malformed. MELD: a plain dia*_utt* name may
    be any split's (train, dev, test); a final_videos_testdia*_utt* name is the test split's."""
    p = Path(wav_filename)
    if corpus in ("iemocap", "ravdess"):
        return [p.stem]
    if corpus == "meld":
        m = MELD_ENTRY.match(p.stem)
        if not m:
            return None
        splits = ("test",) if m.group(1) else MELD_SPLITS
        return [f"{s}_dia{m.group(2)}_utt{m.group(3)}" for s in splits]
    if corpus == "savee":
        return [f"{p.parent.name}_{p.stem}"] if p.parent.name else None
    raise KeyError(corpus)


@dataclass
class CrossReport:
    corpus: str
    entries: int = 0
    resolved: int = 0
    unresolved: list[dict] = field(default_factory=list)  # {"entry": wav_filename, "reason": ...}
    # Entries that matched several manifest rows: {"entry", "candidates", "chosen", "settled_by"}.
    ambiguous: list[dict] = field(default_factory=list)
    by_split: dict[str, int] = field(default_factory=dict)  # MELD: resolved entries per split
    # Entries a synthetic corpus leaves out by design (its size holds part of each list); not failures.
    not_generated: list[str] = field(default_factory=list)
    attribution: str = ATTRIBUTION

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        s = f"{self.corpus}: {self.resolved}/{self.entries} track-2 entries resolved"
        if self.by_split:
            s += " (" + ", ".join(f"{k} {v}" for k, v in self.by_split.items()) + ")"
        if self.ambiguous:
            how = Counter(a["settled_by"] for a in self.ambiguous)
            s += f"; {len(self.ambiguous)} ambiguous, settled by " + ", ".join(f"{k} {v}" for k, v in how.items())
        if self.not_generated:
            s += f"; {len(self.not_generated)} not in the synthetic corpus by design (its size holds part of the list)"
        if self.unresolved:
            s += f", {len(self.unresolved)} UNRESOLVED"
        return s + f"  [{ATTRIBUTION}]"


def _describe(r: Utterance) -> str:
    return f"{r.split or r.corpus} ({r.native_label}, {r.speaker})"


def _same_speaker(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and a.strip().casefold() == b.strip().casefold()


def resolve_track2(corpus: str, rows: Sequence[Utterance], entries: list[dict] | None = None,
                   not_generated: set[str] | None = None, tie_order: Sequence[str] = MELD_TIE_ORDER
                   ) -> tuple[list[Utterance], CrossReport]:
    """Manifest rows for each track-2 entry, in the list's order, and a report of every unresolved or ambiguous
    entry. `not_generated`: entries known to be absent by design (a synthetic corpus's size); they are listed
    apart from the failures."""
    entries = track2_entries(corpus) if entries is None else entries
    by_id = {r.utt_id: r for r in rows}
    rep = CrossReport(corpus, entries=len(entries))
    out: list[Utterance] = []
    for e in entries:
        name, label = e.get("wav_filename", ""), e.get("label")
        ids = entry_candidates(corpus, name)
        if ids is None:
            rep.unresolved.append({"entry": name, "reason": "malformed file name"})
            continue
        present = [by_id[i] for i in ids if i in by_id]
        match = [r for r in present if r.label4 == label]
        if not match:
            if not_generated is not None and name in not_generated:
                rep.not_generated.append(name)
            elif not present:
                rep.unresolved.append({"entry": name, "reason": "not in the manifest (not found, or skipped by the "
                                                                "loader)"})
            else:
                rep.unresolved.append({"entry": name, "reason": f"label mismatch: list {label!r}, manifest "
                                       + ", ".join(f"{_describe(r)} -> {r.label4!r}" for r in present)})
            continue
        chosen = match[0]
        if len(match) > 1:
            same = [r for r in match if _same_speaker(r.speaker, e.get("speaker"))]
            if len(same) == 1:
                chosen, how = same[0], "speaker"
            else:
                pool = same or match
                rank = {s: i for i, s in enumerate(tie_order)}
                chosen, how = min(pool, key=lambda r: rank.get(r.split or "", len(rank))), "split order"
            rep.ambiguous.append({"entry": name, "speaker": e.get("speaker"),
                                  "candidates": [_describe(r) for r in match], "chosen": chosen.utt_id,
                                  "settled_by": how})
        out.append(chosen)
    rep.resolved = len(out)
    if corpus == "meld":
        counts = Counter(r.split for r in out)
        rep.by_split = {s: counts[s] for s in MELD_SPLITS if counts[s]}
    return out, rep


def write_crosscorpus(corpus: str, rows: Sequence[Utterance], manifests_dir: Path,
                      not_generated: set[str] | None = None, tie_order: Sequence[str] = MELD_TIE_ORDER
                      ) -> tuple[Path, CrossReport]:
    """runs/<profile>/manifests/crosscorpus_<corpus>.jsonl plus its .report.json."""
    resolved, rep = resolve_track2(corpus, rows, not_generated=not_generated, tie_order=tie_order)
    path = write_jsonl(Path(manifests_dir) / f"crosscorpus_{corpus}.jsonl", resolved)
    atomic_write_text(Path(manifests_dir) / f"crosscorpus_{corpus}.report.json",
                      json.dumps(rep.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return path, rep

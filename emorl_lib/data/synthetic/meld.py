"""Synthetic MELD.Raw/: the three CSVs, AAC-in-mp4 clips (48 kHz, 2 or 6 channels) and the two known defects.

CSV encoding: UTF-8 (what `pandas.read_csv` assumes), holding curly apostrophes, an accented word and, in some
rows, cp1252 mojibake of the apostrophe ("â€™"), as real MELD text has; loaders must open it with an explicit
encoding. Dialogues are sparse: only some utterance ids of a dialogue exist (the real ones are contiguous).

Track-2 entries: as in real MELD, dialogue/utterance ids restart in every split, so an entry's plain
`dia{D}_utt{U}` name can exist in several splits with different labels (`track2_placement`). Entries whose
dialogue id exists in dev (< 114) or test (< 280) are placed, by a fixed cycle, in train, dev or test, with
namesakes of another label in the other splits, or twice with the same label (told apart by the speaker, or not at
all), in proportions like the real list's; the rest go to train. The two entries named
`final_videos_testdia{D}_utt{U}` are test clips, written under both names.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
import zlib
from pathlib import Path

from ...infra.io import atomic_write_text
from . import text
from .clips import Clip, render_all, rng_for
from .track2 import inclusion_order, track2_included

ROOT_NAME = "MELD.Raw"
HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
          "Episode", "StartTime", "EndTime"]
EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
VOICE_OF = {"neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry", "surprise": "surprise",
            "fear": "fear", "disgust": "disgust"}
TRACK2_EMOTION = {"neutral": "neutral", "happy": "joy", "sad": "sadness", "angry": "anger"}
GENDER = {"Monica": "F", "Rachel": "F", "Phoebe": "F", "Joey": "M", "Ross": "M", "Chandler": "M", "Mark": "M",
          "Janice": "F", "Mr. Geller": "M", "Gunther": "M", "Emily": "F"}
SPLITS = {  # split -> (CSV path, clip folder, number of dialogues in the real split)
    "train": ("train/train_sent_emo.csv", "train/train_splits", 1039),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete", 114),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test", 280),
}
UNDECODABLE = ("train", 125, 3)   # real defect: in the CSV, its mp4 does not decode
MISSING = ("dev", 110, 7)         # real defect: in the CSV, its mp4 is absent
FILLERS_AT_SIZE_1 = 30            # per split, besides the track-2 utterances (train)
N_FINAL_VIDEOS = 3                # test clips also present as final_videos_testdia{D}_utt{U}.mp4
TRACK2_NAME = re.compile(r"^(final_videos_test)?dia(\d+)_utt(\d+)\.wav$")


def _sentiment(emotion: str, rng) -> str:
    if emotion == "neutral":
        return "neutral"
    if emotion == "joy":
        return "positive"
    if emotion == "surprise":
        return ("positive", "negative")[rng.integers(2)]
    return "negative"


def _utterance_text(seed: int, split: str, d: int, u: int) -> str:
    s = text.utterance(rng_for(seed, "meld", "text", split, str(d), str(u)))
    if zlib.crc32(f"{split}{d}_{u}".encode()) % 10 == 0:
        s = s.replace("’", "â€™")  # mojibake of a curly apostrophe, as in real MELD text
    return s


# Where a track-2 entry's clip lives and which namesakes (same dialogue/utterance id in other splits) exist beside
# it: (split, kind) with kind "entry" (the list's label and speaker), "other" (another label, another speaker),
# "same" (the list's label, another speaker) or "twin" (the list's label and speaker).
PLACEMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("train", "entry"),),
    "train+test_other": (("train", "entry"), ("test", "other")),
    "dev": (("dev", "entry"),),
    "dev+train_other": (("dev", "entry"), ("train", "other")),
    "dev+test_other": (("dev", "entry"), ("test", "other")),
    "dev+train_other+test_other": (("dev", "entry"), ("train", "other"), ("test", "other")),
    "test": (("test", "entry"),),
    "test+train_other": (("test", "entry"), ("train", "other")),
    "test+train_same": (("test", "entry"), ("train", "same")),      # ambiguous by label; the speaker settles it
    "train+test_twin": (("train", "entry"), ("test", "twin")),      # ambiguous by label and speaker
}
# Cycles over the entries that can live in dev (dialogue < 114) or in test (< 280), in inclusion order; shaped
# after the real list (of such entries about 3/5 are dev or test clips, 1/6 ambiguous, the rest train).
DEV_CYCLE = ("dev", "test+train_same", "dev+train_other", "test+train_other", "dev+train_other+test_other",
             "train", "dev+test_other")
TEST_CYCLE = ("test+train_other", "test+train_same", "test", "train+test_twin", "train", "test+train_other",
              "train+test_other", "test", "train", "test+train_other")


def _dialogues(split: str) -> int:
    return SPLITS[split][2]


def track2_placement(size: float) -> dict[str, str]:
    """Included track-2 entry name -> PLACEMENTS key. Depends on the entry only (not on the seed or the size)."""
    included = {r["wav_filename"] for r in track2_included("meld", size)}
    everything = track2_included("meld", 2.0)  # every entry, for an order that does not depend on the size
    rank: dict[str, int] = {}
    for label in sorted({r["label"] for r in everything}):
        names = inclusion_order([r["wav_filename"] for r in everything if r["label"] == label])
        rank.update((n, i) for i, n in enumerate(names))
    ranked = sorted(everything, key=lambda r: (rank[r["wav_filename"]], r["label"]))
    out: dict[str, str] = {}
    k_dev = k_test = 0
    for r in ranked:
        m = TRACK2_NAME.match(Path(r["wav_filename"]).name)
        if not m:
            raise ValueError(f"track-2 MELD entry {r['wav_filename']!r} is not audio/[final_videos_test]dia<D>_utt<U>")
        d = int(m.group(2))
        if m.group(1):
            kind = "test"  # final_videos_test* names are test clips
        elif d < _dialogues("dev"):
            kind, k_dev = DEV_CYCLE[k_dev % len(DEV_CYCLE)], k_dev + 1
        elif d < _dialogues("test"):
            kind, k_test = TEST_CYCLE[k_test % len(TEST_CYCLE)], k_test + 1
        else:
            kind = "train"
        if r["wav_filename"] in included:
            out[r["wav_filename"]] = kind
    return out


def _other_emotion(emotion: str, key: str) -> str:
    """A MELD emotion other than `emotion`, fixed by `key`."""
    others = [e for e in EMOTIONS if e != emotion]
    return others[zlib.crc32(key.encode()) % len(others)]


def _other_speaker(speaker: str, key: str) -> str:
    others = [s for s in sorted(GENDER) if s != speaker]
    return others[zlib.crc32(("spk" + key).encode()) % len(others)]


def track2_rows(size: float) -> dict[str, list[tuple[int, int, str, str]]]:
    """split -> [(dialogue, utterance, speaker, emotion)] of the included track-2 entries and their namesakes."""
    rows: dict[str, list[tuple[int, int, str, str]]] = {s: [] for s in SPLITS}
    entries = {r["wav_filename"]: r for r in track2_included("meld", size)}
    for name, kind in track2_placement(size).items():
        r = entries[name]
        m = TRACK2_NAME.match(Path(name).name)
        d, u = int(m.group(2)), int(m.group(3))
        emo, spk = TRACK2_EMOTION[r["label"]], r["speaker"]
        for split, what in PLACEMENTS[kind]:
            if what == "other":
                rows[split].append((d, u, _other_speaker(spk, name + split), _other_emotion(emo, name + split)))
            elif what == "same":
                rows[split].append((d, u, _other_speaker(spk, name + split), emo))
            else:  # entry, twin
                rows[split].append((d, u, spk, emo))
    for split, items in rows.items():
        seen = [(d, u) for d, u, _, _ in items]
        if len(seen) != len(set(seen)):
            raise ValueError(f"synthetic MELD: two track-2 placements share a {split} dialogue/utterance id")
    return rows


def n_fillers(size: float) -> int:
    """Filler utterances per split (the two defects included), besides the track-2 rows."""
    return max(8, int(round(FILLERS_AT_SIZE_1 * size)))


def plan(seed: int, size: float) -> dict[str, list[tuple[int, int, str, str]]]:
    """split -> [(dialogue, utterance, speaker, emotion)] sorted by dialogue and utterance.

    Fillers come in batches of 2-4 utterances (ids 0, 1, ...), each batch in a dialogue id of the split not used
    yet, while there is one. Once every dialogue id of the split is in use (dev has 114: from about size 9.8; test
    has 280: from about 23), further batches join dialogues drawn at random, under their lowest utterance ids not
    taken yet, so that any size can be planned and (dialogue, utterance) stays unique per split. A plan that never
    reaches the second phase (every size up to 9: checked for seeds 0-2) is the plan as it was before that phase
    existed, draw for draw, so the MELD trees generated before are unchanged.
    """
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"synthetic MELD: size must be a finite number > 0, got {size!r}")
    rows = track2_rows(size)
    n_fill = n_fillers(size)
    speakers = sorted(GENDER)
    for split, (_, _, n_dia) in SPLITS.items():
        rng = rng_for(seed, "meld", "plan", split)
        taken = {(d, u) for d, u, _, _ in rows[split]}
        dias = {d for d, _ in taken}
        defect = [x for x in (UNDECODABLE, MISSING) if x[0] == split]
        for _, d, u in defect:
            rows[split].append((d, u, "Chandler" if split == "train" else "Rachel", "neutral"))
            taken.add((d, u))
            dias.add(d)
        emos = [EMOTIONS[i % len(EMOTIONS)] for i in range(n_fill - len(defect))]
        rng.shuffle(emos)
        fresh = set(range(n_dia)) - dias  # dialogue ids a batch may still open
        i = 0
        while i < len(emos) and fresh:
            d = int(rng.integers(n_dia))
            if d not in fresh:
                continue
            fresh.discard(d)
            for u in range(min(int(rng.integers(2, 5)), len(emos) - i)):
                rows[split].append((d, u, speakers[rng.integers(len(speakers))], emos[i]))
                taken.add((d, u))
                i += 1
        while i < len(emos):  # every dialogue id in use: join one, under utterance ids not taken yet
            d = int(rng.integers(n_dia))
            free = (u for u in itertools.count() if (d, u) not in taken)
            for _ in range(min(int(rng.integers(2, 5)), len(emos) - i)):
                u = next(free)
                rows[split].append((d, u, speakers[rng.integers(len(speakers))], emos[i]))
                taken.add((d, u))
                i += 1
        rows[split].sort()
    return rows


def _clock(seconds: float) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{int(s):02d},{int(round((s % 1) * 1000)) % 1000:03d}"


def clips(seed: int, size: float) -> tuple[dict, list[Clip]]:
    rows = plan(seed, size)
    out = []
    for split, items in rows.items():
        folder = SPLITS[split][1]
        for d, u, spk, emo in items:
            if (split, d, u) in (UNDECODABLE, MISSING):
                continue
            key = f"{split}/dia{d}_utt{u}"
            dur = float(rng_for(seed, "meld", "duration", key).uniform(1.0, 3.0))
            ch = 6 if zlib.crc32(key.encode()) % 5 == 0 else 2
            out.append(Clip(f"{folder}/dia{d}_utt{u}.mp4", "meld", VOICE_OF[emo], spk, GENDER[spk], duration=dur,
                            channels=ch))
    return rows, out


def write(root: Path, seed: int, size: float, workers: int) -> dict[str, int]:
    """Write the synthetic MELD tree under root (= .../MELD.Raw). Returns counts."""
    rows, jobs = clips(seed, size)
    durations = render_all(jobs, seed, root, workers, desc="MELD")
    counts: dict[str, int] = {}
    for split, items in rows.items():
        csv_path, folder, _ = SPLITS[split]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HEADER)
        rng = rng_for(seed, "meld", "csv", split)
        for n, (d, u, spk, emo) in enumerate(items, 1):
            season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
            start = float(rng.uniform(10, 1300))
            dur = durations.get(f"{folder}/dia{d}_utt{u}.mp4", 2.0)
            w.writerow([n, _utterance_text(seed, split, d, u), spk, emo, _sentiment(emo, rng), d, u, season,
                        episode, _clock(start), _clock(start + dur)])
        atomic_write_text(root / csv_path, buf.getvalue())
        counts[f"{split}_rows"] = len(items)
    # Defects: an mp4 that does not decode (bytes that look like the start of an mp4, then garbage) and a missing one.
    _, d, u = UNDECODABLE
    junk = rng_for(seed, "meld", "garbage").integers(0, 256, 4096, dtype="uint8").tobytes()
    (root / SPLITS["train"][1] / f"dia{d}_utt{u}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + junk)
    # final_videos_test duplicates (same bytes) of a few test clips and of the track-2 entries named so.
    test_dir = root / SPLITS["test"][1]
    finals = {(d, u) for d, u, _, _ in rows["test"][:N_FINAL_VIDEOS]}
    for r in track2_included("meld", size):
        m = TRACK2_NAME.match(Path(r["wav_filename"]).name)
        if m.group(1):
            finals.add((int(m.group(2)), int(m.group(3))))
    for d, u in sorted(finals):
        (test_dir / f"final_videos_testdia{d}_utt{u}.mp4").write_bytes((test_dir / f"dia{d}_utt{u}.mp4").read_bytes())
    counts["clips"] = len(jobs)
    counts["final_videos"] = len(finals)
    return counts


"""Synthetic IEMOCAP_full_release/: the real tree, names, label files and 16 kHz mono utterances."""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

from . import text
from .clips import Clip, render_all, rng_for, write_wav
from .track2 import track2_included

ROOT_NAME = "IEMOCAP_full_release"
UTT_RE = re.compile(r"^Ses0([1-5])([MF])_(impro|script)(\d\d)([ab]?)(?:_(\d)(b?))?_([MF])(\d{3})$")

CATEGORY_NAME = {"neu": "Neutral", "hap": "Happiness", "exc": "Excited", "ang": "Anger", "sad": "Sadness",
                 "fru": "Frustration", "fea": "Fear", "sur": "Surprise", "dis": "Disgust", "oth": "Other"}
VOICE_OF = {"neu": "neutral", "hap": "happy", "exc": "excited", "ang": "angry", "sad": "sad", "fru": "frustration",
            "fea": "fear", "sur": "surprise", "dis": "disgust", "oth": "other"}  # xxx: annotators disagree, see below
TRACK2_CODE = {"neutral": "neu", "sad": "sad", "angry": "ang"}  # happy -> hap or exc (_happy_code)
# Fillers (utterances beyond the track-2 ones): every category, the out-of-protocol ones included.
FILLER_CODES = ("neu", "hap", "exc", "ang", "sad", "fru", "xxx", "oth", "fea", "sur", "dis")
FILLER_WEIGHTS = np.array([16, 6, 8, 8, 8, 16, 20, 2, 5, 6, 5], dtype=float)
VAD_MEAN = {"neu": (2.8, 2.4, 2.7), "hap": (4.0, 3.2, 3.0), "exc": (4.1, 3.7, 3.3), "ang": (1.7, 3.8, 3.9),
            "sad": (1.9, 2.2, 2.3), "fru": (1.9, 3.2, 3.3), "fea": (1.8, 3.4, 2.2), "sur": (3.2, 3.8, 2.9),
            "dis": (1.6, 3.1, 3.2), "oth": (2.8, 2.8, 2.8), "xxx": (2.5, 2.9, 2.9)}
FILLERS_AT_SIZE_1 = 120
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(58)


def _happy_code(utt: str) -> str:
    """IEMOCAP's happy is hap or exc; which one is fixed by the id (about the real 595 : 1041 ratio)."""
    return "exc" if zlib.crc32(utt.encode()) % 8 < 5 else "hap"


def _base_dialogues(s: int) -> list[str]:
    names = [f"Ses0{s}F_impro01", f"Ses0{s}M_impro02", f"Ses0{s}F_script01_1", f"Ses0{s}M_script02_2"]
    if s == 5:
        names.append("Ses05M_script01_1b")
    return names


def plan(seed: int, size: float) -> dict[str, list[tuple[str, str]]]:
    """dialogue -> [(utterance id, category code)], track-2 utterances first, then fillers."""
    dialogues: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for s in range(1, 6):
        for d in _base_dialogues(s):
            dialogues[d] = []
    for row in track2_included("iemocap", size):
        utt = Path(row["wav_filename"]).stem
        if not UTT_RE.match(utt):
            raise ValueError(f"track-2 IEMOCAP id {utt!r} does not match the IEMOCAP pattern")
        code = _happy_code(utt) if row["label"] == "happy" else TRACK2_CODE[row["label"]]
        dialogues[utt.rsplit("_", 1)[0]].append((utt, code))
    used = {(u[-4], int(u[-3:]), d) for d, us in dialogues.items() for u, _ in us}
    rng = rng_for(seed, "iemocap", "plan")
    n_fill = max(10, int(round(FILLERS_AT_SIZE_1 * size)))
    for i in range(n_fill):
        s = i % 5 + 1
        names = sorted(d for d in dialogues if d.startswith(f"Ses0{s}"))
        if i == 0:
            d, letter = "Ses01F_impro01", "F"  # Ses01F_impro01_F000 always exists (its macOS twin is junk)
        else:
            d, letter = names[rng.integers(len(names))], "FM"[rng.integers(2)]
        k = 0
        while (letter, k, d) in used:
            k += 1
        used.add((letter, k, d))
        code = FILLER_CODES[rng.choice(len(FILLER_CODES), p=FILLER_WEIGHTS / FILLER_WEIGHTS.sum())]
        dialogues[d].append((f"{d}_{letter}{k:03d}", code))
    for d in dialogues:
        dialogues[d].sort(key=lambda uc: (int(uc[0][-3:]), uc[0][-4]))
    return {d: us for d, us in sorted(dialogues.items()) if us}


def _voice(utt: str, code: str, seed: int) -> str:
    if code != "xxx":
        return VOICE_OF[code]
    pool = ("neutral", "frustration", "angry", "sad", "excited", "happy")  # no agreement: a mix of nearby states
    return pool[rng_for(seed, "iemocap", "xxx", utt).integers(len(pool))]


def clips(seed: int, size: float) -> tuple[dict[str, list[tuple[str, str]]], list[Clip]]:
    dialogues = plan(seed, size)
    out = []
    for d, utts in dialogues.items():
        s = int(d[4])
        for utt, code in utts:
            letter = utt[-4]
            dur = float(rng_for(seed, "iemocap", "duration", utt).uniform(1.0, 3.0))
            out.append(Clip(f"Session{s}/sentences/wav/{d}/{utt}.wav", "iemocap", _voice(utt, code, seed),
                            f"Ses0{s}{letter}", letter, duration=dur))
    return dialogues, out


def _annotations(utt: str, code: str, rng: np.random.Generator) -> tuple[list[str], tuple[float, float, float]]:
    if code == "xxx":
        names = [CATEGORY_NAME[c] for c in rng.choice(["neu", "fru", "ang", "sad", "exc"], 3, replace=False)]
    else:
        other = CATEGORY_NAME[("neu", "fru", "exc", "sad")[rng.integers(4)]]
        names = [CATEGORY_NAME[code], CATEGORY_NAME[code], other if rng.random() < 0.3 else CATEGORY_NAME[code]]
    vad = tuple(float(np.clip(m + rng.normal(0, 0.3), 1, 5)) for m in VAD_MEAN[code])
    lines = [f"C-E{i}:\t{n};\t()" for i, n in zip((2, 3, 4), names)]
    lines.append(f"C-{utt[-4]}1:\t{names[0]};\t()")  # the speaking actor's own evaluation
    for who in ("E3", "E4"):
        v, a, dd = (int(np.clip(round(x + rng.normal(0, 0.5)), 1, 5)) for x in vad)
        lines.append(f"A-{who}:\tval {v}; act {a}; dom  {dd};\t()")
    return lines, vad


def write(root: Path, seed: int, size: float, workers: int) -> dict[str, int]:
    """Write the synthetic IEMOCAP tree under root (= .../IEMOCAP_full_release). Returns counts."""
    dialogues, jobs = clips(seed, size)
    durations = render_all(jobs, seed, root, workers, desc="IEMOCAP")
    for d, utts in dialogues.items():
        s = int(d[4])
        sess = root / f"Session{s}"
        rng = rng_for(seed, "iemocap", "dialogue", d)
        t = float(rng.uniform(1.0, 3.0))
        times = []
        for utt, _ in utts:
            dur = durations[f"Session{s}/sentences/wav/{d}/{utt}.wav"]
            times.append((t, t + dur))
            t += dur + float(rng.uniform(0.2, 1.5))
        # dialog/wav: the whole dialogue, utterances pasted at their times.
        audio = np.zeros(int((t + 1.0) * 16000), dtype=np.float32)
        for (utt, _), (a, _) in zip(utts, times):
            x, _ = sf.read(sess / "sentences/wav" / d / f"{utt}.wav", dtype="float32")
            i = int(round(a * 16000))
            audio[i:i + len(x)] += x
        write_wav(sess / "dialog/wav" / f"{d}.wav", audio, 16000)
        # EmoEvaluation and its non-label subfolders.
        ev = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        cat, atr = [], []
        for (utt, code), (a, b) in zip(utts, times):
            ann, (v, ar, dm) = _annotations(utt, code, rng)
            ev.append(f"[{a:.4f} - {b:.4f}]\t{utt}\t{code}\t[{v:.4f}, {ar:.4f}, {dm:.4f}]")
            ev.extend(ann)
            ev.append("")
            cat.append(f"{utt} :{ann[0].split(chr(9))[1]} ()")
            atr.append(f"{utt} :val {round(v)}; act {round(ar)}; dom {round(dm)}; ()")
        evdir = sess / "dialog/EmoEvaluation"
        for sub, name, lines in (("Categorical", f"{d}_e2_cat.txt", cat), ("Attribute", f"{d}_e3_atr.txt", atr),
                                 ("Self-evaluation", f"{d}.anvil", ["<annotation>", "</annotation>"])):
            (evdir / sub).mkdir(parents=True, exist_ok=True)
            (evdir / sub / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        (evdir / f"{d}.txt").write_text("\n".join(ev) + "\n", encoding="utf-8")
        # transcriptions
        tr = []
        for (utt, _), (a, b) in zip(utts, times):
            tr.append(f"{utt} [{a:08.4f}-{b:08.4f}]: {text.utterance(rng_for(seed, 'iemocap', 'text', utt))}")
        (sess / "dialog/transcriptions").mkdir(parents=True, exist_ok=True)
        (sess / "dialog/transcriptions" / f"{d}.txt").write_text("\n".join(tr) + "\n", encoding="utf-8")
    # macOS junk a loader must skip.
    (root / "Session1/sentences/wav/Ses01F_impro01/._Ses01F_impro01_F000.wav").write_bytes(APPLEDOUBLE)
    (root / "Session1/dialog/EmoEvaluation/._Ses01F_impro01.txt").write_bytes(APPLEDOUBLE)
    codes = [c for us in dialogues.values() for _, c in us]
    return {"utterances": len(codes), "dialogues": len(dialogues), **{c: codes.count(c) for c in sorted(set(codes))}}

"""Synthetic SAVEE: the original AudioData/{DC,JE,JK,KL}/ layout (44.1 kHz) and a flat re-upload copy ALL/."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from ..labels import NATIVE_TO_UNIFIED
from .clips import Clip, render_all
from .track2 import track2_included

ROOT_NAME = "SAVEE"
FLAT_NAME = "SAVEE_flat"
SPEAKERS = ("DC", "JE", "JK", "KL")  # all male
PER_CODE = {"a": 15, "d": 15, "f": 15, "h": 15, "n": 30, "sa": 15, "su": 15}  # the real counts per speaker
FRACTION_AT_SIZE_1 = 0.5  # of each code per speaker at size 1.0 (the full 480 from size 2.0 up)


def plan(size: float) -> list[str]:
    """Relative paths <SPK>/<code><NN>.wav: the first ceil(count * fraction) of each code, plus the track-2 files."""
    names = {r["wav_filename"] for r in track2_included("savee", size)}
    for spk in SPEAKERS:
        for code, n in PER_CODE.items():
            for i in range(1, min(n, max(2, math.ceil(n * FRACTION_AT_SIZE_1 * size))) + 1):
                names.add(f"{spk}/{code}{i:02d}.wav")
    return sorted(names)


def clips(size: float) -> list[Clip]:
    out = []
    for rel in plan(size):
        spk, stem = rel.split("/")
        code, nn = stem[:-6], int(stem[-6:-4])
        out.append(Clip(f"AudioData/{rel}", "savee", NATIVE_TO_UNIFIED["savee"][code], spk, "M",
                        n_syllables=7 + (nn * 5) % 9))  # sentence NN: a fixed length per sentence
    return out


def write(root: Path, flat_root: Path, seed: int, size: float, workers: int) -> dict[str, int]:
    """Write AudioData/ under root (= .../SAVEE) and the flat copy ALL/{SPK}_{code}NN.wav under flat_root."""
    jobs = clips(size)
    render_all(jobs, seed, root, workers, desc="SAVEE")
    (flat_root / "ALL").mkdir(parents=True, exist_ok=True)
    for c in jobs:
        _, spk, name = c.path.split("/")
        shutil.copyfile(root / c.path, flat_root / "ALL" / f"{spk}_{name}")
    return {"files": len(jobs)}

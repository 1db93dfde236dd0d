"""Synthetic Audio_Speech_Actors_01-24/: 24 actors, 48 kHz, seven-field names, plus files a loader must filter."""

from __future__ import annotations

from pathlib import Path

from ..labels import NATIVE_TO_UNIFIED
from .clips import Clip, render_all, rng_for
from .track2 import track2_included

ROOT_NAME = "Audio_Speech_Actors_01-24"
SYLLABLES = {"01": 7, "02": 7}  # "Kids are talking by the door", "Dogs are sitting by the door"
INTENSITY = {"01": 0.8, "02": 1.25}
EMOTIONS_PER_ACTOR_AT_SIZE_1 = 8  # speech files per actor (one per emotion at size 1), besides the track-2 files
# (modality, channel) of files that are not speech audio: song, video-only, audio-video. Written as .wav so that
# a loader globbing *.wav must filter on the name's fields.
NON_SPEECH = (("03", "02"), ("02", "01"), ("01", "01"))


def _name(mod: str, chan: str, emo: str, inten: str, stmt: str, rep: str, actor: int) -> str:
    return f"{mod}-{chan}-{emo}-{inten}-{stmt}-{rep}-{actor:02d}.wav"


def _combos(emo: str) -> list[tuple[str, str, str]]:
    intens = ("01",) if emo == "01" else ("01", "02")  # neutral has no strong intensity
    return [(i, s, r) for i in intens for s in ("01", "02") for r in ("01", "02")]


def plan(seed: int, size: float) -> list[str]:
    """Relative paths Actor_NN/<name>.wav of every file to write (speech files first, then non-speech)."""
    names = {r["wav_filename"] for r in track2_included("ravdess", size)}
    emotions = list(NATIVE_TO_UNIFIED["ravdess"])
    k = max(2, int(round(EMOTIONS_PER_ACTOR_AT_SIZE_1 * size)))  # k > 8: several files per emotion
    for actor in range(1, 25):
        rng = rng_for(seed, "ravdess", "plan", str(actor))
        for i in range(k):  # emotions rotate across actors, so every emotion is present at any size
            emo = emotions[(actor + i) % len(emotions)]
            combos = _combos(emo)
            names.add(f"Actor_{actor:02d}/" + _name("03", "01", emo, *combos[rng.integers(len(combos))], actor))
    extra = []
    for n, (mod, chan) in enumerate(NON_SPEECH):
        for actor in (1 + n, 12 + n):
            extra.append(f"Actor_{actor:02d}/" + _name(mod, chan, "03", "01", "01", "01", actor))
    return sorted(names) + extra


def clips(seed: int, size: float) -> list[Clip]:
    out = []
    for rel in plan(seed, size):
        mod, chan, emo, inten, stmt, rep, actor = Path(rel).stem.split("-")
        gender = "M" if int(actor) % 2 else "F"
        out.append(Clip(rel, "ravdess", NATIVE_TO_UNIFIED["ravdess"][emo], actor, gender,
                        n_syllables=SYLLABLES[stmt], intensity=INTENSITY[inten]))
    return out


def write(root: Path, seed: int, size: float, workers: int) -> dict[str, int]:
    """Write the synthetic RAVDESS speech tree under root (= .../Audio_Speech_Actors_01-24). Returns counts."""
    jobs = clips(seed, size)
    render_all(jobs, seed, root, workers, desc="RAVDESS")
    speech = [c for c in jobs if Path(c.path).name.startswith("03-01-")]
    return {"files": len(jobs), "speech": len(speech), "non_speech": len(jobs) - len(speech)}

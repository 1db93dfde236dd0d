"""Clip jobs: what one synthetic file is, and how it is rendered and written (wav or AAC-in-mp4).

A corpus writer lists Clip jobs; `render_all` renders them in worker processes. Every clip's randomness comes
from (seed, corpus, clip key) alone, so output is byte-identical for a seed whatever the order or worker count.
"""

from __future__ import annotations

import multiprocessing
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from ...infra.parallel import ignore_sigint
from ...infra.progress import bar as progress_bar
from . import voice


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the given names (stable across runs and platforms)."""
    return np.random.default_rng([int(seed)] + [zlib.crc32(k.encode("utf-8")) for k in keys])


@dataclass(frozen=True)
class Clip:
    path: str                      # relative to the corpus's temp root
    corpus: str                    # channel name (voice.CHANNELS)
    emotion: str                   # voice emotion (voice.EMOTIONS)
    speaker: str                   # speaker key (same key -> same voice)
    gender: str                    # M | F
    duration: float | None = None  # free speech
    n_syllables: int | None = None  # read sentence
    channels: int = 1              # mp4 only: 2 (stereo) or 6 (5.1)
    intensity: float = 1.0         # scales the emotion's displacement from neutral


def speaker_voice(seed: int, corpus: str, key: str, gender: str) -> voice.Speaker:
    return voice.make_speaker(gender, rng_for(seed, corpus, "speaker", key))


def render_clip(clip: Clip, seed: int) -> np.ndarray:
    rng = rng_for(seed, clip.corpus, "clip", clip.path)
    spk = speaker_voice(seed, clip.corpus, clip.speaker, clip.gender)
    return voice.render(clip.emotion, spk, voice.CHANNELS[clip.corpus], rng,
                        duration=clip.duration, n_syllables=clip.n_syllables, intensity=clip.intensity)


def write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype="PCM_16", format="WAV")


def write_mp4(path: Path, x: np.ndarray, sr: int, channels: int, seed_key: str) -> None:
    """AAC (48 kHz, `channels` channels) in mp4 with a tiny MPEG-4 video stream first, as MELD's clips have."""
    import av  # PyAV ships its own FFmpeg

    layout = {2: "stereo", 6: "5.1"}[channels]
    gains = np.array([0.8, 0.75] if channels == 2 else [0.35, 0.3, 1.0, 0.2, 0.25, 0.22], dtype=np.float32)
    multi = np.ascontiguousarray(gains[:, None] * x[None, :], dtype=np.float32)
    shade = zlib.crc32(seed_key.encode()) % 200
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("mpeg4", rate=5)
        v.width, v.height, v.pix_fmt = 32, 24, "yuv420p"
        a = c.add_stream("aac", rate=sr, options={"aac_coder": "fast"})
        a.layout = layout
        for k in range(max(1, int(len(x) / sr * 5))):
            fr = av.VideoFrame.from_ndarray(np.full((24, 32, 3), (shade + 9 * k) % 255, np.uint8), format="rgb24")
            fr.pts = k
            c.mux(v.encode(fr))
        c.mux(v.encode(None))
        fr = av.AudioFrame.from_ndarray(multi, format="fltp", layout=layout)
        fr.sample_rate, fr.pts = sr, 0
        c.mux(a.encode(fr))
        c.mux(a.encode(None))


def _work(args: tuple[Clip, int, str]) -> tuple[str, float]:
    clip, seed, root = args
    x = render_clip(clip, seed)
    sr = voice.CHANNELS[clip.corpus].sr
    out = Path(root) / clip.path
    if clip.path.endswith(".mp4"):
        write_mp4(out, x, sr, clip.channels, clip.path)
    else:
        write_wav(out, x, sr)
    return clip.path, len(x) / sr


def render_all(clips: Sequence[Clip], seed: int, root: Path, workers: int = 2, desc: str = "") -> dict[str, float]:
    """Render and write every clip under root; returns clip path -> duration (s)."""
    jobs = [(c, seed, str(root)) for c in clips]
    bar = progress_bar(len(jobs), desc or "synthetic", "clip")
    out: dict[str, float] = {}
    try:
        if workers <= 1 or len(jobs) < 8:
            for path, seconds in map(_work, jobs):
                out[path] = seconds
                bar.update()
            return out
        # spawn, not fork: the caller may hold threads (torch, a notebook kernel) that fork would copy half-held.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=ignore_sigint) as ex:
            for path, seconds in ex.map(_work, jobs, chunksize=8):
                out[path] = seconds
                bar.update()
        return out
    finally:
        bar.close()


def default_workers() -> int:
    """1: starting a worker costs ~2.5 s (scipy import) and measured no faster on the shared 2-core machine."""
    return 1

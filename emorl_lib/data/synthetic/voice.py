"""Cue model of the synthetic voices: emotions on Plutchik's wheel -> acoustic cues -> a speech-like signal.

Why this shape: what is known of vocal emotion (Scherer 2003; Banse & Scherer 1996; Juslin & Laukka 2003) is that
arousal raises F0 level and range, loudness, speaking rate and high-frequency energy (flatter spectral tilt), that
sadness lowers them all, that fear adds a high, unsteady (jittery) and breathy voice, and that anger adds a tense,
loud, bright voice. Here each emotion is a point on Plutchik's wheel (angle, distance from the centre) plus an
arousal value (EMOTIONS, the one per-emotion table), and every cue is a linear function of
(r cos angle, r sin angle, arousal) (CUES, the one per-cue table). So cues vary smoothly round the wheel: wheel
neighbours sound nearer than opposites, and neutral/calm sit at the centre (calm with lower arousal).

The signal: syllables of a glottal pulse train (jittered F0 contour with declination and accents), a two-pole
source low-pass for spectral tilt, breath noise, consonant-like noise bursts, five vowels' formant filters, pauses.
Speakers differ in F0 (by gender), rate, timbre (formant scale), level and voice quality; corpora differ in their
recording channel (CHANNELS: rate, band, reverberation, noise floor, level). Everything is vectorised numpy/scipy:
Python loops run over syllables or vowels, never over samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import numpy as np
from scipy import signal

SR = 16000  # internal synthesis rate; corpora get their own rate through their channel

# Plutchik's wheel (docs/paper.md, ESWR): primary emotions 45 degrees apart.
WHEEL_ANGLE: dict[str, float] = {
    "joy": 0.0, "trust": 45.0, "fear": 90.0, "surprise": 135.0,
    "sadness": 180.0, "disgust": 225.0, "anger": 270.0, "anticipation": 315.0,
}

# The per-emotion table: voice emotion -> (wheel position, distance from the centre 0..1, arousal -1..1).
# Keys are the kit's unified labels (labels.UNIFIED) plus the IEMOCAP codes outside the 4-class protocol.
EMOTIONS: dict[str, tuple[str, float, float]] = {
    "neutral": ("joy", 0.0, 0.0),
    "calm": ("joy", 0.0, -0.6),
    "happy": ("joy", 1.0, 0.5),
    "excited": ("joy", 1.0, 0.9),  # IEMOCAP exc: happy at higher arousal
    "sad": ("sadness", 1.0, -0.6),
    "angry": ("anger", 1.0, 0.8),
    "fear": ("fear", 1.0, 0.6),
    "disgust": ("disgust", 1.0, 0.0),
    "surprise": ("surprise", 1.0, 0.7),
    "frustration": ("anger", 0.6, 0.2),  # IEMOCAP fru: a milder anger, leaning to disgust below
    "other": ("anticipation", 0.5, 0.2),  # IEMOCAP oth
}
# IEMOCAP fru sits between anger and disgust: its angle is overridden here (degrees).
ANGLE_OVERRIDE: dict[str, float] = {"frustration": 250.0}

# The per-cue table: cue -> (base, coefficient of r*cos(angle) [joy+/sadness-],
#   coefficient of r*sin(angle) [fear+/anger-], coefficient of arousal, per-utterance spread (sd)).
CUES: dict[str, tuple[float, float, float, float, float]] = {
    "f0_st": (0.0, 2.0, 2.0, 3.0, 0.7),          # F0 level, semitones above the speaker's base
    "f0_range_st": (3.0, 1.5, 0.5, 2.0, 0.5),    # intonation excursion, semitones
    "level_db": (0.0, 1.5, -2.5, 6.0, 0.8),      # loudness relative to the corpus level
    "rate_syl_s": (4.2, 0.5, 0.6, 1.3, 0.25),    # speaking rate, syllables per second
    "breath": (0.10, -0.03, 0.10, -0.02, 0.015),  # breath-noise to voice ratio
    "jitter": (0.008, -0.002, 0.012, 0.002, 0.0015),  # relative period-to-period F0 perturbation
    "bright_oct": (0.0, 0.3, -0.5, 1.0, 0.15),   # source low-pass cutoff, octaves above 500 Hz (spectral tilt)
    "pause": (0.18, -0.03, 0.0, -0.06, 0.02),    # fraction of time in pauses between syllables
}
CUE_NAMES: tuple[str, ...] = tuple(CUES)
CUE_LIMITS: dict[str, tuple[float, float]] = {
    "f0_range_st": (0.5, 12.0), "rate_syl_s": (1.5, 9.0), "breath": (0.0, 0.6), "jitter": (0.0, 0.06),
    "bright_oct": (-1.5, 2.5), "pause": (0.03, 0.5),
}

# Vowels (F1, F2, F3 in Hz, adult male; scaled by the speaker's formant scale).
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
                  dtype=float)
FORMANT_BW = np.array([80.0, 100.0, 140.0])


def wheel_coords(emotion: str) -> tuple[float, float, float]:
    """(r cos angle, r sin angle, arousal) of a voice emotion."""
    if emotion not in EMOTIONS:
        raise KeyError(f"voice emotion {emotion!r} not in synthetic.voice.EMOTIONS ({sorted(EMOTIONS)})")
    pos, r, arousal = EMOTIONS[emotion]
    ang = np.deg2rad(ANGLE_OVERRIDE.get(emotion, WHEEL_ANGLE[pos]))
    return float(r * np.cos(ang)), float(r * np.sin(ang)), float(arousal)


def cue_means(emotion: str, intensity: float = 1.0) -> dict[str, float]:
    """Expected cue values of an emotion (before speaker and per-utterance variation).

    `intensity` scales the emotion's displacement from the centre (RAVDESS normal/strong).
    """
    u, v, a = (intensity * w for w in wheel_coords(emotion))
    return {k: base + cu * u + cv * v + ca * a for k, (base, cu, cv, ca, _) in CUES.items()}


@dataclass(frozen=True)
class Speaker:
    gender: str            # "M" | "F"
    f0_hz: float           # F0 base
    rate: float            # speaking-rate factor
    formant_scale: float   # timbre (vocal tract length)
    level_db: float
    breath: float          # added breathiness
    bright_oct: float      # added brightness


def make_speaker(gender: str, rng: np.random.Generator) -> Speaker:
    """A random speaker of the given gender (F0 base ~110 Hz male, ~200 Hz female)."""
    if gender not in ("M", "F"):
        raise ValueError(f"gender must be 'M' or 'F', got {gender!r}")
    f0 = (110.0 if gender == "M" else 200.0) * float(np.exp(rng.normal(0, 0.12)))
    fs = (1.0 if gender == "M" else 1.15) * float(np.exp(rng.normal(0, 0.04)))
    return Speaker(gender, f0, float(np.exp(rng.normal(0, 0.08))), fs, float(rng.normal(0, 1.5)),
                   float(rng.normal(0, 0.02)), float(rng.normal(0, 0.15)))


def sample_cues(emotion: str, speaker: Speaker, rng: np.random.Generator,
                intensity: float = 1.0) -> dict[str, float]:
    """Cues of one utterance: the emotion's means, the speaker's offsets, per-utterance spread."""
    mean = cue_means(emotion, intensity)
    c = {k: mean[k] + rng.normal(0.0, CUES[k][4]) for k in CUE_NAMES}
    c["rate_syl_s"] *= speaker.rate
    c["level_db"] += speaker.level_db
    c["breath"] += speaker.breath
    c["bright_oct"] += speaker.bright_oct
    for k, (lo, hi) in CUE_LIMITS.items():
        c[k] = float(np.clip(c[k], lo, hi))
    return c


def _smooth_noise(rng: np.random.Generator, n: int, step: int) -> np.ndarray:
    """Unit-variance noise varying every `step` samples (linear interpolation of a coarse draw)."""
    coarse = rng.standard_normal(n // step + 2)
    return np.interp(np.arange(n) / step, np.arange(len(coarse)), coarse)


def _one_pole(x: np.ndarray, fc: float) -> np.ndarray:
    a = np.exp(-2 * np.pi * fc / SR)
    return signal.lfilter([1 - a], [1, -a], x)


@lru_cache(maxsize=256)
def _vowel_sos(vowel: int, scale_milli: int) -> np.ndarray:
    """Cascade of three formant resonators (second-order sections) for one vowel and formant scale."""
    sos = []
    for f, bw in zip(VOWELS[vowel] * scale_milli / 1000.0, FORMANT_BW):
        f = min(f, 0.45 * SR)
        r = np.exp(-np.pi * bw / SR)
        a1, a2 = -2 * r * np.cos(2 * np.pi * f / SR), r * r
        sos.append([1 + a1 + a2, 0, 0, 1, a1, a2])  # unity gain at DC
    return np.array(sos)


def synthesize(emotion: str, speaker: Speaker, rng: np.random.Generator, *, duration: float | None = None,
               n_syllables: int | None = None, intensity: float = 1.0) -> tuple[np.ndarray, dict[str, float]]:
    """One utterance at SR (float32, level set by the `level_db` cue) and the cues it was made with, plus
    `f0_median_hz`: the median of the F0 contour it was voiced with, over the syllables (the ground truth a pitch
    tracker is tested against).

    Give `duration` (free speech: syllable count follows the rate) or `n_syllables` (a read sentence: duration
    follows the rate), not both.
    """
    if (duration is None) == (n_syllables is None):
        raise ValueError("synthesize needs exactly one of duration= or n_syllables=")
    c = sample_cues(emotion, speaker, rng, intensity)
    if n_syllables is None:
        n_syllables = max(2, int(round(c["rate_syl_s"] * duration * (1 - c["pause"]))))
    speech_s = n_syllables / c["rate_syl_s"]
    total_speech = speech_s / (1 - c["pause"])
    lead, tail = rng.uniform(0.08, 0.2, size=2)
    syl = rng.gamma(6.0, 1.0, n_syllables)
    syl = syl / syl.sum() * speech_s
    gaps = rng.gamma(1.2, 1.0, n_syllables)
    gaps = gaps / gaps.sum() * (total_speech - speech_s)
    gaps[-1] = 0.0
    starts = lead + np.concatenate([[0.0], np.cumsum(syl + gaps)[:-1]])
    ends = starts + syl
    n = int(np.ceil((lead + total_speech + tail) * SR))
    t = np.arange(n) / SR

    idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, n_syllables - 1)
    phase = (t - starts[idx]) / syl[idx]
    inside = (phase >= 0) & (phase < 1)
    env = np.where(inside, np.sqrt(np.sin(np.pi * np.clip(phase, 0, 1))), 0.0)
    burst = np.where(inside & (phase < 0.12), np.exp(-phase / 0.04), 0.0)  # consonant-like onset noise

    # F0: per-syllable targets (accents + declination), interpolated, then jitter.
    rng_st = c["f0_range_st"]
    targets = rng.normal(0, 0.35, n_syllables) * rng_st + np.linspace(rng_st / 2, -rng_st / 2, n_syllables)
    centres = (starts + ends) / 2
    contour = np.interp(t, centres, targets)
    jit = _smooth_noise(rng, n, 40)
    f0 = speaker.f0_hz * 2.0 ** ((c["f0_st"] + contour) / 12.0) * (1 + c["jitter"] * jit)
    f0 = np.clip(f0, 50, 900)
    cyc = np.cumsum(f0 / SR)
    pulses = np.diff(np.floor(cyc), prepend=0.0)
    at = np.flatnonzero(pulses)
    pulses[at] *= 1 + 3 * c["jitter"] * rng.standard_normal(len(at))  # shimmer follows jitter
    fc = 500.0 * 2.0 ** c["bright_oct"]
    voice = np.diff(_one_pole(_one_pole(pulses, fc), fc), prepend=0.0)  # tilt, then lip radiation
    voice /= np.sqrt(np.mean(voice[inside] ** 2)) + 1e-9
    noise = np.diff(rng.standard_normal(n + 1)) / np.sqrt(2)
    source = env * (voice + 2.5 * c["breath"] * noise) + 0.25 * burst * noise

    # Formants: each syllable through its vowel's resonators (the envelope is 0 between syllables).
    scale = int(round(speaker.formant_scale * 1000))
    vowel_of_syl = rng.integers(0, len(VOWELS), n_syllables)
    out = np.zeros(n)
    bounds = np.searchsorted(t, np.append(starts, t[-1] + 1))
    for k in range(n_syllables):  # a loop over syllables, not samples
        a, b = bounds[k], bounds[k + 1]
        out[a:b] = signal.sosfilt(_vowel_sos(int(vowel_of_syl[k]), scale), source[a:b])
    rms = np.sqrt(np.mean(out[inside] ** 2)) + 1e-12
    out *= 10 ** ((c["level_db"] - 26.0) / 20.0) / rms
    c["f0_median_hz"] = float(np.median(f0[inside]))
    return out.astype(np.float32), c


@dataclass(frozen=True)
class Channel:
    """A corpus's recording channel."""

    sr: int
    gain_db: float        # corpus level
    snr_db: float         # speech-to-noise-floor ratio (at the corpus level of neutral speech)
    highpass_hz: float
    lowpass_hz: float
    reverb_s: float       # decay time of a diffuse tail (0 = dry)
    reverb_mix: float
    noise_tilt: float     # 0 white .. ~1 brownish noise floor


CHANNELS: dict[str, Channel] = {
    "iemocap": Channel(16000, 0.0, 32.0, 60.0, 7000.0, 0.25, 0.25, 0.6),   # studio, lavalier/shotgun, some room
    "meld": Channel(48000, -3.0, 22.0, 120.0, 9000.0, 0.45, 0.35, 0.9),    # TV soundtrack: room, hum, band-limited
    "ravdess": Channel(48000, 2.0, 45.0, 40.0, 20000.0, 0.0, 0.0, 0.0),     # dry studio
    "savee": Channel(44100, -2.0, 30.0, 80.0, 12000.0, 0.12, 0.12, 0.3),   # small room, lab
}


@lru_cache(maxsize=16)
def _band_sos(sr: int, hp: float, lp: float) -> np.ndarray:
    hp_sos = signal.butter(2, hp, btype="highpass", fs=sr, output="sos")
    if lp >= 0.45 * sr:
        return hp_sos
    return np.concatenate([hp_sos, signal.butter(4, lp, btype="lowpass", fs=sr, output="sos")])


def apply_channel(x: np.ndarray, ch: Channel, rng: np.random.Generator) -> np.ndarray:
    """Pass a SR signal through a corpus channel: reverberation, resampling, band, level, noise floor."""
    x = x.astype(np.float64)
    if ch.reverb_s > 0:
        m = int(ch.reverb_s * SR)
        ir = rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m)
        ir /= np.sqrt(np.sum(ir ** 2))
        x = x + ch.reverb_mix * signal.fftconvolve(x, ir)[: len(x)]
    x = signal.sosfilt(_band_sos(SR, ch.highpass_hz, ch.lowpass_hz), x)  # the synthetic voice is below SR/2
    if ch.sr != SR:
        g = gcd(ch.sr, SR)
        x = signal.resample_poly(x, ch.sr // g, SR // g)
    x *= 10 ** ((ch.gain_db + rng.normal(0, 0.5)) / 20)
    floor = _noise_floor(ch)  # full-band floor at the corpus rate: a slice of the channel's own noise
    start = int(rng.integers(0, len(floor) - len(x))) if len(floor) > len(x) else 0
    x[: len(floor)] += floor[start:start + len(x)]
    return np.clip(x, -0.99, 0.99).astype(np.float32)


@lru_cache(maxsize=8)
def _noise_floor(ch: Channel, seconds: float = 12.0) -> np.ndarray:
    """The channel's noise floor (fixed per channel, so that clips differ only by the slice they get)."""
    noise = np.random.default_rng(int(ch.sr + ch.snr_db * 1000)).standard_normal(int(seconds * ch.sr))
    if ch.noise_tilt > 0:
        noise = signal.lfilter([1.0], [1.0, -0.98 * ch.noise_tilt], noise)
        noise /= np.std(noise) + 1e-12
    return noise * 10 ** ((ch.gain_db - 26.0 - ch.snr_db) / 20)


def render(emotion: str, speaker: Speaker, channel: Channel, rng: np.random.Generator, *,
           duration: float | None = None, n_syllables: int | None = None, intensity: float = 1.0) -> np.ndarray:
    """An utterance as the corpus recorded it (float32 at the channel's rate)."""
    x, _ = synthesize(emotion, speaker, rng, duration=duration, n_syllables=n_syllables, intensity=intensity)
    return apply_channel(x, channel, rng)

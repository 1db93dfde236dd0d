"""Acoustic descriptors per utterance, and their speaker-relative values: the facts ESR's <acoustics> is written from.

Why eGeMAPS: the descriptors are the field's standard parameter set, the extended Geneva Minimalistic Acoustic
Parameter Set (eGeMAPSv02; Eyben et al. 2016, IEEE Trans. Affective Computing 7(2), doi:10.1109/TAFFC.2015.2457417),
computed by openSMILE (Eyben, Woellmer & Schuller 2010, doi:10.1145/1873951.1874246) through its Python package
`opensmile`, so each value is one a reader can look up and recompute. Per clip (the manifest's 16 kHz wav),
`describe_signal` keeps six of its 88 functionals (EGEMAPS below is the one mapping):
  pitch_st / f0_hz   median F0 of voiced frames, in eGeMAPS's semitones re 27.5 Hz, and the same in Hz
  range_st           F0 spread: the 20th-80th percentile range of voiced frames, in semitones
  energy_db          equivalent sound level of the clip, in dB (relative to the file's full scale)
  rate_syl_s         loudness peaks per second: eGeMAPS's pseudo-syllable rate
  hnr_db             harmonics-to-noise ratio of voiced frames (autocorrelation), in dB (low = breathy or rough)
  tilt_db            alpha ratio of voiced frames: energy 1-5 kHz over 50 Hz-1 kHz, in dB (high = bright, tense;
                     low = soft, dark)
plus `duration` and `voiced_frac` (the share of the clip eGeMAPS finds voiced). Clips with fewer than
`min_voiced_frames` voiced 10 ms frames get no pitch, range, HNR or tilt (null).

Why speaker-relative: a female speaker's "normal" pitch is a male speaker's "high". `speaker_zscores` turns each
descriptor into a z-score against the speaker's own utterances in the corpus, falling back to the corpus when a
speaker has fewer than `min_speaker_utts`. `levels` puts each z-score into words by the thresholds (stored in each
row as `level`, so the words are decided here, once, and the rationale writer only reads them).

Cache: `<manifests>/<corpus>.descriptors.jsonl`, one row per utt_id with the raw values, the wav's size and mtime
and the settings (and extractor version) that shaped them; a second run recomputes only rows whose wav or
settings changed. Clips that cannot be described (unreadable, empty, non-finite, too short, silent) are skipped,
counted and listed in the `<corpus>.descriptors.report.json` beside it; rows of the manifest with no descriptors
are reported as missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.audio import NONFINITE as AUDIO_NONFINITE
from ..data.audio import SAMPLE_RATE, AudioError, load_16k
from ..data.manifest import Utterance, read_manifest
from ..infra.config import setting
from ..infra.io import atomic_write_text, read_jsonl, write_jsonl
from ..infra.log import get_logger
from ..infra.parallel import imap_progress

log = get_logger(__name__)

# Descriptor name -> the key of its z-score. The one list of what is described.
FEATURES: tuple[str, ...] = ("pitch_st", "range_st", "energy_db", "rate_syl_s", "hnr_db", "tilt_db")
AROUSAL_FEATURES: tuple[str, ...] = ("pitch_st", "energy_db", "rate_syl_s")
SR = SAMPLE_RATE

# The extractor: openSMILE's eGeMAPSv02 functionals, and which of them each descriptor is.
FEATURE_SET = "eGeMAPSv02"
EGEMAPS: dict[str, str] = {
    "pitch_st": "F0semitoneFrom27.5Hz_sma3nz_percentile50.0",
    "range_st": "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2",
    "energy_db": "equivalentSoundLevel_dBp",
    "rate_syl_s": "loudnessPeaksPerSec",
    "hnr_db": "HNRdBACF_sma3nz_amean",
    "tilt_db": "alphaRatioV_sma3nz_amean",
}
VOICED = ("VoicedSegmentsPerSec", "MeanVoicedSegmentLengthSec")  # their product: the voiced share of the clip
VOICED_ONLY: tuple[str, ...] = ("pitch_st", "range_st", "hnr_db", "tilt_db")  # computed over voiced frames
F0_REF_HZ = 27.5  # eGeMAPS's semitone scale: 0 st = 27.5 Hz
FRAME_S = 0.01    # eGeMAPS's LLD hop (10 ms)

# Reasons a clip is skipped.
UNREADABLE, EMPTY, NONFINITE, TOO_SHORT, SILENT = ("unreadable", "empty", "non-finite samples", "too short",
                                                    "silent")


class DescriptorError(ValueError):
    """A clip that cannot be described; `reason` is one of the skip reasons above."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class DescriptorConfig:
    """The `descriptors` section of a profile. What is measured is eGeMAPSv02's, fixed by the standard; these
    settings only decide which clips are described and how values are put into words."""

    silence_dbfs: float = setting(-80.0, "kit", "a clip whose loudest 32 ms frame is below this level (dBFS) is "
                                  "silent and skipped")
    min_seconds: float = setting(0.1, "kit", "shorter clips are skipped (below ~0.1 s eGeMAPS finds no voiced "
                                 "frame)")
    min_voiced_frames: int = setting(5, "kit", "fewer voiced 10 ms frames: pitch, range, HNR and tilt are null")
    # Speaker normalisation and words.
    min_speaker_utts: int = setting(3, "kit", "a speaker with fewer utterances is z-scored against the corpus")
    low_z: float = setting(-0.5, "kit", "z below this reads 'low' (quiet, slow, narrow, ...)")
    high_z: float = setting(0.5, "kit", "z above this reads 'high'")
    strong_z: float = setting(1.5, "kit", "|z| above this adds 'very'")
    workers: int = setting(2, "kit", "processes computing descriptors", observes=True)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.min_seconds <= 0 or self.min_voiced_frames < 1:
            raise ValueError(f"need min_seconds > 0 and min_voiced_frames >= 1, got {self.min_seconds}, "
                             f"{self.min_voiced_frames}")
        if not self.low_z < self.high_z <= self.strong_z:
            raise ValueError(f"need low_z < high_z <= strong_z, got {self.low_z}, {self.high_z}, {self.strong_z}")

    def signature(self) -> str:
        """What shapes the raw values (the extractor and its version, the settings other than words and workers,
        and the code that computes them: this module's import closure and the numeric packages' versions): a
        changed one invalidates the cache."""
        from ..infra.fingerprint import code_digest

        keep = {k: v for k, v in asdict(self).items()
                if k not in ("min_speaker_utts", "low_z", "high_z", "strong_z", "workers")}
        keep["extractor"] = extractor_version()
        keep["code"] = code_digest((__name__,))
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


# --- one clip -------------------------------------------------------------------------------------------------
def extractor_version() -> str:
    """'opensmile <version> eGeMAPSv02': recorded with every cache, so an upgrade recomputes the values."""
    try:
        return f"opensmile {metadata.version('opensmile')} {FEATURE_SET}"
    except metadata.PackageNotFoundError:
        return f"opensmile (not installed) {FEATURE_SET}"


@lru_cache(maxsize=1)
def _smile():
    """The eGeMAPSv02 functionals extractor (one per process) and the column of each functional it returns."""
    try:
        import opensmile
    except ImportError as e:  # the kit pins it; say what to install rather than fail deep inside a worker
        raise ImportError("the acoustic descriptors need the `opensmile` package (pip install opensmile); "
                          f"{e}") from None
    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, FEATURE_SET),
                            feature_level=opensmile.FeatureLevel.Functionals)
    col = {name: i for i, name in enumerate(smile.feature_names)}
    missing = [n for n in (*EGEMAPS.values(), *VOICED) if n not in col]
    if missing:
        raise RuntimeError(f"opensmile {FEATURE_SET} lacks the functionals {missing}; "
                           f"the kit was written against opensmile 2.6")
    return smile, col


def egemaps_functionals(y: np.ndarray) -> dict[str, float]:
    """All 88 eGeMAPSv02 functionals of a 16 kHz mono signal (float in [-1, 1)), by openSMILE's names."""
    smile, col = _smile()
    # openSMILE reads 16-bit samples: keep the float signal inside the int16 range instead of letting it wrap
    x = np.clip(np.asarray(y, dtype=np.float32), -1.0, 32767 / 32768)
    import warnings

    with warnings.catch_warnings():  # "Segment too short, filling with NaN": handled below as a too-short clip
        warnings.simplefilter("ignore", UserWarning)
        values = np.asarray(smile(x, SR), dtype=np.float64).reshape(-1)
    return {name: float(values[i]) for name, i in col.items()}


def _frame_levels(y: np.ndarray, frame: int = 512) -> np.ndarray:
    """RMS level (dBFS) of consecutive 32 ms frames, for the silence check."""
    n = max(1, len(y) // frame)
    frames = np.resize(y, n * frame).reshape(n, frame) if len(y) >= frame else y[None, :]
    return 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-10)


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def describe_signal(y: np.ndarray, cfg: DescriptorConfig) -> dict[str, float | None]:
    """Descriptors of a 16 kHz mono signal; DescriptorError when it cannot be described."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.size == 0:
        raise DescriptorError(EMPTY, "no samples")
    if not np.all(np.isfinite(y)):
        raise DescriptorError(NONFINITE, f"{int(np.sum(~np.isfinite(y)))} NaN/inf samples")
    if y.size < cfg.min_seconds * SR:
        raise DescriptorError(TOO_SHORT, f"{y.size / SR:.3f} s < {cfg.min_seconds} s")
    loudest = float(_frame_levels(y).max())
    if loudest < cfg.silence_dbfs:
        raise DescriptorError(SILENT, f"loudest frame {loudest:.1f} dBFS < {cfg.silence_dbfs}")
    f = egemaps_functionals(y)
    if not any(np.isfinite(f[n]) for n in EGEMAPS.values()):
        raise DescriptorError(TOO_SHORT, f"openSMILE returned no {FEATURE_SET} frame for {y.size / SR:.3f} s")
    duration = y.size / SR
    voiced_frac = float(np.clip(np.nan_to_num(f[VOICED[0]] * f[VOICED[1]]), 0.0, 1.0))
    out: dict[str, float | None] = {"duration": round(duration, 4), "voiced_frac": round(voiced_frac, 4)}
    out.update({k: f[name] for k, name in EGEMAPS.items()})
    if voiced_frac * duration / FRAME_S < cfg.min_voiced_frames:
        out.update(dict.fromkeys(VOICED_ONLY))
    pitch = out["pitch_st"]
    out["f0_hz"] = None if pitch is None else F0_REF_HZ * 2 ** (pitch / 12)
    return {k: _none_if_nan(v) for k, v in out.items()}


def read_wav16k(path: str | Path) -> np.ndarray:
    """A cached clip as 16 kHz float mono (the kit's one audio reader, silence left to `describe_signal`);
    DescriptorError(UNREADABLE) naming the file when it cannot be read, or is not at 16 kHz as the manifest's cached
    clips are (another rate means the cache is not what the manifest says)."""
    import soundfile as sf

    try:
        sr = sf.info(str(path)).samplerate
        if sr != SR:
            raise DescriptorError(UNREADABLE, f"{path}: sample rate {sr}, expected {SR} (the manifest's cached wav)")
        return load_16k(path, silence_peak=0.0).astype(np.float64)
    except AudioError as e:
        raise DescriptorError(NONFINITE if e.reason == AUDIO_NONFINITE else UNREADABLE, e.detail or str(e)) from None
    except (RuntimeError, sf.LibsndfileError) as e:  # soundfile cannot read the header
        raise DescriptorError(UNREADABLE, f"{path}: {type(e).__name__}: {e}") from None


def describe_wav(path: str | Path, cfg: DescriptorConfig) -> dict[str, float | None]:
    return describe_signal(read_wav16k(path), cfg)


# --- a corpus ---------------------------------------------------------------------------------------------------
def _wav_stamp(path: str) -> tuple[int, int] | None:
    try:
        st = Path(path).stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None


def _job(job: tuple[str, str, DescriptorConfig]) -> tuple[str, dict | None, str | None, str]:
    utt_id, wav, cfg = job
    try:
        return utt_id, describe_wav(wav, cfg), None, ""
    except DescriptorError as e:
        return utt_id, None, e.reason, e.detail
    except Exception as e:  # a clip must never take down the run; it is listed with what went wrong
        return utt_id, None, UNREADABLE, f"{wav}: {type(e).__name__}: {e}"


@dataclass
class DescriptorReport:
    """What a `compute_descriptors` run did: counts, and every clip it could not describe."""

    corpus: str
    total: int = 0
    computed: int = 0
    reused: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)   # reason -> ["utt_id: detail", ...]
    no_pitch: list[str] = field(default_factory=list)             # described, but too few voiced frames for F0
    missing: list[str] = field(default_factory=list)              # manifest rows with no descriptors
    speaker_fallback: list[str] = field(default_factory=list)     # speakers z-scored against the corpus
    seconds: float = 0.0

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    @property
    def per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        s = (f"{self.corpus}: {self.total} clips, {self.computed} described ({self.per_second:.1f}/s), "
             f"{self.reused} reused, {self.n_skipped} skipped, {len(self.no_pitch)} without pitch, "
             f"{len(self.missing)} missing descriptors")
        for reason, items in sorted(self.skipped.items()):
            s += f"\n  skipped, {reason}: {len(items)}" + "".join(f"\n    {x}" for x in items[:10])
            if len(items) > 10:
                s += f"\n    ... {len(items) - 10} more (full list in the json report)"
        if self.speaker_fallback:
            s += f"\n  z-scored against the corpus (too few utterances): {', '.join(self.speaker_fallback)}"
        return s

    def to_dict(self) -> dict:
        return {**asdict(self), "n_skipped": self.n_skipped, "per_second": round(self.per_second, 2)}


@dataclass
class Descriptors:
    """Rows keyed by utt_id: raw values plus `z` (speaker-relative z-scores); and the run's report."""

    rows: dict[str, dict]
    report: DescriptorReport
    path: Path | None = None

    def __getitem__(self, utt_id: str) -> dict:
        return self.rows[utt_id]

    def get(self, utt_id: str, default=None):
        return self.rows.get(utt_id, default)


def speaker_zscores(rows: dict[str, dict], speaker_of: dict[str, str], min_utts: int = 3
                    ) -> tuple[dict[str, dict[str, float | None]], list[str]]:
    """z-score of every feature against the speaker's own utterances (corpus-wide when the speaker has too few,
    or no spread). Returns utt_id -> {feature: z or None} and the speakers that fell back to the corpus."""
    ids = [u for u in rows if u in speaker_of]
    by_spk: dict[str, list[str]] = {}
    for u in ids:
        by_spk.setdefault(speaker_of[u], []).append(u)
    out: dict[str, dict[str, float | None]] = {u: dict.fromkeys(FEATURES) for u in ids}
    fallback: set[str] = set()
    for feat in FEATURES:
        vals = {u: rows[u].get(feat) for u in ids}
        corpus = np.array([v for v in vals.values() if v is not None], float)
        c_mu = float(corpus.mean()) if corpus.size else 0.0
        c_sd = float(corpus.std()) if corpus.size > 1 else 0.0
        for spk, us in by_spk.items():
            x = np.array([vals[u] for u in us if vals[u] is not None], float)
            if not x.size:  # nothing to z-score for this speaker
                continue
            mu, sd = float(x.mean()), float(x.std())
            if x.size < min_utts or sd < 1e-9:
                mu, sd = c_mu, c_sd
                fallback.add(spk)
            for u in us:
                v = vals[u]
                out[u][feat] = None if v is None or sd < 1e-9 else round((v - mu) / sd, 4)
    return out, sorted(fallback)


def descriptors_path(manifest: Path) -> Path:
    """`<manifests>/<corpus>.jsonl` -> `<manifests>/<corpus>.descriptors.jsonl`."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.name.removesuffix(".jsonl") + ".descriptors.jsonl")


def load_cached(path: Path) -> dict[str, dict]:
    """Rows of a descriptor cache by utt_id ({} when there is none yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        return {r["utt_id"]: r for r in read_jsonl(path) if isinstance(r, dict) and "utt_id" in r}
    except ValueError as e:  # a damaged cache is rebuilt, with a word
        log.warning("%s; recomputing %s", e, path.name)
        return {}


def compute_descriptors(utts: Sequence[Utterance], cache: Path, cfg: DescriptorConfig | None = None,
                        corpus: str | None = None, progress: bool = True) -> Descriptors:
    """Describe every utterance (reusing cached rows whose wav and settings are unchanged), z-score per speaker,
    write the cache and its report atomically."""
    cfg = cfg or DescriptorConfig()
    cache = Path(cache)
    corpus = corpus or (utts[0].corpus if utts else cache.name.split(".")[0])
    report = DescriptorReport(corpus=corpus, total=len(utts))
    sig = cfg.signature()
    old = load_cached(cache)
    raw: dict[str, dict] = {}
    jobs = []
    for u in utts:
        stamp = _wav_stamp(u.wav)
        prev = old.get(u.utt_id)
        if (prev and stamp and prev.get("wav") == u.wav and prev.get("signature") == sig
                and [prev.get("wav_size"), prev.get("wav_mtime_ns")] == list(stamp)):
            raw[u.utt_id] = prev
            report.reused += 1
        elif stamp is None:
            report.skipped.setdefault(UNREADABLE, []).append(f"{u.utt_id}: {u.wav} does not exist")
        else:
            jobs.append((u.utt_id, u.wav, cfg))
    t0 = time.perf_counter()
    results = imap_progress(_job, jobs, cfg.workers, f"{corpus}: descriptors", "clip", progress, serial_below=4)
    report.seconds = round(time.perf_counter() - t0, 3)
    wav_of = {u.utt_id: u.wav for u in utts}
    for utt_id, desc, reason, detail in results:
        if desc is None:
            report.skipped.setdefault(reason, []).append(f"{utt_id}: {detail}")
            continue
        size, mtime = _wav_stamp(wav_of[utt_id]) or (None, None)
        raw[utt_id] = {"utt_id": utt_id, "wav": wav_of[utt_id], "wav_size": size, "wav_mtime_ns": mtime,
                       "signature": sig, **desc}
        report.computed += 1
    for v in report.skipped.values():
        v.sort()
    z, report.speaker_fallback = speaker_zscores(raw, {u.utt_id: u.speaker for u in utts}, cfg.min_speaker_utts)
    rows = {u.utt_id: {**raw[u.utt_id], "speaker": u.speaker, "z": z[u.utt_id], "level": levels(z[u.utt_id], cfg)}
            for u in utts if u.utt_id in raw}
    order = list(rows)
    report.no_pitch = [u for u in order if rows[u].get("pitch_st") is None]
    report.missing = [u.utt_id for u in utts if u.utt_id not in rows]
    write_jsonl(cache, rows.values())
    atomic_write_text(cache.with_name(cache.name.removesuffix(".jsonl") + ".report.json"),
                      json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return Descriptors(rows=rows, report=report, path=cache)


def describe_manifest(manifest: Path, cfg: DescriptorConfig | None = None, progress: bool = True) -> Descriptors:
    """Descriptors for a manifest file, cached beside it as `<corpus>.descriptors.jsonl`."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no manifest (run `emorl prepare` first)")
    utts = read_manifest(manifest)
    return compute_descriptors(utts, descriptors_path(manifest), cfg,
                               corpus=manifest.name.removesuffix(".jsonl"), progress=progress)


def level_word(z: float | None, cfg: DescriptorConfig) -> str | None:
    """'low' | 'normal' | 'high' (None when unknown) for a speaker-relative z-score."""
    if z is None:
        return None
    if z > cfg.high_z:
        return "high"
    if z < cfg.low_z:
        return "low"
    return "normal"


def is_strong(z: float | None, cfg: DescriptorConfig) -> bool:
    return z is not None and abs(z) >= cfg.strong_z


def levels(z: dict[str, float | None], cfg: DescriptorConfig) -> dict[str, str | None]:
    """Each feature's level in words ('very low', 'low', 'normal', 'high', 'very high'), plus `arousal`: the level
    of the mean z of pitch, energy and rate (the cues that rise together with arousal)."""
    zs = dict(z)
    ar = [zs[k] for k in AROUSAL_FEATURES if zs.get(k) is not None]
    zs["arousal"] = float(np.mean(ar)) if ar else None
    out: dict[str, str | None] = {}
    for k, v in zs.items():
        w = level_word(v, cfg)
        out[k] = f"very {w}" if w in ("low", "high") and is_strong(v, cfg) else w
    return out

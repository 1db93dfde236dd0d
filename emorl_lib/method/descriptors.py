"""Acoustic descriptors per utterance, and their speaker-relative values: the facts ESR's <acoustics> is written from.

Per clip (the manifest's 16 kHz wav), in `describe_signal`:
  f0_hz / pitch_st   median F0 of voiced frames (YIN, or pYIN), and the same in semitones re 100 Hz
  range_st           F0 spread: the 10th-90th percentile span of voiced frames, in semitones
  energy_db          mean RMS level of active frames (dBFS)
  rate_syl_s         syllable nuclei per second of active speech: peaks of the smoothed RMS envelope that stand
                     out by `peak_prominence_db` and are voiced (after de Jong & Wempe 2009)
  hnr_db             harmonics-to-noise ratio of voiced frames from the normalised autocorrelation at the F0 lag
                     (low = breathy or rough voice)
  tilt_db            spectral balance: energy above `tilt_split_hz` minus energy below it, in dB (high = bright,
                     tense; low = soft, dark)
YIN gives no voicing decision, so a frame counts as voiced when the autocorrelation at its YIN period reaches
`voicing_threshold` and the frame is active (within `active_db` of the clip's loudest frame).

Why speaker-relative: a female speaker's "normal" pitch is a male speaker's "high". `speaker_zscores` turns each
descriptor into a z-score against the speaker's own utterances in the corpus, falling back to the corpus when a
speaker has fewer than `min_speaker_utts`. `levels` puts each z-score into words by the thresholds (stored in each
row as `level`, so the words are decided here, once, and the rationale writer only reads them).

Cache: `<manifests>/<corpus>.descriptors.jsonl`, one row per utt_id with the raw values, the wav's size and mtime
and the settings that shaped them; a second run recomputes only rows whose wav or settings changed. Clips that
cannot be described (unreadable, empty, non-finite, too short) are skipped, counted and listed in the
`<corpus>.descriptors.report.json` beside it; rows of the manifest with no descriptors are reported as missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data.manifest import Utterance, read_manifest
from ..infra.io import atomic_write_text, read_jsonl, write_jsonl
from ..infra.log import get_logger

if TYPE_CHECKING:
    from ..infra.config import Profile

log = get_logger(__name__)

# Descriptor name -> the key of its z-score. The one list of what is described.
FEATURES: tuple[str, ...] = ("pitch_st", "range_st", "energy_db", "rate_syl_s", "hnr_db", "tilt_db")
AROUSAL_FEATURES: tuple[str, ...] = ("pitch_st", "energy_db", "rate_syl_s")
SR = 16000

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
    """The `descriptors` section of a profile."""

    f0_method: str = "yin"          # yin (fast: YIN + autocorrelation voicing) | pyin (librosa.pyin, ~20x slower)
    fmin: float = 60.0              # F0 search range, Hz (covers low male to high female/child speech)
    fmax: float = 500.0
    frame_ms: float = 64.0          # analysis frame (must hold two periods of fmin)
    hop_ms: float = 10.0
    voicing_threshold: float = 0.5  # normalised autocorrelation at the F0 lag needed to call a frame voiced (yin)
    active_db: float = 35.0         # a frame is active when within this many dB of the clip's loudest frame
    silence_dbfs: float = -80.0     # a clip whose loudest frame is below this is silent (skipped)
    min_seconds: float = 0.1        # shorter clips are skipped
    min_voiced_frames: int = 5      # fewer voiced frames: pitch, range and hnr are null for the clip
    envelope_ms: float = 40.0       # smoothing of the RMS envelope before peak picking (rate)
    peak_prominence_db: float = 2.0  # a syllable nucleus stands this far above the dips around it
    min_peak_gap_ms: float = 80.0   # two nuclei are at least this far apart
    tilt_split_hz: float = 1000.0
    # Speaker normalisation and words.
    min_speaker_utts: int = 3       # fewer: z-scores against the corpus instead of the speaker
    low_z: float = -0.5             # z below this reads "low" (quiet, slow, narrow, ...)
    high_z: float = 0.5             # z above this reads "high"
    strong_z: float = 1.5           # |z| above this adds "very"
    workers: int = 2                # processes computing descriptors

    def __post_init__(self) -> None:
        if self.f0_method not in ("yin", "pyin"):
            raise ValueError(f"f0_method must be 'yin' or 'pyin', got {self.f0_method!r}")
        if not 0 < self.fmin < self.fmax < SR / 2:
            raise ValueError(f"need 0 < fmin < fmax < {SR // 2} Hz, got fmin={self.fmin}, fmax={self.fmax}")
        if self.frame_samples <= 2 * SR / self.fmin:
            raise ValueError(f"frame_ms {self.frame_ms} is too short for fmin {self.fmin} Hz (need two periods)")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not self.low_z < self.high_z <= self.strong_z:
            raise ValueError(f"need low_z < high_z <= strong_z, got {self.low_z}, {self.high_z}, {self.strong_z}")

    @property
    def frame_samples(self) -> int:
        return int(round(self.frame_ms * SR / 1000))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_ms * SR / 1000))

    def signature(self) -> str:
        """What shapes the raw values (not the words, not the workers): a changed one invalidates the cache."""
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("min_speaker_utts", "low_z", "high_z", "strong_z", "workers")}
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


# --- one clip -------------------------------------------------------------------------------------------------
def _frames(y: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """Centred frames (zero-padded), as librosa frames its features: frame i is centred on sample i*hop."""
    import librosa

    pad = np.pad(y, (frame // 2, frame // 2))
    if len(pad) < frame:
        pad = np.pad(pad, (0, frame - len(pad)))
    return librosa.util.frame(pad, frame_length=frame, hop_length=hop, axis=0)


def _periodicity(frames: np.ndarray, f0: np.ndarray, fmin: float) -> np.ndarray:
    """Normalised autocorrelation of each frame at its F0 period (1 = perfectly periodic)."""
    n, frame = frames.shape
    max_lag = int(np.ceil(SR / fmin))
    w = frame - max_lag
    lag = np.clip(np.round(SR / np.maximum(f0, 1e-6)).astype(int), 1, max_lag)
    idx = lag[:, None] + np.arange(w)[None, :]
    a = frames[:, :w]
    b = np.take_along_axis(frames, idx, axis=1)
    num = np.sum(a * b, axis=1)
    den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1)) + 1e-12
    return np.clip(num / den, -1.0, 1.0)


def _nuclei(env_db: np.ndarray, voiced: np.ndarray, cfg: DescriptorConfig) -> int:
    """Syllable nuclei: voiced peaks of the smoothed level envelope with enough prominence."""
    from scipy.signal import find_peaks

    k = max(1, int(round(cfg.envelope_ms / cfg.hop_ms)))
    smooth = np.convolve(env_db, np.ones(k) / k, mode="same")
    peaks, _ = find_peaks(smooth, prominence=cfg.peak_prominence_db,
                          distance=max(1, int(round(cfg.min_peak_gap_ms / cfg.hop_ms))))
    # voiced within +-2 frames of the peak (the F0 tracker's voicing edges are soft)
    near = np.convolve(voiced.astype(float), np.ones(5), mode="same") > 0
    return int(np.sum(near[peaks]))


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def describe_signal(y: np.ndarray, cfg: DescriptorConfig) -> dict[str, float | None]:
    """Descriptors of a 16 kHz mono signal; DescriptorError when it cannot be described."""
    import librosa

    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.size == 0:
        raise DescriptorError(EMPTY, "no samples")
    if not np.all(np.isfinite(y)):
        raise DescriptorError(NONFINITE, f"{int(np.sum(~np.isfinite(y)))} NaN/inf samples")
    if y.size < cfg.min_seconds * SR:
        raise DescriptorError(TOO_SHORT, f"{y.size / SR:.3f} s < {cfg.min_seconds} s")
    frame, hop = cfg.frame_samples, cfg.hop_samples
    frames = _frames(y, frame, hop)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    level = 20 * np.log10(rms + 1e-10)
    if level.max() < cfg.silence_dbfs:
        raise DescriptorError(SILENT, f"loudest frame {level.max():.1f} dBFS < {cfg.silence_dbfs}")
    active = level >= level.max() - cfg.active_db

    if cfg.f0_method == "pyin":
        f0, vflag, _ = librosa.pyin(y, fmin=cfg.fmin, fmax=cfg.fmax, sr=SR, frame_length=frame, hop_length=hop)
        f0 = f0[: len(frames)]
        voiced = np.asarray(vflag[: len(frames)], bool) & active
        f0 = np.where(np.isfinite(f0), f0, cfg.fmin)
        per = _periodicity(frames, f0, cfg.fmin)
    else:
        f0 = librosa.yin(y, fmin=cfg.fmin, fmax=cfg.fmax, sr=SR, frame_length=frame, hop_length=hop)[: len(frames)]
        per = _periodicity(frames, f0, cfg.fmin)
        voiced = (per >= cfg.voicing_threshold) & active

    out: dict[str, float | None] = {"duration": round(y.size / SR, 4),
                                    "voiced_frac": round(float(voiced.sum() / max(1, active.sum())), 4)}
    if voiced.sum() >= cfg.min_voiced_frames:
        fv = f0[voiced]
        p10, p50, p90 = np.percentile(fv, [10, 50, 90])
        r = np.clip(per[voiced], 1e-4, 1 - 1e-4)
        out.update(f0_hz=p50, pitch_st=12 * np.log2(p50 / 100.0), range_st=12 * np.log2(p90 / p10),
                   hnr_db=float(np.median(10 * np.log10(r / (1 - r)))))
    else:
        out.update(f0_hz=None, pitch_st=None, range_st=None, hnr_db=None)
    out["energy_db"] = float(np.mean(level[active]))
    idx = np.flatnonzero(active)
    span_s = (idx[-1] - idx[0] + 1) * hop / SR
    out["rate_syl_s"] = _nuclei(level, voiced, cfg) / max(span_s, cfg.min_seconds)

    spec = np.abs(np.fft.rfft(frames[active] * np.hanning(frame), axis=1)) ** 2
    split = int(round(cfg.tilt_split_hz * frame / SR))
    out["tilt_db"] = float(10 * np.log10((spec[:, split:].sum() + 1e-12) / (spec[:, 1:split].sum() + 1e-12)))
    return {k: _none_if_nan(v) if isinstance(v, float) or v is None else v for k, v in out.items()}


def read_wav16k(path: str | Path) -> np.ndarray:
    """A cached clip as float mono; DescriptorError(UNREADABLE) naming the file when it cannot be read as 16 kHz."""
    import soundfile as sf

    try:
        y, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as e:  # soundfile raises several types for a bad file
        raise DescriptorError(UNREADABLE, f"{path}: {type(e).__name__}: {e}") from None
    if sr != SR:
        raise DescriptorError(UNREADABLE, f"{path}: sample rate {sr}, expected {SR} (the manifest's cached wav)")
    return y.mean(axis=1)


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


def _pool_context():
    from ..data.prep import (
        _pool_context as ctx,  # one place decides how the kit forks its workers
    )

    return ctx()


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
    bar = tqdm(total=len(jobs), desc=f"{corpus}: descriptors", unit="clip", disable=not progress or not jobs)
    results = []
    try:
        if cfg.workers <= 1 or len(jobs) < 4:
            for j in jobs:
                results.append(_job(j))
                bar.update()
        else:
            with _pool_context().Pool(cfg.workers) as pool:
                for r in pool.imap_unordered(_job, jobs, chunksize=4):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
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


def load_descriptors(path: Path) -> dict[str, dict]:
    """A written descriptor file (rows with `z`) by utt_id, for the rationale writer."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no descriptors (run descriptors.describe_manifest on its manifest)")
    return {r["utt_id"]: r for r in read_jsonl(path)}


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


def describe_profile(prof: "Profile", corpora: Sequence[str] | None = None, progress: bool = True
                     ) -> dict[str, Descriptors]:
    """Descriptors for each prepared corpus manifest of a profile (the `descriptors` section's settings)."""
    cfg = prof.section("descriptors")
    corpora = prof.section("data").corpora if corpora is None else corpora
    out = {}
    for c in corpora:
        out[c] = describe_manifest(prof.paths.manifests / f"{c}.jsonl", cfg, progress=progress)
        log.info("%s", out[c].report.summary())
    return out

"""Cache-build throughput: emorl's parallel decode-resample-write vs a plain one-process librosa.load loop.

    .venv/bin/python benchmarks/bench_cache.py [--profile default] [--workers N] [--size 1.0]

Runs on the synthetic corpora (generated under the profile's cache if absent). The build writes into a fresh
temporary cache, so every clip is decoded. librosa.load(sr=16000) needs a system FFmpeg for MP4 (MELD) and
none is assumed, so the ratio is measured on the same wav files (IEMOCAP, RAVDESS, SAVEE); MELD's MP4
throughput is reported on its own. Appends a row to results/benchmarks/cache_build.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from emorl_lib.data.corpora import load as load_corpus
from emorl_lib.data.prep import build_cache
from emorl_lib.data.synthetic import generate_all
from emorl_lib.profile import load_profile
from emorl_lib.infra.paths import repo_root

CSV_FIELDS = ["when", "machine", "cpu_count", "workers", "size", "repeats", "wav_clips", "wav_audio_s", "emorl_clips_per_s",
              "librosa_clips_per_s", "ratio", "mp4_clips", "emorl_mp4_clips_per_s",
              "load_avg_before"]


def machine() -> str:
    return f"{platform.platform()} | {platform.processor() or platform.machine()} | python {platform.python_version()}"


def timed_build(sources: list[str], workers: int, silence_peak: float) -> tuple[float, float]:
    """(seconds, total audio seconds) to cache `sources` into a fresh folder with `workers` processes."""
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as d:
        jobs = [(str(i), s, os.path.join(d, f"{i}.wav"), silence_peak) for i, s in enumerate(sources)]
        t0 = time.perf_counter()
        res = build_cache(jobs, workers, desc=f"emorl x{workers}")
        dt = time.perf_counter() - t0
    return dt, sum(r.duration or 0.0 for r in res)


def timed_librosa(sources: list[str]) -> float:
    import librosa

    t0 = time.perf_counter()
    for s in sources:
        librosa.load(s, sr=16000)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--workers", type=int, help="default: the profile's data.workers")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best time of each is kept")
    ap.add_argument("--size", type=float, help="synthetic size (default: the profile's data.synthetic_size)")
    args = ap.parse_args(argv)
    prof = load_profile(args.profile)
    cfg = prof.section("data")
    workers = args.workers or cfg.workers
    size = args.size or cfg.synthetic_size
    paths = prof.paths.ensure()
    roots = generate_all(paths.synthetic, seed=cfg.synthetic_seed, size=size)
    wavs, mp4s = [], []
    for corpus, root in roots.items():
        rows, _ = load_corpus(corpus, root)
        for r in rows:
            (mp4s if r.source.lower().endswith(".mp4") else wavs).append(r.source)

    import librosa

    for s in wavs + mp4s:  # same start for both: files in the page cache, librosa's lazy imports done
        Path(s).read_bytes()
    librosa.load(wavs[0], sr=16000)
    load_before = os.getloadavg()[0]

    # Interleaved repeats, best of each: the machine is shared, so single timings are noisy.
    t_par, t_lib, audio_s = float("inf"), float("inf"), 0.0
    for _ in range(args.repeats):
        t, audio_s = timed_build(wavs, workers, cfg.silence_peak)
        t_par = min(t_par, t)
        t_lib = min(t_lib, timed_librosa(wavs))
    t_mp4, _ = timed_build(mp4s, workers, cfg.silence_peak) if mp4s else (float("nan"), 0.0)
    row = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "cpu_count": os.cpu_count(), "workers": workers, "size": size, "repeats": args.repeats, "wav_clips": len(wavs),
        "wav_audio_s": round(audio_s, 1), "emorl_clips_per_s": round(len(wavs) / t_par, 1),
        "librosa_clips_per_s": round(len(wavs) / t_lib, 1), "ratio": round(t_lib / t_par, 2),
        "mp4_clips": len(mp4s), "emorl_mp4_clips_per_s": round(len(mp4s) / t_mp4, 1) if mp4s else "",
        "load_avg_before": round(load_before, 2),
    }
    print(f"machine: {row['machine']} ({row['cpu_count']} CPUs; 1-min load average before: {row['load_avg_before']})")
    print(f"wav clips: {len(wavs)} ({audio_s:.0f} s of audio)")
    print(f"  emorl cache build, {workers} workers (decode+resample+write): {row['emorl_clips_per_s']} clips/s")
    print(f"  librosa.load(sr=16000), one process (decode+resample only): {row['librosa_clips_per_s']} clips/s")
    print(f"  ratio emorl / librosa: {row['ratio']}x")
    if mp4s:
        print(f"MELD mp4 clips: {len(mp4s)}: emorl {row['emorl_mp4_clips_per_s']} clips/s "
              "(librosa.load cannot read MP4 without a system FFmpeg)")
    out = repo_root() / "results" / "benchmarks" / "cache_build.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    with out.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)
    print(f"appended to {out}")


if __name__ == "__main__":
    main()

"""Descriptor stage throughput and F0 accuracy: eGeMAPSv02 (openSMILE) on synthetic utterances.

    .venv/bin/python benchmarks/bench_descriptors.py [--utterances 80] [--seconds 2.5] [--workers 1 2]

Writes --utterances synthetic voices (every voice emotion, both genders, `synthetic.voice`) as 16 kHz wavs to a
temporary folder, runs `method.descriptors.compute_descriptors` on them with a fresh cache once per --workers
value, and prints clips per second, seconds of audio per wall second, and the F0 error against each utterance's
known median F0 (`f0_median_hz`, in semitones). One row per worker count is appended to
results/benchmarks/descriptors.csv with the machine's description and load average: figures taken while other
processes share the cores are pessimistic, so compare rows taken under the same load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emorl_lib.infra.paths import repo_root


def synthetic_utterances(folder: Path, n: int, seconds: float):
    """n synthetic utterances (wav files) as manifest rows, and each one's true median F0."""
    import soundfile as sf

    from emorl_lib.data.manifest import Utterance
    from emorl_lib.data.synthetic import voice

    rng = np.random.default_rng(0)
    speakers = {g: [voice.make_speaker(g, rng) for _ in range(4)] for g in "MF"}
    emotions = list(voice.EMOTIONS)
    rows, truth = [], {}
    for i in range(n):
        g = "MF"[i % 2]
        spk = (i // 2) % 4
        x, cues = voice.synthesize(emotions[i % len(emotions)], speakers[g][spk], rng, duration=seconds)
        wav = folder / f"u{i:04d}.wav"
        sf.write(wav, x, voice.SR)
        uid = f"u{i:04d}"
        rows.append(Utterance(uid, "bench", f"{g}{spk}", g, "x", "neutral", "neutral", None, 1, len(x) / voice.SR,
                              str(wav), str(wav), None))
        truth[uid] = cues["f0_median_hz"]
    return rows, truth


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=80)
    ap.add_argument("--seconds", type=float, default=2.5, help="length of each synthetic utterance")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(repo_root() / "results" / "benchmarks" / "descriptors.csv"))
    a = ap.parse_args(argv)

    from emorl_lib.infra.perf import (
        append_benchmark_row,
        load_average,
        machine_description,
    )
    from emorl_lib.method.descriptors import (
        DescriptorConfig,
        compute_descriptors,
        extractor_version,
    )

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_desc_") as tmp:
        utts, truth = synthetic_utterances(Path(tmp), a.utterances, a.seconds)
        audio_s = sum(u.duration for u in utts)
        for w in a.workers:
            load_before = load_average()
            cache = Path(tmp) / f"bench.w{w}.descriptors.jsonl"
            t0 = time.perf_counter()
            d = compute_descriptors(utts, cache, DescriptorConfig(workers=w), progress=False)
            dt = time.perf_counter() - t0
            err = np.array([abs(12 * np.log2(d[u]["f0_hz"] / truth[u])) for u in truth
                            if d.get(u) and d[u].get("f0_hz")])
            row = {"machine": machine_description(), "load_avg_before": load_before, "load_avg_after": load_average(),
                   "extractor": extractor_version(), "workers": w, "clips": d.report.computed,
                   "audio_seconds": round(audio_s, 1), "wall_seconds": round(dt, 2),
                   "clips_per_second": round(d.report.computed / dt, 2),
                   "audio_seconds_per_second": round(audio_s / dt, 1),
                   "f0_median_abs_error_st": round(float(np.median(err)), 3) if err.size else None,
                   "f0_share_within_1st": round(float(np.mean(err < 1.0)), 3) if err.size else None,
                   "skipped": d.report.n_skipped}
            rows.append(row)
            append_benchmark_row(Path(a.out), row)
            print(f"{row['extractor']}, {w} worker(s): {row['clips']} clips ({audio_s:.0f} s of audio) in {dt:.1f} s = "
                  f"{row['clips_per_second']} clips/s, {row['audio_seconds_per_second']}x real time; F0 error median "
                  f"{row['f0_median_abs_error_st']} st, {row['f0_share_within_1st']:.0%} within 1 st "
                  f"(load average {load_before} -> {row['load_avg_after']})")
    print(f"rows appended to {a.out}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

"""Evaluation throughput: batched vs one-by-one generation, KV cache vs none, cached vs fresh mel features, the
shared-prefix generation path vs a plain `generate` call.

    .venv/bin/python benchmarks/bench_eval.py [--profile default] [--utterances 16] [--condition IR]
                                              [--batch-size 8] [--max-new-tokens N] [--repeats 2] [--threads 1]

Each comparison runs both paths on the same utterances in this one process and reports the ratio and whether the
outputs are equal: (b) `eval_paths.batching_benchmark` (batch 1 vs --batch-size, greedy text equal);
(d) generation with left padding and the KV cache vs use_cache=False (text equal); (c) `encode` (chat template +
mel features) with a warm `eval_paths.FeatureCache` vs without (a rerun of the same test set; features equal);
`shared_prefix`: `generate_batch` on the kit's default path (model/rollout.py: the prompt through the backbone
without the LM head) vs `GenerationPaths(shared_prefix=False)` (a plain `generate` call; text equal); `compiled`:
the default path with a static cache and a compiled decoding step (CUDA graphs on a GPU) vs without.
Utterances are tones of 0.8-3.6 s written to a temporary folder. One row per comparison is appended to
results/benchmarks/eval.csv with the machine's description and load average.

`--comparisons throughput --batch-sizes 1,8,16,32` instead measures utterances and generated tokens per second at
each batch size (`--batches` batches of that size after one warm-up batch; peak GPU memory per size): what a
7B-sized model on a GPU is measured with (the KV-cache-off comparison would take minutes there). With random
weights every completion runs to max_new_tokens (the worst case); a real model stops at its end token.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emorl_lib.infra.paths import repo_root


def tone_testset(folder: Path, n: int):
    """n tone 'utterances' of different lengths as an IEMOCAP-shaped 4-class test set."""
    import soundfile as sf

    from emorl_lib.data.labels import FOUR_CLASS
    from emorl_lib.data.manifest import Utterance
    from emorl_lib.data.testsets import TestSet

    sr, rows = 16000, []
    for i in range(n):
        secs = 0.8 + (i * 0.35) % 2.8
        t = np.arange(int(secs * sr)) / sr
        x = (0.25 * np.sin(2 * np.pi * (110 + 23 * i) * t) * (1 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype("float32")
        wav = folder / f"u{i}.wav"
        sf.write(wav, x, sr)
        lab = FOUR_CLASS[i % len(FOUR_CLASS)]
        rows.append(Utterance(f"Ses05F_impro01_F{i:03d}", "iemocap", "Ses05F", "F", lab[:3], lab, lab, None, 5,
                              secs, str(wav), str(wav), None))
    return TestSet("bench-tones", "iemocap", rows, True, n)


def best_of(repeats: int, fns: dict):
    """Interleaved repeats of each callable; the best wall time of each and its last result."""
    times = {k: float("inf") for k in fns}
    results = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            results[k] = fn()
            times[k] = min(times[k], time.perf_counter() - t0)
    return times, results


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--utterances", type=int, default=16)
    ap.add_argument("--condition", default="IR")
    ap.add_argument("--batch-size", type=int, help="default: the profile's eval.batch_size")
    ap.add_argument("--max-new-tokens", type=int, help="default: the profile's eval.max_new_tokens[condition]")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--comparisons", default="batched,kv_cache,features,shared_prefix",
                    help="comma list of batched, kv_cache, features, shared_prefix, compiled, throughput")
    ap.add_argument("--batch-sizes", default="1,8", help="throughput: comma list of batch sizes")
    ap.add_argument("--batches", type=int, default=2, help="throughput: timed batches per batch size")
    ap.add_argument("--tag", default="", help="a label stored in every row")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=str(repo_root() / "results" / "benchmarks" / "eval.csv"))
    a = ap.parse_args(argv)

    import torch
    from eval_paths import FeatureCache, batching_benchmark, encode_cached, generate_uncached

    from emorl_lib.data.audio import load_16k
    from emorl_lib.model.generate import encode, generate_batch
    from emorl_lib.infra.perf import (
        append_benchmark_row,
        load_average,
        machine_description,
        package_versions,
        peak_memory,
    )
    from emorl_lib.method.prompts import build_messages, canonical_condition
    from emorl_lib.model.backbones import load_backbone
    from emorl_lib.profile import load_profile

    if a.threads:
        torch.set_num_threads(a.threads)
    comparisons = [c.strip() for c in a.comparisons.split(",") if c.strip()]
    known = {"batched", "kv_cache", "features", "shared_prefix", "compiled", "throughput"}
    unknown = sorted(set(comparisons) - known)
    if unknown:
        raise SystemExit(f"--comparisons: unknown {unknown}; expected some of {sorted(known)}")
    prof = load_profile(a.profile)
    paths = prof.paths.ensure()
    bcfg, pcfg, ecfg = prof.section("backbone"), prof.section("prompt"), prof.section("eval")
    cond = canonical_condition(a.condition)
    bs = a.batch_size or ecfg.batch_size
    mnt = a.max_new_tokens or ecfg.max_new_tokens[cond]
    load_before = load_average()
    t0 = time.perf_counter()
    bb = load_backbone(bcfg, paths, trainable=False)
    load_s = time.perf_counter() - t0
    common = {"machine": machine_description(), "versions": package_versions(), "tag": a.tag,
              "load_avg_before": load_before, "backbone": bcfg.name, "dtype": str(bb.model.dtype).replace("torch.", ""),
              "load_in_4bit": bcfg.load_in_4bit, "condition": cond, "batch_size": bs, "max_new_tokens": mnt,
              "repeats": a.repeats, "threads": torch.get_num_threads(), "model_load_s": load_s}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        ts = tone_testset(Path(tmp), a.utterances)
        n = len(ts.rows)
        cands = ts.candidates  # the test set in eval batches, its messages and audio, for every comparison
        batches = [ts.rows[i:i + bs] for i in range(0, n, bs)]
        msgs = [[build_messages(pcfg, u.wav, cands, cond, u.transcript) for u in b] for b in batches]
        audios = [[load_16k(u.wav) for u in b] for b in batches]
        if "throughput" in comparisons:
            sizes = [int(x) for x in a.batch_sizes.split(",") if x.strip()]
            rows += throughput(bb, pcfg, cond, mnt, sizes, a.batches, Path(tmp))
        if "batched" in comparisons:  # (b) batched vs one by one
            best = None
            for _ in range(a.repeats):
                b = batching_benchmark(bb, ts, pcfg, cond, mnt, (1, bs), workdir=Path(tmp))
                best = b if best is None or b[1]["seconds"] < best[1]["seconds"] else best
            one, many = best
            rows.append({"comparison": "batched_vs_one_by_one", "plain_s": one["seconds"], "fast_s": many["seconds"],
                         "plain_utt_per_s": one["utt_per_second"], "fast_utt_per_s": many["utt_per_second"],
                         "equal_outputs": f"{many['same_text_as_batch_1']}/{n}",
                         "tokens_per_utt": many["tokens_per_utt"]})

        if "kv_cache" in comparisons:  # (d) KV cache vs none, both batched and left-padded
            def run(use_cache):
                def f():
                    if use_cache:
                        return [g.text for m, au in zip(msgs, audios) for g in generate_batch(bb, m, au, mnt)]
                    return [t for m, au in zip(msgs, audios) for t in generate_uncached(bb, m, au, mnt)]
                return f

            t, r = best_of(a.repeats, {"nocache": run(False), "cache": run(True)})
            rows.append({"comparison": "kv_cache_vs_none", "plain_s": t["nocache"], "fast_s": t["cache"],
                         "plain_utt_per_s": n / t["nocache"], "fast_utt_per_s": n / t["cache"],
                         "equal_outputs": f"{sum(x == y for x, y in zip(r['nocache'], r['cache']))}/{n}"})

        from emorl_lib.model.rollout import GenerationPaths

        def gen(paths):
            return lambda: [g.text for m, au in zip(msgs, audios) for g in generate_batch(bb, m, au, mnt, paths)]

        for name, plain, fast in (("shared_prefix", GenerationPaths(shared_prefix=False), GenerationPaths()),
                                  ("compiled", GenerationPaths(), GenerationPaths(compiled=True))):
            if name not in comparisons:  # the kit's generation paths (model/rollout.py), side by side
                continue
            first = time.perf_counter()
            gen(fast)()  # a compiled path compiles here (not timed: reported apart)
            first = time.perf_counter() - first
            t, r = best_of(a.repeats, {"plain": gen(plain), "fast": gen(fast)})
            rows.append({"comparison": f"{name}_vs_{'plain_generate' if name == 'shared_prefix' else 'eager'}",
                         "plain_s": t["plain"], "fast_s": t["fast"], "plain_utt_per_s": n / t["plain"],
                         "fast_utt_per_s": n / t["fast"], "first_call_s": first,
                         "equal_outputs": f"{sum(x == y for x, y in zip(r['plain'], r['fast']))}/{n}"})

        if "features" in comparisons:  # (c) mel features: a rerun with a warm cache vs fresh extraction
            cache = FeatureCache()
            for m, au in zip(msgs, audios):  # the first evaluation fills it
                encode_cached(bb.processor, m, au, cache)
            t, r = best_of(a.repeats, {
                "fresh": lambda: [encode(bb.processor, m, au) for m, au in zip(msgs, audios)],
                "cached": lambda: [encode_cached(bb.processor, m, au, cache) for m, au in zip(msgs, audios)]})
            same = sum(all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(r["fresh"], r["cached"]))
            rows.append({"comparison": "cached_features_vs_fresh", "plain_s": t["fresh"], "fast_s": t["cached"],
                         "plain_utt_per_s": n / t["fresh"], "fast_utt_per_s": n / t["cached"],
                         "equal_outputs": f"{same}/{len(batches)} batches", "cache_hits": cache.hits,
                         "cache_misses": cache.misses})
    mem = peak_memory()
    out = []
    for r in rows:
        extra = {"ratio": r["plain_s"] / r["fast_s"]} if "plain_s" in r else {}
        r = {**common, **mem, **r, **extra, "load_avg_after": load_average()}
        append_benchmark_row(Path(a.out), r)
        out.append(r)
    print(common["machine"], "| load avg", load_before, "->", load_average(), "| threads", common["threads"])
    print(common["versions"])
    print(f"condition {cond}, max_new_tokens {mnt}, backbone {bcfg.name}, dtype {common['dtype']}, "
          f"model load {load_s:.1f} s")
    for r in out:
        if r["comparison"] == "throughput":
            print(f"{'throughput':>26}: batch {r['batch_size']:3d}  {r['utterances']:3d} utt in {r['seconds']:7.2f} s  "
                  f"{r['utt_per_s']:7.2f} utt/s  {r['gen_tokens_per_s']:8.1f} tok/s  {r['tokens_per_utt']:6.1f} "
                  f"tok/utt  gpu peak alloc {r.get('gpu_allocated_peak_mib') or 0:.0f} MiB reserved "
                  f"{r.get('gpu_reserved_peak_mib') or 0:.0f} MiB  same text as first size {r['same_text_as_first']}")
            continue
        print(f"{r['comparison']:>26}: plain {r['plain_s']:7.3f} s ({r['plain_utt_per_s']:7.2f} utt/s)  fast "
              f"{r['fast_s']:7.3f} s ({r['fast_utt_per_s']:7.2f} utt/s)  ratio {r['ratio']:5.2f}x  "
              f"equal {r['equal_outputs']}")
    print(f"peak RSS {mem['rss_peak_mib']:.0f} MiB; appended {len(out)} rows to {a.out}")
    return out


def throughput(bb, pcfg, cond: str, mnt: int, sizes: list[int], batches: int, tmp: Path) -> list[dict]:
    """Utterances and generated tokens per second at each batch size: one warm-up batch (CUDA kernels, cuBLAS
    handles), then `batches` timed batches of distinct clips; peak GPU memory per size. Greedy output of the
    utterances every size shares is compared with the first size's."""
    from emorl_lib.data.testsets import TestSet
    from emorl_lib.evaluation.predictions import predict_set
    from emorl_lib.infra.perf import peak_memory, reset_peak_memory

    (tmp / "throughput").mkdir(exist_ok=True)
    ts = tone_testset(tmp / "throughput", max(sizes) * batches)
    warm = TestSet("warm", ts.corpus, ts.rows[:min(sizes)], True, min(sizes))
    predict_set(bb, warm, pcfg, cond, tmp / "warm.jsonl", min(sizes), mnt, progress=False)
    rows, first = [], None
    for bs in sizes:
        sub = TestSet(f"b{bs}", ts.corpus, ts.rows[:bs * batches], True, bs * batches)
        reset_peak_memory()
        t0 = time.perf_counter()
        preds = predict_set(bb, sub, pcfg, cond, tmp / f"tp_b{bs}_{time.perf_counter_ns()}.jsonl", bs, mnt,
                            progress=False)
        wall = time.perf_counter() - t0
        texts = {p["utt_id"]: p["raw"] for p in preds}
        first = first or texts
        shared = [k for k in texts if k in first]
        tokens = sum(p["n_tokens"] for p in preds)
        mem = {k: v for k, v in peak_memory().items() if k.startswith("gpu_")}
        rows.append({"comparison": "throughput", "batch_size": bs, "utterances": len(preds), "seconds": wall,
                     "utt_per_s": len(preds) / wall, "gen_tokens_per_s": tokens / wall,
                     "tokens_per_utt": tokens / len(preds),
                     "same_text_as_first": f"{sum(texts[k] == first[k] for k in shared)}/{len(shared)}", **mem})
    return rows

if __name__ == "__main__":
    main(sys.argv[1:])

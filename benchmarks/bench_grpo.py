"""GRPO step time and its parts, tokens per second and peak memory, plain path vs the exact caches, in one run.

    .venv/bin/python benchmarks/bench_grpo.py                     # tiny model on the CPU (default profile)
    .venv/bin/python benchmarks/bench_grpo.py --size full         # GPU only: Qwen2-Audio-7B shapes, RANDOM weights,
                                                                  # 4-bit QLoRA, G=6, 256 tokens (paper profile)

Modes (each a fresh model with the same seed, interleaved over --repeats, best median kept):
  plain     cache_audio=False, cache_features=False (what TRL does: G encodes per prompt per forward)
  features  only the per-group mel feature dedupe        encoder  only the audio-encoder output cache
  cached    both (the default of EmoGRPOConfig)
Parts are inclusive wall times per step (the audio encoder runs inside generation and the log-prob forwards):
features (audio load + mel + tokenise), audio_encoder, generation, logps_nograd (old/reference), logps_grad (loss
forward), backward. Appends one row per mode to results/benchmarks/grpo.csv with the machine's description.

--size full never downloads: it builds Qwen2AudioForConditionalGeneration from a config with the real sizes
(verified against copies of the hub config of Qwen/Qwen2-Audio-7B-Instruct) and random weights, saves it once
under cache/models/, and loads it through the kit's own loader (4-bit nf4, LoRA, gradient checkpointing, as in
params/paper.yaml). Random weights cost the same memory and time as the real ones. The tokenizer is the tiny
model's (no hub), so text prompts tokenise into different ids; audio tokens (25 per second) are the same.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emorl_lib.infra.paths import repo_root

TARGET_GIB = 15.0  # the paper profile should fit a 16 GB GPU (T4, V100-16G)

# Qwen2-Audio-7B-Instruct's config.json (audio encoder = Whisper-large-v3 encoder; text = Qwen2-7B).
FULL_AUDIO = {"model_type": "qwen2_audio_encoder", "d_model": 1280, "encoder_layers": 32,
              "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "num_mel_bins": 128,
              "max_source_positions": 1500, "activation_function": "gelu", "scale_embedding": False}
FULL_TEXT = {"model_type": "qwen2", "vocab_size": 156032, "hidden_size": 4096, "intermediate_size": 11008,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "max_position_embeddings": 8192, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
             "tie_word_embeddings": False}
MODES = {"plain": (False, False), "features": (False, True), "encoder": (True, False), "cached": (True, True)}


def build_random_full(models_dir: Path) -> Path:
    """Qwen2-Audio-7B shapes with random weights (bf16), saved once; GPU only (8.4B parameters)."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    from emorl_lib.training.backbones import (
        TinyModelConfig,
        _build_tiny_tokenizer,
        chat_template,
    )

    out = models_dir / "random-qwen2-audio-7b-shapes"
    if (out / "config.json").exists():
        return out
    tok = _build_tiny_tokenizer(TinyModelConfig(max_position_embeddings=FULL_TEXT["max_position_embeddings"]))
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
                                 padding_value=0.0, return_attention_mask=True)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2AudioConfig(audio_config=FULL_AUDIO,
                              text_config={**FULL_TEXT, "eos_token_id": eos, "pad_token_id": tok.pad_token_id,
                                           "bos_token_id": None},
                              audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            torch.manual_seed(0)
            model = Qwen2AudioForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(eos_token_id=[eos, tok.pad_token_id], pad_token_id=tok.pad_token_id,
                                               do_sample=False, max_new_tokens=256)
    tmp = Path(tempfile.mkdtemp(dir=models_dir, prefix=".random-full."))
    model.save_pretrained(tmp, max_shard_size="4GB")
    Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=chat_template()).save_pretrained(tmp)
    del model
    torch.cuda.empty_cache()
    tmp.rename(out)
    return out


def tone_clips(folder: Path, n: int, seconds: float) -> list[str]:
    """n distinct 16 kHz tones (different pitch and length), as GRPO prompts' audio."""
    import soundfile as sf

    sr, out = 16000, []
    for i in range(n):
        t = np.arange(int((seconds + 0.1 * (i % 5)) * sr)) / sr
        x = (0.3 * np.sin(2 * np.pi * (120 + 37 * i) * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype("float32")
        p = folder / f"tone{i}.wav"
        sf.write(p, x, sr)
        out.append(str(p))
    return out


def run_mode(mode: str, prof, wavs: list[str], condition: str, workdir: Path, warmup: int) -> dict:
    """Train warmup + steps GRPO steps in one mode; per-step means of every part over the measured steps."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback, set_seed

    from emorl_lib.data.labels import FOUR_CLASS
    from emorl_lib.infra.perf import Stopwatch, peak_memory, reset_peak_memory
    from emorl_lib.method.prompts import build_messages
    from emorl_lib.training.backbones import load_backbone
    from emorl_lib.training.grpo import AudioGRPOTrainer, find_audio_tower, reward_functions
    from emorl_lib.training.runs import trainer_config

    cache_audio, cache_features = MODES[mode]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    reset_peak_memory()
    funcs, weights = reward_functions(prof.section("reward"), condition, "eswr")
    args = trainer_config(prof, "grpo", output_dir=str(workdir / mode), reward_weights=weights)
    set_seed(args.seed)
    bb = load_backbone(prof.section("backbone"), prof.paths, trainable=True)
    pcfg = prof.section("prompt")
    cands = list(FOUR_CLASS)
    rows = [{"prompt": build_messages(pcfg, w, cands, condition), "label": cands[i % len(cands)],
             "candidates": cands, "utt_id": f"tone{i}"} for i, w in enumerate(wavs)]
    trainer = AudioGRPOTrainer(model=bb.model, reward_funcs=funcs, processing_class=bb.processor,
                               train_dataset=Dataset.from_list(rows), args=args,
                               cache_audio=cache_audio, cache_features=cache_features)
    sw = Stopwatch()
    sw.wrap(trainer, "_tokenize_prompts", "features")
    tokens = [0]
    gen = trainer._generate_single_turn

    def generation(*a, **k):
        with sw.section("generation"):
            ids, logprobs = gen(*a, **k)
        tokens[0] += sum(len(c) for c in ids)
        return ids, logprobs

    trainer._generate_single_turn = generation
    logps = trainer._get_per_token_logps_and_entropies

    def logprobs(*a, **k):
        with sw.section("logps_grad" if torch.is_grad_enabled() else "logps_nograd"):
            return logps(*a, **k)

    trainer._get_per_token_logps_and_entropies = logprobs
    sw.wrap(trainer.accelerator, "backward", "backward")
    tower, t_enc = find_audio_tower(bb.model), [0.0]

    def enc_pre(m, a):
        from emorl_lib.infra.perf import _sync

        _sync()
        t_enc[0] = time.perf_counter()

    def enc_post(m, a, o):
        from emorl_lib.infra.perf import _sync

        _sync()
        sw.seconds["audio_encoder"] += time.perf_counter() - t_enc[0]
        sw.calls["audio_encoder"] += 1

    hooks = [tower.register_forward_pre_hook(enc_pre), tower.register_forward_hook(enc_post)]
    step_times: list[float] = []

    class Clock(TrainerCallback):
        t = None

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            if state.global_step == warmup:
                sw.reset()
                tokens[0] = 0
                if trainer.encoder_cache is not None:
                    trainer.encoder_cache.encoded = trainer.encoder_cache.served = 0
            elif state.global_step > warmup:
                step_times.append(now - self.t)
            self.t = now

    trainer.add_callback(Clock())
    try:
        trainer.train()
    finally:
        for h in hooks:
            h.remove()
    n = len(step_times)
    row = {"mode": mode, "cache_audio": cache_audio, "cache_features": cache_features, "steps": n,
           "step_s": statistics.median(step_times), "step_s_mean": statistics.mean(step_times)}
    for part in ("features", "audio_encoder", "generation", "logps_nograd", "logps_grad", "backward"):
        row[f"{part}_s"] = sw.seconds.get(part, 0.0) / n
    row["gen_tokens_per_step"] = tokens[0] / n
    row["gen_tokens_per_s"] = tokens[0] / sw.seconds["generation"] if sw.seconds.get("generation") else None
    row["encoder_rows_per_step"] = (trainer.encoder_cache.encoded / n if trainer.encoder_cache is not None
                                    else None)
    row.update(peak_memory())
    del trainer, bb
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--profile", help="default: 'default' (tiny) or 'paper' (full)")
    ap.add_argument("--condition", default="ESR", help="prompt condition (default: ESR, the paper's method)")
    ap.add_argument("--generations", type=int, help="G (default: the profile's grpo.num_generations)")
    ap.add_argument("--completion-length", type=int, help="max completion tokens (default: the profile's)")
    ap.add_argument("--prompts-per-step", type=int, default=1)
    ap.add_argument("--clip-seconds", type=float, default=None, help="default: 2.5 (tiny), 5.0 (full)")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per mode (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats per mode; the best median is kept")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice; on a shared CPU 1 avoids thread contention)")
    ap.add_argument("--modes", default="plain,cached", help=f"comma list of {sorted(MODES)}")
    ap.add_argument("--out", default=str(repo_root() / "results" / "benchmarks" / "grpo.csv"))
    a = ap.parse_args(argv)

    import torch

    from emorl_lib.infra.config import load_profile
    from emorl_lib.infra.perf import (
        append_benchmark_row,
        load_average,
        machine_description,
    )

    if a.threads:
        torch.set_num_threads(a.threads)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--modes: unknown {bad}; expected some of {sorted(MODES)}")
    if a.size == "full" and not torch.cuda.is_available():
        raise SystemExit("--size full builds the 8.4B-parameter Qwen2-Audio-7B shapes and trains them in 4-bit "
                         "QLoRA: it needs a CUDA GPU (about 15 GiB). None is visible here; run --size tiny on the CPU.")
    prof = load_profile(a.profile or ("paper" if a.size == "full" else "default"))
    paths = prof.paths.ensure()
    g = a.generations or prof.section("grpo").num_generations
    grpo = {"num_generations": g, "per_device_train_batch_size": a.prompts_per_step * g,
            "gradient_accumulation_steps": 1, "max_steps": a.warmup + a.steps, "save_steps": 10**6, "report_to": [],
            "log_completions_every": 0, "max_train_prompts": None, "logging_steps": 1}
    if a.completion_length:
        grpo["max_completion_length"] = a.completion_length
    over: dict = {"grpo": grpo}
    if a.size == "full":
        over["backbone"] = {"name": "qwen2-audio-7b-instruct", "path": str(build_random_full(paths.models))}
    prof = prof.with_overrides(over)
    bcfg, s = prof.section("backbone"), prof.section("grpo")
    condition = a.condition
    clip_s = a.clip_seconds or (5.0 if a.size == "full" else 2.5)
    load_before = load_average()
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as tmp:
        wavs = tone_clips(Path(tmp), max(8, a.prompts_per_step * (a.warmup + a.steps)), clip_s)
        for _ in range(a.repeats):
            for m in modes:
                r = run_mode(m, prof, wavs, condition, Path(tmp), a.warmup)
                if m not in best or r["step_s"] < best[m]["step_s"]:
                    best[m] = r
    common = {"machine": machine_description(), "load_avg_before": load_before, "load_avg_after": load_average(),
              "size": a.size, "backbone": bcfg.name, "dtype": bcfg.dtype, "load_in_4bit": bcfg.load_in_4bit,
              "gradient_checkpointing": bcfg.gradient_checkpointing, "condition": condition,
              "num_generations": s.num_generations, "max_completion_length": s.max_completion_length,
              "prompts_per_step": a.prompts_per_step, "beta": s.beta, "num_iterations": s.num_iterations,
              "clip_seconds": clip_s, "repeats": a.repeats,
              "threads": torch.get_num_threads()}
    rows = []
    plain = best.get("plain")
    for m in modes:
        r = {**common, **best[m]}
        r["speedup_vs_plain"] = plain["step_s"] / r["step_s"] if plain else None
        if torch.cuda.is_available():
            r["target_gib"] = TARGET_GIB
            r["fits_target"] = r["gpu_reserved_peak_mib"] / 1024 <= TARGET_GIB
        append_benchmark_row(Path(a.out), r)
        rows.append(r)
    _print(rows)
    print(f"appended {len(rows)} rows to {a.out}")
    return rows


def _print(rows: list[dict]) -> None:
    cols = ["mode", "step_s", "features_s", "audio_encoder_s", "generation_s", "logps_nograd_s", "logps_grad_s",
            "backward_s", "gen_tokens_per_s", "encoder_rows_per_step", "rss_peak_mib", "gpu_allocated_peak_mib",
            "gpu_reserved_peak_mib", "speedup_vs_plain"]
    cols = [c for c in cols if any(r.get(c) is not None for r in rows)]
    print(rows[0]["machine"], "| load avg", rows[0]["load_avg_before"], "->", rows[0]["load_avg_after"])
    print(f"G={rows[0]['num_generations']} completion<={rows[0]['max_completion_length']} "
          f"prompts/step={rows[0]['prompts_per_step']} backbone={rows[0]['backbone']} 4bit={rows[0]['load_in_4bit']}")
    print("  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>14.3f}" if isinstance(r.get(c), float) else f"{str(r.get(c)):>14}" for c in cols))


if __name__ == "__main__":
    main(sys.argv[1:])

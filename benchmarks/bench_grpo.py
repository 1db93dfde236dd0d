"""GRPO step time and its parts, tokens per second and peak memory, plain path vs the exact caches, in one run.

    .venv/bin/python benchmarks/bench_grpo.py                     # tiny model on the CPU (default profile)
    .venv/bin/python benchmarks/bench_grpo.py --size full         # GPU only: Qwen2-Audio-7B shapes, RANDOM weights,
                                                                  # 4-bit QLoRA, G=6, 256 tokens (paper profile)
    .venv/bin/python benchmarks/bench_grpo.py --size rehearsal    # the --size full code path with shrunk shapes (CPU)

Modes (each a fresh model with the same seed, interleaved over --repeats, best median kept):
  plain     cache_audio=False, cache_features=False (what TRL does: G encodes per prompt per forward)
  features  only the per-group mel feature dedupe        encoder  only the audio-encoder output cache
  cached    both (the default of EmoGRPOConfig)
Parts are inclusive wall times per step (the audio encoder runs inside generation and the log-prob forwards):
features (audio load + mel + tokenise), audio_encoder, generation, logps_nograd (old/reference), logps_grad (loss
forward), backward. Peak GPU memory is reported for loading and for training separately (a 16 GB GPU must survive
both). Every log-prob tensor, loss and gradient norm is checked for NaN/inf (columns nonfinite_*). Appends one row
per mode to results/benchmarks/grpo.csv with the machine's description and the pinned packages' versions.

--size full never downloads: it uses the `qwen2-audio-7b-random` backbone (emorl_lib.model.backbones: the real
Qwen2-Audio-7B-Instruct sizes, seeded random bf16 weights, built once into cache/models/) and loads it through the
kit's own loader (4-bit nf4, LoRA, gradient checkpointing, as in params/paper.yaml). Random weights cost the same
memory and time per token as the real ones, but rarely emit the end token, so completions run to the full length
(the worst case), and they lack the real model's activation outliers (a clean fp16 run is no proof for real weights).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emorl_lib.infra.paths import repo_root

TARGET_GIB = 15.0  # the paper profile should fit a 16 GB GPU (T4, V100-16G)
MODES = {"plain": (False, False), "features": (False, True), "encoder": (True, False), "cached": (True, True)}
# --rollout: the generation paths of emorl_lib/model/rollout.py, as EmoGRPOConfig's rollout_* settings
ROLLOUTS = {
    "plain": {"rollout_shared_prefix": False, "rollout_compile": False, "rollout_copy": False},  # TRL's generate
    "shared": {"rollout_shared_prefix": True, "rollout_compile": False, "rollout_copy": False},  # the default
    "shared+compiled": {"rollout_shared_prefix": True, "rollout_compile": True, "rollout_copy": False},
    "shared+copy": {"rollout_shared_prefix": True, "rollout_compile": False, "rollout_copy": True},
    "shared+copy+compiled": {"rollout_shared_prefix": True, "rollout_compile": True, "rollout_copy": True},
}
# --size rehearsal: the random backbone shrunk to run the --size full path on a CPU in seconds (real vocabulary, so
# generated ids beyond the tiny tokenizer's are exercised too)
REHEARSAL_SHAPES = {"audio": {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128},
                    "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 4}}


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


def _nonfinite(t) -> int:
    import torch

    return int((~torch.isfinite(t.detach().float())).sum().item()) if t is not None else 0


def run_mode(mode: str, prof, wavs: list[str], condition: str, workdir: Path, warmup: int,
             trace: Path | None = None, rewards: str = "profile", rollout: str = "shared",
             full_length: bool = True) -> dict:
    """Load a fresh model and train warmup + steps GRPO steps in one mode; per-step means of every part over the
    measured steps, and peak memory of the load and of training apart."""
    import torch
    from transformers import set_seed

    from emorl_lib.infra.perf import GPUMemorySampler, peak_memory, reset_peak_memory
    from emorl_lib.model.backbones import load_backbone

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    sampler = GPUMemorySampler(trace) if trace else contextlib.nullcontext()
    with sampler:
        if trace:
            sampler.label = "load"
        reset_peak_memory()
        set_seed(prof.values("grpo").seed)
        t0 = time.perf_counter()
        bb = load_backbone(prof.section("backbone"), prof.paths, trainable=True)
        load_s = time.perf_counter() - t0
        load_mem = {f"load_{k}": v for k, v in peak_memory().items() if k.startswith("gpu_")}
        after_load = torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None
        reset_peak_memory()
        if trace:
            sampler.label = "train"
        row = _train(mode, bb, prof, wavs, condition, workdir, warmup, rewards, rollout, full_length)
    row.update({"model_load_s": load_s, "gpu_allocated_after_load_mib": after_load, **load_mem})
    if trace:
        row["memory_trace"] = trace.name
    del bb
    return row


def grpo_args(prof, output_dir: Path, **runtime):
    """The profile's `grpo` section as the trainer's config (as a run's setup builds it), for a benchmark run."""
    from emorl_lib.infra.config import from_dict
    from emorl_lib.training.grpo import EmoGRPOConfig
    from emorl_lib.training.runs import precision_flags

    return from_dict(EmoGRPOConfig, prof.sections.get("grpo") or {}, "grpo",
                     runtime={"output_dir": str(output_dir), **precision_flags(prof.section("backbone").dtype),
                              **runtime})


class RandomReward:
    """Seeded uniform rewards: with random weights every real reward is 0, every advantage 0 and every gradient 0;
    these make the backward pass carry real gradients (and the LoRA weights move), so fp16 gradients are exercised."""

    __name__ = "random_reward"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.rng.uniform(0.0, 1.0, len(completions)).tolist()


def _train(mode, bb, prof, wavs, condition, workdir, warmup, rewards: str = "profile", rollout: str = "shared",
           full_length: bool = True) -> dict:
    """warmup + steps GRPO steps on a loaded backbone, every part timed and every log-prob checked. `full_length`:
    every completion runs to max_completion_length (min_new_tokens), so that every path decodes the same steps."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from emorl_lib.data.labels import FOUR_CLASS
    from emorl_lib.infra.perf import Stopwatch, peak_memory
    from emorl_lib.method.prompts import build_messages
    from emorl_lib.training.grpo import (
        AudioGRPOTrainer,
        find_audio_tower,
        reward_functions,
    )
    cache_audio, cache_features = MODES[mode]
    funcs, weights = reward_functions(prof.section("reward"), condition, "eswr")
    if rewards == "random":
        funcs, weights = [RandomReward()], [1.0]
    args = grpo_args(prof, workdir / f"{mode}_{rollout}", reward_weights=weights, **ROLLOUTS[rollout])
    pcfg = prof.section("prompt")
    cands = list(FOUR_CLASS)
    rows = [{"prompt": build_messages(pcfg, w, cands, condition), "label": cands[i % len(cands)],
             "candidates": cands, "utt_id": f"tone{i}"} for i, w in enumerate(wavs)]
    trainer = AudioGRPOTrainer(model=bb.model, reward_funcs=funcs, processing_class=bb.processor,
                               train_dataset=Dataset.from_list(rows), args=args,
                               cache_audio=cache_audio, cache_features=cache_features)
    if full_length:
        trainer.generation_config.min_new_tokens = args.max_completion_length
    trainable_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in bb.model.parameters() if p.requires_grad})
    sw = Stopwatch()
    sw.wrap(trainer, "_tokenize_prompts", "features")
    tokens = [0]
    bad = {"logps": 0, "logps_values": 0}
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
            out = logps(*a, **k)
        n = _nonfinite(out[0])
        bad["logps"] += n
        bad["logps_values"] += out[0].numel()
        return out

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
    enc_cache = trainer.encoder_cache

    class Clock(TrainerCallback):
        t = None

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            if state.global_step == warmup:
                sw.reset()
                tokens[0] = 0
                if enc_cache is not None:
                    enc_cache.encoded = enc_cache.served = 0
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
    row = {"mode": mode, "rollout": rollout, "full_length": full_length, "cache_audio": cache_audio,
           "cache_features": cache_features, "rows_per_generate": args.rollout_rows_per_generate,
           "trainable_dtypes": "/".join(trainable_dtypes), "steps": n,
           "step_s": statistics.median(step_times), "step_s_mean": statistics.mean(step_times)}
    for part in ("features", "audio_encoder", "generation", "logps_nograd", "logps_grad", "backward"):
        row[f"{part}_s"] = sw.seconds.get(part, 0.0) / n
    row["gen_tokens_per_step"] = tokens[0] / n
    row["gen_tokens_per_s"] = tokens[0] / sw.seconds["generation"] if sw.seconds.get("generation") else None
    calls = -(-args.per_device_train_batch_size // (args.rollout_rows_per_generate or args.per_device_train_batch_size))
    # with full-length completions a generate call decodes max_completion_length steps (prefill included)
    row["generation_ms_per_decoding_step"] = (1000 * row["generation_s"] / (calls * args.max_completion_length)
                                              if full_length else None)
    row["encoder_rows_per_step"] = (trainer.encoder_cache.encoded / n if trainer.encoder_cache is not None
                                    else None)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    losses = [float(h["loss"]) for h in logged]
    norms = [float(h["grad_norm"]) for h in logged if h.get("grad_norm") is not None]
    row.update({"nonfinite_logps": bad["logps"], "logps_checked": bad["logps_values"],
                "nonfinite_loss_steps": sum(not math.isfinite(x) for x in losses),
                "nonfinite_grad_norm_steps": sum(not math.isfinite(x) for x in norms), "logged_steps": len(logged),
                "loss_last": losses[-1] if losses else None, "grad_norm_last": norms[-1] if norms else None})
    row.update(peak_memory())
    del trainer
    return row


def planned(prof, rollout: str, clip_s: float, condition: str) -> dict:
    """The planner's estimate of the same step beside the measured one (emorl_lib/plan.py): peak allocated memory
    (GPU terms; on the CPU compare with the RSS growth only roughly), and on a known GPU the step time, its
    generation and a decoding step."""
    from emorl_lib import plan as P

    gpu = P.this_gpu()
    p = prof.with_overrides({"grpo": ROLLOUTS[rollout]})
    shapes = P.model_shapes(p.section("backbone"), p.paths)
    st = P.steps_of(p, shapes, gpu, clip_s).get("grpo")
    if st is None:
        return {}
    out = {"planned_peak_gib": P.memory(shapes, st).peak / 2**30}
    t = P.step_time(shapes, st, gpu) if gpu is not None else None
    if t is not None:
        out.update(planned_step_s=t.step_s, planned_generation_s=t.generation_s,
                   planned_decoding_ms=1000 * t.decode_step_s, planned_gpu=gpu.name)
    return out


def count_ops(prof, rollouts: list[str], condition: str, clip_s: float) -> list[dict]:
    """Tensor operations (aten, views excluded) per decoding step of each rollout path, through the kit's trainer
    (TRL's `_generate`): the difference between k + 1 and k generated tokens, on the profile's backbone with 2 and
    with 4 decoder layers, which splits it into ops per decoder layer and ops outside them. Each is at least one
    kernel launch and its host work on a GPU; plan.py's HOST_SECONDS_PER_OP and DECODE_OPS_* come from here."""
    import copy

    import torch
    from datasets import Dataset
    from torch.utils._python_dispatch import TorchDispatchMode

    from emorl_lib.data.labels import FOUR_CLASS
    from emorl_lib.method.prompts import build_messages
    from emorl_lib.model.backbones import load_backbone
    from emorl_lib.training.grpo import AudioGRPOTrainer

    depth = [0]  # > 0 inside the model's forward

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = self.outside = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not getattr(func, "is_view", False):
                self.n += 1
                self.outside += depth[0] == 0
            return func(*args, **(kwargs or {}))

    import dataclasses

    bcfg = prof.section("backbone")
    random = dataclasses.asdict(bcfg.random) if bcfg.name.endswith("random") else None
    eager = [ro for ro in rollouts if "compiled" not in ro]  # a compiled step's ops run inside one graph
    if len(eager) < len(rollouts):
        print("--count-ops: compiled paths skipped (their decoding step is one CUDA graph on a GPU)")
    rollouts = eager
    counts: dict[tuple[str, int], tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ops_") as tmp:
        wavs = tone_clips(Path(tmp), 2, clip_s)
        cands = list(FOUR_CLASS)
        for layers in (2, 4):
            if random is not None:
                text = {**REHEARSAL_SHAPES["text"], **(random.get("text") or {}), "num_hidden_layers": layers}
                p = prof.with_overrides({"backbone": {"random": {**random, "text": text}}})
            else:
                p = prof.with_overrides({"backbone": {"tiny": {"num_hidden_layers": layers}}})
            bb = load_backbone(p.section("backbone"), p.paths, trainable=True)
            hf = bb.model.get_base_model() if hasattr(bb.model, "get_base_model") else bb.model
            hf.register_forward_pre_hook(lambda m, a: depth.__setitem__(0, depth[0] + 1))
            hf.register_forward_hook(lambda m, a, o: depth.__setitem__(0, depth[0] - 1))
            for ro in rollouts:
                args = grpo_args(p, Path(tmp) / ro, max_steps=1, beta=0.0, **ROLLOUTS[ro])  # no reference adapter
                rows = [{"prompt": build_messages(p.section("prompt"), w, cands, condition), "label": cands[0],
                         "candidates": cands, "utt_id": f"t{i}"} for i, w in enumerate(wavs)]
                tr = AudioGRPOTrainer(model=bb.model, reward_funcs=[lambda completions, **k: [0.0] * len(completions)],
                                      processing_class=bb.processor, train_dataset=Dataset.from_list(rows), args=args)
                prompts = [r["prompt"] for r in rows for _ in range(args.num_generations)]
                ops = []
                for k in (4, 5):
                    tr.generation_config.max_new_tokens = tr.generation_config.min_new_tokens = k
                    tr._generate(copy.deepcopy(prompts))  # warm (a compiled path compiles here)
                    with torch.no_grad(), Count() as c:
                        tr._generate(copy.deepcopy(prompts))
                    ops.append((c.n, c.outside))
                counts[ro, layers] = (ops[1][0] - ops[0][0], ops[1][1] - ops[0][1])
                del tr
            del bb
            gc.collect()
    out = []
    for ro in rollouts:
        (two, loop), (four, _) = counts[ro, 2], counts[ro, 4]
        per_layer = (four - two) / 2
        outside = two - 2 * per_layer
        out.append({"rollout": ro, "ops_per_step_2_layers": two, "ops_per_step_4_layers": four,
                    "ops_per_decoder_layer": per_layer, "ops_outside_layers": outside,
                    "ops_outside_the_forward": loop})
        print(f"{ro:<22} ops per decoding step: {per_layer:g} per decoder layer + {outside:g} outside the layers, "
              f"of which {loop} outside the model's forward (generate's loop: what a compiled step leaves eager); "
              f"2 layers: {two}, 4 layers: {four}")
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "full", "rehearsal"], default="tiny",
                    help="tiny model (CPU), the random 7B-shaped backbone (GPU), or the latter shrunk (CPU)")
    ap.add_argument("--profile", help="default: 'default' (tiny) or 'paper' (full, rehearsal)")
    ap.add_argument("--condition", default="ESR", help="prompt condition (default: ESR, the paper's method)")
    ap.add_argument("--generations", type=int, help="G (default: the profile's grpo.num_generations)")
    ap.add_argument("--completion-length", type=int, help="max completion tokens (default: the profile's)")
    ap.add_argument("--prompts-per-step", type=int, default=1)
    ap.add_argument("--clip-seconds", type=float, default=None, help="default: 2.5 (tiny), 5.0 (full)")
    ap.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"],
                    help="backbone dtype and 4-bit compute dtype (default: the profile's; float16 = what a T4 uses)")
    ap.add_argument("--fp32-frozen-weights", choices=["true", "false"],
                    help="backbone.fp32_frozen_weights (default: the profile's)")
    ap.add_argument("--logps-chunk", type=int,
                    help="tokens per chunk of TRL's fused log-prob head (default: TRL's constant)")
    ap.add_argument("--rewards", choices=["profile", "random"], default="profile",
                    help="random: seeded uniform rewards, so that gradients are not all zero with random weights")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per mode (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats per mode; the best median is kept")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice; on a shared CPU 1 avoids thread contention)")
    ap.add_argument("--modes", default="plain,cached", help=f"comma list of {sorted(MODES)}")
    ap.add_argument("--rollout", default="shared",
                    help=f"comma list of generation paths {sorted(ROLLOUTS)} (each mode runs each path)")
    ap.add_argument("--rows-per-generate", type=int, help="grpo.rollout_rows_per_generate (whole groups)")
    ap.add_argument("--free-length", action="store_true",
                    help="let completions stop at the end token (default: every one runs to the full length, so "
                         "that every path decodes the same steps)")
    ap.add_argument("--count-ops", action="store_true",
                    help="instead of timing: tensor operations per decoding step of each --rollout path, per "
                         "decoder layer and outside the layers (the planner's host-time constants, plan.py)")
    ap.add_argument("--tag", default="", help="a label stored in every row (and the memory traces' names)")
    ap.add_argument("--trace-dir", help="write GPU memory over time (every 0.5 s) to <dir>/grpo_<tag>_<mode>.csv")
    ap.add_argument("--out", default=str(repo_root() / "results" / "benchmarks" / "grpo.csv"))
    a = ap.parse_args(argv)

    import torch

    from emorl_lib.profile import load_profile
    from emorl_lib.infra.perf import (
        append_benchmark_row,
        load_average,
        machine_description,
        package_versions,
    )
    from emorl_lib.model.backbones import resolve_dtype

    if a.threads:
        torch.set_num_threads(a.threads)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--modes: unknown {bad}; expected some of {sorted(MODES)}")
    rollouts = [m.strip() for m in a.rollout.split(",") if m.strip()]
    bad = [m for m in rollouts if m not in ROLLOUTS]
    if bad:
        raise SystemExit(f"--rollout: unknown {bad}; expected some of {sorted(ROLLOUTS)}")
    if a.size == "full" and not torch.cuda.is_available():
        raise SystemExit("--size full builds the 8.4B-parameter Qwen2-Audio-7B shapes and trains them in 4-bit "
                         "QLoRA: it needs a CUDA GPU (about 15 GiB). None is visible here; run --size tiny or "
                         "--size rehearsal on the CPU.")
    prof = load_profile(a.profile or ("default" if a.size == "tiny" else "paper"))
    prof.paths.ensure()
    g = a.generations or prof.values("grpo").num_generations
    grpo = {"num_generations": g, "per_device_train_batch_size": a.prompts_per_step * g,
            "gradient_accumulation_steps": 1, "max_steps": a.warmup + a.steps, "save_steps": 10**6, "report_to": [],
            "log_completions_every": 0, "max_utterances": None, "logging_steps": 1}
    if a.completion_length:
        grpo["max_completion_length"] = a.completion_length
    if a.rows_per_generate:
        grpo["rollout_rows_per_generate"] = a.rows_per_generate
    backbone: dict = {}
    if a.size != "tiny":
        backbone.update(name="qwen2-audio-7b-random", path=None)
        if a.size == "rehearsal":
            backbone["random"] = REHEARSAL_SHAPES
    if a.dtype:
        backbone["dtype"] = a.dtype
    if a.fp32_frozen_weights:
        backbone["fp32_frozen_weights"] = a.fp32_frozen_weights == "true"
    prof = prof.with_overrides({"grpo": grpo, **({"backbone": backbone} if backbone else {})})
    bcfg, s = prof.section("backbone"), prof.values("grpo")
    import trl.trainer.utils as trl_utils

    if a.logps_chunk:  # a module constant TRL reads at each call
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = a.logps_chunk
    logps_chunk = trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE
    condition = a.condition
    clip_s = a.clip_seconds or (2.5 if a.size == "tiny" else 5.0)
    if a.count_ops:
        rows = count_ops(prof, rollouts, condition, clip_s)
        bcfg = prof.section("backbone")
        ops_csv = Path(a.out).with_name("grpo_ops.csv")
        for r in rows:
            append_benchmark_row(ops_csv, {"machine": machine_description(), "versions": package_versions(),
                                           "tag": a.tag, "size": a.size, "backbone": bcfg.name,
                                           "dtype": str(resolve_dtype(bcfg.dtype)).replace("torch.", ""),
                                           "load_in_4bit": bcfg.load_in_4bit,
                                           "fp32_frozen_weights": bcfg.fp32_frozen_weights, **r})
        print(f"appended {len(rows)} rows to {ops_csv}")
        return rows
    load_before = load_average()
    trace_dir = Path(a.trace_dir) if a.trace_dir else None
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as tmp:
        wavs = tone_clips(Path(tmp), max(8, a.prompts_per_step * (a.warmup + a.steps)), clip_s)
        for rep in range(a.repeats):
            for m in modes:
                for ro in rollouts:
                    trace = trace_dir / f"grpo_{a.tag or a.size}_{m}_{ro}_{rep}.csv" if trace_dir else None
                    r = run_mode(m, prof, wavs, condition, Path(tmp), a.warmup, trace, a.rewards, ro,
                                 not a.free_length)
                    if (m, ro) not in best or r["step_s"] < best[m, ro]["step_s"]:
                        best[m, ro] = r
    dtype = resolve_dtype(bcfg.dtype)
    common = {"machine": machine_description(), "versions": package_versions(), "tag": a.tag,
              "load_avg_before": load_before, "load_avg_after": load_average(),
              "size": a.size, "backbone": bcfg.name, "dtype": str(dtype).replace("torch.", ""),
              "load_in_4bit": bcfg.load_in_4bit, "bnb_quant_type": bcfg.bnb_quant_type if bcfg.load_in_4bit else None,
              "fp32_frozen_weights": bcfg.fp32_frozen_weights, "lora_r": bcfg.lora.r if bcfg.lora.enabled else None,
              "gradient_checkpointing": bcfg.gradient_checkpointing, "condition": condition,
              "num_generations": s.num_generations, "max_completion_length": s.max_completion_length,
              "prompts_per_step": a.prompts_per_step, "batch_size": s.per_device_train_batch_size,
              "beta": s.beta, "num_iterations": s.num_iterations, "logps_chunk": logps_chunk, "rewards": a.rewards,
              "clip_seconds": clip_s, "repeats": a.repeats, "threads": torch.get_num_threads()}
    rows = []
    for key in best:
        r = {**common, **best[key], **planned(prof, key[1], clip_s, condition)}
        plain = best.get(("plain", "plain"))
        r["speedup_vs_plain"] = plain["step_s"] / r["step_s"] if plain else None
        base = best.get((key[0], "plain"))  # the same caches, TRL's own generate
        r["generation_speedup_vs_plain_rollout"] = base["generation_s"] / r["generation_s"] if base else None
        if torch.cuda.is_available():
            r["gpu_allocated_peak_gib"] = r["gpu_allocated_peak_mib"] / 1024
            r["gpu_reserved_peak_gib"] = r["gpu_reserved_peak_mib"] / 1024
            r["load_gpu_reserved_peak_gib"] = r["load_gpu_reserved_peak_mib"] / 1024
            r["target_gib"] = TARGET_GIB
            # a 16 GB GPU must hold both the load's and the training's peak
            r["fits_target"] = max(r["gpu_reserved_peak_gib"], r["load_gpu_reserved_peak_gib"]) <= TARGET_GIB
        append_benchmark_row(Path(a.out), r)
        rows.append(r)
    _print(rows)
    print(f"appended {len(rows)} rows to {a.out}")
    return rows


def _print(rows: list[dict]) -> None:
    cols = ["mode", "rollout", "step_s", "features_s", "audio_encoder_s", "generation_s",
            "generation_ms_per_decoding_step", "planned_decoding_ms", "generation_speedup_vs_plain_rollout",
            "planned_step_s", "planned_peak_gib", "logps_nograd_s", "logps_grad_s",
            "backward_s", "gen_tokens_per_s", "encoder_rows_per_step", "rss_peak_mib", "model_load_s",
            "gpu_allocated_after_load_mib", "load_gpu_reserved_peak_mib", "gpu_allocated_peak_mib",
            "gpu_reserved_peak_mib", "nonfinite_logps", "nonfinite_loss_steps", "nonfinite_grad_norm_steps",
            "speedup_vs_plain"]
    cols = [c for c in cols if any(r.get(c) is not None for r in rows)]
    r0 = rows[0]
    print(r0["machine"], "| load avg", r0["load_avg_before"], "->", r0["load_avg_after"])
    print(r0["versions"])
    print(f"[{r0['tag']}] G={r0['num_generations']} completion<={r0['max_completion_length']} "
          f"prompts/step={r0['prompts_per_step']} backbone={r0['backbone']} dtype={r0['dtype']} "
          f"4bit={r0['load_in_4bit']} fp32_frozen={r0['fp32_frozen_weights']} logps_chunk={r0['logps_chunk']}")
    for r in rows:
        print("  " + "  ".join(f"{c}={r[c]:.3f}" if isinstance(r.get(c), float) else f"{c}={r.get(c)}"
                               for c in cols))


if __name__ == "__main__":
    main(sys.argv[1:])

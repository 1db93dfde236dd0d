"""Memory and time planner (`emorl plan`): does a profile's GRPO and SFT step fit a GPU, and how long does it take?

The backbone is built from its configuration on the meta device (no weights, no download: for
Qwen2-Audio-7B-Instruct the shapes of its hub config.json, `backbones.QWEN2_AUDIO_7B_*`) and its parameters are
counted by part. The peak memory of one process is then the sum of the terms below, each written out with its formula
(`Term.formula`), and the step time follows from the GPU's published FLOP rate and memory bandwidth (`GPUS`).

Notation (per process): L decoder layers, h hidden size, i MLP width, V vocabulary, kv = key/value heads x head size,
r LoRA rank; b sequences in a micro-batch, P prompt tokens (text + audio), T completion (or SFT target) tokens,
S = P + T; n_g sequences generated at once (TRL's generation batch of one process); e bytes per element:
e_w of frozen 16-bit weights, e_a of activations, e_t of trainable weights, e_l of the logits.

What the terms follow (the code they describe, in the kit's pinned versions):
- peft.prepare_model_for_kbit_training stores every frozen non-4-bit weight (embeddings, lm_head, audio encoder,
  projector, norms) in fp32 unless `backbone.fp32_frozen_weights` is false; then Qwen2's RMSNorm (fp32 weight)
  turns the residual stream, and so the KV cache and saved activations, into fp32 too (e_a = 4).
- TRL 1.16 generates for `per_device_train_batch_size x steps_per_generation` sequences at once per process
  (`steps_per_generation` defaults to `gradient_accumulation_steps`), and Qwen2-Audio's forward has no
  `logits_to_keep`, so generation's first forward computes logits over every prompt position (n_g x P x V).
- TRL's log-prob forwards go through its fused, chunked LM head (tiles of 4096 tokens x 32768 vocabulary entries),
  never the whole logits; transformers' SFT forward computes the whole (b, S, V) logits and their cross-entropy.
- Every clip is padded to the feature extractor's window (30 s for the real model) before the audio encoder; the
  language model sees 25 audio tokens per second of actual audio.
- 4-bit NF4 stores 0.5 byte per weight plus one absmax per 64 weights (1 byte with double quantisation, which adds one
  fp32 per 256 absmax values; 4 bytes without) (bitsandbytes, QLoRA: Dettmers et al. 2023, arXiv 2305.14314).

Validated against measurements: on the CPU by tests/test_plan.py (torch's allocations and the process RSS of a real
SFT and GRPO run of the tiny model and of a mid-size random model of the same architecture), on a GPU against
benchmarks/results/ (torch.cuda.max_memory_allocated); see the README's Performance section.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from .infra.log import get_logger

log = get_logger(__name__)

GiB = 2**30


# ----------------------------------------------------------------------------------------------------------------
# GPUs: published figures
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GPU:
    """A GPU as the planner sees it: memory a process can use, dense 16-bit tensor-core FLOP rate, bandwidth."""

    name: str
    memory_gib: float
    tflops: float | None  # dense fp16/bf16 tensor-core peak (no sparsity), TFLOP/s
    bandwidth_gbs: float | None  # memory bandwidth, GB/s
    bf16: bool  # whether `backbone.dtype: auto` picks bf16 (else fp16)
    source: str = ""


GPUS: dict[str, GPU] = {
    # NVIDIA T4 Tensor Core GPU datasheet: 16 GB GDDR6, 320+ GB/s, FP16 mixed precision 65 TFLOPS; no bf16.
    # https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf
    # With ECC on (Colab, Kaggle) a process sees 15 GiB (nvidia-smi: 15360 MiB).
    "t4": GPU("NVIDIA T4 16 GB", 15.0, 65.0, 320.0, False, "NVIDIA T4 datasheet"),
    # NVIDIA A100 Tensor Core GPU datasheet: 40 GB HBM2, 1,555 GB/s, BF16 tensor 312 TFLOPS (624 with sparsity).
    # https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
    "a100-40": GPU("NVIDIA A100 40 GB", 40.0, 312.0, 1555.0, True, "NVIDIA A100 datasheet"),
    # NVIDIA H100 Tensor Core GPU datasheet, SXM: 80 GB HBM3, 3.35 TB/s, BF16 tensor 1,979 TFLOPS with sparsity
    # (989 dense). https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet
    # nvidia-smi reads 81559 MiB on an H100 80GB HBM3 (the kit's measurements, benchmarks/results/).
    "h100": GPU("NVIDIA H100 SXM 80 GB", 79.6, 989.0, 3350.0, True, "NVIDIA H100 datasheet"),
}
# Not in torch's counters: the CUDA context (0.3-0.5 GiB on the kit's H100 measurements), and the caching allocator
# reserves more than it hands out (reserved / allocated peak 1.04-1.08 there). A setting fits when
# allocated x RESERVED_OVER_ALLOCATED + CUDA_CONTEXT_GIB <= the GPU's memory.
CUDA_CONTEXT_GIB = 0.5
RESERVED_OVER_ALLOCATED = 1.08
# Time: a decoding step of transformers' generate with bitsandbytes 4-bit + PEFT LoRA is launch-bound, not
# bandwidth-bound: 25.1 s for 256 steps (98 ms a step for 6 sequences) on an H100 whose bandwidth alone allows ~2 ms
# (benchmarks/results/grpo_full_h100.csv, bf16, fp32 frozen weights). Host work (kernel launches, Python, the
# dispatcher) is counted per tensor operation. `benchmarks/bench_grpo.py --count-ops` counts them through the kit's
# trainer on the paper profile's structure (4-bit nf4 + LoRA on every LLM linear; the counts do not depend on the
# layers' widths): the plain path runs 116 ops per decoder layer and 72 outside them with bf16 compute and fp32 frozen
# weights (92 and 76 with 16-bit frozen weights: fewer casts), so the H100 row gives 0.098 s / (32 x 116 + 72) =
# 26 us per op, taken to be the same on every GPU. The shared prefix leaves a decoding step as it is; the rollout copy
# (plain linears) runs 57 ops per layer (47); a compiled decoding step (one CUDA graph, no graph breaks: tests/
# test_rollout.py) leaves generate's loop eager: 41 ops outside the model's forward.
DECODE_OPS = {  # (fp32 frozen weights) -> path -> (ops per decoder layer, ops outside the layers)
    True: {"plain": (116, 72), "rollout_copy": (57, 72)},
    False: {"plain": (92, 76), "rollout_copy": (47, 76)},
}
HOST_SECONDS_PER_OP = 0.098 / (32 * 116 + 72)
COMPILED_OPS_OUTSIDE = 41
# Achieved share of the peak FLOP rate in the forward/backward passes: 4-bit (dequantise, then matmul) measured 0.15
# on the H100 rows (the reference log-prob forward: ~46 TFLOP in 0.31 s); 16-bit weights: 0.4 (assumed, typical of
# Hugging Face training without fused kernels).
FLOP_SHARE_4BIT = 0.15
FLOP_SHARE_16BIT = 0.4


def gpu_from_arg(value: str | None) -> GPU | None:
    """`t4`, `a100-40`, `h100`, or a memory size in GiB (`24`, `24GiB`): memory only, no FLOP rate."""
    if value is None:
        return None
    key = value.strip().lower()
    if key in GPUS:
        return GPUS[key]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(gib|gb|g)?", key)
    if not m:
        raise ValueError(f"--gpu {value!r}: expected one of {', '.join(GPUS)} or a memory size in GiB (e.g. 24)")
    return GPU(f"a GPU with {float(m.group(1)):g} GiB", float(m.group(1)), None, None, True, "given")


# ----------------------------------------------------------------------------------------------------------------
# The model, counted on the meta device
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Shapes:
    """Parameter counts by part and the sizes the memory terms need."""

    parts: dict[str, int]  # audio encoder, projector, LLM layers, embeddings, lm_head
    quantisable: int  # LLM linear weights 4-bit would quantise (not in backbone.quant_skip_modules)
    lora: int  # LoRA parameters (A and B of every targeted linear)
    lora_r: int
    lora_modules: int  # how many linears LoRA wraps
    modules_to_save: int  # parameters of lora.modules_to_save (trained in full: a trainable copy of each)
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    audio_hidden: int
    audio_layers: int
    audio_ffn: int
    audio_positions: int  # encoder positions of one padded clip (max_source_positions)
    audio_window_s: float  # the padding window: max_source_positions x 2 mel frames / 100 frames per second
    tied: bool = False

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def kv(self) -> int:
        return self.kv_heads * self.head_dim


def model_config(bcfg, paths=None):
    """The backbone's transformers config without weights: a local folder's config.json, else the registry's shapes
    (the real model's from its hub config.json, the random one's from them), else the tiny model's (built once, a
    few MB)."""
    from pathlib import Path

    from transformers import AutoConfig, Qwen2AudioConfig

    from .model import backbones

    if bcfg.path and (Path(bcfg.path) / "config.json").exists():
        return AutoConfig.from_pretrained(bcfg.path)
    if bcfg.name == "qwen2-audio-7b-instruct":
        return Qwen2AudioConfig(audio_config=dict(backbones.QWEN2_AUDIO_7B_AUDIO),
                                text_config=dict(backbones.QWEN2_AUDIO_7B_TEXT))
    if bcfg.name == "qwen2-audio-7b-random":
        audio, text = backbones.random_shapes(bcfg.random)
        return Qwen2AudioConfig(audio_config=audio, text_config=text)
    if paths is None:
        raise ValueError(f"backbone {bcfg.name!r}: its configuration needs the profile's paths")
    return AutoConfig.from_pretrained(backbones.resolve_model_dir(bcfg, paths))


def _lora_targets(model, pattern: str | list[str]) -> list[tuple[str, Any]]:
    """The modules PEFT would wrap: a string is a regex full-matched against module names, a list matches names or
    name suffixes (peft.tuners.tuners_utils.check_target_module_exists)."""
    import torch

    out = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if isinstance(pattern, str):
            ok = re.fullmatch(pattern, name) is not None
        else:
            ok = any(name == t or name.endswith("." + t) for t in pattern)
        if ok:
            out.append((name, module))
    return out


def model_shapes(bcfg, paths=None) -> Shapes:
    """Count the backbone's parameters by part, on the meta device (no memory, no download)."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    config = model_config(bcfg, paths)
    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration(config)
    parts = {"audio encoder": 0, "projector": 0, "LLM layers": 0, "embeddings": 0, "lm_head": 0}
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if "audio_tower" in name:
            parts["audio encoder"] += p.numel()
        elif "multi_modal_projector" in name:
            parts["projector"] += p.numel()
        elif "embed_tokens" in name:
            parts["embeddings"] += p.numel()
        elif name.startswith("lm_head"):
            parts["lm_head"] += p.numel()
        else:
            parts["LLM layers"] += p.numel()
    skip = list(bcfg.quant_skip_modules)
    quantisable = sum(m.weight.numel() for name, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and "language_model" in name
                      and not any(name == s or name.startswith(s + ".") or name.endswith(s) for s in skip))
    targets = _lora_targets(model, bcfg.lora.target_modules) if bcfg.lora.enabled else []
    lora = sum(bcfg.lora.r * (m.in_features + m.out_features) for _, m in targets)
    mts = 0
    for wanted in bcfg.lora.modules_to_save if bcfg.lora.enabled else []:
        for name, module in model.named_modules():
            if name == wanted or name.endswith("." + wanted):
                mts += sum(p.numel() for p in module.parameters())
    text, audio = config.text_config, config.audio_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return Shapes(
        parts=parts, quantisable=quantisable, lora=lora, lora_r=bcfg.lora.r, lora_modules=len(targets),
        modules_to_save=mts,
        layers=text.num_hidden_layers, hidden=text.hidden_size, intermediate=text.intermediate_size,
        heads=text.num_attention_heads, kv_heads=text.num_key_value_heads, head_dim=head_dim,
        vocab=text.vocab_size, audio_hidden=audio.d_model, audio_layers=audio.encoder_layers,
        audio_ffn=audio.encoder_ffn_dim, audio_positions=audio.max_source_positions,
        audio_window_s=audio.max_source_positions * 2 / 100, tied=bool(getattr(text, "tie_word_embeddings", False)))


def audio_tokens(seconds: float, window_s: float) -> int:
    """Audio tokens the language model sees for a clip (Qwen2-Audio: 100 mel frames per second, halved by the
    encoder's stride-2 convolution and again by its pooling; a clip beyond the window is cut)."""
    frames = int(round(min(seconds, window_s) * 100))
    after_conv = (frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


# ----------------------------------------------------------------------------------------------------------------
# What one step of a stage does
# ----------------------------------------------------------------------------------------------------------------
OPTIMIZER_STATE_BYTES = {
    # bytes of optimizer state per trainable parameter (e_t: the parameter's own bytes)
    "adamw_torch": "2 e_t", "adamw_torch_fused": "2 e_t", "adamw_hf": "2 e_t", "paged_adamw_32bit": "2 e_t",
    "adamw_bnb_8bit": "2", "adamw_8bit": "2", "paged_adamw_8bit": "2", "paged_adamw": "2 e_t",
    "sgd": "0", "adafactor": "0",
}


def optimizer_bytes(optim: str, e_t: int) -> tuple[float, str]:
    """(bytes per trainable parameter, formula): AdamW keeps two moments in the parameter's dtype; the 8-bit
    AdamW of bitsandbytes one byte each; SGD without momentum none; Adafactor factored (counted as none)."""
    rule = OPTIMIZER_STATE_BYTES.get(str(optim))
    if rule is None:  # unknown: assume AdamW's two moments, and say so
        rule = "2 e_t"
        log.warning("plan: optimizer %r not known to the planner; counted as AdamW (two moments)", optim)
    return (2.0 * e_t if rule == "2 e_t" else float(rule)), rule


@dataclass
class Step:
    """The numbers one step of a stage depends on, read from the profile (or given, to plan a measured run)."""

    stage: str  # "grpo" or "sft"
    load_in_4bit: bool
    double_quant: bool
    fp32_frozen: bool
    e_w: int  # bytes of a frozen 16-bit-or-wider weight as stored
    e_a: int  # bytes of an activation
    e_t: int  # bytes of a trainable weight (LoRA, modules_to_save)
    e_l: int  # bytes of a logit
    gradient_checkpointing: bool
    optim: str
    batch: int  # sequences per micro-batch (GRPO: completions)
    prompt_tokens: int  # P, text + audio tokens of one prompt
    target_tokens: int  # T: completion (GRPO) or assistant target (SFT) tokens
    clip_s: float  # audio seconds of one clip
    gradient_accumulation: int = 1
    generation_batch: int = 0  # n_g (GRPO)
    beta: float = 0.0
    old_logps: bool = False  # TRL computes old-policy log-probs (generation and update steps misaligned)
    distinct_clips: int = 0  # clips the audio encoder runs on per generation batch with grpo.cache_audio
    ref_adapter: bool = False  # GRPO with beta > 0: TRL adds a frozen "ref" copy of the adapter
    lora_dropout: bool = False  # a dropout module before each LoRA A (saves its output)
    trainable_projector: bool = False
    on_gpu: bool = True
    e_c: int = 4  # bytes of the compute dtype (bf16/fp16 autocast on a GPU, fp32 on the CPU)
    # GRPO's generation paths (model/rollout.py; the grpo section's rollout_* settings)
    num_generations: int = 1
    shared_prefix: bool = False
    compiled: bool = False
    rollout_copy: bool = False
    rows_per_generate: int = 0  # sequences per generate call; 0: the whole generation batch

    @property
    def rows(self) -> int:
        """Sequences per generate call."""
        return self.rows_per_generate or self.generation_batch

    @property
    def seq(self) -> int:
        return self.prompt_tokens + self.target_tokens


def nf4_bytes(double_quant: bool) -> float:
    """Bytes per 4-bit weight: 0.5, plus an absmax per block of 64 (fp32; with double quantisation 8-bit, plus an
    fp32 constant per 256 blocks)."""
    return 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)


def _dtype_bytes(name: str, gpu: GPU | None) -> int:
    """Bytes of `backbone.dtype` as backbones.resolve_dtype resolves it: auto is fp32 on the CPU, bf16 or fp16 (2 B)
    on a GPU."""
    if name == "auto":
        if gpu is None:
            return 4  # the CPU: fp32
        return 2
    return {"float32": 4, "bfloat16": 2, "float16": 2}[name]


def prompt_text_tokens(prof, condition: str) -> int:
    """Tokens of a prompt's text (system turn, instruction, candidate labels, format line, chat markup, one audio
    placeholder): counted with the backbone's tokenizer where it is on disk, else estimated at 4 characters a token
    (English text under Qwen2's byte-level BPE) plus 5 tokens of markup per message."""
    from .data.labels import candidates
    from .method.prompts import build_messages

    pcfg = prof.section("prompt")
    corpora = prof.section("experiments").corpora
    longest = max(corpora, key=lambda c: len(candidates(c)))
    messages = build_messages(pcfg, "clip.wav", list(candidates(longest)), condition)
    tok = _local_tokenizer(prof)
    if tok is not None:
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return len(ids)
    chars = sum(len(b.get("text", "")) for m in messages for b in m["content"] if b.get("type") == "text")
    return math.ceil(chars / 4) + 5 * (len(messages) + 1) + 3


def _local_tokenizer(prof):
    from pathlib import Path

    from .model.backbones import chat_template

    bcfg = prof.section("backbone")
    folder = None
    if bcfg.path and (Path(bcfg.path) / "tokenizer_config.json").exists():
        folder = bcfg.path
    elif bcfg.name == "tiny-qwen2-audio":
        from .model.backbones import resolve_model_dir

        folder = resolve_model_dir(bcfg, prof.paths)
    if folder is None:
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = chat_template()
    return tok


def steps_of(prof, shapes: Shapes, gpu: GPU | None, clip_s: float | None = None) -> dict[str, Step]:
    """The GRPO and SFT steps of a profile's settings on `gpu` (None: the CPU), for its longest prompt condition
    and a clip of `clip_s` seconds (default: the whole padding window, the longest clip the model sees)."""
    from .training.experiments import grpo_runs, sft_runs

    bcfg = prof.section("backbone")
    ecfg = prof.section("experiments")
    clip = shapes.audio_window_s if clip_s is None else float(clip_s)
    e_w16 = _dtype_bytes(bcfg.dtype, gpu)
    q = bool(bcfg.load_in_4bit)
    fp32_frozen = bool(bcfg.fp32_frozen_weights) and q
    e_w = 4 if fp32_frozen else e_w16
    e_a = 4 if (fp32_frozen or e_w16 == 4) else e_w16
    mts = set(bcfg.lora.modules_to_save if bcfg.lora.enabled else [])
    order = {"IR": 0, "EUR": 1, "ESR": 2}
    out: dict[str, Step] = {}
    runs = grpo_runs(ecfg)
    if runs:
        cond = max((r.condition for r in runs), key=order.get)
        grpo = prof.values("grpo", cond)  # as that condition's runs read it (its `reasoning` settings over it)
        P = prompt_text_tokens(prof, cond) - 1 + audio_tokens(clip, shapes.audio_window_s)
        spg = grpo.steps_per_generation or grpo.gradient_accumulation_steps  # TRL's default (GRPOConfig)
        n_g = grpo.per_device_train_batch_size * spg
        # TRL 1.16 (GRPOTrainer._generate_and_score_completions): old-policy log-probs when the update is not
        # aligned with generation
        old = grpo.gradient_accumulation_steps % (spg * grpo.num_iterations) != 0
        # LoRA weights: peft stores them in the base layer's dtype, fp32 beside 4-bit layers; TRL casts a 4-bit
        # model's to bf16 under bf16 (under fp16 the kit casts them back to fp32: training/grpo.py)
        e_t = 4 if e_w16 == 4 else (2 if not q or _bf16(bcfg, gpu) else 4)
        out["grpo"] = Step(
            stage="grpo", load_in_4bit=q, double_quant=bcfg.bnb_double_quant, fp32_frozen=fp32_frozen, e_w=e_w,
            e_a=e_a, e_t=e_t, e_l=e_w, gradient_checkpointing=bcfg.gradient_checkpointing,
            optim=_optimizer(prof, "grpo", gpu, cond), batch=grpo.per_device_train_batch_size, prompt_tokens=P,
            target_tokens=grpo.max_completion_length, clip_s=clip,
            gradient_accumulation=grpo.gradient_accumulation_steps, generation_batch=n_g, beta=grpo.beta,
            old_logps=old, distinct_clips=max(1, n_g // grpo.num_generations) if grpo.cache_audio else 0,
            # TRL 1.16 copies the adapter of a PEFT model it is given (the kit's always is) as the reference
            ref_adapter=bool(bcfg.lora.enabled and grpo.beta != 0),
            lora_dropout=False,  # disable_dropout (the kit's default) sets every dropout to 0
            trainable_projector="multi_modal_projector" in mts, on_gpu=gpu is not None, e_c=e_w16,
            num_generations=grpo.num_generations, shared_prefix=grpo.rollout_shared_prefix,
            compiled=grpo.rollout_compile, rollout_copy=grpo.rollout_copy,
            rows_per_generate=grpo.rollout_rows_per_generate or 0)
    runs = sft_runs(ecfg)
    if runs:
        cond = max((r.condition for r in runs), key=order.get)
        sft = prof.values("sft", cond)
        P = prompt_text_tokens(prof, cond) - 1 + audio_tokens(clip, shapes.audio_window_s)
        # the assistant target, at most what evaluation lets the condition generate
        T = prof.section("eval").max_new_tokens[cond] + 2
        out["sft"] = Step(
            stage="sft", load_in_4bit=q, double_quant=bcfg.bnb_double_quant, fp32_frozen=fp32_frozen, e_w=e_w,
            e_a=e_a, e_t=4 if (q or e_w16 == 4) else e_w16, e_l=e_w,
            gradient_checkpointing=bcfg.gradient_checkpointing, optim=_optimizer(prof, "sft", gpu, cond),
            batch=sft.per_device_train_batch_size, prompt_tokens=P, target_tokens=T, clip_s=clip,
            gradient_accumulation=sft.gradient_accumulation_steps,
            lora_dropout=bcfg.lora.enabled and bcfg.lora.dropout > 0,
            trainable_projector="multi_modal_projector" in mts, on_gpu=gpu is not None, e_c=e_w16)
    return out


def _bf16(bcfg, gpu: GPU) -> bool:
    return bcfg.dtype == "bfloat16" or (bcfg.dtype == "auto" and gpu.bf16)


def _optimizer(prof, stage: str, gpu: GPU | None, condition: str | None = None) -> str:
    """The stage's optimizer on `gpu` (as `condition`'s runs read the section): `auto` resolved for that device."""
    from .training.runs import auto_optimizer

    value = prof.values(stage, condition).optim
    value = getattr(value, "value", value)
    return auto_optimizer(gpu is not None) if value == "auto" else str(value)


# ----------------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Term:
    """One term of the peak: its bytes, the formula it comes from, and the phase it belongs to ("weights" lasts
    the whole run; a step's peak is the largest of its phases: GRPO's "prefill" and "decoding" of generation,
    "log-probs" without gradient, and "training" forward and backward)."""

    name: str
    bytes: float
    formula: str
    phase: str


@dataclass
class Estimate:
    step: Step
    terms: list[Term]

    def phase(self, name: str) -> float:
        return sum(t.bytes for t in self.terms if t.phase == name)

    @property
    def peak_phase(self) -> str:
        phases = {t.phase for t in self.terms} - {"weights"}
        return max(phases, key=self.phase) if phases else "weights"

    @property
    def peak(self) -> float:
        """Bytes allocated at the peak: what lasts + the largest phase."""
        return self.phase("weights") + (self.phase(self.peak_phase) if self.peak_phase != "weights" else 0.0)

    def fits(self, gpu: GPU) -> bool:
        return self.needed_gib <= gpu.memory_gib

    @property
    def needed_gib(self) -> float:
        """What the GPU must have: the allocator's reserve over the peak, plus the CUDA context."""
        return self.peak / GiB * RESERVED_OVER_ALLOCATED + CUDA_CONTEXT_GIB


def generation_terms(shapes: Shapes, rows: int, prompts: int, P: int, T: int, e_a: int, e_l: int,
                     shared_prefix: bool, static_len: int | None = None) -> list[tuple[str, float, str, str]]:
    """The terms of one generate call of `rows` sequences from `prompts` distinct prompts: (name, bytes, formula,
    phase). The plain path computes logits at every prompt position of every row (Qwen2-Audio's forward has no
    logits_to_keep); the shared-prefix path (model/rollout.py) runs the distinct prompts' first P - 1 tokens through the
    backbone only (no logits), holds their cache beside the one gathered to every row, then runs every row's last
    prompt token (one logits row each). A static cache (the compiled path) is allocated at its full length at once."""
    L, h, i, V, kv = shapes.layers, shapes.hidden, shapes.intermediate, shapes.vocab, shapes.kv
    kv_row = L * 2 * kv * e_a  # bytes per cached token of one row
    full = static_len or (P + T)
    out = []
    if shared_prefix:
        out += [("KV cache of the distinct prompts", prompts * (P - 1) * kv_row, "L x 2 x prompts x (P - 1) x kv x e_a",
                 "prefill"),
                ("KV cache of the prompts, gathered to every row", rows * (static_len or P) * kv_row,
                 "L x 2 x rows x P x kv x e_a", "prefill"),
                ("one layer's activations (distinct prompts)", prompts * P * (3 * i + 4 * h) * e_a,
                 "prompts x P x (3 i + 4 h) x e_a: gate, up, their product; q, k, v, output", "prefill"),
                ("logits at the last prompt position", rows * V * e_l, "rows x V x e_l", "prefill")]
    else:
        out += [("KV cache of the prompts", rows * (static_len or P) * kv_row, "L x 2 x rows x P x kv x e_a",
                 "prefill"),
                ("logits at every prompt position", rows * P * V * e_l,
                 "rows x P x V x e_l (Qwen2-Audio's forward has no logits_to_keep)", "prefill"),
                ("one layer's activations", rows * P * (3 * i + 4 * h) * e_a,
                 "rows x P x (3 i + 4 h) x e_a: gate, up, their product; q, k, v, output", "prefill")]
    out.append(("KV cache, full length", rows * full * kv_row, "L x 2 x rows x (P + T) x kv x e_a", "decoding"))
    return out


def memory(shapes: Shapes, st: Step) -> Estimate:
    """The terms of one process's peak memory for a GRPO or SFT step (formulas in the module docstring's notation)."""
    L, h, i, V = shapes.layers, shapes.hidden, shapes.intermediate, shapes.vocab
    terms: list[Term] = []

    def add(name: str, value: float, formula: str, phase: str) -> None:
        terms.append(Term(name, float(value), formula, phase))

    # -- weights ---------------------------------------------------------------------------------------------------
    total = shapes.total
    if st.load_in_4bit:
        per = nf4_bytes(st.double_quant)
        add("LLM linear weights, 4-bit", shapes.quantisable * per,
            f"quantised weights x {per:.4f} B (NF4 0.5 + absmax per 64)", "weights")
        add("other frozen weights", (total - shapes.quantisable) * st.e_w,
            f"(all - quantised) x e_w (e_w = {st.e_w}: " + ("fp32, peft's k-bit preparation)" if st.fp32_frozen
                                                               else "the load dtype)"), "weights")
    else:
        add("frozen weights", total * st.e_w, f"all parameters x e_w (e_w = {st.e_w})", "weights")
    trainable = shapes.lora + shapes.modules_to_save
    add("trainable weights (LoRA, modules_to_save)", trainable * st.e_t,
        f"(LoRA {shapes.lora:,} + modules_to_save {shapes.modules_to_save:,}) x e_t (e_t = {st.e_t})", "weights")
    if st.ref_adapter:
        add("reference adapter (TRL's frozen copy, beta > 0)", trainable * st.e_t, "trainable x e_t", "weights")
    opt, rule = optimizer_bytes(st.optim, st.e_t)
    add(f"optimizer state ({st.optim})", trainable * opt, f"trainable x {rule} B", "weights")
    if st.rollout_copy:
        add("rollout copy (language-model linears in the compute dtype)", shapes.quantisable * st.e_c,
            "quantised weights x e_c", "weights")

    b, S, P, T = st.batch, st.seq, st.prompt_tokens, st.target_tokens
    e_a = st.e_a
    audio_rows = b  # one clip per sequence
    enc_pos, d_a = shapes.audio_positions, shapes.audio_hidden

    # -- generation (GRPO): the first forward over the prompts, then one token at a time ------------------------------
    if st.stage == "grpo":
        n_g, rows = st.generation_batch, st.rows
        batch_bytes = n_g * (128 * 2 * enc_pos * 4 + (P + T) * 8 * 3)
        prompts = max(1, rows // max(st.num_generations, 1))
        static = static_length(P, T) if st.compiled else None
        for name, value, formula, phase in generation_terms(shapes, rows, prompts, P, T, e_a, st.e_l,
                                                            st.shared_prefix, static):
            add(name, value, formula, phase)
        clips = st.distinct_clips or n_g
        add("audio encoder, one layer", clips * enc_pos * (shapes.audio_ffn + 4 * d_a) * e_a,
            "clips x positions x (ffn + 4 d_audio) x e_a (clips: distinct ones with grpo.cache_audio)", "prefill")
        add("the batch (ids, masks, mel features)", batch_bytes, "n_g x (128 mels x 2 x positions x 4 + ids)",
            "prefill")
        add("the batch, sampled tokens", batch_bytes + rows * V * 4 * 2, "as above + rows x V x 4 x 2", "decoding")

    # -- log-prob forwards without gradient (GRPO: reference, old policy) ----------------------------------------
    # TRL scores only the completion positions on a GPU (Triton), every position elsewhere
    scored = b * T if st.on_gpu else b * S
    if st.stage == "grpo" and (st.beta > 0 or st.old_logps):
        add("no-grad forward (one layer)", b * S * (3 * i + 4 * h) * e_a, "b x S x (3 i + 4 h) x e_a", "log-probs")
        add("fused LM head tile", _lm_tile(scored, V, h, st.e_c, st.on_gpu, st.e_w > st.e_c), _LM_TILE_FORMULA,
            "log-probs")

    # -- training forward and backward ------------------------------------------------------------------------------
    tok = b * S
    per_layer = _layer_activations(shapes, st)
    if st.gradient_checkpointing:
        add("checkpointed layer inputs", L * tok * h * e_a, "L x b x S x h x e_a", "training")
        add("one layer recomputed in backward", tok * per_layer * e_a,
            f"b x S x {per_layer:,} x e_a ({_LAYER_FORMULA})", "training")
    else:
        add("saved activations (every layer)", L * tok * per_layer * e_a,
            f"L x b x S x {per_layer:,} x e_a ({_LAYER_FORMULA})", "training")
    add("gradients in flight in a layer's backward", tok * (2 * i + 2 * h) * e_a,
        "b x S x (2 i + 2 h) x e_a: the MLP's and the attention's widest", "training")
    add("embeddings and final hidden states", 3 * tok * h * e_a, "3 x b x S x h x e_a", "training")
    if st.trainable_projector:
        add("projector input (trainable projector)", audio_rows * audio_tokens(st.clip_s, shapes.audio_window_s) * 2
            * d_a * e_a, "clips x 2 x audio tokens x d_audio x e_a", "training")
    if st.stage == "sft":
        # transformers' Qwen2Audio forward: logits (b, S, V) and their shifted copy in the compute dtype, the
        # cross-entropy's log-softmax in fp32 (autocast runs it in fp32)
        add("logits and cross-entropy", tok * V * (2 * st.e_c + 4), "b x S x V x (2 e_c + 4)", "training")
        add("audio encoder, one layer (padded clips)", b * enc_pos * (shapes.audio_ffn + 4 * d_a) * e_a,
            "b x positions x (ffn + 4 d_audio) x e_a", "training")
    else:
        add("fused LM head tile", _lm_tile(scored, V, h, st.e_c, st.on_gpu, st.e_w > st.e_c), _LM_TILE_FORMULA,
            "training")
    add("gradients", trainable * st.e_t, "trainable x e_t", "training")
    return Estimate(st, [t for t in terms if t.bytes > 0])


_LAYER_FORMULA = ("per token: norms 4 h, q/k/v and o inputs 2 h, q k v h + 2 kv, attention output h, MLP input h, "
                  "gate, up, SiLU and product 4 i; + 2 h when k, v are repeated (GQA), + 7 h of LoRA dropout outputs")


def _layer_activations(shapes: Shapes, st: Step) -> int:
    """Elements a decoder layer keeps per token for its backward with frozen base weights and LoRA: the two norms'
    fp32 inputs and outputs 4 h, the q/k/v and o inputs 2 h, q k v after RoPE h + 2 kv, the attention output h,
    the MLP input h, gate, up, SiLU(gate) and their product 4 i; k and v again for every head when grouped
    (repeat_kv), and each LoRA dropout's output (7 h) when LoRA has dropout."""
    h, i, kv = shapes.hidden, shapes.intermediate, shapes.kv
    n = 4 * h + 2 * h + (h + 2 * kv) + h + h + 4 * i
    if shapes.kv_heads != shapes.heads:
        n += 2 * h
    if st.lora_dropout:
        n += 7 * h
    return n


_LM_TILE_FORMULA = ("min(N, 4096) x 32768 x e_c + 32768 x h x e_c (an lm_head chunk cast to the compute dtype, "
                    "when it is stored wider) + N x h x 4 x 2; without Triton (CPU) also 8 fp32 temporaries of "
                    "min(N, 4096) x min(V, 32768). N = b x S (CPU) or b x T (GPU: only scored positions)")


def _lm_tile(tokens: int, V: int, h: int, e_c: int, on_gpu: bool, head_wider: bool) -> float:
    """TRL 1.16's fused LM head (trl.kernels.chunked_logprob): a [min(N, TOKEN_CHUNK_SIZE 4096), chunk 32768] buffer
    whatever the vocabulary; each lm_head chunk `.to(compute dtype)` (a copy when the head is stored wider); the
    fp32 gradient of the hidden states and an fp32 copy of them; on devices without Triton, the torch fallback of its
    backward (`_backward_tile`) keeps y, z, log p, p, the gradient and three temporaries, fp32, per tile."""
    rows = min(tokens, 4096)
    out = rows * 32768 * e_c + tokens * h * 4 * 2
    if head_wider:
        out += 32768 * h * e_c
    if not on_gpu:
        out += 8 * rows * min(V, 32768) * 4
    return out


# ----------------------------------------------------------------------------------------------------------------
# Time
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    generation_s: float
    forward_backward_s: float
    audio_encoder_s: float
    step_s: float  # one optimizer step
    roofline_s: float  # the same at the GPU's peak rates, no overhead: a lower bound
    decode_step_s: float = 0.0  # one decoding step of a generate call (GRPO)
    rollout_copy_refresh_s: float = 0.0  # per optimizer step


def static_length(P: int, T: int) -> int:
    """The static KV cache of the compiled path: P + T rounded up to model/rollout.py's multiple."""
    from .model.rollout import static_cache_length

    return static_cache_length(P, T)


def decode_ops(shapes: Shapes, st: Step) -> int:
    """Tensor operations the host launches per decoding step on a path (see HOST_SECONDS_PER_OP)."""
    if st.compiled:
        return COMPILED_OPS_OUTSIDE
    per, outside = DECODE_OPS[st.fp32_frozen]["rollout_copy" if st.rollout_copy else "plain"]
    return per * shapes.layers + outside


def step_time(shapes: Shapes, st: Step, gpu: GPU) -> Timing | None:
    """Seconds per optimizer step on `gpu` (None when its FLOP rate is not known): forward FLOPs (2 per weight per
    token, attention, the LM head) over the peak FLOP rate x the achieved share; a backward through frozen weights
    costs one forward (input gradients only), checkpointing one more; a decoding step takes the longer of reading
    the weights and KV cache at the bandwidth and its FLOPs, plus the host's work: its tensor operations
    (`decode_ops`: fewer on the rollout copy, 41 around a compiled step) x HOST_SECONDS_PER_OP, added, since
    transformers synchronises host and GPU at every step. The shared prefix prefills each group's prompt once; a
    compiled step is counted at the GPU's full bandwidth (its achieved share is not measured yet: an estimate at
    best)."""
    if not gpu.tflops or not gpu.bandwidth_gbs:
        return None
    flops, bw = gpu.tflops * 1e12, gpu.bandwidth_gbs * 1e9
    share = FLOP_SHARE_4BIT if st.load_in_4bit else FLOP_SHARE_16BIT
    n_llm = shapes.parts["LLM layers"]  # matmul weights per token (embeddings are a lookup)
    L, h = shapes.layers, shapes.hidden
    V = shapes.vocab

    def fwd_flops(tokens: float, context: float, logits_tokens: float) -> float:
        # 2 x weights per token, attention scores and values 2 x 2 x L x h x context per token, the LM head
        return 2 * n_llm * tokens + 4 * L * h * context * tokens + 2 * V * h * logits_tokens

    # audio encoder: 2 x encoder weights per position of the padded window, + attention over the window
    enc_one = 2 * shapes.parts["audio encoder"] * shapes.audio_positions + \
        4 * shapes.audio_layers * shapes.audio_hidden * shapes.audio_positions ** 2
    ga = st.gradient_accumulation
    b, P, T, S = st.batch, st.prompt_tokens, st.target_tokens, st.seq
    recompute = 1 if st.gradient_checkpointing else 0
    if st.stage == "grpo":
        n_g, rows = st.generation_batch, st.rows
        gens_per_step = max(1, ga * b // max(n_g, 1))
        calls = math.ceil(n_g / max(rows, 1))  # generate calls per generation batch
        # a decoding step reads every LLM weight and the lm_head once, and the KV cache (half full on average)
        if st.rollout_copy:
            weight_bytes = shapes.quantisable * st.e_c
        elif st.load_in_4bit:
            weight_bytes = shapes.quantisable * nf4_bytes(st.double_quant)
        else:
            weight_bytes = shapes.parts["LLM layers"] * st.e_w
        weight_bytes += shapes.parts["lm_head"] * st.e_w
        decode_bytes = weight_bytes + L * 2 * rows * (P + T / 2) * shapes.kv * st.e_a
        decode_roof = max(decode_bytes / bw, fwd_flops(rows, P + T / 2, rows) / flops)
        decode = decode_roof + decode_ops(shapes, st) * HOST_SECONDS_PER_OP
        if st.shared_prefix:  # each distinct prompt once, without the LM head; then every row's last token
            prompts = max(1, rows // max(st.num_generations, 1))
            prefill = (fwd_flops(prompts * (P - 1), P / 2, 0) + fwd_flops(rows, P, rows)) / flops
        else:
            prefill = fwd_flops(rows * P, P / 2, rows * P) / flops
        generation = gens_per_step * calls * (T * decode + prefill / share)
        gen_roof = gens_per_step * calls * (T * decode_roof + prefill)
        refresh = 0.0
        if st.rollout_copy:  # read the 4-bit weights, write the copy, two kernels per LoRA layer
            refresh = (shapes.quantisable * (nf4_bytes(st.double_quant) + st.e_c)) / bw + \
                2 * shapes.lora_modules * HOST_SECONDS_PER_OP
        # forward with gradient, backward (input gradients only through frozen weights: 1 forward's worth), the
        # checkpointed recompute, and the no-grad log-prob forwards (reference, old policy)
        passes = 1 + 1 + recompute + (1 if st.beta > 0 else 0) + (1 if st.old_logps else 0)
        fb = ga * passes * fwd_flops(b * S, S / 2, b * T) / flops
        # the encoder runs in generation's first forward and in every log-prob forward (the checkpointed recompute
        # does not repeat it: it is frozen); with grpo.cache_audio once per distinct clip of a generation batch
        clips = (gens_per_step * st.distinct_clips if st.distinct_clips
                 else gens_per_step * n_g + ga * b * (passes - recompute - 1))
        enc = clips * enc_one / flops
        return Timing(generation, fb / share, enc / share, generation + (fb + enc) / share + refresh,
                      gen_roof + fb + enc, decode, refresh)
    passes = 1 + 1 + recompute
    fb = ga * passes * fwd_flops(b * S, S / 2, b * S) / flops
    enc = ga * b * enc_one / flops
    return Timing(0.0, fb / share, enc / share, (fb + enc) / share, fb + enc)


# ----------------------------------------------------------------------------------------------------------------
# The plan: parts, memory, time, verdict, what to change
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class StagePlan:
    estimate: Estimate
    timing: Timing | None  # at the time clip (the corpora's own clips)
    changes: list["Change"]
    runs: int = 0  # how many runs of this stage the profile's matrix trains
    steps: int | None = None  # optimizer steps of one run (None: unknown before the data is prepared)
    fitted: Timing | None = None  # the time once the recipe-keeping changes are made (what a run here does)
    fitted_step: Step | None = None  # the step once they are made, at the longest clip (memory)
    paths: dict[str, Timing | None] | None = None  # GRPO: the time on each rollout path (fitted)


@dataclass
class Plan:
    profile: str
    backbone: str
    gpu: GPU
    shapes: Shapes
    stages: dict[str, StagePlan]
    clip_s: float  # memory: the longest clip the model hears (its window)
    time_clip_s: float  # time: the mean clip of the profile's corpora, where they are prepared
    time_clip_from: str = ""  # where time_clip_s comes from

    def fits(self) -> bool:
        return all(s.estimate.fits(self.gpu) for s in self.stages.values())


@dataclass
class Change:
    """A setting to change, as profile overrides, and the memory the GPU needs once it and the ones before it are
    applied. `keeps_recipe`: the same prompts, completions and loss per optimizer step (generation batching,
    the precision of frozen weights, recomputation): a run may make it by itself to fit its GPU."""

    what: str
    overrides: dict[str, dict[str, Any]]
    needed_gib: float
    fits: bool
    keeps_recipe: bool = True


def _candidates(st: Step) -> list[tuple[str, dict[str, dict[str, Any]], bool]]:
    """Settings that lower a step's peak, (what, overrides, keeps the recipe), those that leave the method alone
    first."""
    out: list[tuple[str, dict[str, dict[str, Any]], bool]] = []
    if st.stage == "grpo":
        G = max(st.num_generations, 1)
        rows = st.rows - G
        while rows >= G:  # fewer sequences per generate call, whole groups: the same completions
            r = (rows // G) * G
            out.append((f"grpo.rollout_rows_per_generate: {r} (generate {r} sequences per call, not {st.rows}: the "
                        "same completions)", {"grpo": {"rollout_rows_per_generate": r}}, True))
            rows = r // 2 if r // 2 >= G else (r - G if r > G else 0)
    if st.stage == "grpo" and st.generation_batch > st.batch:
        out.append((f"grpo.steps_per_generation: 1 (generate {st.batch} sequences at a time, not "
                    f"{st.generation_batch}; the same completions per optimizer step)",
                    {"grpo": {"steps_per_generation": 1, "rollout_rows_per_generate": None}}, True))
    if st.load_in_4bit and st.fp32_frozen:
        out.append(("backbone.fp32_frozen_weights: false (frozen weights, KV cache and activations stay 16-bit)",
                    {"backbone": {"fp32_frozen_weights": False}}, True))
    if not st.gradient_checkpointing:
        out.append(("backbone.gradient_checkpointing: true", {"backbone": {"gradient_checkpointing": True}}, True))
    if st.stage == "sft" and st.batch > 1:
        for b in (st.batch // 2, 1):
            ga = st.gradient_accumulation * st.batch // b
            out.append((f"sft.per_device_train_batch_size: {b}, gradient_accumulation_steps: {ga} (the same examples "
                        "per optimizer step)", {"sft": {"per_device_train_batch_size": b,
                                                        "gradient_accumulation_steps": ga}}, True))
    if optimizer_bytes(st.optim, st.e_t)[0] > 2:
        out.append((f"{st.stage}.optim: paged_adamw_8bit (another optimizer)",
                    {st.stage: {"optim": "paged_adamw_8bit"}}, False))
    if not st.load_in_4bit:
        out.append(("backbone.load_in_4bit: true (QLoRA: another model)", {"backbone": {"load_in_4bit": True}}, False))
    if st.stage == "grpo" and st.target_tokens > 128:
        out.append(("grpo.max_completion_length: 128 (shorter reasoning: this changes the method)",
                    {"grpo": {"max_completion_length": 128}}, False))
    return out


def _merge(a: dict, b: dict) -> dict:
    out = {k: dict(v) for k, v in a.items()}
    for k, v in b.items():
        out.setdefault(k, {}).update(v)
    return out


def changes(prof, shapes: Shapes, gpu: GPU, stage: str, clip_s: float | None = None,
            recipe_only: bool = False) -> list[Change]:
    """What to change so that `stage` fits `gpu`: candidates applied one on top of the other (as profile overrides,
    re-planned from the profile) until it fits; empty when it fits as it is. `recipe_only`: only the changes that
    keep the recipe (what a run applies by itself)."""
    st = steps_of(prof, shapes, gpu, clip_s)[stage]
    if memory(shapes, st).fits(gpu):
        return []
    out: list[Change] = []
    applied: dict[str, dict[str, Any]] = {}
    need = memory(shapes, st).needed_gib
    for what, overrides, keeps in _candidates(st):
        if recipe_only and not keeps:
            continue
        trial = _merge(applied, overrides)
        est = memory(shapes, steps_of(prof.with_overrides(trial), shapes, gpu, clip_s)[stage])
        if est.needed_gib >= need:
            continue  # saves nothing here (e.g. 4-bit weights beside fp32 activations on a tiny model)
        applied, need = trial, est.needed_gib
        out.append(Change(what, applied, need, est.fits(gpu), keeps))
        if est.fits(gpu):
            break
    return out


def time_clip_seconds(prof, default: float) -> tuple[float, str]:
    """The mean clip duration (s) of the profile's training corpora, read from their manifests; `default` (the
    window: the worst case) where the data is not prepared yet."""
    import json

    manifests = prof.paths.manifests
    total, n = 0.0, 0
    for corpus in prof.section("experiments").corpora:
        path = manifests / f"{corpus}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line).get("duration") if line.strip() else None
            if d:
                total, n = total + float(d), n + 1
    if not n:
        return default, "no manifests yet: the window (the worst case); prepare the data or pass --clip-seconds"
    return total / n, f"the mean of {n} clips in {manifests}"


def run_steps(prof, stage: str) -> int | None:
    """Optimizer steps of one run: max_steps, or one pass over the training side (epochs x utterances / batch)
    read from the manifests (None: not prepared yet)."""
    v = prof.values(stage)
    if v.max_steps and v.max_steps > 0:
        return int(v.max_steps)
    from .data.corpora.splits import train_heldout
    from .data.manifest import read_manifest
    from .training.experiments import sft_runs

    runs = sft_runs(prof.section("experiments"))
    data = prof.section("data")
    sizes = []
    for run in runs:
        path = prof.paths.manifests / f"{run.corpus}.jsonl"
        if not path.exists():
            return None
        train, _ = train_heldout(read_manifest(path), run.corpus, run.fold, data.heldout_fraction,
                                 data.heldout_seed)
        n = min(len(train), v.max_utterances or len(train))
        per_step = v.per_device_train_batch_size * v.gradient_accumulation_steps
        sizes.append(math.ceil(v.num_train_epochs * n / per_step))
    return max(sizes) if sizes else None


def plan(prof, gpu: GPU, clip_s: float | None = None) -> Plan:
    """Estimate a profile's GRPO and SFT steps on `gpu`: memory by term at the longest clip (the model's window),
    time at the corpora's own clips (`clip_s`, else the manifests' mean), the verdict, the changes that make it
    fit, and the time of a run and of the profile's whole matrix."""
    from .training.experiments import grpo_runs, sft_runs

    bcfg = prof.section("backbone")
    shapes = model_shapes(bcfg, prof.paths)
    steps = steps_of(prof, shapes, gpu)
    if clip_s is None:
        clip_s, clip_from = time_clip_seconds(prof, shapes.audio_window_s)
    else:
        clip_from = "given"
    timed = steps_of(prof, shapes, gpu, clip_s)
    exp = prof.section("experiments")
    n_runs = {"sft": len(sft_runs(exp)), "grpo": len(grpo_runs(exp))}
    stages = {}
    for name, st in steps.items():
        found = changes(prof, shapes, gpu, name)
        keep = [c for c in changes(prof, shapes, gpu, name, recipe_only=True)] if found else []
        fitted_prof = prof.with_overrides(keep[-1].overrides) if keep and keep[-1].fits else prof
        fitted = steps_of(fitted_prof, shapes, gpu, clip_s)[name]
        sp = StagePlan(memory(shapes, st), step_time(shapes, timed[name], gpu), found, n_runs[name],
                       run_steps(prof, name), step_time(shapes, fitted, gpu), steps_of(fitted_prof, shapes, gpu)[name])
        if name == "grpo":
            sp.paths = {label: step_time(shapes, replace(fitted, **kw), gpu) for label, kw in ROLLOUT_PATHS.items()}
        stages[name] = sp
    return Plan(prof.name, bcfg.name, gpu, shapes, stages, shapes.audio_window_s, clip_s, clip_from)


# The rollout paths the planner compares (model/rollout.py), as Step fields
ROLLOUT_PATHS: dict[str, dict[str, bool]] = {
    "plain": {"shared_prefix": False, "compiled": False, "rollout_copy": False},
    "shared prefix": {"shared_prefix": True, "compiled": False, "rollout_copy": False},
    "shared prefix + compiled": {"shared_prefix": True, "compiled": True, "rollout_copy": False},
    "shared prefix + rollout copy": {"shared_prefix": True, "compiled": False, "rollout_copy": True},
    "shared prefix + rollout copy + compiled": {"shared_prefix": True, "compiled": True, "rollout_copy": True},
}


# ----------------------------------------------------------------------------------------------------------------
# A run on a GPU sizes itself: the planner's recipe-keeping changes, or a stop that says what does not fit
# ----------------------------------------------------------------------------------------------------------------
class DoesNotFit(RuntimeError):
    """The profile does not fit this GPU, even with every change that keeps the recipe; the message holds the
    planner's table."""


def this_gpu() -> GPU | None:
    """The GPU this process computes on, as the planner sees it (None: no CUDA GPU): its memory and whether it has
    bf16 (compute capability 8 and above); the FLOP rate and bandwidth of a known card (GPUS) by its name."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    name = props.name
    known = next((g for key, g in GPUS.items() if key.split("-")[0] in name.lower()), None)
    return GPU(name, props.total_memory / GiB, known.tflops if known else None,
               known.bandwidth_gbs if known else None, props.major >= 8, "this machine")


def eval_memory(prof, shapes: Shapes, gpu: GPU, batch_size: int | None = None) -> Estimate:
    """Peak memory of evaluation's batched greedy generation: the base model as loaded for inference (4-bit linears,
    the rest in the compute dtype), a LoRA adapter, and one generate call of `batch_size` distinct prompts at the
    longest clip and the longest token budget (model/generate.py: the shared prefix by default)."""
    bcfg, ecfg = prof.section("backbone"), prof.section("eval")
    e_c = _dtype_bytes(bcfg.dtype, gpu)
    b = batch_size or ecfg.batch_size
    cond = max(ecfg.max_new_tokens, key=ecfg.max_new_tokens.get)
    P = prompt_text_tokens(prof, cond) - 1 + audio_tokens(shapes.audio_window_s, shapes.audio_window_s)
    T = ecfg.max_new_tokens[cond]
    st = Step(stage="eval", load_in_4bit=bcfg.load_in_4bit, double_quant=bcfg.bnb_double_quant, fp32_frozen=False,
              e_w=e_c, e_a=e_c, e_t=e_c, e_l=e_c, gradient_checkpointing=False, optim="none", batch=b,
              prompt_tokens=P, target_tokens=T, clip_s=shapes.audio_window_s, on_gpu=True, e_c=e_c)
    terms = []
    if bcfg.load_in_4bit:
        terms.append(Term("LLM linear weights, 4-bit", shapes.quantisable * nf4_bytes(bcfg.bnb_double_quant),
                          "quantised weights x NF4 bytes", "weights"))
        terms.append(Term("other weights", (shapes.total - shapes.quantisable) * e_c, "(all - quantised) x e_c",
                          "weights"))
    else:
        terms.append(Term("weights", shapes.total * e_c, "all parameters x e_c", "weights"))
    terms.append(Term("adapter", (shapes.lora + shapes.modules_to_save) * e_c, "LoRA x e_c", "weights"))
    static = static_length(P, T) if ecfg.compile else None
    terms += [Term(n, v, f, ph) for n, v, f, ph in generation_terms(shapes, b, b, P, T, e_c, e_c, ecfg.shared_prefix,
                                                                     static)]
    return Estimate(st, terms)


def fit(prof, stage: str, gpu: GPU | None = None):
    """(the profile as the stage runs it on this GPU, the changes made): on a GPU the planner's changes that keep the
    recipe, applied until the stage fits, logged; `DoesNotFit` (with the planner's table) when even they do not fit.
    Without a GPU, the profile as it is."""
    gpu = gpu or this_gpu()
    if gpu is None:
        return prof, []
    shapes = model_shapes(prof.section("backbone"), prof.paths)
    made: list[Change] = []
    if stage == "eval":  # the largest batch that fits (padding does not change greedy decoding)
        b = prof.section("eval").batch_size
        while b > 1 and not eval_memory(prof, shapes, gpu, b).fits(gpu):
            b //= 2
        est = eval_memory(prof, shapes, gpu, b)
        if not est.fits(gpu):
            raise DoesNotFit(f"evaluation does not fit {gpu.name} ({gpu.memory_gib:.1f} GiB) even one utterance at a "
                             f"time: {est.needed_gib:.1f} GiB needed")
        if b != prof.section("eval").batch_size:
            c = Change(f"eval.batch_size: {b} (fewer utterances per generate call: the same greedy answers)",
                       {"eval": {"batch_size": b}}, est.needed_gib, True)
            log.info("evaluation on %s: %s (%.1f GiB needed)", gpu.name, c.what, c.needed_gib)
            return prof.with_overrides(c.overrides), [c]
        return prof, []
    for name in (stage,):
        if name not in steps_of(prof, shapes, gpu):
            continue
        if memory(shapes, steps_of(prof, shapes, gpu)[name]).fits(gpu):
            continue
        found = changes(prof, shapes, gpu, name, recipe_only=True)
        if not found or not found[-1].fits:
            table = render(plan(prof, gpu))
            raise DoesNotFit(f"{name} does not fit {gpu.name} ({gpu.memory_gib:.1f} GiB), even with every change "
                             f"that keeps the recipe{': ' + '; '.join(c.what for c in found) if found else ''}. "
                             "A larger GPU, or changes to the method (the planner's list below):\n" + table)
        prof = prof.with_overrides(found[-1].overrides)
        last = {c.what.split(":")[0]: c for c in found}  # a setting changed twice (rows per call): its last value
        for c in found:
            if last[c.what.split(":")[0]] is c:
                made.append(c)
                log.info("%s on %s: %s (%.1f GiB needed)", name, gpu.name, c.what, c.needed_gib)
    return prof, made


def _gib(x: float) -> str:
    return f"{x / GiB:.2f}"


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def render(p: Plan) -> str:
    """The plan as the text `emorl plan` prints."""
    lines = [f"emorl plan: profile {p.profile}, backbone {p.backbone}, on {p.gpu.name} "
             f"({p.gpu.memory_gib:g} GiB{', ' + p.gpu.source if p.gpu.source and p.gpu.source != 'given' else ''})",
             "ESTIMATES from the model's shapes and the settings (no weights loaded); measured figures: README, "
             "Performance.",
             f"Memory at the longest clip the model hears ({p.clip_s:g} s); time at "
             f"{p.time_clip_s:.1f} s clips ({p.time_clip_from}).", "", "Parameters by part (counted on the meta device):"]
    s = p.shapes
    rows = list(s.parts.items()) + [("total", s.total),
                                    (f"LoRA r {s.lora_r} on {s.lora_modules} linears (trainable)", s.lora)]
    if s.modules_to_save:
        rows.append(("modules_to_save (trainable copies)", s.modules_to_save))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        lines.append(f"  {k:<{width}}  {v / 1e6:>10,.1f} M")
    matrix = 0.0
    for name, sp in p.stages.items():
        st, est = sp.estimate.step, sp.estimate
        paths = ""
        if name == "grpo":
            on = [n for n, v in (("shared prefix", st.shared_prefix), ("compiled decoding", st.compiled),
                                 ("rollout copy", st.rollout_copy)) if v]
            paths = (f"; {st.generation_batch} generated per batch, {st.rows} per generate call; rollout paths: "
                     f"{', '.join(on) or 'plain'}")
        lines += ["", f"{name.upper()} step: {st.batch} sequences of {st.prompt_tokens} prompt tokens "
                      f"({audio_tokens(st.clip_s, s.audio_window_s)} audio tokens for a {st.clip_s:g} s clip, padded to "
                      f"{s.audio_window_s:g} s for the encoder) + {st.target_tokens} "
                      + ("completion" if name == "grpo" else "target") + " tokens" + paths
                      + f"; {'4-bit' if st.load_in_4bit else f'{st.e_w * 8}-bit'} weights, activations "
                        f"{st.e_a * 8}-bit, gradient checkpointing {'on' if st.gradient_checkpointing else 'off'}, "
                        f"{st.optim}", f"  {'term':<48} {'GiB':>7}  phase       formula"]
        for t in est.terms:
            lines.append(f"  {t.name:<48} {_gib(t.bytes):>7}  {t.phase:<10}  {t.formula}")
        verdict = "FITS" if est.fits(p.gpu) else "DOES NOT FIT"
        lines.append(f"  peak allocated {_gib(est.peak)} GiB (weights {_gib(est.phase('weights'))} + "
                     f"{est.peak_phase} {_gib(est.phase(est.peak_phase))}); with the allocator's reserve and the CUDA "
                     f"context {est.needed_gib:.1f} GiB of {p.gpu.memory_gib:g}: {verdict}")
        if sp.changes:
            lines.append("  to make it fit, change (each on top of the ones above; * a run on this GPU makes these "
                         "itself: they keep the recipe):")
            for c in sp.changes:
                lines.append(f"    {'*' if c.keeps_recipe else '-'} {c.what}: {c.needed_gib:.1f} GiB"
                             f"{'  -> fits' if c.fits else ''}")
            if not sp.changes[-1].fits:
                lines.append("    still too large: a larger GPU (or several, see README: Several GPUs)")
        if sp.timing is not None:
            t = sp.timing
            decode = (f", a decoding step {t.decode_step_s * 1e3:.0f} ms for {st.rows} sequences"
                      if name == "grpo" else "")
            lines.append(f"  time per optimizer step ~{_duration(t.step_s)} (generation {_duration(t.generation_s)}"
                         f"{decode}, forward/backward {_duration(t.forward_backward_s)}, audio encoder "
                         f"{_duration(t.audio_encoder_s)}; at the GPU's peak rates {_duration(t.roofline_s)})")
            f = sp.fitted or t
            if sp.changes and sp.fitted is not None:
                lines.append(f"  as a run here makes it (with the * changes): ~{_duration(f.step_s)} per step")
            if sp.steps:
                one = sp.steps * f.step_s
                matrix += sp.runs * one
                lines.append(f"  one run ({sp.steps} steps): {_duration(one)}; the profile's {sp.runs} {name.upper()} "
                             f"runs: {_duration(sp.runs * one)}")
            else:
                lines.append(f"  one run: its steps are not known before the data is prepared ({sp.runs} runs)")
            if sp.paths:
                mem = {label: memory(p.shapes, replace(sp.fitted_step or st, **ROLLOUT_PATHS[label]))
                       for label in sp.paths}
                lines.append("  by rollout path (as a run here makes it; compiled: at the GPU's full bandwidth, not "
                             "measured yet: at best):")
                for label, pt in sp.paths.items():
                    if pt is None:
                        continue
                    fits = "" if mem[label].fits(p.gpu) else "  (does not fit)"
                    run = f", one run {_duration(sp.steps * pt.step_s)}" if sp.steps else ""
                    lines.append(f"    {label:<40} decoding step {pt.decode_step_s * 1e3:7.1f} ms, step "
                                 f"{_duration(pt.step_s)}{run}{fits}")
        else:
            lines.append("  time: no FLOP rate for this GPU (name one of " + ", ".join(GPUS) + ")")
    if matrix:
        lines += ["", f"The profile's whole matrix (training, one GPU): {_duration(matrix)}"]
    lines += ["", "VERDICT: " + ("fits " if p.fits() else "does NOT fit ") + p.gpu.name]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The README's planner table (python -m emorl_lib.golden readme): generated, never typed
# ----------------------------------------------------------------------------------------------------------------
README_GPUS = ("t4", "a100-40", "h100")
README_CLIP_S = 5.0  # the clip of the H100 measurements (benchmarks/results/grpo_full_h100.csv)


def readme_block(prof, clip_s: float = README_CLIP_S) -> str:
    """The README's table of the profile's GRPO on each GPU of README_GPUS: the memory as configured, what a run
    there changes by itself, and the time per rollout path (estimates; the compiled path at the GPU's full
    bandwidth)."""
    begin, end = readme_markers(prof.name)
    lines = [begin, f"<!-- generated by `python -m emorl_lib.golden readme` from emorl_lib/plan.py (profile "
                    f"{prof.name}): estimates, not measurements; do not edit by hand -->", "",
             f"| GPU | GRPO as configured (30 s clip) | what a run there changes by itself | then | decoding step "
             f"and one {run_steps(prof, 'grpo') or '?'}-step run at {clip_s:g} s clips: plain / shared prefix / + "
             "rollout copy / + compiled (at best) |", "|---|---|---|---|---|"]
    for key in README_GPUS:
        gpu = GPUS[key]
        shapes = model_shapes(prof.section("backbone"), prof.paths)
        est = memory(shapes, steps_of(prof, shapes, gpu)["grpo"])
        as_is = f"{est.needed_gib:.1f} GiB: {'fits' if est.fits(gpu) else 'does not fit'}"
        try:
            fitted, made = fit(prof, "grpo", gpu)
        except DoesNotFit:
            lines.append(f"| {gpu.name} | {as_is} | not enough: a change to the method is needed | | |")
            continue
        then = memory(shapes, steps_of(fitted, shapes, gpu)["grpo"]).needed_gib
        p = plan(fitted, gpu, clip_s).stages["grpo"]
        cells = []
        for label in ("plain", "shared prefix", "shared prefix + rollout copy", "shared prefix + compiled"):
            t = p.paths.get(label) if p.paths else None
            if t is None:
                cells.append("-")
                continue
            fits = memory(shapes, replace(steps_of(fitted, shapes, gpu)["grpo"], **ROLLOUT_PATHS[label])).fits(gpu)
            run = f", {_duration(p.steps * t.step_s)}" if p.steps else ""
            cells.append(f"{t.decode_step_s * 1e3:.0f} ms{run}" if fits else "does not fit")
        changed = "; ".join(c.what.split(" (")[0] for c in made) or "nothing"
        lines.append(f"| {gpu.name} | {as_is} | {changed} | {then:.1f} GiB | {' / '.join(cells)} |")
    return "\n".join(lines + ["", end])


def readme_markers(profile: str) -> tuple[str, str]:
    return f"<!-- plan:{profile}:begin -->", f"<!-- plan:{profile}:end -->"

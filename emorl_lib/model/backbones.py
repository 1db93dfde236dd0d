"""Backbone registry: the real Qwen2-Audio-7B-Instruct and a tiny model of the same architecture.

Both go through one loader, so the code a researcher runs on a GPU with the 7B model is the code the tests run on
the CPU with the tiny one: same class (Qwen2AudioForConditionalGeneration), same processor, same chat template,
same 4-bit / LoRA path. The tiny model is built deterministically from a config with a locally trained tokenizer
(no hub access) and cached under `cache/models/`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..infra.io import atomic_dir, file_lock
from ..infra.paths import Paths
from ..infra.progress import lines_mode

# Tokens the chat format and the reasoning format need. Audio/turn markers are special (never generated as text);
# reasoning tags are ORDINARY tokens: TRL decodes completions with skip_special_tokens=True, which would strip
# special ones before the rewards see them (docs/pitfalls.md).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
REASONING_TAGS = (
    "<think>", "</think>", "<answer>", "</answer>", "<content>", "</content>",
    "<acoustics>", "</acoustics>", "<summary>", "</summary>",
)
REAL_HUB_ID = "Qwen/Qwen2-Audio-7B-Instruct"
TINY_BUILD_VERSION = 1


def chat_template() -> str:
    """The kit's chat template: tests `content['type'] == 'audio'` (the hub's tests for an `audio` key, which
    `datasets` adds as None to every block, so the hub template silently drops audio)."""
    return (Path(__file__).with_name("chat_template.jinja")).read_text()


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoraConfig:
    """LoRA on the language model (the `backbone.lora` section)."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # transformers 5 nests the LLM under model.model.language_model; the audio encoder also has q/k/v_proj, so a
    # regex on the language model's path adapts the LLM only (PEFT full-matches a string target against names).
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    # Modules trained in full and saved inside the adapter. Empty for the 7B model; the tiny model's random
    # embeddings, head and audio projector need it (LoRA deltas on a random network learn little).
    modules_to_save: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(f"lora.r must be >= 1 and lora.alpha > 0, not {self.r} / {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), not {self.dropout}")


@dataclass
class TinyModelConfig:
    """Sizes of the tiny model; anything here changes the cached build's hash."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    audio_d_model: int = 64
    audio_layers: int = 2
    audio_heads: int = 4
    audio_ffn: int = 128
    num_mel_bins: int = 128
    chunk_seconds: int = 4  # the real model pads every clip to 30 s; 4 s keeps the tiny model cheap
    seed: int = 0


# Qwen2-Audio-7B-Instruct's sizes, from its config.json on the hub
# (https://huggingface.co/Qwen/Qwen2-Audio-7B-Instruct/blob/main/config.json; hidden size, layers and heads are not
# written there and take Qwen2Config's defaults). Audio encoder = Whisper-large-v3's; text = Qwen2-7B.
QWEN2_AUDIO_7B_AUDIO: dict[str, Any] = {
    "model_type": "qwen2_audio_encoder", "d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120, "num_mel_bins": 128, "max_source_positions": 1500, "activation_function": "gelu",
    "scale_embedding": False}
QWEN2_AUDIO_7B_TEXT: dict[str, Any] = {
    "model_type": "qwen2", "vocab_size": 156032, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 8192,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
RANDOM_BUILD_VERSION = 1


@dataclass
class RandomModelConfig:
    """The `qwen2-audio-7b-random` backbone: the real 7B shapes with seeded RANDOM weights, for measuring memory and
    time without a download. Same class, processor, 30 s audio window and loader as the real model; the tokenizer
    is the tiny model's (text tokenises differently; audio tokens are the same). `audio`/`text` override sizes
    (e.g. a shrunk copy to rehearse the path on a CPU); anything here changes the cached build's hash."""

    seed: int = 0
    audio: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackboneConfig:
    """The `backbone` section of a profile."""

    name: str = "tiny-qwen2-audio"  # a key of BACKBONES
    path: str | None = None  # hub id or local folder (real model); None: the registry's default
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 ; auto: bf16 where the GPU has it, fp16 (T4), fp32 CPU
    load_in_4bit: bool = False
    bnb_quant_type: str = "nf4"
    bnb_double_quant: bool = True
    bnb_compute_dtype: str = "auto"
    # Kept in 16-bit when quantising: the small audio encoder and projector carry the acoustic cues. transformers 5
    # matches these from the START of a module path (or as a regex, or a suffix), so give full paths.
    quant_skip_modules: list[str] = field(
        default_factory=lambda: ["lm_head", "model.audio_tower", "model.multi_modal_projector"])
    device_map: str | None = "auto"  # auto: one GPU if there is one, else the CPU
    attn_implementation: str | None = "sdpa"
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    # 4-bit training: peft's prepare_model_for_kbit_training stores every frozen 16-bit weight (embeddings, lm_head,
    # audio encoder, norms: ~1.9B values in the 7B model) in fp32 for stability; false keeps them in the load dtype
    # (measured on an H100: 10.47 vs 6.76 GiB after loading, GRPO peak 15.0 vs ~8.7 GiB; benchmarks/results/).
    fp32_frozen_weights: bool = True
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    random: RandomModelConfig = field(default_factory=RandomModelConfig)

    def __post_init__(self) -> None:
        if self.name not in BACKBONES:
            raise ValueError(f"name {self.name!r}: expected one of {sorted(BACKBONES)}")
        for key in ("dtype", "bnb_compute_dtype"):
            if getattr(self, key) not in DTYPES:
                raise ValueError(f"{key} {getattr(self, key)!r}: expected one of {DTYPES}")
        if self.bnb_quant_type not in ("nf4", "fp4"):
            raise ValueError(f"bnb_quant_type {self.bnb_quant_type!r}: expected nf4 or fp4")


@dataclass
class Backbone:
    model: Any
    processor: Any
    config: BackboneConfig
    model_dir: str

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self):
        return next(self.model.parameters()).device


@dataclass
class BackboneEntry:
    description: str
    default_path: str | None
    build: Callable[[BackboneConfig, Paths], Path] | None = None


# ----------------------------------------------------------------------------------------------------------------
# Tiny model
# ----------------------------------------------------------------------------------------------------------------
_TINY_WORDS = (
    "neutral happy sad angry fear disgust surprise calm joy happiness excited sadness anger fearful scared "
    "surprised disgusted frustrated emotion emotions speaker voice audio clip listen listened identify classify "
    "what which the a an of in on is are was were with and or to for from by this that it its their his her "
    "content acoustics summary answer think reasoning said says words word salient emotionally "
    "pitch high low medium rising falling flat wide narrow range level loud quiet soft volume energy "
    "fast slow moderate speed rate rhythm steady irregular tense breathy harsh clear quality bright dark "
    "relative speaker's average normal above below very slightly strongly "
    "transcript no none unknown suggests suggest indicates combined overall together views cues cue "
    "choose one of from following only options candidates label output format reply respond "
    "you are helpful assistant expert recognition speech emotional state "
    "0 1 2 3 4 5 6 7 8 9 . , : ; ' \" ( ) - ?"
)


def _tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: the prompt and reasoning vocabulary (byte-level BPE still encodes
    anything else, just in more pieces)."""
    words = _TINY_WORDS.split()
    lines = [_TINY_WORDS] * 20
    tags = " ".join(REASONING_TAGS)
    for w in words:  # with and without a leading space (after a tag or a newline there is none)
        lines += [f"{tags} {w} {w.capitalize()} {w.upper()}", f"{w}\n{w.capitalize()}\n" * 5]
    return lines


def _tiny_hash(spec: TinyModelConfig) -> str:
    import transformers

    blob = json.dumps(
        {"spec": asdict(spec), "corpus": _tokenizer_corpus(), "template": chat_template(),
         "v": TINY_BUILD_VERSION, "transformers": transformers.__version__},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def tiny_model_dir(paths: Paths, spec: TinyModelConfig) -> Path:
    return paths.models / f"tiny-qwen2-audio-{_tiny_hash(spec)}"


def _build_tiny_tokenizer(spec: TinyModelConfig):
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(SPECIAL_TOKENS) - len(REASONING_TAGS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"],
        model_max_length=spec.max_position_embeddings,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = chat_template()
    return fast


def build_tiny_qwen2_audio(cfg: BackboneConfig, paths: Paths) -> Path:
    """Build (once) and cache the tiny model; returns its folder. Deterministic for a given TinyModelConfig."""
    spec = cfg.tiny
    out = tiny_model_dir(paths, spec)
    if (out / "config.json").exists():
        return out
    tok = _build_tiny_tokenizer(spec)
    audio = {"model_type": "qwen2_audio_encoder", "d_model": spec.audio_d_model, "encoder_layers": spec.audio_layers,
             "encoder_attention_heads": spec.audio_heads, "encoder_ffn_dim": spec.audio_ffn,
             "num_mel_bins": spec.num_mel_bins,
             # must equal mel frames / 2 (docs/pitfalls.md): 100 frames per second, halved by the encoder's stride-2 conv
             "max_source_positions": spec.chunk_seconds * 100 // 2}
    text = {"model_type": "qwen2", "vocab_size": len(tok), "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size, "num_hidden_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads, "num_key_value_heads": spec.num_key_value_heads,
            "max_position_embeddings": spec.max_position_embeddings, "tie_word_embeddings": False}
    return _build(out, tok, audio, text, spec.seed,
                  {"spec": asdict(spec), "version": TINY_BUILD_VERSION})


def random_shapes(spec: RandomModelConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The random backbone's (audio, text) config: the real 7B shapes with the spec's overrides."""
    return {**QWEN2_AUDIO_7B_AUDIO, **spec.audio}, {**QWEN2_AUDIO_7B_TEXT, **spec.text}


def random_model_dir(paths: Paths, spec: RandomModelConfig) -> Path:
    import transformers

    blob = json.dumps({"spec": asdict(spec), "v": RANDOM_BUILD_VERSION, "template": chat_template(),
                       "transformers": transformers.__version__}, sort_keys=True)
    return paths.models / f"qwen2-audio-7b-random-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def build_random_qwen2_audio(cfg: BackboneConfig, paths: Paths) -> Path:
    """Build (once) and cache Qwen2-Audio in the real 7B shapes with seeded random bf16 weights (16 GB on disk;
    built on the GPU when there is one, in seconds, else in ~17 GB of RAM). It is loaded like any checkpoint, so
    4-bit quantisation, LoRA and every later step see what a real 4-bit load of the real weights gives."""
    import torch

    spec = cfg.random
    out = random_model_dir(paths, spec)
    if (out / "config.json").exists():
        return out
    audio, text = random_shapes(spec)
    tok = _build_tiny_tokenizer(TinyModelConfig(max_position_embeddings=text["max_position_embeddings"]))
    return _build(out, tok, audio, text, spec.seed,
                  {"spec": asdict(spec), "version": RANDOM_BUILD_VERSION, "random_weights": True},
                  dtype=torch.bfloat16, device="cuda" if torch.cuda.is_available() else "cpu")


def _build(out: Path, tok, audio: dict[str, Any], text: dict[str, Any], seed: int, build: dict[str, Any],
           dtype=None, device: str = "cpu") -> Path:
    """Build a Qwen2-Audio from its audio and text configs with seeded random weights (`dtype`: the default dtype
    while building; None keeps fp32) and the tokenizer `tok`, save it with its processor into `out` (once: several
    processes asking at once wait for the first, a lock), and return `out`."""
    if (out / "config.json").exists():
        return out
    with file_lock(out.parent / f".{out.name}.lock"):
        if (out / "config.json").exists():
            return out
        import torch
        from transformers import (
            GenerationConfig,
            Qwen2AudioConfig,
            Qwen2AudioForConditionalGeneration,
            Qwen2AudioProcessor,
            WhisperFeatureExtractor,
        )

        eos = tok.convert_tokens_to_ids("<|im_end|>")
        # the encoder's positions are the mel frames / 2 (docs/pitfalls.md): 1500 positions = the real 30 s window
        fe = WhisperFeatureExtractor(feature_size=audio["num_mel_bins"], sampling_rate=16000, hop_length=160,
                                     chunk_length=audio["max_source_positions"] * 2 // 100, n_fft=400,
                                     padding_value=0.0, return_attention_mask=True)
        config = Qwen2AudioConfig(audio_config=audio,
                                  text_config={**text, "bos_token_id": None, "eos_token_id": eos,
                                               "pad_token_id": tok.pad_token_id},
                                  audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
        default = torch.get_default_dtype()
        if dtype is not None:
            torch.set_default_dtype(dtype)  # the hub checkpoint's dtype
        try:  # deterministic weights without touching the caller's RNG
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []), \
                    torch.device(device):
                torch.manual_seed(seed)
                model = Qwen2AudioForConditionalGeneration(config).eval()
        finally:
            torch.set_default_dtype(default)
        model.generation_config = GenerationConfig(eos_token_id=[eos, tok.pad_token_id], pad_token_id=tok.pad_token_id,
                                                   do_sample=False, max_new_tokens=256)
        try:
            with atomic_dir(out, replace=False) as tmp:  # another process that finished first keeps its (equal) copy
                model.save_pretrained(tmp, max_shard_size="4GB")
                Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok,
                                    chat_template=chat_template()).save_pretrained(tmp)
                (tmp / "emorl_build.json").write_text(json.dumps(build))
        finally:
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
        return out


BACKBONES: dict[str, BackboneEntry] = {
    "qwen2-audio-7b-instruct": BackboneEntry(
        "Qwen2-Audio-7B-Instruct (8.2B parameters), from the hub or a local folder", REAL_HUB_ID),
    "tiny-qwen2-audio": BackboneEntry(
        "Qwen2AudioForConditionalGeneration with a few million parameters, built locally (smoke runs)", None,
        build_tiny_qwen2_audio),
    "qwen2-audio-7b-random": BackboneEntry(
        "Qwen2-Audio-7B-Instruct's shapes with seeded RANDOM weights, built locally: real memory and time, "
        "meaningless outputs (GPU measurements without a download)", None, build_random_qwen2_audio),
}


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
# Qwen2-Audio's feature extractor (WhisperFeatureExtractor, chunk_length 30 in the hub's preprocessor_config.json)
# pads or CUTS every clip to 30 s: the model never hears audio past that.
REAL_AUDIO_WINDOW_S = 30.0


def processor_window_seconds(processor) -> float:
    """The audio the model hears per clip, in seconds: the feature extractor's chunk (longer audio is cut)."""
    fe = processor.feature_extractor
    return float(fe.n_samples) / float(fe.sampling_rate)


def audio_window_seconds(cfg: BackboneConfig) -> float:
    """The same, from the profile alone (no model load): the tiny model's chunk, a local folder's
    preprocessor_config.json, or the real model's 30 s."""
    entry = BACKBONES.get(cfg.name)
    if not cfg.path and entry is not None and entry.build is build_tiny_qwen2_audio:
        return float(cfg.tiny.chunk_seconds)
    pre = Path(cfg.path).expanduser() / "preprocessor_config.json" if cfg.path else None
    if pre is not None and pre.is_file():
        d = json.loads(pre.read_text(encoding="utf-8"))
        if d.get("n_samples") and d.get("sampling_rate"):
            return float(d["n_samples"]) / float(d["sampling_rate"])
        if d.get("chunk_length"):
            return float(d["chunk_length"])
    return REAL_AUDIO_WINDOW_S


SMOKE_NOTE = " [SMOKE: tiny model, synthetic data]"  # what a figure title or a table note adds to smoke numbers


def is_smoke(cfg: BackboneConfig, synthetic: bool) -> bool:
    """The one rule for "smoke numbers": a model built by the kit (tiny or random weights) or synthetic data. Their
    numbers show the mechanism at work, never what the method achieves; every table and figure of such a run says so."""
    entry = BACKBONES.get(cfg.name)
    return synthetic or (not cfg.path and entry is not None and entry.build is not None)


def kit_model_dir(cfg: BackboneConfig, paths: Paths) -> Path | None:
    """Where a model the kit builds (tiny, random) is cached, built or not; None for a hub id or a local folder."""
    if cfg.path:
        return None
    if cfg.name == "tiny-qwen2-audio":
        return tiny_model_dir(paths, cfg.tiny)
    if cfg.name == "qwen2-audio-7b-random":
        return random_model_dir(paths, cfg.random)
    return None


def resolve_model_dir(cfg: BackboneConfig, paths: Paths) -> str:
    if cfg.name not in BACKBONES:
        raise KeyError(f"unknown backbone '{cfg.name}'; known: {sorted(BACKBONES)}")
    spec = BACKBONES[cfg.name]
    if cfg.path:
        return str(cfg.path)
    if spec.build is not None:
        return str(spec.build(cfg, paths))
    return str(spec.default_path)


def resolve_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"backbone dtype '{name}': expected auto, float32, bfloat16 or float16") from None


def load_processor(model_dir: str):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.chat_template = chat_template()  # the kit's, also over the real model's hub template
    processor.tokenizer.padding_side = "left"  # batched generation
    return processor


def disable_cpu_4bit_repack(model) -> int:
    """bitsandbytes 0.50 on AVX512-BF16 CPUs repacks 4-bit weights in place on the first eval no-grad forward,
    after which every training step fails (docs/pitfalls.md). Returns the number of layers guarded."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def _quantization_config(cfg: BackboneConfig):
    from transformers import BitsAndBytesConfig

    compute = resolve_dtype(cfg.bnb_compute_dtype if cfg.bnb_compute_dtype != "auto" else cfg.dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=cfg.bnb_quant_type, bnb_4bit_use_double_quant=cfg.bnb_double_quant,
        bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=list(cfg.quant_skip_modules),
    )


def load_model(cfg: BackboneConfig, model_dir: str, adapter: str | None = None, trainable: bool = True):
    """Base model (+ 4-bit) (+ a new LoRA, or a saved adapter). Never trust_remote_code; safetensors only."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration
    from transformers.utils import logging as hf_logging

    if lines_mode():  # progress as whole lines: no "Loading weights" bar at every load
        hf_logging.disable_progress_bar()
    dtype = resolve_dtype(cfg.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    on_gpu = torch.cuda.is_available()
    if cfg.device_map == "auto":
        # one whole model per process: under `accelerate launch` (DDP) each rank takes its own GPU;
        # DeepSpeed ZeRO places (and shards) parameters itself, so it gets no device map
        deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        kwargs["device_map"] = {"": local_rank} if on_gpu and not deepspeed else None
    elif cfg.device_map:
        kwargs["device_map"] = cfg.device_map
    if cfg.load_in_4bit:
        kwargs["quantization_config"] = _quantization_config(cfg)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, **kwargs)
    if cfg.load_in_4bit and not on_gpu:
        disable_cpu_4bit_repack(model)
    if trainable and cfg.load_in_4bit and cfg.fp32_frozen_weights:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif trainable and cfg.load_in_4bit:  # what prepare_model_for_kbit_training does, without the fp32 copies
        for p in model.parameters():
            p.requires_grad_(False)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
    elif trainable and cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    elif trainable and cfg.lora.enabled:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        lcfg = PeftLoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules, bias="none", task_type="CAUSAL_LM",
            modules_to_save=list(cfg.lora.modules_to_save) or None,
        )
        model = get_peft_model(model, lcfg)
    if not trainable:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return model


def load_backbone(
    cfg: BackboneConfig, paths: Paths, adapter: str | os.PathLike | None = None, trainable: bool = True
) -> Backbone:
    """The one entry point: model + processor (kit chat template, left padding) for any registered backbone."""
    model_dir = resolve_model_dir(cfg, paths)
    processor = load_processor(model_dir)
    model = load_model(cfg, model_dir, adapter=str(adapter) if adapter else None, trainable=trainable)
    return Backbone(model=model, processor=processor, config=cfg, model_dir=model_dir)

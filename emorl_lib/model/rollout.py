"""Fast generation paths for Qwen2-Audio, exact with respect to a plain `model.generate` call: the one way the kit
generates, for GRPO's rollouts (training/grpo.py) and evaluation's batched greedy decoding (model/generate.py).

Each path takes the batch `generate` would get and a GenerationConfig, and returns the tensor `model.generate` returns
(prompt ids, then completion ids, one row per sequence), so that what follows (TRL's end-of-sequence masking, the
log-prob forwards, evaluation's decoding of the text) is what it is with the plain call.

(a) `shared_prefix_generate`: the batch's distinct prompts (with their audio) are prefilled once, up to their last
    token, through the backbone only (no LM head: no logits at every prompt position); the KV cache is gathered to
    every row (a GRPO group's G copies of a prompt read one prefix) and `generate` itself then runs with that cache:
    it feeds each row's last prompt token and decodes as before. Exact: logits within float rounding of the plain
    call (tests/test_rollout.py); on by default.
(b) `compiled_decoding`: a static KV cache and a compiled decoding step (CUDA graphs on a GPU): lifts TRL's
    `disable_compile` and the bitsandbytes quantizer's refusal for the duration of a call. Exact; off by default
    until a GPU measurement shows it faster (on the CPU it is slower).
(d) `RolloutCopy`: a plain copy of the language model's linears, W = dequant(W4) + s * B @ A, in preallocated
    buffers refreshed in place after each optimizer step, every other module shared with the training model.
    Decoding then runs plain matrix products without LoRA wrappers or 4-bit kernels. Within the rounding of W in its
    dtype; off by default until a GPU measurement (it needs 2 bytes per language-model weight: >= 40 GB GPUs).
(c) how many sequences one call holds (`GenerationPaths.rows_per_generate`) is the planner's (plan.py), from the
    GPU's memory.

Read in the pinned code (transformers 5.23, TRL 1.16, peft 0.21, bitsandbytes 0.50): generation/utils.py `_prefill`
feeds `input_ids.shape[1] - past_length` tokens, so a prefix must stop one token short of the prompt (a cache as long
as the prompt re-feeds it whole); `generate` refuses `cache_implementation` together with a cache; TRL binds its fused
LM head as an instance `forward` of the model, which a copy must drop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch

AUDIO_KEYS = ("input_features", "feature_attention_mask")
STATIC_MULTIPLE = 256  # (b) a static cache's length is rounded up to this: nearby prompt lengths share one graph


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def base_model(model):
    """The transformers model under a PeftModel (LoRA layers are injected in place, so calling it applies them)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def distinct_rows(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, inverse): `first[u]` the first row of the u-th distinct row (equal in EVERY tensor, exactly), and
    `inverse[r]` the distinct row of row r, so that `t[first][inverse]` equals `t` for every tensor. Rows of a GRPO
    group are consecutive (TRL's RepeatSampler), so the previous distinct row is tried first."""
    n = tensors[0].shape[0]
    first: list[int] = []
    inverse: list[int] = []
    for r in range(n):
        found = None
        for u in range(len(first) - 1, -1, -1):
            rep = first[u]
            if all(torch.equal(t[r], t[rep]) for t in tensors):
                found = u
                break
        if found is None:
            first.append(r)
            found = len(first) - 1
        inverse.append(found)
    dev = tensors[0].device
    return torch.tensor(first, device=dev), torch.tensor(inverse, device=dev)


def generate_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """The position ids `generate` derives from a left-padded mask (GenerationMixin.
    _prepare_position_ids_for_generation): cumsum - 1, padding at 0."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def _stochastic(model) -> bool:
    """Dropout active anywhere in a model in train mode: rows sharing a prefix would then not be what separate
    prefills draw (each row its own mask), so the shared prefix is not exact and is not used."""
    if not model.training:
        return False
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 and m.training for m in model.modules())


# ----------------------------------------------------------------------------------------------------------------
# (a) shared-prefix prefill
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Prefix:
    """The KV cache of a batch's distinct prompts up to (not including) their last token."""

    cache: Any  # DynamicCache with `len(first)` rows
    first: torch.Tensor
    inverse: torch.Tensor
    length: int  # P - 1


def prefill_prefix(model, input_ids, attention_mask, input_features=None, feature_attention_mask=None,
                   first=None, inverse=None) -> Prefix:
    """Run the distinct rows' prompts, all but the last column, through the backbone (audio tower, projector,
    language model; no LM head) into a DynamicCache, with the position ids `generate` would give them."""
    from transformers import DynamicCache

    hf = base_model(model)
    if first is None:
        ts = [input_ids, attention_mask] + [t for t in (input_features, feature_attention_mask) if t is not None]
        first, inverse = distinct_rows(ts)
    P = input_ids.shape[1]
    if P < 2:
        raise ValueError("shared prefix: a prompt needs at least 2 tokens")
    ids = input_ids[first, : P - 1]
    mask = attention_mask[first]
    pos = generate_position_ids(mask)[:, : P - 1]
    kw = {}
    if input_features is not None:
        kw = {"input_features": input_features[first], "feature_attention_mask": feature_attention_mask[first]}
    cache = DynamicCache(config=hf.config.get_text_config(decoder=True))
    hf.model(input_ids=ids, attention_mask=mask[:, : P - 1], position_ids=pos, past_key_values=cache, use_cache=True,
             **kw)
    return Prefix(cache, first, inverse, P - 1)


def expand_prefix(prefix: Prefix, static_len: int | None = None, config=None):
    """The prefix's cache with a row per sequence (row r = distinct row inverse[r]): a DynamicCache (gathered,
    `batch_select_indices`, which accepts repeated indices), or a StaticCache of `static_len` positions whose
    first P - 1 are the prefix (for the compiled decoding step)."""
    cache = prefix.cache
    if static_len is None:
        cache.batch_select_indices(prefix.inverse)
        return cache
    from transformers import StaticCache

    static = StaticCache(config=config, max_cache_len=static_len)
    k0 = cache.layers[0].keys
    n = prefix.inverse.numel()
    static.early_initialization(batch_size=n, num_heads=k0.shape[1], head_dim=k0.shape[-1], dtype=k0.dtype,
                                device=k0.device)
    for src, dst in zip(cache.layers, static.layers):
        dst.keys[:, :, : prefix.length].copy_(src.keys.index_select(0, prefix.inverse))
        dst.values[:, :, : prefix.length].copy_(src.values.index_select(0, prefix.inverse))
        dst.cumulative_length.fill_(prefix.length)
    return static


def shared_prefix_generate(model, inputs: dict, generation_config, static_len: int | None = None,
                           decode_model=None, **generate_kwargs):
    """What `model.generate(**inputs, generation_config=generation_config)` returns, with each distinct prompt
    (and its audio) prefilled once for its whole group. `inputs` is the batch TRL builds (left-padded input_ids,
    attention_mask, input_features, feature_attention_mask), one row per sequence. `static_len`: a StaticCache of
    that many positions (compiled decoding); `decode_model`: the model that runs the last prompt token and the
    decoding (a RolloutCopy's), default `model`. Falls back to the plain call when dropout is active."""
    if _stochastic(model):
        return model.generate(**inputs, generation_config=generation_config, **generate_kwargs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    feats, fmask = inputs.get("input_features"), inputs.get("feature_attention_mask")
    with torch.no_grad():
        prefix = prefill_prefix(model, ids, mask, feats, fmask)
        cfg = base_model(model).config.get_text_config(decoder=True)
        cache = expand_prefix(prefix, static_len, cfg)
        gen = decode_model if decode_model is not None else model
        gc = generation_config
        if gc.cache_implementation is not None:  # a cache is given: generate refuses both
            import copy

            gc = copy.deepcopy(gc)
            gc.cache_implementation = None
        # no audio: it is in the cache; generate feeds the last prompt token (prompt length - cache length = 1)
        rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask") + AUDIO_KEYS}
        return gen.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, generation_config=gc,
                            **rest, **generate_kwargs)


# ----------------------------------------------------------------------------------------------------------------
# (b) static cache + compiled decoding step
# ----------------------------------------------------------------------------------------------------------------
def compile_config(device_type: str, mode: str | None = None, fullgraph: bool = False):
    """transformers' CompileConfig for the decoding step: CUDA graphs (`reduce-overhead`) on a GPU; on other
    devices inductor's default mode, with `_compile_all_devices` (transformers compiles on cuda/xpu/... only)."""
    from transformers import CompileConfig

    cc = CompileConfig(fullgraph=fullgraph, dynamic=False,
                       mode=mode or ("reduce-overhead" if device_type == "cuda" else "default"))
    if device_type not in ("cuda", "xpu"):
        cc._compile_all_devices = True
    return cc


@contextlib.contextmanager
def compiled_decoding(model, generation_config, mode: str | None = None) -> Iterator[Any]:
    """For the duration of the block: a copy of `generation_config` that asks for a static cache and a compiled
    decoding step (TRL 1.16 builds its rollout config with disable_compile=True, grpo_trainer.py:1173), and the
    bitsandbytes quantizer's refusal lifted (transformers 5.23 `_valid_auto_compile_criteria` ands
    `hf_quantizer.is_compileable`, False for bnb: quantizers/base.py; bnb >= 0.46 registers its 4-bit ops with fake
    kernels for torch.compile). Prefill stays eager (generate compiles the decoding call only). Yields the config."""
    import copy

    gc = copy.deepcopy(generation_config)
    gc.disable_compile = False
    gc.cache_implementation = "static"
    dev = next(base_model(model).parameters()).device.type
    gc.compile_config = compile_config(dev, mode)
    quantizer = getattr(base_model(model), "hf_quantizer", None)
    cls = type(quantizer) if quantizer is not None else None
    saved = cls.__dict__.get("is_compileable") if cls is not None else None
    if cls is not None:
        cls.is_compileable = property(lambda self: True)
    try:
        yield gc
    finally:
        if cls is not None:
            if saved is None:
                del cls.is_compileable
            else:
                cls.is_compileable = saved


def static_cache_length(prompt_len: int, max_new_tokens: int, multiple: int = STATIC_MULTIPLE) -> int:
    """A static cache's length, rounded up so that batches of nearby prompt lengths reuse one compiled graph
    (transformers keeps max(previous, new): generation/utils.py `_prepare_static_cache`)."""
    need = prompt_len + max_new_tokens
    return int(math.ceil(need / multiple) * multiple)


# ----------------------------------------------------------------------------------------------------------------
# (d) a plain 16-bit rollout copy: W = dequant(nf4) + s B A
# ----------------------------------------------------------------------------------------------------------------
def _lora_parts(module):
    """(base linear, [(A weight, B weight, scaling)]) of a PEFT LoRA layer with its active, unmerged adapters;
    (module, []) for a plain linear or 4-bit linear; None for anything else."""
    import bitsandbytes as bnb

    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover
        LoraLayer = ()
    if LoraLayer and isinstance(module, LoraLayer):
        if getattr(module, "merged", False):
            raise ValueError("RolloutCopy: a LoRA layer is merged; unmerge it first")
        base = module.get_base_layer()
        parts = []
        if not module.disable_adapters:
            for name in module.active_adapters:
                if name not in module.lora_A:
                    continue
                if module.use_dora.get(name) or name in getattr(module, "lora_variant", {}):
                    raise NotImplementedError("RolloutCopy: DoRA / LoRA variants are not supported")
                if getattr(module, "lora_bias", {}).get(name):
                    raise NotImplementedError("RolloutCopy: lora_bias is not supported")
                if getattr(module, "fan_in_fan_out", False):
                    raise NotImplementedError("RolloutCopy: fan_in_fan_out is not supported")
                parts.append((module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name]))
        return base, parts
    if isinstance(module, (torch.nn.Linear, bnb.nn.Linear4bit)):
        return module, []
    return None


def _dense_weight(base, out: torch.Tensor) -> None:
    """base's weight, dequantised when 4-bit, written into `out`."""
    import bitsandbytes as bnb

    w = base.weight
    if isinstance(base, bnb.nn.Linear4bit) or getattr(w, "quant_state", None) is not None:
        deq = bnb.functional.dequantize_4bit(w.data, w.quant_state)
        out.copy_(deq.reshape(out.shape))
    else:
        out.copy_(w.data)


class DenseLinear(torch.nn.Linear):
    """nn.Linear that computes in its weight's dtype and returns the input's, as bitsandbytes' Linear4bit does
    (input cast to the compute dtype, output back: bnb/nn/modules.py Linear4bit.forward), so that the rollout copy
    drops into a model whose residual stream is wider (fp32 norms after peft's k-bit preparation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.dtype == w.dtype:
            return torch.nn.functional.linear(x, w, self.bias)
        return torch.nn.functional.linear(x.to(w.dtype), w, self.bias).to(x.dtype)


class RolloutCopy:
    """A plain copy of a (PEFT, possibly 4-bit) Qwen2-Audio for generation: every linear of the language model is
    an nn.Linear whose weight is a preallocated buffer holding dequant(W) + sum of s * B @ A over the active
    adapters, in `dtype` (default: the 4-bit compute dtype, or the weight's); every other module (embeddings,
    norms, rotary, audio tower, projector, lm_head, modules_to_save wrappers) is the training model's own object,
    so it always reads the current weights. `refresh()` rewrites the buffers in place (after each optimizer step;
    their addresses do not change, so a compiled or CUDA-graph decoding step stays valid). `model` is the copy:
    call `model.generate(...)` or pass it as `decode_model` to `shared_prefix_generate`.

    Exact only up to the rounding of W + s B A in `dtype`; LoRA dropout must be off (the kit's disable_dropout)."""

    def __init__(self, model, dtype: torch.dtype | None = None, scope: str = "language_model"):
        hf = base_model(model)
        self.source = hf
        self.layers: list[tuple[Any, list, torch.Tensor]] = []  # (base, lora parts, buffer)
        self.model = self._shell(hf, scope, dtype)
        self.refresh()

    # -- building --
    def _shell(self, hf, scope: str, dtype):
        """A structural copy of the modules on the path from the root to each replaced linear (shallow: the
        parameters and every other module are shared)."""
        import copy

        memo: dict[int, Any] = {}

        def clone(mod):
            if id(mod) in memo:
                return memo[id(mod)]
            new = copy.copy(mod)
            new.__dict__ = dict(mod.__dict__)
            for attr in ("forward", "_compiled_call", "_last_compile_config", "_previous_max_cache_length"):
                new.__dict__.pop(attr, None)  # TRL's fused-head forward is bound to the original
            new._modules = dict(mod._modules)
            new._parameters = dict(mod._parameters)
            new._buffers = dict(mod._buffers)
            memo[id(mod)] = new
            return new

        root = clone(hf)
        root.hf_quantizer = None
        for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
            if flag in root.__dict__:
                root.__dict__[flag] = False
        # the outermost linear-like module of each position: a LoRA wrapper, not its base_layer inside
        targets, inside = [], set()
        for n, m in hf.named_modules():
            if scope not in n or _lora_parts(m) is None or any(n.startswith(p + ".") for p in inside):
                continue
            targets.append((n, m))
            inside.add(n)
        for name, mod in targets:
            base, parts = _lora_parts(mod)
            if base is mod and not hasattr(mod.weight, "quant_state") and not parts and \
                    type(mod) is torch.nn.Linear:
                continue  # a plain linear without LoRA: shared as it is
            out_f, in_f = base.out_features, base.in_features
            qs = getattr(base.weight, "quant_state", None)
            dt = dtype or (getattr(base, "compute_dtype", None) or (qs.dtype if qs is not None else base.weight.dtype))
            dev = base.weight.device
            buf = torch.empty(out_f, in_f, dtype=dt, device=dev)
            lin = DenseLinear(in_f, out_f, bias=base.bias is not None, device="meta")
            lin.weight = torch.nn.Parameter(buf, requires_grad=False)
            if base.bias is not None:
                lin.bias = torch.nn.Parameter(base.bias.detach().to(dt), requires_grad=False) \
                    if base.bias.dtype != dt else base.bias
            self.layers.append((base, parts, buf))
            # clone the path down to the parent and set the replacement there
            path = name.split(".")
            parent = root
            for part in path[:-1]:
                child = parent._modules[part]
                if id(child) not in memo:
                    parent._modules[part] = clone(child)
                parent = parent._modules[part]
            parent._modules[path[-1]] = lin
        return root

    # -- refreshing --
    @torch.no_grad()
    def refresh(self) -> None:
        """W = dequant(W4) + sum s B A, in place (no new allocation beyond one layer's dequantised weight)."""
        for base, parts, buf in self.layers:
            _dense_weight(base, buf)
            for A, B, s in parts:
                buf.addmm_(B.to(buf.dtype), A.to(buf.dtype), alpha=s)

    @property
    def nbytes(self) -> int:
        return sum(buf.numel() * buf.element_size() for _, _, buf in self.layers)


# ----------------------------------------------------------------------------------------------------------------
# one entry point for every path (GRPO rollouts and evaluation's batched greedy generation)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class GenerationPaths:
    """Which paths a generate call takes (the grpo section's `rollout_*` settings, the eval section's)."""

    shared_prefix: bool = True  # (a)
    compiled: bool = False  # (b)
    rollout_copy: bool = False  # (d)
    rows_per_generate: int | None = None  # (c) sequences per generate call; None: all of them in one call


def _pad_cat(outs: list[torch.Tensor], pad_id: int) -> torch.Tensor:
    """Row chunks of generate's output (each as wide as its own longest row) right-padded to one width, as one
    generate call pads finished rows."""
    width = max(o.shape[1] for o in outs)
    return torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[1]), value=pad_id) for o in outs], 0)


def fast_generate(model, inputs: dict, generation_config, settings: GenerationPaths | None = None,
                  copy: RolloutCopy | None = None, **generate_kwargs):
    """`model.generate(**inputs, generation_config=generation_config)` through the configured paths: rows in
    chunks of `rows_per_generate` (c), each chunk's distinct prompts prefilled once (a), decoding with a static
    cache and a compiled step (b), on the rollout copy (d) when one is given. Returns the sequences tensor
    (`return_dict_in_generate` is honoured only without chunking)."""
    s = settings or GenerationPaths()
    rows = inputs["input_ids"].shape[0]
    chunk = s.rows_per_generate or rows
    if chunk < rows:
        one = dataclasses.replace(s, rows_per_generate=None)
        outs = [fast_generate(model, {k: v[i:i + chunk] for k, v in inputs.items()}, generation_config, one, copy,
                              **generate_kwargs)
                for i in range(0, rows, chunk)]
        if any(not isinstance(o, torch.Tensor) for o in outs):
            raise ValueError("rows_per_generate: return_dict_in_generate is not supported with chunks")
        return _pad_cat(outs, generation_config.pad_token_id)
    gen_model = copy.model if copy is not None else model
    with contextlib.ExitStack() as stack:
        gc, static_len = generation_config, None
        if s.compiled:
            gc = stack.enter_context(compiled_decoding(gen_model, generation_config))
            static_len = static_cache_length(inputs["input_ids"].shape[1], gc.max_new_tokens, STATIC_MULTIPLE)
            gc.max_cache_len = static_len
        if s.shared_prefix and inputs["input_ids"].shape[1] >= 2:
            return shared_prefix_generate(gen_model, inputs, gc, static_len=static_len, **generate_kwargs)
        return gen_model.generate(**inputs, generation_config=gc, **generate_kwargs)

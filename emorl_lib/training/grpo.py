"""GRPO with ESWR + ESR on Qwen2-Audio: an audio-true subclass of TRL 1.16's GRPOTrainer.

Stock GRPOTrainer handles images only. With Qwen2-Audio it sees the audio when generating but computes every
log-prob (policy, old policy, reference) WITHOUT it, silently (docs/pitfalls.md). This subclass carries
`input_features` and `feature_attention_mask` from prompt tokenisation into the generated batch and into every
log-prob forward, and refuses to run a log-prob forward without them. It overrides private TRL methods, so TRL is
pinned exactly (pyproject.toml) and tests/test_training.py spies on the model to prove the audio arrives.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import set_seed
from transformers.trainer_utils import SchedulerType
from trl import GRPOConfig, GRPOTrainer

from ..data.labels import candidates as corpus_candidates
from ..data.testsets import heldout_set
from ..infra.config import setting
from ..infra.io import append_jsonl
from ..infra.log import get_logger
from ..method.prompts import PromptConfig, build_messages
from ..method.rewards import AccuracyReward, FormatReward, RewardConfig, build_rewards
from ..model.backbones import load_backbone
from ..model.rollout import AUDIO_KEYS, GenerationPaths, RolloutCopy, fast_generate
from .policy import PolicyCurve, training_subset
from .runs import (
    KitTrainerFields,
    RunSetup,
    open_run,
    run_callbacks,
    train_and_save,
    trained_hash,
    training_rows,
)

log = get_logger(__name__)

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")  # what TRL 1.16's loss accepts


@dataclass
class EmoGRPOConfig(KitTrainerFields, GRPOConfig):
    """The `grpo` section: TRL's GRPOConfig, every field of which a profile may set, with the kit's defaults where
    they differ (the paper's recipe for the 7B model in QLoRA: TRL's own defaults moved across versions, so each
    setting the recipe depends on is pinned here) and the kit's few fields of its own."""

    # The paper's recipe (tags: quoted = from the paper via a third party; inferred = related work; kit = ours)
    num_generations: int | None = setting(6, "quoted", "G, completions per prompt")
    learning_rate: float = setting(1.0e-5, "kit", "the paper's 1e-6 is for full fine-tuning [quoted]; LoRA needs "
                                                  "about 10x")
    lr_scheduler_type: SchedulerType | str = setting("linear", "inferred",
                                                     "R1-AQA sets none: TRL 0.15.2's default, linear")
    beta: float = setting(0.04, "inferred", "KL weight, R1-AQA (TRL 1.16 defaults to 0)")
    temperature: float = setting(1.0, "inferred", "R1-AQA")
    top_p: float = setting(1.0, "inferred", "R1-AQA: plain sampling")
    top_k: int = setting(0, "inferred", "0: off")
    max_completion_length: int | None = setting(256, "inferred", "R1-AQA (TRL 1.16 defaults to 512)")
    loss_type: str = setting("grpo", "inferred", "per-sequence mean, as TRL 0.15 that R1-AQA used (TRL 1.16: dapo)")
    scale_rewards: str = setting("group", "inferred", "per-group mean/std advantage")
    num_iterations: int = setting(1, "inferred", "policy updates per generation batch (mu)")
    epsilon: float = setting(0.2, "inferred", "clipping")
    # The kit's run shape
    per_device_train_batch_size: int = setting(6, "kit", "completions per device per step (TRL counts completions): "
                                                        "one prompt x G fits a 16 GB GPU")
    gradient_accumulation_steps: int = setting(4, "kit", "4 prompts per optimizer step")
    max_steps: int = setting(2000, "kit", "> 0: the run length in optimizer steps")
    logging_steps: float = setting(1, "kit", "a CSV row per step", observes=True)
    save_steps: float = setting(100, "kit", "checkpoint every N steps: an interrupted run resumes exactly",
                                observes=True)
    disable_dropout: bool = setting(True, "kit", "dropout off: the policy and reference forwards agree")
    # The kit's own fields
    log_completions_every: int = setting(20, "kit", "sampled completions to <run>.completions.jsonl every N steps",
                                         observes=True)
    train_modules_to_save: bool = setting(True, "kit", "false: GRPO updates the LoRA weights only and leaves the "
                                                       "modules the SFT warm-up trained in full "
                                                       "(backbone.lora.modules_to_save) as they are")
    balanced_prompts: bool = setting(False, "kit", "true: each class contributes as many training prompts as the "
                                                   "smallest (GRPO maximises expected accuracy over the prompts it "
                                                   "sees: on imbalanced prompts drifting to the majority class pays)")
    policy_every: int = setting(0, "kit", "the exact expected accuracy and reward under the sampling temperature, "
                                          "on a fixed training subset and the held-out set, every N steps and at "
                                          "the ends (training/policy.py); 0: off", observes=True)
    policy_utterances: int | None = setting(64, "kit", "the policy curve scores a fixed class-balanced subset of "
                                                       "this many of the training prompts and of the held-out set; "
                                                       "null: all of both", observes=True)
    policy_prefixes: int = setting(4, "kit", "ESR/EUR: reasoning prefixes sampled per utterance for the policy "
                                             "curve", observes=True)
    cache_audio: bool = setting(True, "kit", "the frozen audio encoder runs once per clip per generation batch "
                                             "(exact)")
    cache_features: bool = setting(True, "kit", "a group's G copies of a prompt share one audio load and mel "
                                                "extraction (exact)")
    # How rollouts are generated (model/rollout.py). Speed and memory choices: the completions an optimizer step
    # trains on follow the same distribution either way (their bits may differ), so changing one retrains nothing.
    rollout_shared_prefix: bool = setting(True, "kit", "each prompt and its audio prefilled once per group, the KV "
                                                       "cache shared by its G completions (exact; less time and "
                                                       "memory)", observes=True)
    rollout_compile: bool = setting(False, "kit", "a static KV cache and a compiled decoding step (CUDA graphs on "
                                                  "a GPU; exact); off until a GPU measurement shows it faster: on "
                                                  "the CPU it is slower", observes=True)
    rollout_copy: bool = setting(False, "kit", "decode on a 16-bit copy W = dequant(nf4) + s B A refreshed after "
                                               "each optimizer step (within the rounding of W; 2 bytes per language-"
                                               "model weight: GPUs of 40 GB and more); off until a GPU measurement",
                                 observes=True)
    rollout_rows_per_generate: int | None = setting(None, "kit", "sequences per generate call, whole groups; null: "
                                                                 "the whole generation batch (on a GPU the planner "
                                                                 "sets what fits)", observes=True)

    SET_ELSEWHERE: ClassVar[dict[str, str]] = {
        **KitTrainerFields.SET_ELSEWHERE,
        "reward_weights": "set reward.accuracy_weight / reward.format_weight",
        "log_completions": "the kit logs completions itself (log_completions_every)",
        "prompts_per_step": "set per_device_train_batch_size, which counts completions (prompts x num_generations)",
    }
    RENAMED: ClassVar[dict[str, str]] = {"max_train_prompts": "max_utterances"}

    @staticmethod
    def check(cfg) -> None:
        KitTrainerFields.check(cfg)
        if cfg.num_generations is None or cfg.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (a group needs two completions), not {cfg.num_generations}")
        if cfg.per_device_train_batch_size % cfg.num_generations:
            raise ValueError(f"per_device_train_batch_size ({cfg.per_device_train_batch_size}) counts completions and "
                             f"must be a multiple of num_generations ({cfg.num_generations})")
        if cfg.max_completion_length is not None and cfg.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be >= 1, not {cfg.max_completion_length}")
        if not cfg.temperature > 0:
            raise ValueError(f"temperature must be > 0, not {cfg.temperature}")
        if not 0 < cfg.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {cfg.top_p}")
        if cfg.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {cfg.loss_type!r}: expected one of {LOSS_TYPES} (TRL 1.16)")
        if cfg.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards {cfg.scale_rewards!r}: expected group, batch or none")
        if cfg.beta < 0 or cfg.epsilon < 0:
            raise ValueError(f"beta and epsilon must be >= 0, not {cfg.beta} / {cfg.epsilon}")
        if cfg.log_completions_every < 0:
            raise ValueError(f"log_completions_every must be >= 0, not {cfg.log_completions_every}")
        if cfg.policy_every < 0 or cfg.policy_prefixes < 1 or (cfg.policy_utterances is not None
                                                               and cfg.policy_utterances < 1):
            raise ValueError(f"policy_every must be >= 0, policy_prefixes >= 1 and policy_utterances null or >= 1; "
                             f"got {cfg.policy_every}, {cfg.policy_prefixes}, {cfg.policy_utterances}")
        rows = cfg.rollout_rows_per_generate
        if rows is not None and (rows < 1 or rows % cfg.num_generations):
            raise ValueError(f"rollout_rows_per_generate ({rows}) must be a positive multiple of num_generations "
                             f"({cfg.num_generations}): whole groups, each prefilled once")

    def __post_init__(self) -> None:
        self._kit_post_init()
        self.log_completions = False
        super().__post_init__()


def fp32_trainable_weights(model) -> int:
    """TRL 1.16 casts a quantised model's trainable (LoRA) weights to bf16, QLoRA's recommendation. Under fp16 mixed
    precision (a T4) the gradient scaler then fails at the first optimizer step ("_amp_foreach_non_finite_check_and_
    unscale_cuda not implemented for 'BFloat16'", measured: benchmarks/results/), so they go back to fp32, what
    peft made them. Returns how many tensors were cast."""
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.float()
            n += 1
    if n:
        log.info("fp16 training: %d trainable tensors TRL had cast to bf16 are fp32 again", n)
    return n


class AudioGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose every forward sees the audio. Rewards are plain TRL callables.

    Every forward still receives the audio features; two exact caches only avoid recomputing them: identical
    prompts of a group are tokenised (audio loaded, mel features extracted) once (`cache_features`), and during
    `train()` the frozen audio encoder runs once per distinct clip of a generation batch (`cache_audio`,
    `EncoderCache` below; skipped with a notice when the encoder has trainable parameters).

    Rollouts go through the kit's generation paths (model/rollout.py, the `rollout_*` settings): TRL 1.16's own
    generation (`_generate_single_turn`, grpo_trainer.py:1763-1891) is kept as it is, padding, unwrapping and EOS
    masking included; only its `unwrapped_model.generate(...)` call (:1873) goes through `fast_generate`, which
    returns the same tensor. vLLM, continuous batching and DeepSpeed ZeRO-3 keep TRL's path. The rollout copy is
    built at the first rollout and refreshed whenever the optimizer has stepped, like TRL's vLLM weight sync."""

    def __init__(self, *args: Any, completions_log: Path | None = None, log_completions_every: int = 0,
                 cache_audio: bool = True, cache_features: bool = True, **kwargs: Any):
        model = kwargs.get("model")
        cfg = getattr(model, "config", None)
        # TRL suppresses sampling of the image token; for audio the token to suppress is <|AUDIO|>.
        if cfg is not None and getattr(cfg, "image_token_id", None) is None and hasattr(cfg, "audio_token_id"):
            cfg.image_token_id = cfg.audio_token_id
        self._audio: dict[str, torch.Tensor] | None = None
        self._completions_log = completions_log
        self._log_completions_every = log_completions_every
        self._cache_audio, self._cache_features = cache_audio, cache_features
        self.encoder_cache: EncoderCache | None = None
        super().__init__(*args, **kwargs)
        if self.args.fp16:
            fp32_trainable_weights(self.model)

    # -- the audio encoder runs once per clip -------------------------------------------------------------------
    def train(self, *args: Any, **kwargs: Any):
        tower = find_audio_tower(self.model) if self._cache_audio else None
        if tower is not None and any(p.requires_grad for p in tower.parameters()):
            log.info("cache_audio: the audio encoder has trainable parameters; its output is not cached")
            tower = None
        if tower is None:
            return super().train(*args, **kwargs)
        self.encoder_cache = EncoderCache().install(tower)
        try:
            return super().train(*args, **kwargs)
        finally:
            self.encoder_cache.uninstall()

    # -- rollouts through the kit's generation paths -------------------------------------------------------------
    def generation_paths(self) -> GenerationPaths:
        a = self.args
        return GenerationPaths(getattr(a, "rollout_shared_prefix", False), getattr(a, "rollout_compile", False),
                               getattr(a, "rollout_copy", False), getattr(a, "rollout_rows_per_generate", None))

    def _fast_rollouts(self) -> bool:
        p = self.generation_paths()
        if not (p.shared_prefix or p.compiled or p.rollout_copy or p.rows_per_generate):
            return False
        if getattr(self, "use_vllm", False) or getattr(self, "use_transformers_continuous_batching", False):
            return False
        from trl.distributed import DistributedBackend

        return not DistributedBackend(self.accelerator).is_zero3

    def _rollout_copy(self, model) -> RolloutCopy | None:
        if not self.generation_paths().rollout_copy:
            return None
        step = self.state.global_step
        if getattr(self, "_copy", None) is None:
            self._copy, self._copy_step = RolloutCopy(model), step
        elif self._copy_step != step:  # the optimizer changed the weights since the copy was written
            self._copy.refresh()
            self._copy_step = step
        return self._copy

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if not self._fast_rollouts():
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        model = self.accelerator.unwrap_model(self.model_wrapped)  # what TRL's unwrap yields outside ZeRO-3
        paths = self.generation_paths()

        def fast(generation_config=None, **inputs):
            swapped = model.__dict__.pop("generate")  # the class's generate again inside the fast path
            try:
                return fast_generate(model, inputs, generation_config, paths, self._rollout_copy(model))
            finally:
                model.generate = swapped

        model.generate = fast  # for the length of TRL's call: an instance attribute over the class's method
        try:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        finally:
            model.__dict__.pop("generate", None)

    # -- carry the audio ------------------------------------------------------------------------------------------
    def _tokenize_prompts(self, prompts: list):
        prompt_ids, images, fields = (self._tokenize_unique(prompts) if self._cache_features
                                      else super()._tokenize_prompts(prompts))
        missing = [k for k in AUDIO_KEYS if k not in fields]
        if missing:
            raise RuntimeError(f"AudioGRPOTrainer: prompt tokenisation returned no {missing}; every prompt needs an "
                               "audio block {'type': 'audio', 'path': <16 kHz wav>}")
        self._audio = {k: torch.as_tensor(np.asarray(fields[k])) for k in AUDIO_KEYS}
        return prompt_ids, images, fields

    def _tokenize_unique(self, prompts: list):
        """TRL's tokenisation of the distinct prompts only, expanded back to every row (a group's G copies of a
        prompt share one audio load and one feature extraction; each clip is padded to the extractor's chunk, so
        its rows do not depend on the batch)."""
        keys = [json.dumps(p, sort_keys=True, default=str) for p in prompts]
        pos: dict[str, int] = {}
        for k in keys:
            pos.setdefault(k, len(pos))
        if len(pos) == len(keys):
            return super()._tokenize_prompts(prompts)
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        ids, images, fields = super()._tokenize_prompts([prompts[first[k]] for k in pos])
        sel = [pos[k] for k in keys]
        return (_take(ids, sel), None if images is None else _take(images, sel),
                {k: _take(v, sel) for k, v in fields.items()})

    def _generate_and_score_completions(self, inputs):
        self._audio = None
        if self.encoder_cache is not None:
            self.encoder_cache.clear()  # a new generation batch: its clips only
        out = super()._generate_and_score_completions(inputs)
        out.update(self._audio_on_device())
        self._audio = None
        self._maybe_log_completions(inputs)
        return out

    def _compute_loss(self, model, inputs):
        self._audio = {k: inputs[k] for k in AUDIO_KEYS}
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._audio = None

    def _audio_on_device(self) -> dict[str, torch.Tensor]:
        if self._audio is None:
            raise RuntimeError("AudioGRPOTrainer: no audio features captured for this batch")
        dev = self.accelerator.device
        feats = self._audio["input_features"].to(dev)
        dtype = next(p.dtype for p in self.model.parameters() if p.is_floating_point())
        if dtype in (torch.float16, torch.bfloat16):
            feats = feats.to(dtype)
        return {"input_features": feats, "feature_attention_mask": self._audio["feature_attention_mask"].to(dev)}

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **vision):
        """TRL's chunked log-prob forward, with the audio sliced alongside the rows (and no vision inputs)."""
        stray = [k for k, v in vision.items() if v is not None and k != "num_images"]
        if stray:
            raise RuntimeError(f"AudioGRPOTrainer: unexpected vision inputs {stray}")
        audio = self._audio_on_device()
        n = input_ids.size(0)
        if audio["input_features"].size(0) != n:
            raise RuntimeError(f"AudioGRPOTrainer: {audio['input_features'].size(0)} audio clips for {n} sequences")
        batch_size = batch_size or n
        logps, entropies, aux = [], [], []
        for start in range(0, n, batch_size):
            end = min(start + batch_size, n)
            ids, mask = input_ids[start:end], attention_mask[start:end]
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100
            model_inputs = {"input_ids": ids, "attention_mask": mask,
                            "input_features": audio["input_features"][start:end],
                            "feature_attention_mask": audio["feature_attention_mask"][start:end]}
            if compute_aux_loss:
                model_inputs["output_router_logits"] = True
            with self.accelerator.autocast():
                out = model(**model_inputs, labels=labels, fused_lm_head=True)
            logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(out.aux_loss)
        return (torch.cat(logps, 0), torch.cat(entropies, 0) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None)

    # -- sampled completions, for people to read ------------------------------------------------------------------
    def _maybe_log_completions(self, inputs: list[dict]):
        if not self._completions_log or not self._log_completions_every or not self.accelerator.is_main_process:
            return
        step = self.state.global_step
        if step % self._log_completions_every:
            return
        logs = self._logs
        if not logs["completion"]:
            return
        k = min(self.num_generations, len(logs["completion"]))
        comps = list(logs["completion"])[-k:]
        rewards = {name: list(v)[-k:] for name, v in logs["rewards"].items()}
        rec = {"step": step, "completions": [c[0]["content"] if isinstance(c, list) else c for c in comps],
               "rewards": rewards, "label": inputs[-1].get("label"), "utt_id": inputs[-1].get("utt_id")}
        append_jsonl(self._completions_log, [rec])


def _take(rows, sel: list[int]):
    """rows[sel] for a tensor, an array or a list."""
    if isinstance(rows, (torch.Tensor, np.ndarray)):
        return rows[sel]
    return [rows[j] for j in sel]


# ----------------------------------------------------------------------------------------------------------------
# The audio encoder runs once per clip (exact: a repeated clip gets the output computed for it)
# ----------------------------------------------------------------------------------------------------------------
def find_audio_tower(model):
    """The Qwen2-Audio encoder inside a (PEFT-wrapped) model, or None."""
    for name, module in model.named_modules():
        if name.endswith("audio_tower") and hasattr(module, "_get_feat_extract_output_lengths"):
            return module
    return None


class EncoderCache:
    """Runs a frozen audio encoder once per distinct clip and serves repeats from memory.

    Installed on the encoder instance (`install`), it intercepts `forward(input_features, attention_mask)`: rows
    whose features (and mask row) equal a cached clip exactly are served from the cache; the rest are encoded in
    one batch. Refuses to install on an encoder with trainable parameters (its output would change with training
    and differ between the policy and the reference). `clear()` at each new generation batch bounds the memory to
    that batch's clips. Counters: `encoded` rows computed, `served` rows answered from the cache."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, Any, Any, Any]] = []  # (fingerprint, features, mask row, output) per clip
        self.encoded = 0
        self.served = 0
        self._tower = None
        self._forward = None

    # -- wiring --
    def install(self, tower) -> "EncoderCache":
        if any(p.requires_grad for p in tower.parameters()):
            raise ValueError("EncoderCache: the audio encoder has trainable parameters (lora.modules_to_save or a "
                             "LoRA target in audio_tower?); its output cannot be cached")
        self._tower, self._forward = tower, tower.forward
        tower.forward = self._cached_forward
        return self

    def uninstall(self) -> None:
        if self._tower is not None:
            del self._tower.forward  # back to the class's method
            self._tower = self._forward = None
        self.clear()

    def clear(self) -> None:
        self.entries.clear()

    # -- the forward --
    @staticmethod
    def _fingerprint(x):
        import torch

        flat = x.reshape(x.shape[0], -1).double()
        w = torch.linspace(1.0, 2.0, flat.shape[1], dtype=flat.dtype, device=flat.device)
        return torch.stack([flat.sum(1), (flat * w).sum(1)], 1)

    def _stochastic(self) -> bool:
        """Dropout active in the encoder: its output is random, so a cached one would not be what the plain path
        computes."""
        cfg = self._tower.config
        rates = [getattr(cfg, k, 0.0) or 0.0 for k in ("dropout", "attention_dropout", "activation_dropout",
                                                         "encoder_layerdrop")]
        return bool(self._tower.training and any(r > 0 for r in rates))

    def _lookup(self, fp, feats, mask_row) -> int | None:
        import torch

        for i, (efp, efeats, emask, _) in enumerate(self.entries):
            if (efp.shape == fp.shape and torch.equal(efp, fp) and efeats.shape == feats.shape
                    and torch.equal(efeats, feats) and _mask_equal(emask, mask_row)):
                return i
        return None

    def _cached_forward(self, input_features, attention_mask=None, **kwargs):
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        if kwargs.get("output_hidden_states") or kwargs.get("output_attentions") or self._stochastic():
            return self._forward(input_features, attention_mask=attention_mask, **kwargs)
        fps = self._fingerprint(input_features)
        n = input_features.shape[0]
        slot: list[int | None] = []
        first_of: dict[int, int] = {}  # new rows equal to an earlier new row in this call
        misses: list[int] = []
        for r in range(n):
            m = None if attention_mask is None else attention_mask[r]
            hit = self._lookup(fps[r], input_features[r], m)
            if hit is None:
                for j in misses:
                    if torch.equal(fps[j], fps[r]) and torch.equal(input_features[j], input_features[r]) and \
                            _mask_equal(None if attention_mask is None else attention_mask[j], m):
                        first_of[r] = j
                        break
                else:
                    misses.append(r)
            slot.append(hit)
        if misses:
            idx = torch.tensor(misses, device=input_features.device)
            mask = None if attention_mask is None else attention_mask.index_select(0, idx)
            out = self._forward(input_features.index_select(0, idx), attention_mask=mask, **kwargs)
            hidden = out.last_hidden_state
            base = len(self.entries)
            for k, r in enumerate(misses):
                m = None if attention_mask is None else attention_mask[r]
                self.entries.append((fps[r], input_features[r], m, hidden[k].detach()))
            for k, r in enumerate(misses):
                slot[r] = base + k
            for r, j in first_of.items():
                slot[r] = slot[j]
        self.encoded += len(misses)
        self.served += n - len(misses)
        return BaseModelOutput(last_hidden_state=torch.stack([self.entries[s][3] for s in slot], 0))


def _mask_equal(a, b) -> bool:
    import torch

    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a, b))


# -------------------------------------------------------------------------------------------------------------------
# A run
# -------------------------------------------------------------------------------------------------------------------
def prompt_rows(rows, prompt_cfg: PromptConfig, corpus: str, condition: str) -> list[dict]:
    """Dataset rows for GRPO: the chat prompt (audio + instruction) and the columns the rewards read."""
    cands = list(corpus_candidates(corpus))
    return [{"prompt": build_messages(prompt_cfg, u.wav, cands, condition, u.transcript),
             "label": u.label, "candidates": cands, "utt_id": u.utt_id} for u in rows]


def policy_callbacks(setup: "GRPOSetup", processor, rows: list) -> list[PolicyCurve]:
    """The policy curve (`policy_every` > 0): the run's training prompts and its held-out set, or fixed
    class-balanced subsets of them (`policy_utterances`), scored under the run's own temperature and reward."""
    args, run, data = setup.args, setup.run, setup.data
    if args.policy_every <= 0:
        return []
    n = args.policy_utterances
    sets = {"train": training_subset(f"{run.name}-train", run.corpus, rows, n, args.seed)}
    held = heldout_set(setup.paths, run.corpus, run.fold, data.heldout_fraction, data.heldout_seed, n)
    if held is not None:
        sets["heldout"] = held
    return [PolicyCurve(sets, processor, setup.prompt, run.condition, args.temperature, setup.reward, run.reward,
                        args.policy_every, run.policy_csv(setup.paths), args.policy_prefixes,
                        args.max_completion_length or 128)]


def reward_functions(reward_cfg: RewardConfig, condition: str, accuracy: str) -> tuple[list, list[float]]:
    """The configured rewards, plus weight-0 binary accuracy and format terms so that every run logs batch accuracy
    and format-valid rate whatever it optimises."""
    funcs, weights = build_rewards(reward_cfg, condition, accuracy)
    names = {getattr(f, "__name__", "") for f in funcs}
    acc = AccuracyReward(reward_cfg.require_answer_tag)
    if acc.__name__ not in names:
        funcs.append(acc)
        weights.append(0.0)
    fmt = FormatReward(condition, reward_cfg.format_allow_whitespace, reward_cfg.format_require_nonempty,
                       name=f"format_{condition}_reward")
    if fmt.__name__ not in names:
        funcs.append(fmt)
        weights.append(0.0)
    return funcs, weights


def freeze_modules_to_save(model) -> int:
    """Stop gradients into PEFT's full-module copies (modules_to_save); returns how many tensors were frozen."""
    n = 0
    for name, p in model.named_parameters():
        if ".modules_to_save." in name and p.requires_grad:
            p.requires_grad_(False)
            n += 1
    return n


@dataclass
class GRPOSetup(RunSetup):
    """A GRPO run's setup: with its reward settings and the adapter it starts from (its SFT warm-up, if any)."""

    reward: RewardConfig | None = None
    start_adapter: Path | None = None

    config_class: ClassVar[type] = EmoGRPOConfig
    stage: ClassVar[str] = "grpo"

    @cached_property
    def rewards(self) -> tuple[list, list[float]]:
        return reward_functions(self.reward, self.run.condition, self.run.reward)

    def runtime_args(self) -> dict[str, Any]:
        return {"reward_weights": self.rewards[1]}

    def method_settings(self) -> dict[str, Any]:
        return {"reward": self.reward}

    def start(self) -> str:
        """A retrained SFT adapter means this run must train again too."""
        a = self.start_adapter
        return str(trained_hash(a) if a is not None and a.exists() else a is not None)

    def train(self, force: bool = False, stop_after_steps: int | None = None) -> Path | None:
        return run_grpo(self, force, stop_after_steps)


def run_grpo(setup: GRPOSetup, force: bool = False, stop_after_steps: int | None = None) -> Path | None:
    """Train one GRPO run (resuming from its last checkpoint); returns the final adapter folder.

    `stop_after_steps` ends training early WITHOUT writing `final` (as an interruption would): tests use it."""
    final, done = open_run(setup, force)
    if done:
        return final
    run, adapter = setup.run, setup.start_adapter
    if adapter is not None and not adapter.exists():
        raise FileNotFoundError(f"{run.name} starts from the SFT adapter {adapter}, which does not exist: run notebook "
                                "03 first (or set experiments.sft_before_grpo: false)")
    args = setup.args
    rows = training_rows(setup.paths, run, args.max_utterances, args.seed, balance=True,
                         heldout_fraction=setup.data.heldout_fraction, heldout_seed=setup.data.heldout_seed,
                         equal_classes=args.balanced_prompts)
    set_seed(args.seed)  # the new LoRA's random init must not depend on what ran before in this process
    bb = load_backbone(setup.backbone, setup.paths, adapter=adapter, trainable=True)
    if not args.train_modules_to_save:
        log.info("%s: %d tensors of the warm-up's full modules frozen (grpo.train_modules_to_save: false)", run.name,
                 freeze_modules_to_save(bb.model))
    from datasets import Dataset

    dataset = Dataset.from_list(prompt_rows(rows, setup.prompt, run.corpus, run.condition))
    completions_log = run.completions_log(setup.paths)
    trainer = AudioGRPOTrainer(
        model=bb.model, reward_funcs=setup.rewards[0], args=args, train_dataset=dataset, processing_class=bb.processor,
        callbacks=run_callbacks(setup, bb.processor, stop_after_steps, jsonl_logs=(completions_log,))
        + policy_callbacks(setup, bb.processor, rows),
        completions_log=completions_log, log_completions_every=args.log_completions_every,
        cache_audio=args.cache_audio, cache_features=args.cache_features,
    )
    meta = {"train_prompts": len(rows), "start_adapter": str(adapter) if adapter else None,
            "reward": asdict(setup.reward)}
    return train_and_save(trainer, bb.processor, setup, final, meta, stop_after_steps)

"""SFT warm-up on rationale targets (IR / EUR / ESR), audio-true.

Stock SFTTrainer trains Qwen2-Audio without its audio unless given its own collator (pitfalls.md). This module
uses transformers' Trainer directly with `AudioSFTCollator`, which builds the audio features with the processor
and puts loss only on the assistant turn (its text and the closing <|im_end|>): never on the system prompt, the
instruction or the audio positions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from ..data.labels import candidates as corpus_candidates
from ..infra.config import Profile
from ..infra.log import get_logger
from ..method.prompts import PromptConfig, build_messages
from ..method.rationales import profile_targets
from .backbones import BackboneConfig, load_backbone
from .experiments import Run
from .runs import (
    open_run,
    precision_flags,
    resolve_optim,
    run_callbacks,
    train_and_save,
    training_rows,
)

log = get_logger(__name__)

IGNORE = -100


@dataclass
class SFTSettings:
    """The `sft` section."""

    learning_rate: float = 2.0e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.03  # a float < 1 is a fraction of training
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_train_samples: int | None = None  # cap the training set (smoke runs), class-balanced
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    seed: int = 42
    optim: str = "auto"
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])


class AudioSFTCollator:
    """(messages, target) examples -> input_ids, attention_mask, labels, input_features, feature_attention_mask.

    Sequences are right-padded (training); labels are IGNORE everywhere but the assistant's answer."""

    def __init__(self, processor):
        self.processor = processor
        tok = processor.tokenizer
        self.header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        self.im_start = tok.convert_tokens_to_ids("<|im_start|>")
        self.im_end = tok.convert_tokens_to_ids("<|im_end|>")
        self.pad = tok.pad_token_id

    def encode(self, messages: list[dict], target: str) -> dict[str, torch.Tensor]:
        conv = list(messages) + [{"role": "assistant", "content": target}]
        enc = self.processor.apply_chat_template(conv, tokenize=True, return_dict=True, return_tensors="pt")
        ids = enc["input_ids"][0]
        starts = (ids == self.im_start).nonzero().flatten().tolist()
        if not starts:
            raise ValueError("AudioSFTCollator: the chat template produced no <|im_start|>")
        a = starts[-1]
        h = len(self.header)
        if ids[a:a + h].tolist() != self.header:
            raise ValueError("AudioSFTCollator: the last turn is not the assistant's; cannot locate the target")
        ends = (ids[a + h:] == self.im_end).nonzero().flatten().tolist()
        stop = a + h + (ends[0] + 1 if ends else len(ids) - a - h)  # through <|im_end|>, not the newline after
        labels = torch.full_like(ids, IGNORE)
        labels[a + h:stop] = ids[a + h:stop]
        return {"input_ids": ids, "labels": labels, "input_features": enc["input_features"][0],
                "feature_attention_mask": enc["feature_attention_mask"][0]}

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encs = [self.encode(ex["messages"], ex["target"]) for ex in batch]
        n = max(len(e["input_ids"]) for e in encs)

        def pad(t, value):
            return torch.cat([t, torch.full((n - len(t),), value, dtype=t.dtype)])

        return {
            "input_ids": torch.stack([pad(e["input_ids"], self.pad) for e in encs]),
            "attention_mask": torch.stack([pad(torch.ones_like(e["input_ids"]), 0) for e in encs]),
            "labels": torch.stack([pad(e["labels"], IGNORE) for e in encs]),
            "input_features": torch.stack([e["input_features"] for e in encs]),
            "feature_attention_mask": torch.stack([e["feature_attention_mask"] for e in encs]),
        }


def sft_examples(prof: Profile, run: Run, rows) -> list[dict]:
    pcfg = prof.section("prompt", PromptConfig)
    cands = list(corpus_candidates(run.corpus))
    # IR: the label alone; EUR/ESR: rationales from cached acoustic descriptors (or a teacher's jsonl)
    targets = profile_targets(prof, run.corpus, utts=rows, condition=run.condition, progress=False)
    return [{"messages": build_messages(pcfg, u.wav, cands, u.transcript, run.condition),
             "target": targets[u.utt_id], "utt_id": u.utt_id} for u in rows if u.utt_id in targets]


def run_sft(profile: Profile | str, run: Run, overrides: dict | None = None, force: bool = False,
            stop_after_steps: int | None = None) -> Path | None:
    """Train one SFT warm-up (resuming from its last checkpoint); returns the final adapter folder."""
    from transformers import Trainer, TrainingArguments

    prof, paths, final, _, done = open_run(profile, overrides, run, force, "sft")
    if done:
        return final
    s = prof.section("sft", SFTSettings)
    bcfg = prof.section("backbone", BackboneConfig)
    rows = training_rows(paths, run, s.max_train_samples, s.seed, balance=True)
    examples = sft_examples(prof, run, rows)
    if len(examples) < len(rows):
        log.warning("%s: %d of %d utterances have no target and are skipped", run.name, len(rows) - len(examples), len(rows))
    set_seed(s.seed)  # the new LoRA's random init must not depend on what ran before in this process
    bb = load_backbone(bcfg, paths, trainable=True)
    args = TrainingArguments(
        output_dir=str(run.checkpoint_dir(paths)), per_device_train_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps, learning_rate=s.learning_rate,
        num_train_epochs=s.num_train_epochs, max_steps=s.max_steps, lr_scheduler_type=s.lr_scheduler_type,
        warmup_steps=s.warmup_steps, weight_decay=s.weight_decay, max_grad_norm=s.max_grad_norm,
        logging_steps=s.logging_steps, save_strategy="steps", save_steps=s.save_steps,
        save_total_limit=s.save_total_limit, seed=s.seed, data_seed=s.seed,
        optim=resolve_optim(s.optim, bcfg.load_in_4bit), report_to=s.report_to, remove_unused_columns=False,
        label_names=["labels"], dataloader_num_workers=0, **precision_flags(bcfg.dtype),
    )
    trainer = Trainer(model=bb.model, args=args, train_dataset=examples, data_collator=AudioSFTCollator(bb.processor),
                      callbacks=run_callbacks(run, paths, stop_after_steps))
    meta = {"train_examples": len(examples), "sft": asdict(s), "profile": prof.name}
    return train_and_save(trainer, bb.processor, run, paths, final, meta, "sft", stop_after_steps)

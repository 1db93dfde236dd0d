"""SFT warm-up on rationale targets (IR / EUR / ESR), audio-true.

Stock SFTTrainer trains Qwen2-Audio without its audio unless given its own collator (docs/pitfalls.md). This module
uses transformers' Trainer directly with `AudioSFTCollator`, which builds the audio features with the processor
and puts loss only on the assistant turn (its text and the closing <|im_end|>): never on the system prompt, the
instruction or the audio positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import SchedulerType

from ..data.labels import candidates as corpus_candidates
from ..infra.config import setting
from ..infra.log import get_logger
from ..method.descriptors import DescriptorConfig, descriptors_path
from ..method.prompts import build_messages
from ..method.rationales import RationaleConfig, sft_targets
from ..model.backbones import load_backbone
from .runs import (
    KitTrainerFields,
    RunSetup,
    open_run,
    run_callbacks,
    train_and_save,
    training_rows,
)

log = get_logger(__name__)

IGNORE = -100


@dataclass
class EmoSFTConfig(KitTrainerFields, TrainingArguments):
    """The `sft` section: transformers' TrainingArguments (the warm-up runs on transformers' Trainer with the kit's
    audio collator, pitfalls of TRL's SFTTrainer aside), every field of which a profile may set, with the kit's
    defaults for the 7B model in QLoRA."""

    learning_rate: float = setting(1.0e-4, "kit", "LoRA warm-up")
    num_train_epochs: float = setting(1.0, "kit", "one pass over the training split")
    per_device_train_batch_size: int = setting(4, "kit", "fits a 16 GB GPU with gradient checkpointing")
    gradient_accumulation_steps: int = setting(4, "kit", "16 examples per optimizer step")
    lr_scheduler_type: SchedulerType | str = setting("cosine", "kit", "")
    warmup_steps: float = setting(0.03, "kit", "a float below 1 is a fraction of training")
    logging_steps: float = setting(10, "kit", "a CSV row every N steps", observes=True)
    save_steps: float = setting(200, "kit", "checkpoint every N steps: an interrupted run resumes exactly",
                                observes=True)
    label_names: list[str] | None = setting(["labels"], "kit", "the collator's masked labels")

    RENAMED: ClassVar[dict[str, str]] = {"max_train_samples": "max_utterances"}

    def __post_init__(self) -> None:
        self._kit_post_init()
        super().__post_init__()


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


@dataclass
class SFTSetup(RunSetup):
    """An SFT run's setup: with the rationale and descriptor settings its reasoning targets are written from."""

    rationale: RationaleConfig | None = None
    descriptors: DescriptorConfig | None = None

    config_class: ClassVar[type] = EmoSFTConfig
    stage: ClassVar[str] = "sft"

    def method_settings(self) -> dict[str, Any]:
        return {"rationale": self.rationale, "descriptors": self.descriptors}

    def manifest(self) -> Path:
        return self.paths.manifests / f"{self.run.corpus}.jsonl"

    def targets(self, rows, progress: bool = False) -> dict[str, str]:
        """utt_id -> the assistant target of this run's condition (IR: the label alone; EUR/ESR: rationales from the
        cached acoustic descriptors, or a teacher's jsonl)."""
        return sft_targets(self.manifest(), self.run.condition, self.descriptors, self.rationale, utts=rows,
                           progress=progress)

    def clear_caches(self) -> None:
        descriptors_path(self.manifest()).unlink(missing_ok=True)

    def train(self, force: bool = False, stop_after_steps: int | None = None) -> Path | None:
        return run_sft(self, force, stop_after_steps)


def sft_examples(setup: SFTSetup, rows) -> list[dict]:
    cands = list(corpus_candidates(setup.run.corpus))
    targets = setup.targets(rows)
    return [{"messages": build_messages(setup.prompt, u.wav, cands, setup.run.condition, u.transcript),
             "target": targets[u.utt_id], "utt_id": u.utt_id} for u in rows if u.utt_id in targets]


def run_sft(setup: SFTSetup, force: bool = False, stop_after_steps: int | None = None) -> Path | None:
    """Train one SFT warm-up (resuming from its last checkpoint); returns the final adapter folder."""
    from transformers import Trainer

    final, done = open_run(setup, force)
    if done:
        return final
    run, args = setup.run, setup.args
    rows = training_rows(setup.paths, run, args.max_utterances, args.seed, balance=True,
                         heldout_fraction=setup.data.heldout_fraction, heldout_seed=setup.data.heldout_seed)
    examples = sft_examples(setup, rows)
    if len(examples) < len(rows):
        log.warning("%s: %d of %d utterances have no target and are skipped", run.name, len(rows) - len(examples),
                    len(rows))
    set_seed(args.seed)  # the new LoRA's random init must not depend on what ran before in this process
    bb = load_backbone(setup.backbone, setup.paths, trainable=True)
    trainer = Trainer(model=bb.model, args=args, train_dataset=examples, data_collator=AudioSFTCollator(bb.processor),
                      callbacks=run_callbacks(setup, bb.processor, stop_after_steps))
    # Qwen2-Audio's forward takes **kwargs but averages its loss over its own tokens, ignoring num_items_in_batch;
    # transformers 5.23 reads **kwargs as "the model normalises by num_items_in_batch" and then neither divides the
    # loss by the accumulation steps nor leaves DDP's mean alone (it multiplies by the process count): gradients N x
    # too large under N processes, G x under G accumulation steps. Declared plainly, the Trainer averages as usual.
    trainer.model_accepts_loss_kwargs = False
    return train_and_save(trainer, bb.processor, setup, final, {"train_examples": len(examples)}, stop_after_steps)

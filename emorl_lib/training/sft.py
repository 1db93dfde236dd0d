"""SFT warm-up on rationale targets (IR / EUR / ESR), audio-true.

Stock SFTTrainer trains Qwen2-Audio without its audio unless given its own collator (docs/pitfalls.md). This module
uses transformers' Trainer directly with `AudioSFTCollator`, which builds the audio features with the processor
and puts loss only on the assistant turn (its text and the closing <|im_end|>): never on the system prompt, the
instruction or the audio positions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import SchedulerType
from transformers.training_args import OptimizerNames

from ..data.labels import candidates as corpus_candidates
from ..infra.config import Profile, checking_only, setting
from ..infra.log import get_logger
from ..method.prompts import build_messages
from ..method.rationales import profile_targets
from .backbones import load_backbone
from .experiments import Run
from .heldout import heldout_callbacks
from .runs import (
    changed_fields,
    check_training_ranges,
    open_run,
    resolve_shared_fields,
    run_callbacks,
    train_and_save,
    trainer_config,
    training_rows,
)

log = get_logger(__name__)

IGNORE = -100


@dataclass
class EmoSFTConfig(TrainingArguments):
    """The `sft` section: transformers' TrainingArguments (the warm-up runs on transformers' Trainer with the kit's
    audio collator, pitfalls of TRL's SFTTrainer aside), every field of which a profile may set, with the kit's
    defaults for the 7B model in QLoRA and one field of its own."""

    learning_rate: float = setting(1.0e-4, "kit", "LoRA warm-up")
    num_train_epochs: float = setting(1.0, "kit", "one pass over the training split")
    per_device_train_batch_size: int = setting(4, "kit", "fits a 16 GB GPU with gradient checkpointing")
    gradient_accumulation_steps: int = setting(4, "kit", "16 examples per optimizer step")
    lr_scheduler_type: SchedulerType | str = setting("cosine", "kit", "")
    warmup_steps: float = setting(0.03, "kit", "a float below 1 is a fraction of training")
    logging_steps: float = setting(10, "kit", "a CSV row every N steps")
    save_steps: float = setting(200, "kit", "checkpoint every N steps: an interrupted run resumes exactly")
    save_total_limit: int | None = setting(2, "kit", "checkpoints kept")
    seed: int = setting(42, "kit", "LoRA init and data order")
    optim: OptimizerNames | str = setting("auto", "kit", "auto: paged 8-bit AdamW on a GPU (QLoRA's), AdamW on the CPU")
    report_to: None | str | list[str] = setting(["tensorboard"], "kit", "TensorBoard events under the checkpoint folder")
    remove_unused_columns: bool | None = setting(False, "kit", "the collator reads the raw examples")
    label_names: list[str] | None = setting(["labels"], "kit", "the collator's masked labels")
    max_train_samples: int | None = setting(None, "kit", "cap the training set (class-balanced); null: all")
    heldout_every: int = setting(0, "kit", "greedy accuracy on the validation set every N steps, and before the "
                                           "first (<run>.heldout.csv); 0: off. Training is the same either way, so "
                                           "changing it does not retrain a finished run")

    SET_ELSEWHERE: ClassVar[dict[str, str]] = {
        "bf16": "follows backbone.dtype", "fp16": "follows backbone.dtype",
        "gradient_checkpointing": "set backbone.gradient_checkpointing",
        "output_dir": "each run's checkpoint folder (runs/<profile>/checkpoints/<run>)",
    }

    def __post_init__(self) -> None:
        check_training_ranges(self)
        if self.heldout_every < 0:
            raise ValueError(f"heldout_every must be >= 0, not {self.heldout_every}")
        self.gradient_checkpointing = False  # set on the model by the backbone loader (backbone.gradient_checkpointing)
        resolve_shared_fields(self)
        if not checking_only():
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


def sft_examples(prof: Profile, run: Run, rows) -> list[dict]:
    pcfg = prof.section("prompt")
    cands = list(corpus_candidates(run.corpus))
    # IR: the label alone; EUR/ESR: rationales from cached acoustic descriptors (or a teacher's jsonl)
    targets = profile_targets(prof, run.corpus, utts=rows, condition=run.condition, progress=False)
    return [{"messages": build_messages(pcfg, u.wav, cands, run.condition, u.transcript),
             "target": targets[u.utt_id], "utt_id": u.utt_id} for u in rows if u.utt_id in targets]


def run_sft(prof: Profile, run: Run, force: bool = False, stop_after_steps: int | None = None) -> Path | None:
    """Train one SFT warm-up (resuming from its last checkpoint); returns the final adapter folder."""
    from transformers import Trainer

    paths, final, done = open_run(prof, run, force, "sft")
    if done:
        return final
    args = trainer_config(prof, "sft", output_dir=str(run.checkpoint_dir(paths)),
                          **({} if run.seed is None else {"seed": run.seed}))
    data = prof.section("data")
    rows = training_rows(paths, run, args.max_train_samples, args.seed, balance=True,
                         validation_fraction=data.validation_fraction, validation_seed=data.validation_seed)
    examples = sft_examples(prof, run, rows)
    if len(examples) < len(rows):
        log.warning("%s: %d of %d utterances have no target and are skipped", run.name, len(rows) - len(examples),
                    len(rows))
    set_seed(args.seed)  # the new LoRA's random init must not depend on what ran before in this process
    bb = load_backbone(prof.section("backbone"), paths, trainable=True)
    trainer = Trainer(model=bb.model, args=args, train_dataset=examples, data_collator=AudioSFTCollator(bb.processor),
                      callbacks=run_callbacks(run, paths, stop_after_steps)
                      + heldout_callbacks(prof, run, args.heldout_every, bb.processor, prof.section("backbone")))
    # Qwen2-Audio's forward takes **kwargs but averages its loss over its own tokens, ignoring num_items_in_batch;
    # transformers 5.23 reads **kwargs as "the model normalises by num_items_in_batch" and then neither divides the
    # loss by the accumulation steps nor leaves DDP's mean alone (it multiplies by the process count): gradients N x
    # too large under N processes, G x under G accumulation steps. Declared plainly, the Trainer averages as usual.
    trainer.model_accepts_loss_kwargs = False
    meta = {"train_examples": len(examples), "sft": changed_fields(args), "prompt": asdict(prof.section("prompt")),
            "profile": prof.name}
    return train_and_save(trainer, bb.processor, run, paths, final, meta, "sft", stop_after_steps)

"""`emorl sft|grpo` with spies, for tests/test_distributed.py: run under `accelerate launch` like the CLI itself.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_probe.py sft --profile P.yaml

Each rank appends JSON lines to $EMORL_PROBE_DIR/<$EMORL_PROBE_TAG>.rank<R>.jsonl:
  {"event": "begin", world size and backend as torch.distributed and the trainer see them, the step it starts at}
  {"event": "forward", sequence length, rows, whether input_features came with them and for as many rows}
  {"event": "batch", the utterance ids this rank trained (SFT) or generated for (GRPO) at this step}
  {"event": "step", a hash of this rank's trainable weights after the optimizer step}
$EMORL_PROBE_CRASH_AT=N: after checkpoint N is written every rank dies hard (os._exit), as an interruption would.
$EMORL_PROBE_LENGTH_REWARD=1: GRPO's reward is the completion length (an untrained model earns no emotion reward,
so there would be no gradient and identical weights would prove nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from emorl_lib import cli
from emorl_lib.model import backbones
from emorl_lib.training import grpo, sft

OUT = Path(os.environ["EMORL_PROBE_DIR"])
TAG = os.environ.get("EMORL_PROBE_TAG", "run")
CRASH_AT = int(os.environ.get("EMORL_PROBE_CRASH_AT", "0"))
_state = {"step": 0}


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def record(event: str, **fields) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"{TAG}.rank{_rank()}.jsonl", "a") as f:
        f.write(json.dumps({"event": event, "step": _state["step"], **fields}) + "\n")


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class Probe(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _state["step"] = state.global_step
        dist = torch.distributed.is_initialized()
        record("begin", torch_world_size=torch.distributed.get_world_size() if dist else 1,
               backend=torch.distributed.get_backend() if dist else None, args_world_size=args.world_size,
               parallel_mode=args.parallel_mode.value, start_step=state.global_step,
               weights=weights_hash(model))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        _state["step"] = state.global_step
        record("step", weights=weights_hash(model))

    def on_save(self, args, state, control, **kwargs):
        if CRASH_AT and state.global_step == CRASH_AT:
            record("crash")
            if torch.distributed.is_initialized():
                torch.distributed.barrier()  # every rank has written its part of the checkpoint
            os._exit(17)


def _with_probe(run_callbacks):
    def wrapped(*args, **kwargs):
        return run_callbacks(*args, **kwargs) + [Probe()]
    return wrapped


def _spy_forwards(load_model):
    def wrapped(*args, **kwargs):
        model = load_model(*args, **kwargs)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model

        def hook(module, a, kw):
            ids = kw.get("input_ids")
            feats = kw.get("input_features")
            if ids is not None and ids.shape[1] > 1:  # prefill and log-prob forwards, not cached decode steps
                record("forward", length=int(ids.shape[1]), rows=int(ids.shape[0]), grad=torch.is_grad_enabled(),
                       audio_rows=None if feats is None else int(feats.shape[0]))

        base.model.register_forward_pre_hook(hook, with_kwargs=True)
        return model
    return wrapped


def _spy_sft_batches(call):
    def wrapped(self, batch):
        record("batch", utt_ids=[ex["utt_id"] for ex in batch])
        return call(self, batch)
    return wrapped


def _spy_grpo_batches(generate):
    def wrapped(self, inputs):
        record("batch", utt_ids=[x["utt_id"] for x in inputs])
        return generate(self, inputs)
    return wrapped


def _length_reward(completions, **kwargs):
    return [len(c[0]["content"] if isinstance(c, list) else c) / 50.0 for c in completions]


backbones.load_model = _spy_forwards(backbones.load_model)
sft.run_callbacks = _with_probe(sft.run_callbacks)
grpo.run_callbacks = _with_probe(grpo.run_callbacks)
sft.AudioSFTCollator.__call__ = _spy_sft_batches(sft.AudioSFTCollator.__call__)
grpo.AudioGRPOTrainer._generate_and_score_completions = _spy_grpo_batches(
    grpo.AudioGRPOTrainer._generate_and_score_completions)
if os.environ.get("EMORL_PROBE_LENGTH_REWARD"):
    grpo.reward_functions = lambda cfg, condition, accuracy: ([_length_reward], [1.0])

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))

"""Batched greedy generation with the backbone: chat template + audio features for a batch (left padded), then
`generate` with the KV cache through the kit's generation paths (model/rollout.py: by default each prompt's prefix
runs through the backbone without the LM head, so no logits are computed at every prompt position). Evaluation,
held-out curves during training and `emorl infer` all decode through here, so a prediction means the same thing
wherever it is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.audio import SAMPLE_RATE
from .rollout import GenerationPaths, fast_generate


@dataclass
class Generated:
    text: str
    n_tokens: int


def eos_ids(backbone) -> set[int]:
    """Token ids that end a completion (generation config's eos list, plus the tokenizer's eos and pad)."""
    ids = backbone.model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    tok = backbone.tokenizer
    ids |= {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
    return ids


def encode(processor, messages: Sequence[list[dict]], audios: Sequence[np.ndarray]):
    """Chat-template text + audio features for a batch (left padded). Audio goes in as arrays decoded by the
    kit's audio module, so any format it reads works and errors are ours to count."""
    texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    return processor(text=texts, audio=list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)


def greedy_config(model, max_new_tokens: int):
    """The model's generation config for greedy decoding of at most `max_new_tokens` tokens."""
    import copy

    gc = copy.deepcopy(model.generation_config)
    gc.update(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None)
    return gc


def generate_batch(backbone, messages: Sequence[list[dict]], audios: Sequence[np.ndarray],
                   max_new_tokens: int, paths: GenerationPaths | None = None) -> list[Generated]:
    """Greedy completions for one batch: the text (special tokens dropped, reasoning tags kept: they are ordinary
    tokens) and how many tokens each generated up to and including its end token. `paths`: which generation paths
    (default: the shared prefix only)."""
    import torch

    inputs = encode(backbone.processor, messages, audios).to(backbone.device)
    model_dtype = next(backbone.model.parameters()).dtype
    if "input_features" in inputs and model_dtype in (torch.float16, torch.bfloat16):
        inputs["input_features"] = inputs["input_features"].to(model_dtype)
    with torch.inference_mode():
        out = fast_generate(backbone.model, dict(inputs), greedy_config(backbone.model, max_new_tokens), paths)
    new = out[:, inputs["input_ids"].shape[1]:].cpu()
    stop = eos_ids(backbone)
    results = []
    for seq in new.tolist():
        n = len(seq)
        for i, t in enumerate(seq):
            if t in stop:
                n = i + 1
                break
        text = backbone.tokenizer.decode(seq[:n], skip_special_tokens=True)
        results.append(Generated(text, n))
    return results

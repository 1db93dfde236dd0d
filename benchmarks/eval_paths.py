"""What benchmarks/bench_eval.py compares evaluation's generation against; benchmark-only code, not the kit's.

- `batching_benchmark`: utterances per second at several batch sizes on the same utterances, and whether every
  batched output equals the one-by-one output (greedy decoding should not depend on padding).
- `FeatureCache`: log-mel features per clip, kept across calls, to measure what re-extracting them costs.
- `generate_uncached`: greedy generation without the KV cache, to measure what the cache buys.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from emorl_lib.data.audio import SAMPLE_RATE
from emorl_lib.data.testsets import TestSet
from emorl_lib.evaluation.predictions import predict_set
from emorl_lib.method.prompts import PromptConfig, canonical_condition


def encode_cached(processor, messages, audios, feature_cache: "FeatureCache"):
    """model.generate.encode with the mel extraction going through `feature_cache`."""
    texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    with feature_cache.installed(processor):
        return processor(text=texts, audio=list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)


def generate_uncached(backbone, messages, audios, max_new_tokens: int) -> list[str]:
    """Greedy texts without the KV cache (every step recomputes the whole sequence)."""
    import torch

    from emorl_lib.model.generate import encode, eos_ids

    inputs = encode(backbone.processor, messages, audios).to(backbone.device)
    with torch.inference_mode():
        out = backbone.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, use_cache=False,
                                      temperature=None, top_p=None, top_k=None)
    stop = eos_ids(backbone)
    texts = []
    for seq in out[:, inputs["input_ids"].shape[1]:].tolist():
        n = next((i + 1 for i, t in enumerate(seq) if t in stop), len(seq))
        texts.append(backbone.tokenizer.decode(seq[:n], skip_special_tokens=True))
    return texts


def batching_benchmark(backbone, test_set: TestSet, prompt_cfg: PromptConfig, condition: str, max_new_tokens: int,
                       batch_sizes: Sequence[int] = (1, 8), workdir: Path | None = None) -> list[dict]:
    """Utterances per second for each batch size on the same utterances (fresh prediction files), and whether
    every batched output equals the one-by-one output (greedy decoding should not depend on padding)."""
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for bs in batch_sizes:
            t0 = time.perf_counter()
            preds = predict_set(backbone, test_set, prompt_cfg, condition, Path(tmp) / f"b{bs}.jsonl", bs,
                                max_new_tokens, progress=False)
            wall = time.perf_counter() - t0
            outputs[bs] = [p["raw"] for p in preds]
            rows.append({"condition": canonical_condition(condition), "batch_size": bs, "utterances": len(preds),
                         "seconds": wall, "utt_per_second": len(preds) / wall,
                         "tokens_per_utt": float(np.mean([p["n_tokens"] for p in preds]))})
    ref = outputs[batch_sizes[0]]
    for r in rows:
        r["same_text_as_batch_" + str(batch_sizes[0])] = sum(a == b for a, b in zip(outputs[r["batch_size"]], ref))
    return rows


class FeatureCache:
    """Log-mel features per clip, keyed on the waveform's bytes and the extractor call's options.

    Fills until `max_bytes` and then stops adding (an LRU smaller than a test set would miss on every sequential
    rerun; keep-first still serves the first part). `hits`/`misses`/`skipped` count clips."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.store: dict[bytes, dict[str, np.ndarray]] = {}
        self.nbytes = 0
        self.hits = self.misses = self.skipped = 0

    @staticmethod
    def key(wave: np.ndarray, options: dict) -> bytes:
        a = np.ascontiguousarray(wave)
        h = hashlib.blake2b(a.tobytes(), digest_size=20)
        h.update(repr((a.dtype.str, a.shape, sorted((k, repr(v)) for k, v in options.items()))).encode())
        return h.digest()

    def extract(self, extractor, audio: list[np.ndarray], **options):
        """What `extractor(audio, **options)` returns, computing only the clips not cached. Requires padding to a
        fixed length (Qwen2-Audio's processor always asks for padding='max_length'), else rows would depend on
        their batch."""
        from transformers import BatchFeature

        if options.get("padding") != "max_length":
            return extractor(audio, **options)
        single = isinstance(audio, np.ndarray) and audio.ndim == 1
        clips = [audio] if single else list(audio)
        opts = {k: v for k, v in options.items() if k != "return_tensors"}
        keys = [self.key(np.asarray(c), opts) for c in clips]
        todo = sorted({i for i, k in enumerate(keys) if k not in self.store}, key=lambda i: i)
        todo_keys: dict[bytes, int] = {}
        for i in todo:
            todo_keys.setdefault(keys[i], i)
        fresh: dict[bytes, dict[str, np.ndarray]] = {}
        if todo_keys:
            rows = list(todo_keys.values())
            out = extractor([clips[i] for i in rows], **{**opts, "return_tensors": "np"})
            for j, i in enumerate(rows):
                fresh[keys[i]] = {k: np.asarray(v[j]) for k, v in out.items()}
        self.misses += len(todo_keys)
        self.hits += len(clips) - len(todo_keys)
        for k, v in fresh.items():
            size = sum(a.nbytes for a in v.values())
            if self.nbytes + size <= self.max_bytes:
                self.store[k] = v
                self.nbytes += size
            else:
                self.skipped += 1
        rows = [self.store.get(k) or fresh[k] for k in keys]
        batch = {name: np.stack([r[name] for r in rows], 0) for name in rows[0]}
        return BatchFeature(batch, tensor_type=options.get("return_tensors"))

    @contextmanager
    def installed(self, processor) -> Iterator["FeatureCache"]:
        """Route `processor`'s feature-extractor calls through this cache for the duration of the block."""
        fe = processor.feature_extractor
        proxy = _CachedExtractor(fe, self)
        processor.feature_extractor = proxy
        try:
            yield self
        finally:
            processor.feature_extractor = fe


class _CachedExtractor:
    """Stands in for a feature extractor: calls go through the cache, everything else to the real one."""

    def __init__(self, fe, cache: FeatureCache) -> None:
        self._fe, self._cache = fe, cache

    def __call__(self, audio, **options):
        return self._cache.extract(self._fe, audio, **options)

    def __getattr__(self, name):
        return getattr(self._fe, name)

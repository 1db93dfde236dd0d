"""Batched greedy generation over a test set, resumable: one jsonl line per utterance, appended as it comes.

Every prediction keeps the raw output next to the parsed label, so a parser change can be re-scored without
re-generating. Each line records the key of what produced it (the model's weights, the settings, the code); a rerun
reads the file, keeps the lines made under the current key, and appends the rest (a half-written last line from a
killed run is ignored and its utterance redone). Prompts are left-padded (the kit's processor) and decoded
greedily with the KV cache; `seconds` is the batch's wall time shared equally among its utterances.
An optional `FeatureCache` (below) lets reruns (other runs, conditions or budgets on the same test set) reuse each
clip's mel features; `use_cache=False` (no KV cache) exists only to measure what the cache buys (benchmarks/).
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..data.audio import SAMPLE_RATE, AudioError, load_16k
from ..infra import progress as where
from ..infra.io import append_jsonl, read_jsonl, repair_jsonl_tail, write_jsonl
from ..method.parsing import parse_answer
from ..method.prompts import PromptConfig, build_messages, canonical_condition
from .testsets import TestSet

AUDIO_ERROR = "audio_error"  # parse reason of an utterance whose audio could not be read (counts as wrong)


@dataclass
class Prediction:
    utt_id: str
    gold: str | None
    raw: str
    label: str | None
    reason: str
    n_tokens: int
    seconds: float
    batch_size: int
    condition: str
    max_new_tokens: int = 0
    key: str = ""  # what produced it (model, settings, code: matrix.prediction_key); another key is stale


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


def encode(processor, messages: Sequence[list[dict]], audios: Sequence[np.ndarray], feature_cache=None):
    """Chat-template text + audio features for a batch (left padded). Audio goes in as arrays decoded by the
    kit's audio module, so any format it reads works and errors are ours to count. With a `FeatureCache` (below),
    clips seen before skip the mel extraction (same features)."""
    texts = [processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    if feature_cache is None:
        return processor(text=texts, audio=list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
    with feature_cache.installed(processor):
        return processor(text=texts, audio=list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)


def generate_batch(backbone, messages: Sequence[list[dict]], audios: Sequence[np.ndarray], max_new_tokens: int,
                   use_cache: bool = True, feature_cache=None) -> list[Generated]:
    """Greedy completions for one batch: the text (special tokens dropped, reasoning tags kept: they are ordinary
    tokens) and how many tokens each generated up to and including its end token."""
    import torch

    inputs = encode(backbone.processor, messages, audios, feature_cache).to(backbone.device)
    model_dtype = next(backbone.model.parameters()).dtype
    if "input_features" in inputs and model_dtype in (torch.float16, torch.bfloat16):
        inputs["input_features"] = inputs["input_features"].to(model_dtype)
    with torch.inference_mode():
        out = backbone.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, use_cache=use_cache,
                                      temperature=None, top_p=None, top_k=None)
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


def reparse(pred: dict, candidates: Sequence[str], require_tag: bool) -> dict:
    """The prediction with its label and reason read again from its raw output by the current parser (a parser
    change re-scores old predictions without generating again); audio errors stay as they are."""
    if str(pred.get("reason", "")).startswith(AUDIO_ERROR):
        return pred
    parsed = parse_answer(pred.get("raw", ""), candidates, require_tag=require_tag)
    return {**pred, "label": parsed.label, "reason": parsed.reason}


def read_predictions(path: Path) -> list[dict]:
    """Finished predictions; a torn last line (a killed run) is skipped, a torn line elsewhere is an error."""
    path = Path(path)
    return list(read_jsonl(path, tolerate_partial_last=True)) if path.exists() else []


def predict_set(backbone, test_set: TestSet, prompt_cfg: PromptConfig, condition: str, out_path: Path,
                batch_size: int = 8, max_new_tokens: int = 256, require_answer_tag: bool = True,
                progress: bool = True, feature_cache=None, use_cache: bool = True, key: str | None = None
                ) -> list[dict]:
    """Predictions for every utterance of `test_set` (in its order), generating only the ones `out_path` lacks.

    `require_answer_tag`: read the label from <answer> only (trained models); False lets a tagless output be read
    whole (zero-shot), each such read recorded with the reason "fallback".
    `key` names what produces them (matrix.prediction_key: the adapter's weights, the settings, the code); lines made
    under another key are stale: dropped from the file and redone. Without a key, the condition and token budget
    are the key."""
    from tqdm.auto import tqdm

    cond = canonical_condition(condition)
    cands = test_set.candidates
    if prompt_cfg.transcript:
        lacking = [r.utt_id for r in test_set.rows if not r.transcript]
        if lacking:
            raise ValueError(f"prompt.transcript is on but {len(lacking)} utterance(s) of {test_set.name} have no "
                             f"transcript (e.g. {lacking[:3]})")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    repair_jsonl_tail(out_path)
    key = key or f"{cond}:{max_new_tokens}"
    lines = read_predictions(out_path)
    current = [p for p in lines if p.get("key") == key]
    if len(current) < len(lines):  # made by another model or settings: the file keeps only what is current
        write_jsonl(out_path, current)
    done = {p["utt_id"]: p for p in current}
    todo = [r for r in test_set.rows if r.utt_id not in done]
    bar = tqdm(total=len(test_set.rows), initial=len(test_set.rows) - len(todo), desc=f"{out_path.parent.name}/"
               f"{test_set.name}", unit="utt", disable=not progress, leave=False)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        where.at(f"at utterance {len(test_set.rows) - len(todo) + start + 1} of {len(test_set.rows)} of "
                    f"{out_path.parent.name} on {test_set.name}",
                    "run the same command again to resume: finished predictions are kept")
        ok_rows, audios, preds = [], [], []
        for r in chunk:
            try:
                audios.append(load_16k(r.wav))
                ok_rows.append(r)
            except AudioError as e:
                preds.append(Prediction(r.utt_id, test_set.gold(r), "", None, f"{AUDIO_ERROR}: {e.reason}", 0,
                                        0.0, 0, cond, max_new_tokens, key))
        if ok_rows:
            msgs = [build_messages(prompt_cfg, r.wav, cands, cond, r.transcript) for r in ok_rows]
            t0 = time.perf_counter()
            gens = generate_batch(backbone, msgs, audios, max_new_tokens, use_cache, feature_cache)
            per = (time.perf_counter() - t0) / len(ok_rows)
            for r, g in zip(ok_rows, gens):
                parsed = parse_answer(g.text, cands, require_tag=require_answer_tag)
                preds.append(Prediction(r.utt_id, test_set.gold(r), g.text, parsed.label, parsed.reason,
                                        g.n_tokens, per, len(ok_rows), cond, max_new_tokens, key))
        append_jsonl(out_path, [asdict(p) for p in preds])
        done.update((p.utt_id, asdict(p)) for p in preds)
        bar.update(len(chunk))
    bar.close()
    return [done[r.utt_id] for r in test_set.rows]


def batching_benchmark(backbone, test_set: TestSet, prompt_cfg: PromptConfig, condition: str, max_new_tokens: int,
                       batch_sizes: Sequence[int] = (1, 8), workdir: Path | None = None) -> list[dict]:
    """Utterances per second for each batch size on the same utterances (fresh prediction files), and whether
    every batched output equals the one-by-one output (greedy decoding should not depend on padding)."""
    import tempfile

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


# ----------------------------------------------------------------------------------------------------------------
# Mel feature cache
# ----------------------------------------------------------------------------------------------------------------
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

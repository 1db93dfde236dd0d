"""Predictions of a model on a test set, resumable: one jsonl line per utterance, appended as it comes.

Every prediction keeps the raw output next to the parsed label, so a parser change can be re-scored without
re-generating. Each line records the key of what produced it (the model's weights, the settings, the code); a rerun
reads the file, keeps the lines made under the current key, and appends the rest (a half-written last line from a
killed run is ignored and its utterance redone). Decoding is the model's batched greedy generation
(model/generate.py); `seconds` is the batch's wall time shared equally among its utterances.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..data.audio import AudioError, load_16k
from ..data.testsets import TestSet
from ..infra import progress as where
from ..infra.io import append_jsonl, read_jsonl, repair_jsonl_tail, write_jsonl
from ..method.parsing import parse_answer
from ..method.prompts import PromptConfig, build_messages, canonical_condition
from ..model.generate import generate_batch
from ..model.rollout import GenerationPaths

AUDIO_ERROR = "audio_error"  # parse reason of an utterance whose audio could not be read (counts as wrong)
# The code a prediction's raw output depends on: this module's import closure (generation, prompts, audio), whose
# digest goes into every prediction key (evaluation/matrix.py).
PREDICTION_CODE = (__name__,)


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
                progress: bool = True, key: str | None = None, paths: GenerationPaths | None = None) -> list[dict]:
    """Predictions for every utterance of `test_set` (in its order), generating only the ones `out_path` lacks.

    `require_answer_tag`: read the label from <answer> only (trained models); False lets a tagless output be read
    whole (zero-shot), each such read recorded with the reason "fallback".
    `key` names what produces them (matrix.prediction_key: the adapter's weights, the settings, the code); lines made
    under another key are stale: dropped from the file and redone. Without a key, the condition and token budget
    are the key."""
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
    bar = where.bar(len(test_set.rows), f"{out_path.parent.name}/{test_set.name}", "utt",
                    initial=len(test_set.rows) - len(todo), disable=not progress)
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
            gens = generate_batch(backbone, msgs, audios, max_new_tokens, paths)
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

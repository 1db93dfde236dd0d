"""Held-out accuracy during training: the learning curve that says whether a run generalises, not only whether its
reward rises.

Every `every` steps (and before the first, so the curve starts at the run's starting point) the model answers the
run's validation set greedily, exactly as evaluation does (same prompt, token budget and parser), and one row goes
to `<run>.heldout.csv`: step, UA, WA, macro-F1, unparseable rate, mean generated tokens. The validation set is
held-out TRAINING data (MELD dev; a slice of an IEMOCAP fold's training sessions), never a test set, so settings
may be chosen on it. Greedy decoding draws no random numbers: the callback leaves training's RNG, and so the run,
unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from ..infra.io import read_csv, write_csv
from ..infra.log import get_logger

log = get_logger(__name__)

COLUMNS = ["step", "ua", "wa", "f1", "unparseable", "tokens", "n"]


@dataclasses.dataclass
class HeldOutSpec:
    """What the callback scores and how (the evaluation settings of the profile)."""

    test_set: Any  # evaluation.testsets.TestSet
    prompt: Any  # method.prompts.PromptConfig
    condition: str
    max_new_tokens: int
    batch_size: int = 8
    require_answer_tag: bool = False


def heldout_scores(backbone, spec: HeldOutSpec) -> dict[str, float]:
    """Greedy predictions on the held-out set and their scores (no bootstrap: one number per step)."""
    from ..data.audio import load_16k
    from ..evaluation.generate import generate_batch
    from ..evaluation.metrics import score
    from ..method.parsing import parse_answer
    from ..method.prompts import build_messages

    ts = spec.test_set
    cands = ts.candidates
    gold, pred, tokens = [], [], []
    rows = ts.rows
    for start in range(0, len(rows), spec.batch_size):
        chunk = rows[start:start + spec.batch_size]
        msgs = [build_messages(spec.prompt, r.wav, cands, spec.condition, r.transcript) for r in chunk]
        gens = generate_batch(backbone, msgs, [load_16k(r.wav) for r in chunk], spec.max_new_tokens)
        for r, g in zip(chunk, gens):
            gold.append(ts.gold(r))
            pred.append(parse_answer(g.text, cands, require_tag=spec.require_answer_tag).label)
            tokens.append(g.n_tokens)
    sc = score(gold, pred, cands, n_boot=0)
    return {"ua": sc.ua, "wa": sc.wa, "f1": sc.f1, "unparseable": sc.unparseable,
            "tokens": float(np.mean(tokens)), "n": len(rows)}


class HeldOutEval(TrainerCallback):
    """Scores the model on `spec.test_set` before the first step and every `every` steps; rows in `path`.

    On resume, rows past the resumed step are dropped (they are recomputed), as CSVLogger does."""

    def __init__(self, spec: HeldOutSpec, processor, every: int, path: Path, backbone_config=None):
        if every < 1:
            raise ValueError(f"HeldOutEval: every must be >= 1, not {every}")
        self.spec, self.processor, self.every, self.path = spec, processor, every, Path(path)
        self.backbone_config = backbone_config
        self.rows: list[dict] = []

    def _evaluate(self, model, step: int) -> None:
        from .backbones import Backbone

        was_training = model.training
        model.eval()
        try:
            bb = Backbone(model=model, processor=self.processor, config=self.backbone_config, model_dir="")
            row = {"step": step, **heldout_scores(bb, self.spec)}
        finally:
            model.train(was_training)
        self.rows = [r for r in self.rows if int(float(r["step"])) != step] + [row]
        write_csv(self.path, self.rows, COLUMNS)
        log.info("held-out %s at step %d: UA %.3f WA %.3f unparseable %.3f", self.spec.test_set.name, step,
                 row["ua"], row["wa"], row["unparseable"])

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.path.exists():
            self.rows = [r for r in read_csv(self.path) if r.get("step") and int(float(r["step"])) <= state.global_step]
        else:
            self.rows = []
        if state.is_world_process_zero and model is not None and not any(
                int(float(r["step"])) == state.global_step for r in self.rows):
            self._evaluate(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        step = state.global_step
        if step % self.every == 0 or step == state.max_steps:
            self._evaluate(model, step)


def read_heldout(path: Path):
    """A run's held-out curve as a DataFrame (None when absent or empty)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return None
    df = pd.read_csv(path)
    return None if df.empty else df.sort_values("step")


def heldout_callbacks(prof, run, every: int, processor, backbone_config) -> list[HeldOutEval]:
    """[HeldOutEval] for a run of profile `prof` when `every` > 0 and the run has a validation set, else []."""
    if every <= 0:
        return []
    from ..evaluation.testsets import validation_set

    paths = prof.paths
    dcfg = prof.section("data")
    ecfg = prof.section("eval")
    ts = validation_set(paths, run, dcfg.validation_fraction, dcfg.validation_seed)
    if ts is None:
        log.info("%s: no validation set (data.validation_fraction is 0): no held-out curve", run.name)
        return []
    # a trained model is read from its <answer> only, as evaluation reads it (matrix.answer_tag_required)
    spec = HeldOutSpec(ts, prof.section("prompt"), run.condition, ecfg.max_new_tokens[run.condition],
                       ecfg.batch_size, require_answer_tag=True)
    return [HeldOutEval(spec, processor, every, run.heldout_csv(paths), backbone_config)]

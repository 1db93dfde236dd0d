"""Held-out accuracy during training: the learning curve that says whether a run generalises, not only whether its
reward rises.

Every `heldout_every` steps (and before the first, so the curve starts at the run's starting point) the model answers
the run's held-out set greedily, exactly as evaluation does (same prompt, token budget and parser), and one row goes
to `<run>.heldout.csv`: step, UA, WA, macro-F1, unparseable rate, mean generated tokens. The held-out set is
TRAINING data left out of training (MELD dev; a slice of an IEMOCAP fold's training sessions), never a test set, so
settings may be chosen on it. Greedy decoding draws no random numbers: the callback leaves training's RNG, and so
the run, unchanged (the training code digest leaves this module out: editing it never retrains).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from ..data.audio import load_16k
from ..data.testsets import TestSet, heldout_set
from ..infra.io import read_csv_until, write_csv
from ..infra.log import get_logger
from ..method.metrics import score
from ..method.parsing import parse_answer
from ..method.prompts import PromptConfig, build_messages
from ..model.backbones import Backbone
from ..model.generate import generate_batch
from ..model.rollout import GenerationPaths

log = get_logger(__name__)

COLUMNS = ["step", "ua", "wa", "f1", "unparseable", "tokens", "n"]


@dataclasses.dataclass
class HeldOutSpec:
    """How a run's held-out set is decoded: evaluation's settings for its prompt condition (the `eval` section)."""

    max_new_tokens: int
    batch_size: int = 8
    paths: GenerationPaths | None = None


def heldout_scores(backbone: Backbone, test_set: TestSet, prompt: PromptConfig, condition: str, spec: HeldOutSpec
                   ) -> dict[str, float]:
    """Greedy predictions on the held-out set and their scores (no bootstrap: one number per step). A trained model
    is read from its <answer> only, as evaluation reads it."""
    cands = test_set.candidates
    gold, pred, tokens = [], [], []
    rows = test_set.rows
    for start in range(0, len(rows), spec.batch_size):
        chunk = rows[start:start + spec.batch_size]
        msgs = [build_messages(prompt, r.wav, cands, condition, r.transcript) for r in chunk]
        gens = generate_batch(backbone, msgs, [load_16k(r.wav) for r in chunk], spec.max_new_tokens, spec.paths)
        for r, g in zip(chunk, gens):
            gold.append(test_set.gold(r))
            pred.append(parse_answer(g.text, cands, require_tag=True).label)
            tokens.append(g.n_tokens)
    sc = score(gold, pred, cands, n_boot=0)
    return {"ua": sc.ua, "wa": sc.wa, "f1": sc.f1, "unparseable": sc.unparseable,
            "tokens": float(np.mean(tokens)), "n": len(rows)}


class StepCurve(TrainerCallback):
    """A curve scored on the model during training: before the first step, every `every` steps and at the last;
    rows in `path`. On resume, rows past the resumed step are dropped (they are recomputed), as the step log does.
    Subclasses give `score(model, step, max_steps) -> rows` and leave training's RNG and the model's mode as found."""

    columns: list[str] = []

    def __init__(self, every: int, path: Path):
        if every < 1:
            raise ValueError(f"{type(self).__name__}: every must be >= 1, not {every}")
        self.every, self.path = every, Path(path)
        self.rows: list[dict] = []

    def score(self, model, step: int, max_steps: int) -> list[dict]:
        raise NotImplementedError

    def _evaluate(self, model, step: int, max_steps: int) -> None:
        was_training = model.training
        model.eval()
        try:
            new = self.score(model, step, max_steps)
        finally:
            model.train(was_training)
        self.rows = [r for r in self.rows if int(float(r["step"])) != step] + new
        extra = sorted({k for r in self.rows for k in r} - set(self.columns))
        write_csv(self.path, self.rows, self.columns + extra)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.rows = read_csv_until(self.path, state.global_step)
        if state.is_world_process_zero and model is not None and not any(
                int(float(r["step"])) == state.global_step for r in self.rows):
            self._evaluate(model, state.global_step, state.max_steps)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        step = state.global_step
        if step % self.every == 0 or step == state.max_steps:
            self._evaluate(model, step, state.max_steps)


class HeldOutEval(StepCurve):
    """Greedy scores of the model on `test_set` (`heldout_scores`)."""

    columns = COLUMNS

    def __init__(self, test_set: TestSet, prompt: PromptConfig, condition: str, spec: HeldOutSpec, processor,
                 every: int, path: Path):
        super().__init__(every, path)
        self.test_set, self.prompt, self.condition, self.spec = test_set, prompt, condition, spec
        self.processor = processor

    def score(self, model, step: int, max_steps: int) -> list[dict]:
        bb = Backbone(model=model, processor=self.processor, config=None, model_dir="")
        row = {"step": step, **heldout_scores(bb, self.test_set, self.prompt, self.condition, self.spec)}
        log.info("held-out %s at step %d: UA %.3f WA %.3f unparseable %.3f", self.test_set.name, step,
                 row["ua"], row["wa"], row["unparseable"])
        return [row]


def read_curve(path: Path, order: tuple[str, ...] = ("step",)):
    """A curve's CSV (held-out, policy) as a DataFrame sorted by `order` (None when absent or empty)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return None
    df = pd.read_csv(path)
    return None if df.empty else df.sort_values(list(order))


def read_heldout(path: Path):
    """A run's held-out curve as a DataFrame (None when absent or empty)."""
    return read_curve(path)


def heldout_summary(curve) -> dict[str, float]:
    """A held-out curve's two ends: UA (%) at the start and at the end of training, and the last step scored."""
    return {"heldout_ua_start": 100 * float(curve.ua.iloc[0]), "heldout_ua_end": 100 * float(curve.ua.iloc[-1]),
            "heldout_steps": int(curve.step.iloc[-1])}


def heldout_table(curves: dict):
    """One row per run (Run -> its curve): `heldout_summary`."""
    import pandas as pd

    return pd.DataFrame([{"run": run.name, **heldout_summary(d)} for run, d in curves.items()])


def heldout_callbacks(setup, processor) -> list[HeldOutEval]:
    """[HeldOutEval] for a run (its `RunSetup`) whose trainer sets `heldout_every` > 0 and that has a held-out set,
    else []."""
    every = setup.values.heldout_every
    if every <= 0:
        return []
    run, data = setup.run, setup.data
    ts = heldout_set(setup.paths, run.corpus, run.fold, data.heldout_fraction, data.heldout_seed)
    if ts is None:
        log.info("%s: no held-out set (data.heldout_fraction is 0): no held-out curve", run.name)
        return []
    return [HeldOutEval(ts, setup.prompt, run.condition, setup.heldout, processor, every,
                        run.heldout_csv(setup.paths))]

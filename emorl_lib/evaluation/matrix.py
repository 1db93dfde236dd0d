"""Evaluate a profile's experiment matrix (experiments.py) and collect every score from the prediction files.

`run_matrix` loads the base model once, scores the zero-shot runs, then puts each trained adapter that exists on
top of it in turn (and takes it off again), writing predictions to Run.predictions(paths, test_set).
`collect` needs no model: it reads whatever prediction files exist, so tables and figures can be rebuilt at
any time, and a run whose adapter or predictions are missing is reported as missing, never crashed on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.testsets import (
    TestSet,
    crosscorpus_corpora,
    crosscorpus_set,
    crosscorpus_targets,
    in_corpus_name,
    in_corpus_set,
    is_crosscorpus,
    test_corpus,
)
from ..infra.config import setting, settings_values, to_dict
from ..infra.determinism import RuntimeConfig, apply_runtime
from ..infra.fingerprint import code_digest, digest, file_digest, weights_digest
from ..infra.io import atomic_write_text
from ..infra.log import get_logger
from ..infra.progress import bar as progress_bar
from ..infra.paths import Paths
from ..method.metrics import FoldMean, Scores, fold_mean, score
from ..method.prompts import CONDITIONS, PromptConfig
from ..model.backbones import (
    Backbone,
    BackboneConfig,
    is_smoke,
    kit_model_dir,
    load_backbone,
)
from ..model.rollout import GenerationPaths
from ..training.experiments import (
    ExperimentsConfig,
    Run,
    all_runs,
    scored_cross_corpus,
    seeds,
)
from .predictions import PREDICTION_CODE, predict_set, read_predictions, reparse

log = get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# The `eval` section of a profile
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class EvalConfig:
    """The `eval` section: greedy batched generation over every test set, metrics with bootstrap intervals."""

    batch_size: int = setting(16, "kit", "utterances per generation batch (greedy, left-padded, KV cache)")
    # Tokens each condition may generate: an answer alone is short, reasoning is not. IR gets room for a chatty
    # zero-shot base model's sentence around its label; a trained model stops at <|im_end|> long before.
    max_new_tokens: dict[str, int] = setting({"IR": 64, "EUR": 256, "ESR": 256}, "inferred",
                                             "R1-AQA caps completions at 256; IR: a sentence of zero-shot reply")
    bootstrap: int = 1000          # bootstrap resamples for the 95 % CIs (0: no CIs)
    ci: float = 0.95
    seed: int = 0                  # bootstrap and the max_utterances subsample
    max_utterances: int | None = None  # per test set, for smoke runs (null: all); every table says when it is set
    # Zero-shot rows: read the label from <answer> only (true), or from the whole text when there is no tag (false:
    # untrained models often ignore the format; each such read is counted as a fallback). Trained adapters are
    # always read from <answer> only. Either way an output without exactly one known candidate label is wrong.
    require_answer_tag: bool = False
    crosscorpus_all_folds: bool = setting(False, "kit", "IEMOCAP: score every fold's model on the cross-corpus sets "
                                                        "(true) or the first fold's only; the paper's choice is unknown")
    # Rows of the main table other than "+ESR" use this prompt condition (the paper's baselines answer directly).
    main_condition: str = "IR"
    # How the greedy completions are generated (model/rollout.py): the same tokens either way, at another speed
    shared_prefix: bool = setting(True, "kit", "each prompt's prefix runs through the backbone without the LM head "
                                                "(no logits at every prompt position: less memory; exact)")
    compile: bool = setting(False, "kit", "a static KV cache and a compiled decoding step (CUDA graphs on a GPU); "
                                          "off until a GPU measurement shows it faster")

    def generation_paths(self) -> GenerationPaths:
        return GenerationPaths(shared_prefix=self.shared_prefix, compiled=self.compile)

    def __post_init__(self) -> None:
        missing = [c for c in CONDITIONS if c not in self.max_new_tokens]
        if missing:
            raise ValueError(f"eval.max_new_tokens lacks condition(s) {missing}")
        bad = {c: n for c, n in self.max_new_tokens.items() if c not in CONDITIONS or n < 1}
        if bad:
            raise ValueError(f"eval.max_new_tokens: {bad} (expected IR/EUR/ESR: a positive number of tokens)")
        if self.bootstrap < 0:
            raise ValueError(f"eval.bootstrap must be >= 0, not {self.bootstrap}")
        if self.batch_size < 1:
            raise ValueError(f"eval.batch_size must be >= 1, not {self.batch_size}")
        if self.max_utterances is not None and self.max_utterances < 1:
            raise ValueError(f"eval.max_utterances must be null or >= 1, not {self.max_utterances}")
        if self.main_condition not in CONDITIONS:
            raise ValueError(f"eval.main_condition: {self.main_condition!r} is not one of {CONDITIONS}")
        if not 0 < self.ci < 1:
            raise ValueError(f"eval.ci must be in (0, 1), not {self.ci}")


@dataclass
class EvalSetup:
    """Everything evaluation reads, built once from a profile (`profile.eval_setup`)."""

    profile: str
    profile_file: str
    paths: Paths
    exp: ExperimentsConfig
    eval: EvalConfig
    prompt: PromptConfig
    backbone: BackboneConfig
    runtime: RuntimeConfig
    synthetic: bool = False  # data.synthetic
    comparisons: list = field(default_factory=list)  # compare.ComparisonConfig, in the order declared

    @property
    def smoke(self) -> bool:
        """A kit-built model or synthetic data (model.backbones.is_smoke): every table and report says so."""
        return is_smoke(self.backbone, self.synthetic)


def answer_tag_required(run: Run, s: "EvalSetup") -> bool:
    """A trained adapter is read from its <answer> only; a zero-shot model may fall back to its whole text."""
    return run.stage != "zeroshot" or s.eval.require_answer_tag


def base_identity(s: "EvalSetup") -> str | None:
    """The base model's identity: the kit-built tiny model's weights digest; for another model its name, path and
    config (hashing 15 GB of 7B weights on every evaluation would cost more than it protects)."""
    b = s.backbone
    d = kit_model_dir(b, s.paths)
    if d is not None and b.name == "tiny-qwen2-audio":
        return weights_digest(d) if d.exists() else None
    cfg = Path(str(b.path)) / "config.json" if b.path else None
    return digest({"name": b.name, "path": str(b.path), "config": file_digest(cfg) if cfg and cfg.exists() else None})


def prediction_key(s: "EvalSetup", run: Run, base: str | None = None) -> str:
    """What a prediction file's lines must have been made with to be current: the model (base + the adapter's
    weights), every setting that shapes a raw output (prompt, condition, token budget, batch size, runtime) and the
    generation code (predictions.PREDICTION_CODE). Parsing is not in it: `collect` reads every raw output again.
    A retrained adapter with other weights, a changed prompt or a changed generate.py makes the old lines stale."""
    adapter = run.adapter_dir(s.paths)
    return digest({
        "base": base if base is not None else base_identity(s), "backbone": settings_values(s.backbone),
        "adapter": weights_digest(adapter) if adapter is not None else None,
        "prompt": settings_values(s.prompt), "condition": run.condition,
        "max_new_tokens": s.eval.max_new_tokens[run.condition], "batch_size": s.eval.batch_size,
        "paths": s.eval.generation_paths(), "runtime": settings_values(s.runtime),
        "code": code_digest(PREDICTION_CODE)})


def adapter_ready(run: Run, paths: Paths) -> bool:
    d = run.adapter_dir(paths)
    return d is None or (d / "adapter_config.json").exists()


def test_set_names(run: Run, s: EvalSetup) -> list[str]:
    """The sets a run is scored on: its in-corpus fold/split, then the other corpora's cross-corpus sets."""
    names = [in_corpus_name(run.corpus, run.fold)]
    first_fold = s.exp.iemocap_folds[0] if s.exp.iemocap_folds else None
    if scored_cross_corpus(s.exp, run) and (run.fold is None or s.eval.crosscorpus_all_folds
                                            or run.fold == first_fold):
        names += ["xc-" + c for c in crosscorpus_targets(run.corpus, crosscorpus_corpora(s.paths))]
    return names


def load_test_set(name: str, run: Run, s: EvalSetup) -> TestSet:
    if is_crosscorpus(name):
        return crosscorpus_set(s.paths, test_corpus(name), s.eval.max_utterances, s.eval.seed)
    return in_corpus_set(s.paths, run.corpus, run.fold, s.eval.max_utterances, s.eval.seed)


@contextlib.contextmanager
def with_adapter(backbone: Backbone, adapter: Path | None):
    """The backbone with a saved LoRA adapter on top for the duration of the block, then the bare base again
    (one base load for a whole matrix of adapters: minutes saved per adapter with a 7B model)."""
    if adapter is None:
        yield backbone
        return
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(backbone.model, str(adapter), is_trainable=False)
    peft_model.eval()
    try:
        yield dataclasses.replace(backbone, model=peft_model)
    finally:
        backbone.model = peft_model.unload()


@dataclass
class MatrixReport:
    evaluated: list[tuple[str, str, int]] = field(default_factory=list)   # (run, test set, utterances)
    missing: list[tuple[str, str]] = field(default_factory=list)          # (run, why)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)     # (run, test set, why)

    def summary(self) -> str:
        lines = [f"evaluated {len(self.evaluated)} (run, test set) pairs; {len(self.missing)} runs missing; "
                 f"{len(self.skipped)} pairs skipped"]
        lines += [f"  missing {r}: {why}" for r, why in self.missing]
        lines += [f"  skipped {r} on {t}: {why}" for r, t, why in self.skipped]
        return "\n".join(lines)


def run_matrix(settings: EvalSetup, stages: list[str] | None = None, runs: list[Run] | None = None,
               progress: bool = True, backbone: Backbone | None = None, force: bool = False) -> MatrixReport:
    """Generate predictions for every run (of `stages`) whose model exists, on every set it is scored on; lines made
    by another model or settings (prediction_key) are redone, and `force` redoes every line."""
    s = settings
    apply_runtime(s.runtime, log)
    s.paths.ensure()
    runs = [r for r in (runs or all_runs(s.exp)) if stages is None or r.stage in stages]
    rep = MatrixReport()
    ready = []
    for r in runs:
        if adapter_ready(r, s.paths):
            ready.append(r)
        else:
            rep.missing.append((r.name, f"no adapter at {r.adapter_dir(s.paths)}"))
    if not ready:
        return rep
    if backbone is None and s.exp.workers > 1 and len(ready) > 1:
        from ..infra.parallel import run_jobs

        w = min(s.exp.workers, len(ready))
        for part in run_jobs(_matrix_part, [(s, share) for share in balanced_shares(ready, s, w)], w):
            rep.evaluated += part.evaluated
            rep.skipped += part.skipped
        return rep
    bb = backbone or load_backbone(s.backbone, s.paths, trainable=False)
    base = base_identity(s)
    for r in ready:
        key = prediction_key(s, r, base)
        with with_adapter(bb, r.adapter_dir(s.paths)) as model:
            for name in test_set_names(r, s):
                try:
                    ts = load_test_set(name, r, s)
                    if force:
                        r.predictions(s.paths, name).unlink(missing_ok=True)
                    preds = predict_set(model, ts, s.prompt, r.condition, r.predictions(s.paths, name),
                                        s.eval.batch_size, s.eval.max_new_tokens[r.condition],
                                        answer_tag_required(r, s), progress, key=key,
                                        paths=s.eval.generation_paths())
                except (FileNotFoundError, ValueError) as e:
                    rep.skipped.append((r.name, name, str(e)))
                    continue
                rep.evaluated.append((r.name, name, len(preds)))
    return rep


def balanced_shares(runs: list[Run], s: EvalSetup, workers: int) -> list[list[Run]]:
    """The runs split over `workers` (each loads the base model once) with about equal work: the costliest model
    first to the least-loaded worker. A model's cost: its test sets times (a fixed cost per utterance, mostly the
    audio encoder, plus its token budget); a reasoning model on the cross-corpus sets costs ten direct ones."""
    def cost(r: Run) -> int:
        return len(test_set_names(r, s)) * (32 + s.eval.max_new_tokens[r.condition])

    shares: list[list[Run]] = [[] for _ in range(workers)]
    load = [0] * workers
    for r in sorted(runs, key=cost, reverse=True):
        i = load.index(min(load))
        shares[i].append(r)
        load[i] += cost(r)
    return [sh for sh in shares if sh]


def _matrix_part(settings: EvalSetup, runs: list[Run]) -> MatrixReport:
    """One worker's share of the matrix (its own base model; the models' prediction files are disjoint)."""
    return run_matrix(dataclasses.replace(settings, exp=dataclasses.replace(settings.exp, workers=1)), runs=runs,
                      progress=False)


# ----------------------------------------------------------------------------------------------------------------
# Collecting scores from prediction files
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Entry:
    run: Run
    test_set: str
    n_expected: int
    n_total: int                  # the set's size before max_utterances
    scores: Scores | None         # None: predictions missing or incomplete
    status: str                   # ok | missing | incomplete (k/n)
    seconds: float = float("nan")   # mean wall seconds per utterance
    tokens: float = float("nan")    # mean generated tokens per utterance
    batch_size: float = float("nan")


@dataclass
class ScoreBook:
    settings: EvalSetup
    entries: dict[tuple[str, str], Entry]

    def get(self, run: Run, test_set: str) -> Entry | None:
        return self.entries.get((run.name, test_set))

    def models(self, corpus: str, stage: str, condition: str, reward: str | None = None,
               fold: int | None | str = "all") -> list[Run]:
        """Every trained model of a recipe: one per IEMOCAP fold (or `fold` only) and per training seed
        (zero-shot models have no seed)."""
        s = self.settings
        folds = (s.exp.iemocap_folds if corpus == "iemocap" else [None]) if fold == "all" else [fold]
        sds = [None] if stage == "zeroshot" else seeds(s.exp)
        return [Run(corpus, stage, condition, reward, f, sd) for f in folds for sd in sds]

    def in_corpus(self, corpus: str, stage: str, condition: str, reward: str | None = None
                  ) -> tuple[Scores | FoldMean | None, str]:
        """A recipe's in-corpus result: MELD's test split, or the mean over IEMOCAP's configured folds, and over
        the training seeds where there are several; with a note when models are missing."""
        s = self.settings
        runs = self.models(corpus, stage, condition, reward)
        got = {}
        for run in runs:
            e = self.get(run, in_corpus_name(run.corpus, run.fold))
            if e and e.scores:
                got[run] = e.scores
        if corpus != "iemocap" and len(runs) == 1:
            e = self.get(runs[0], in_corpus_name(runs[0].corpus, runs[0].fold))
            return (got.get(runs[0])), ("" if got else (e.status if e else "missing"))
        if not got:
            return None, "missing"
        if len({r.seed for r in runs}) > 1:  # several training seeds: the mean over every (fold, seed) model
            note = "" if len(got) == len(runs) else f"mean of {len(got)}/{len(runs)} models (folds x seeds)"
            return fold_mean(dict(enumerate(got.values())), s.eval.ci), note
        per = {r.fold: sc for r, sc in got.items()}
        n = len(s.exp.iemocap_folds)
        if len(per) == n:
            note = ""
        elif len(per) == 1:
            note = f"fold {next(iter(per))} only ({1}/{n} folds scored)"
        else:
            note = f"mean of {len(per)}/{n} folds ({', '.join(map(str, sorted(per)))})"
        return fold_mean(per, s.eval.ci), note

    def cross(self, train: str, test: str, stage: str, condition: str, reward: str | None = None
              ) -> tuple[float, int]:
        """Accuracy (%) of the recipe trained on `train` on `test`'s 4-class set (mean over the IEMOCAP folds and
        training seeds that were scored), and how many models it averages; (nan, 0) when none."""
        vals = []
        for run in self.models(train, stage, condition, reward):
            e = self.get(run, "xc-" + test)
            if e and e.scores:
                vals.append(100 * e.scores.wa)
        return (float(np.mean(vals)), len(vals)) if vals else (float("nan"), 0)


def collect(settings: EvalSetup, progress: bool = False) -> ScoreBook:
    """Score every (run, test set) of the matrix from its prediction file (no model needed)."""
    s = settings
    entries: dict[tuple[str, str], Entry] = {}
    sets: dict[tuple[str, str], TestSet | None] = {}
    pairs = [(r, t) for r in all_runs(s.exp) for t in test_set_names(r, s)]
    base = base_identity(s)
    keys: dict[str, str] = {}
    bar = progress_bar(len(pairs), "scoring", "set", disable=not progress)
    for run, name in pairs:
        bar.update()
        key = (name, in_corpus_name(run.corpus, run.fold) if not is_crosscorpus(name) else name)
        if key not in sets:
            try:
                sets[key] = load_test_set(name, run, s)
            except (FileNotFoundError, ValueError):
                sets[key] = None
        ts = sets[key]
        path = run.predictions(s.paths, name)
        if ts is None:
            entries[(run.name, name)] = Entry(run, name, 0, 0, None, "no test set")
            continue
        if run.name not in keys:
            keys[run.name] = prediction_key(s, run, base)
        lines = read_predictions(path)
        preds = {p["utt_id"]: p for p in lines if p.get("key") == keys[run.name]}  # made by this model and settings
        have = [preds[r.utt_id] for r in ts.rows if r.utt_id in preds]
        if len(have) < len(ts.rows):
            status = ("stale (made by another model, settings or code)" if lines and not have else
                      "missing" if not have else f"incomplete ({len(have)}/{len(ts.rows)})")
            entries[(run.name, name)] = Entry(run, name, len(ts.rows), ts.n_total, None, status)
            continue
        # Read every raw output again with today's parser and this run's rule (trained: <answer> only).
        have = [reparse(p, ts.candidates, answer_tag_required(run, s)) for p in have]
        sc = score([ts.gold(r) for r in ts.rows], [p["label"] for p in have], ts.candidates,
                   s.eval.bootstrap, s.eval.seed, s.eval.ci, fallback=[p["reason"] == "fallback" for p in have])
        timed = [p for p in have if p.get("batch_size", 0) > 0]
        entries[(run.name, name)] = Entry(
            run, name, len(ts.rows), ts.n_total, sc, "ok",
            float(np.mean([p["seconds"] for p in timed])) if timed else float("nan"),
            float(np.mean([p["n_tokens"] for p in timed])) if timed else float("nan"),
            float(np.mean([p["batch_size"] for p in timed])) if timed else float("nan"))
    bar.close()
    return ScoreBook(s, entries)


def environment(settings: EvalSetup) -> dict:
    """What produced the numbers: profile, backbone, data, device (stated in every report)."""
    import torch

    s = settings
    return {
        "profile": s.profile, "profile_file": s.profile_file, "backbone": s.backbone.name,
        "backbone_path": s.backbone.path, "load_in_4bit": s.backbone.load_in_4bit, "synthetic_data": s.synthetic,
        "max_utterances": s.eval.max_utterances, "eval": to_dict(s.eval), "prompt_transcript": s.prompt.transcript,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
    }


def write_environment(settings: EvalSetup) -> Path:
    settings.paths.tables.mkdir(parents=True, exist_ok=True)
    path = settings.paths.tables / "eval_environment.json"
    atomic_write_text(path, json.dumps(environment(settings), indent=1) + "\n")
    return path

"""A run's life cycle, shared by SFT and GRPO: its setup (everything it reads, built once from the profile), its
training rows, optimiser choice, per-step CSV log, exact resume, the final adapter written atomically with the digest
of what made it; and the loop that trains every run of a stage.

A run is trained again exactly when its digest changes (`RunSetup.digest`): the settings it trains with (its trainer
section as resolved, the data, backbone, prompt and reward or rationale sections; fields declared `observes=True`,
such as log intervals and worker counts, left out), the training code it runs, the runtime section, the device kind,
and the adapter it starts from.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainerCallback
from transformers.trainer_utils import SchedulerType
from transformers.training_args import OptimizerNames

from ..data.corpora.splits import train_heldout
from ..data.labels import candidates as corpus_candidates
from ..data.manifest import Utterance, read_manifest
from ..data.prep import DataConfig
from ..infra import fingerprint, progress
from ..infra.config import from_dict, resolve, setting, settings_values
from ..infra.determinism import RuntimeConfig, apply_runtime
from ..infra.io import atomic_dir, read_csv_until, read_jsonl, write_csv, write_jsonl
from ..infra.log import get_logger
from ..infra.paths import Paths
from ..method.prompts import PromptConfig, canonical_condition
from ..model.backbones import SMOKE_NOTE, BackboneConfig, resolve_dtype
from .experiments import Run
from .heldout import HeldOutSpec, heldout_callbacks

log = get_logger(__name__)

# Code the trainers run that watches training without changing what is trained (held-out accuracy during training:
# tested to leave the adapter bit-identical): left out of the training code digest, so that a change to it, or to the
# generation code it calls, never retrains a finished run.
TRAINING_OBSERVERS = (f"{__package__}.heldout", f"{__package__}.policy")
SETTINGS_FILE = "emorl_settings.json"


def _per_class(rows: list[Utterance], total: int | None, rng: random.Random) -> list[Utterance]:
    """The first `total // classes` rows of each class (None: as many as the smallest class has), shuffled."""
    by_label: dict[str, list[Utterance]] = {}
    for u in rows:
        by_label.setdefault(u.label, []).append(u)
    per = min(map(len, by_label.values())) if total is None else max(1, total // len(by_label))
    out = [u for lab in sorted(by_label) for u in by_label[lab][:per]]
    rng.shuffle(out)
    return out


def training_rows(paths: Paths, run: Run, max_utterances: int | None, seed: int, balance: bool = False,
                  heldout_fraction: float = 0.0, heldout_seed: int = 0, equal_classes: bool = False
                  ) -> list[Utterance]:
    """The training side of a run's split (IEMOCAP: all sessions but the test fold, less the held-out slice
    `data.heldout_fraction` leaves out; MELD: official train, its dev split being the held-out set).

    `max_utterances` caps the set for smoke runs: a seeded sample, class-balanced when `balance` (so a small run
    sees every class), reported by the caller. `equal_classes` keeps as many of each class as the smallest has (a
    seeded sample). Order is shuffled deterministically."""
    manifest = paths.manifests / f"{run.corpus}.jsonl"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: no manifest for {run.corpus}; run notebook 01 (or `emorl prepare`) first")
    rows = read_manifest(manifest)
    train, _ = train_heldout(rows, run.corpus, run.fold, heldout_fraction, heldout_seed)
    if not train:
        raise ValueError(f"{manifest}: no training rows for {run.name}")
    rng = random.Random(seed)
    train = sorted(train, key=lambda u: u.utt_id)
    rng.shuffle(train)
    if equal_classes:
        train = _per_class(train, None, rng)
    if max_utterances is not None and len(train) > max_utterances:
        train = _per_class(train, max_utterances, rng) if balance else train[:max_utterances]
    return train


# ---- the trainers' configs: what EmoSFTConfig (sft.py) and EmoGRPOConfig (grpo.py) share ---------------------------
@dataclass
class KitTrainerFields:
    """The kit's fields and defaults common to its two trainer configs, which put this class before TRL's or
    transformers' own in their bases (so these defaults win)."""

    seed: int = setting(42, "kit", "LoRA init and data order (GRPO: sampling too)")
    optim: OptimizerNames | str = setting("auto", "kit", "auto: paged 8-bit AdamW on a GPU (QLoRA's), AdamW on the CPU")
    report_to: None | str | list[str] = setting(["tensorboard"], "kit", "TensorBoard events under the checkpoint "
                                                                        "folder", observes=True)
    save_total_limit: int | None = setting(2, "kit", "checkpoints kept", observes=True)
    remove_unused_columns: bool | None = setting(False, "kit", "the kit's own columns reach its collator and rewards")
    max_utterances: int | None = setting(None, "kit", "cap the training utterances (class-balanced); null: all")
    heldout_every: int = setting(0, "kit", "greedy accuracy on the held-out set every N steps, and before the first "
                                           "(<run>.heldout.csv); 0: off. Training is the same either way, so changing "
                                           "it does not retrain a finished run", observes=True)
    reasoning: dict[str, Any] | None = setting(None, "kit", "settings of this section that ESR/EUR runs take instead "
                                                            "(their completions run to ~90 tokens against one "
                                                            "word): a mapping of its fields; null: none")

    # Set by the kit from elsewhere, never in the section: where to set them instead.
    SET_ELSEWHERE: ClassVar[dict[str, str]] = {
        "bf16": "follows backbone.dtype", "fp16": "follows backbone.dtype",
        "gradient_checkpointing": "set backbone.gradient_checkpointing",
        "output_dir": "each run's checkpoint folder (runs/<profile>/checkpoints/<run>)",
    }
    RENAMED: ClassVar[dict[str, str]] = {}

    @staticmethod
    def check(cfg) -> None:
        """The kit's checks on a section's values (a built config or `infra.config.resolve`d values): what TRL and
        transformers accept and fail on later, or train on nonsense with."""
        check_training_ranges(cfg)
        if cfg.reasoning:
            bad = sorted(k for k in cfg.reasoning if k == REASONING or not hasattr(cfg, k))
            if bad:
                raise ValueError(f"reasoning: unknown key(s) {bad}; expected settings of this section")
            for k in sorted(set(cfg.reasoning) & set(NOT_PER_CONDITION)):
                raise ValueError(f"reasoning.{k}: not set per condition: {NOT_PER_CONDITION[k]}")

    def _kit_post_init(self) -> None:
        """What the kit settles before TRL's and transformers' own __post_init__ (the device setup)."""
        self.check(self)
        self.gradient_checkpointing = False  # set on the model by the backbone loader (backbone.gradient_checkpointing)
        resolve_shared_fields(self)


REASONING = "reasoning"
# What a section's `reasoning` mapping may not set: the GPU planner sizes these from the section, and a run's seed is
# its own.
NOT_PER_CONDITION = {
    **{k: "the GPU planner sizes it from the section (plan.fit); set it in the section"
       for k in ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
                 "rollout_rows_per_generate")},
    "seed": "each run's seed is its own (experiments.seeds)",
}


def condition_values(section: dict[str, Any], condition: str) -> dict[str, Any]:
    """A trainer section as a run of `condition` reads it: ESR/EUR runs take its `reasoning` mapping over it, IR
    runs leave it out (so that changing it retrains only the reasoning runs)."""
    values = {k: v for k, v in section.items() if k != REASONING}
    return values | dict(section.get(REASONING) or {}) if canonical_condition(condition) != "IR" else values


def check_training_ranges(cfg) -> None:
    """Ranges the SFT and GRPO sections share."""
    for name, enum_cls in (("lr_scheduler_type", SchedulerType), ("optim", OptimizerNames)):
        value = getattr(cfg, name)
        if not (value == "auto" and name == "optim"):
            try:
                enum_cls(value)
            except ValueError:
                raise ValueError(f"{name} {value!r}: expected one of {[m.value for m in enum_cls]}") from None
    checks = [
        ("learning_rate", cfg.learning_rate > 0, "a positive number"),
        ("per_device_train_batch_size", cfg.per_device_train_batch_size >= 1, "at least 1"),
        ("gradient_accumulation_steps", cfg.gradient_accumulation_steps >= 1, "at least 1"),
        ("max_steps", cfg.max_steps == -1 or cfg.max_steps > 0, "a positive number of steps, or -1 (use epochs)"),
        ("num_train_epochs", cfg.num_train_epochs > 0, "a positive number"),
        ("warmup_steps", cfg.warmup_steps >= 0, "0 or more (a float below 1 is a fraction of training)"),
        ("weight_decay", cfg.weight_decay >= 0, "0 or more"),
        ("max_grad_norm", cfg.max_grad_norm >= 0, "0 or more"),
        ("logging_steps", cfg.logging_steps > 0, "a positive number"),
        ("save_steps", cfg.save_steps > 0, "a positive number"),
        ("heldout_every", cfg.heldout_every >= 0, "0 (off) or a positive number of steps"),
        ("max_utterances", cfg.max_utterances is None or cfg.max_utterances >= 1, "null (all) or at least 1"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name}: expected {expected}, got {getattr(cfg, name)!r}")


def auto_optimizer(on_gpu: bool) -> str:
    """What `optim: auto` means: QLoRA's paged 8-bit AdamW on a GPU, torch's AdamW on the CPU."""
    return "paged_adamw_8bit" if on_gpu else "adamw_torch"


def resolve_shared_fields(cfg) -> None:
    """Before transformers' own checks: `optim: auto` picks paged 8-bit AdamW on a GPU (QLoRA's optimiser) and
    AdamW on the CPU; precision stays off unless the run sets it from backbone.dtype; data order follows the seed;
    several processes without a GPU form one data-parallel group on the CPU (distributed.py); no pinned memory
    without a GPU."""
    from .distributed import cpu_processes

    import torch

    if cpu_processes():
        cfg.use_cpu = True
    if cfg.optim == "auto":
        cfg.optim = auto_optimizer(torch.cuda.is_available())
    if not torch.cuda.is_available():
        cfg.dataloader_pin_memory = False  # pinned memory only serves copies to a GPU (torch warns on the CPU)
    if cfg.bf16 is None:
        cfg.bf16 = False
    if cfg.data_seed is None:
        cfg.data_seed = cfg.seed


def precision_flags(dtype_name: str) -> dict[str, bool]:
    """bf16/fp16 Trainer flags matching the backbone's compute dtype (none on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    dt = resolve_dtype(dtype_name)
    return {"bf16": dt == torch.bfloat16, "fp16": dt == torch.float16}


def last_checkpoint(out_dir: Path) -> str | None:
    """The newest complete `checkpoint-N` under `out_dir`, for an exact resume after an interruption."""
    if not out_dir.exists():
        return None
    cks = [p for p in out_dir.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").exists()]
    if not cks:
        return None
    return str(max(cks, key=lambda p: int(p.name.split("-")[-1])))


class CSVLogger(TrainerCallback):
    """Every Trainer log line as a CSV row (columns grow as new keys appear), beside TensorBoard's events.

    Rows of an interrupted run are kept; on resume, rows past the resumed step are dropped first, so the file
    always reads as one clean run."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.rows = read_csv_until(self.path, state.global_step)
        self._flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero or "train_runtime" in logs:
            return  # the end-of-run summary is not a step (it would repeat the last step's number)
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for k, v in logs.items():
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                row[k] = v
        self.rows.append(row)
        self._flush()

    def _flush(self):
        write_csv(self.path, self.rows, None if self.rows else ["step"])


class JsonlStepTrim(TrainerCallback):
    """Keeps a per-step jsonl log (GRPO's sampled completions) free of repeats across attempts: when training
    (re)starts at step N, lines with `step` >= N are dropped, since those steps run again. (A completion logged with
    step N was sampled while computing step N + 1.)"""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.path.exists() or not state.is_world_process_zero:
            return
        kept = [r for r in read_jsonl(self.path, tolerate_partial_last=True)
                if isinstance(r.get("step"), int) and r["step"] < state.global_step]
        write_jsonl(self.path, kept)


class WhereAmI(TrainerCallback):
    """Tells infra.progress which run and step training is at, so that Ctrl-C can say so in one line."""

    def __init__(self, run_name: str):
        self.run_name = run_name
        self.saved: int | None = None

    def _mark(self, state) -> None:
        ck = f"last checkpoint: step {self.saved}" if self.saved else "no checkpoint yet"
        progress.at(f"at step {state.global_step} of {state.max_steps} of {self.run_name} ({ck})",
                    "run the same command again to resume from the last checkpoint")

    def on_train_begin(self, args, state, control, **kwargs):
        self.saved = state.global_step or None  # resumed from this checkpoint
        self._mark(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._mark(state)

    def on_save(self, args, state, control, **kwargs):
        self.saved = state.global_step
        self._mark(state)


class TrainingProgress(TrainerCallback):
    """One progress bar per run (infra.progress.bar: its name, step of total, elapsed and remaining, the numbers to
    watch: GRPO's reward, accuracy and KL, SFT's loss) and one summary line at its end. The full per-step metrics go to
    the run's CSV log and TensorBoard, never to the terminal (`quiet_trainer` removes the trainers' own printers)."""

    def __init__(self, stage: str, run_name: str, log_csv: Path):
        self.stage, self.run_name, self.log_csv = stage, run_name, Path(log_csv)
        self.bar = None
        self.t0 = 0.0
        self.start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.t0, self.start = time.time(), state.global_step
        self.bar = progress.bar(state.max_steps, f"{self.stage} {self.run_name}", "steps", initial=state.global_step,
                                milestones=(0.25, 0.5, 0.75), emit=log.info)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        acc = next((k for k in logs if k.startswith("rewards/") and k.endswith("/mean") and "accuracy" in k), None)
        watch = (("reward", "reward"), ("accuracy", acc), ("KL", "kl")) if self.stage == "grpo" else (("loss", "loss"),)
        post = {name: f"{float(logs[key]):.3g}" for name, key in watch if key and key in logs}
        if post:
            self.bar.set_postfix(post, refresh=False)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        self.bar.close()
        self.bar = None
        log.info("%s", self.summary(state.global_step, time.time() - self.t0))

    def summary(self, steps: int, seconds: float) -> str:
        """`grpo meld_grpo_eswr_IR: 40 steps in 3 min; reward 1.41 -> 1.43, ...` (the log's two ends)."""
        import pandas as pd

        now = f" ({steps - self.start} after resuming)" if self.start else ""
        line = f"{self.stage} {self.run_name}: {steps} steps{now} in {progress.duration(seconds)}"
        if not self.log_csv.exists():
            return line
        row = log_summary({Run("x", self.stage, "IR"): pd.read_csv(self.log_csv)})
        if row.empty:
            return line
        row = row.iloc[0]
        names = ("reward", "accuracy", "kl") if self.stage == "grpo" else ("loss",)
        ends = [f"{n} {row[f'{n}_first']:.3g} -> {row[f'{n}_last']:.3g}" for n in names if f"{n}_first" in row
                and row[f"{n}_first"] == row[f"{n}_first"]]
        return line + (f"; {', '.join(ends)} (first and last logged steps)" if ends else "")


def quiet_trainer(trainer) -> None:
    """transformers' ProgressCallback and PrinterCallback print every log dict (600-character lines): the kit's
    TrainingProgress says the same in a bar and one line, and the CSV log keeps every number."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)


def accuracy_column(df) -> str | None:
    """TRL logs each reward function as rewards/<name>/mean; the accuracy one is whichever name says so."""
    cols = [c for c in df.columns if c.startswith("rewards/") and c.endswith("/mean")]
    for key in ("accuracy", "eswr", "binary"):
        for c in cols:
            if key in c.lower():
                return c
    return None


def log_summary(logs, window: int = 10):
    """Per run, the first and last `window` logged steps side by side (at most a quarter of the log each, so that a
    short log's two ends never overlap): did the reward, the accuracy, the share of zero-std groups (no gradient) and
    the loss move? A table for notebooks and the README."""
    import pandas as pd

    rows = []
    for run, df in logs.items():
        if df is None or df.empty:
            continue
        row = {"run": run.name, "steps": int(df["step"].max())}
        acc = accuracy_column(df)
        for col, name in (("reward", "reward"), (acc, "accuracy"), ("frac_reward_zero_std", "zero_advantage_share"),
                          ("kl", "kl"), ("loss", "loss"), ("completions/mean_length", "length")):
            if col and col in df.columns and df[col].notna().any():
                d = df[col].dropna()
                w = max(1, min(window, len(d) // 4))
                row[f"{name}_first"] = float(d.head(w).mean())
                row[f"{name}_last"] = float(d.tail(w).mean())
        rows.append(row)
    return pd.DataFrame(rows)


# ---- one run, start to finish: what run_sft and run_grpo share ----------------------------------------------------
class StopAt(TrainerCallback):
    """Stops training after N steps, as an interruption would (after saving the checkpoint at N)."""

    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.n:
            control.should_save = True
            control.should_training_stop = True
        return control


# ---- one run: its setup, start to finish -------------------------------------------------------------------------
@dataclass
class RunSetup:
    """Everything one training run reads, built once from the profile (`profile.training_setup`): where its files
    go, its data, backbone and prompt settings, its trainer section as the profile writes it, how its held-out curve
    is decoded. Its digest is what the run's adapter is trained with; its trainer config (`args`) is built once, in
    the process that trains. SFTSetup (sft.py) and GRPOSetup (grpo.py) add what their stage reads and how it trains."""

    run: Run
    paths: Paths
    trainer: dict[str, Any]  # the stage's section as written in the profile
    data: DataConfig
    backbone: BackboneConfig
    prompt: PromptConfig
    runtime: RuntimeConfig
    heldout: HeldOutSpec
    profile: str = ""
    where: str = ""  # the profile file and section, for error messages
    sizing: list[str] = field(default_factory=list)  # what the planner changed to fit this GPU (recorded)

    config_class: ClassVar[type]  # the stage's trainer config (EmoSFTConfig, EmoGRPOConfig)
    stage: ClassVar[str]

    def _trainer_values(self) -> dict[str, Any]:
        return {**condition_values(self.trainer, self.run.condition),
                **({} if self.run.seed is None else {"seed": self.run.seed})}

    @cached_property
    def values(self):
        """The trainer section's settings for this run (the run's seed over the section's), as they will be."""
        return resolve(self.config_class, self._trainer_values(), self.where)

    @cached_property
    def args(self):
        """The trainer config (TRL's / transformers'), built once: construction sets up devices."""
        runtime = {"output_dir": str(self.run.checkpoint_dir(self.paths)), **precision_flags(self.backbone.dtype),
                   **self.runtime_args()}
        return from_dict(self.config_class, self._trainer_values(), self.where, runtime=runtime)

    def runtime_args(self) -> dict[str, Any]:
        """Trainer fields the stage sets itself (never from the profile)."""
        return {}

    def method_settings(self) -> dict[str, Any]:
        """The method sections this stage's training reads (reward; rationale and descriptors)."""
        return {}

    def start(self) -> str:
        """The identity of what training starts from (a start adapter), for the digest."""
        return ""

    def digest(self) -> str:
        """What the run's adapter is trained with (see the module docstring): a change retrains it."""
        import torch

        parts = {"trainer": settings_values(self.values, self.config_class), "data": settings_values(self.data),
                 "backbone": settings_values(self.backbone), "prompt": settings_values(self.prompt),
                 **{k: settings_values(v) for k, v in self.method_settings().items()},
                 "runtime": settings_values(self.runtime), "start": self.start(),
                 "device": "cuda" if torch.cuda.is_available() else "cpu",
                 "code": fingerprint.code_digest((self.config_class.__module__,), TRAINING_OBSERVERS)}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def changed(self) -> dict[str, Any]:
        """The trainer settings this run sets beyond the class defaults (recorded with its adapter)."""
        return dict(self._trainer_values())

    def train(self, force: bool = False, stop_after_steps: int | None = None) -> Path | None:
        raise NotImplementedError

    def clear_caches(self) -> None:
        """Drop the stage's own caches (`force`)."""


def trained_hash(folder: Path) -> str | None:
    """The digest a checkpoint folder or final adapter was made with (None: unknown)."""
    for f in (folder / SETTINGS_FILE, folder / "emorl_run.json"):
        if f.exists():
            return json.loads(f.read_text()).get("settings_hash")
    return None


def open_run(setup: RunSetup, force: bool) -> tuple[Path, bool]:
    """(final adapter folder, whether it is already trained).

    A final adapter counts as trained only if it was made with the run's current digest: change a learning rate or
    the trainer's code and the run trains again (its checkpoints, made with the old ones, are cleared too). `force`
    always retrains. Under several processes the main one clears and stamps the folder while the others wait."""
    from .distributed import main_process_writes

    run = setup.run
    apply_runtime(setup.runtime, log)
    paths = setup.paths.ensure()
    final = run.adapter_dir(paths)
    h = setup.digest()
    if final.exists() and not force:
        if trained_hash(final) == h:
            log.info("%s %s: its adapter is current, skipped", setup.stage, run.name)
            return final, True
        log.info("%s %s: settings changed since its adapter was trained (sections, training code, runtime or start "
                 "adapter): training it again", setup.stage, run.name)
    ckpt = run.checkpoint_dir(paths)
    with main_process_writes() as writer:
        if writer:
            if force or (ckpt.exists() and trained_hash(ckpt) != h):
                shutil.rmtree(ckpt, ignore_errors=True)
            if not last_checkpoint(ckpt):  # training starts from scratch: no row of an older attempt stays
                for log_file in run.step_logs(paths):
                    log_file.unlink(missing_ok=True)
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / SETTINGS_FILE).write_text(json.dumps({"settings_hash": h, "run": run.name}))
    return final, False


def run_callbacks(setup: RunSetup, processor, stop_after_steps: int | None, jsonl_logs: tuple[Path, ...] = ()
                  ) -> list:
    """The per-step CSV log, trimming of per-step jsonl logs on resume, progress for Ctrl-C, the held-out curve, and
    a test stop."""
    run, paths = setup.run, setup.paths
    return ([CSVLogger(run.log_csv(paths)), WhereAmI(run.name), TrainingProgress(setup.stage, run.name,
                                                                                  run.log_csv(paths))]
            + [JsonlStepTrim(p) for p in jsonl_logs]
            + heldout_callbacks(setup, processor)
            + ([StopAt(stop_after_steps)] if stop_after_steps is not None else []))


def train_and_save(trainer, processor, setup: RunSetup, final: Path, meta: dict,
                   stop_after_steps: int | None = None) -> Path | None:
    """Train (resuming from the run's newest checkpoint), then write the final adapter atomically with what produced
    it (the main process; the others wait for it). Returns None when stopped early by `stop_after_steps` (no
    `final`, as after an interruption)."""
    from .distributed import check_world_size

    run, paths = setup.run, setup.paths
    check_world_size(trainer)
    quiet_trainer(trainer)
    resume = last_checkpoint(run.checkpoint_dir(paths))
    if resume:
        log.info("%s %s: resuming from %s", setup.stage, run.name, resume)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume)
    if stop_after_steps is not None and trainer.state.global_step < trainer.state.max_steps:
        return None
    # What `emorl infer` needs to ask the adapter as it was trained: labels, condition (and the prompt, in meta).
    meta = {"run": asdict(run), "name": run.name, "stage": setup.stage, "seconds": round(time.time() - t0, 1),
            "settings_hash": trained_hash(run.checkpoint_dir(paths)),
            "steps": trainer.state.global_step, "condition": run.condition,
            "labels": list(corpus_candidates(run.corpus)), "profile": setup.profile, "sized_for_this_gpu": setup.sizing,
            setup.stage: setup.changed(), "prompt": asdict(setup.prompt), **meta}
    model = trainer.model
    if trainer.accelerator.is_main_process:
        with atomic_dir(final) as tmp:
            if hasattr(model, "peft_config"):
                model.save_pretrained(tmp, selected_adapters=["default"])  # not TRL's frozen "ref" copy
            else:
                model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            (tmp / "emorl_run.json").write_text(json.dumps(meta, indent=1, default=str))
    trainer.accelerator.wait_for_everyone()
    return final


# ----------------------------------------------------------------------------------------------------------------
# Train every run of a stage (what notebooks 03/04 and `emorl sft|grpo` call).
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class TrainingSetup:
    """One stage's runs (`profile.training_setup`): a setup per run, and how many to train side by side."""

    stage: str
    runs: list[RunSetup] = field(default_factory=list)
    workers: int = 1
    paths: Paths | None = None
    smoke: bool = False  # a kit-built model or synthetic data (model.backbones.is_smoke)
    sizing: list[str] = field(default_factory=list)  # the planner's changes to fit this machine's GPU

    @property
    def note(self) -> str:
        """What figure titles add: the smoke note, or nothing."""
        return SMOKE_NOTE if self.smoke else ""

    def table(self):
        """One row per run: its name, corpus, fold, seed, reward, prompt condition and adapter folder."""
        import pandas as pd

        return pd.DataFrame([{"run": r.run.name, "corpus": r.run.corpus, "fold": r.run.fold, "seed": r.run.seed,
                              "reward": r.run.reward, "condition": r.run.condition,
                              "adapter": str(r.run.adapter_dir(r.paths))} for r in self.runs])


def _train_one(setup: RunSetup, force: bool) -> Path:
    return setup.train(force=force)


def train_stage(setup: TrainingSetup, force: bool = False) -> dict[str, Path]:
    """Train the stage's runs; returns run name -> final adapter folder.

    `setup.workers` (experiments.workers) trains that many runs side by side in worker processes; under
    `accelerate launch` the processes already train one run together, so runs go one after another."""
    from ..infra.parallel import run_jobs
    from .distributed import check_launch, launched_world_size

    check_launch()
    runs = list(setup.runs)
    if force:  # force recomputes the stage's own caches too (SFT: the acoustic descriptors)
        for r in runs:
            r.clear_caches()
    workers = 1 if launched_world_size() > 1 else setup.workers
    if workers > 1:  # reasoning runs (long completions) first, so that the short ones fill the workers' tails
        runs = sorted(runs, key=lambda r: r.run.condition == "IR")
    for i, r in enumerate(runs, 1):
        log.info("%s run %d/%d: %s", setup.stage, i, len(runs), r.run.name)
    finals = run_jobs(_train_one, [(r, force) for r in runs], workers)
    return {r.run.name: final for r, final in zip(runs, finals)}

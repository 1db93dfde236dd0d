"""A run's life cycle, shared by SFT and GRPO (training rows, optimiser choice, per-step CSV logs, exact resume,
the final adapter written atomically), and the loop that trains every run of a stage."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..data.corpora.splits import train_validation
from ..data.labels import candidates as corpus_candidates
from ..data.manifest import Utterance, read_manifest
from ..infra import progress
from ..infra.config import Profile, check_only
from ..infra.determinism import apply_runtime
from ..infra.io import atomic_dir, read_csv, read_jsonl, write_csv, write_jsonl
from ..infra.log import get_logger
from ..infra.paths import Paths
from .experiments import Run, grpo_runs, sft_runs

log = get_logger(__name__)


def training_rows(paths: Paths, run: Run, max_rows: int | None, seed: int,
                  balance: bool = False, validation_fraction: float = 0.0,
                  validation_seed: int = 0) -> list[Utterance]:
    """The training side of a run's split (IEMOCAP: all sessions but the test fold, less the validation slice
    `data.validation_fraction` holds out; MELD: official train, its dev split being the validation set).

    `max_rows` caps the set for smoke runs: a seeded sample, class-balanced when `balance` (so a small run sees
    every class), reported by the caller. Order is shuffled deterministically."""
    manifest = paths.manifests / f"{run.corpus}.jsonl"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest}: no manifest for {run.corpus}; run notebook 01 (or `emorl prepare`) first")
    rows = read_manifest(manifest)
    train, _ = train_validation(rows, run.corpus, run.fold, validation_fraction, validation_seed)
    if not train:
        raise ValueError(f"{manifest}: no training rows for {run.name}")
    rng = random.Random(seed)
    train = sorted(train, key=lambda u: u.utt_id)
    rng.shuffle(train)
    if max_rows is not None and len(train) > max_rows:
        if balance:
            by_label: dict[str, list[Utterance]] = {}
            for u in train:
                by_label.setdefault(u.label, []).append(u)
            per = max(1, max_rows // len(by_label))
            train = [u for lab in sorted(by_label) for u in by_label[lab][:per]]
            rng.shuffle(train)
        else:
            train = train[:max_rows]
    return train


def check_training_ranges(cfg) -> None:
    """Checks shared by the SFT and GRPO configs, made without transformers' device setup (see config.check_only):
    values TRL and transformers accept and fail on later, or train on nonsense with."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

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
    several processes without a GPU form one data-parallel group on the CPU (distributed.py)."""
    from .distributed import cpu_processes

    if cpu_processes():
        cfg.use_cpu = True
    if cfg.optim == "auto":
        import torch

        cfg.optim = auto_optimizer(torch.cuda.is_available())
    if cfg.bf16 is None:
        cfg.bf16 = False
    if cfg.data_seed is None:
        cfg.data_seed = cfg.seed


def precision_flags(dtype_name: str) -> dict[str, bool]:
    """bf16/fp16 Trainer flags matching the backbone's compute dtype (none on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    from .backbones import resolve_dtype

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
        if self.path.exists():
            self.rows = [r for r in read_csv(self.path) if r.get("step") and int(float(r["step"])) <= state.global_step]
        else:
            self.rows = []
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
        for col, name in (("reward", "reward"), (acc, "accuracy"), ("frac_reward_zero_std", "zero_std_share"),
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


# The profile sections that change what a stage trains (eval, paths, experiments do not).
TRAIN_SECTIONS = {
    "sft": ("data", "backbone", "prompt", "sft", "rationale", "descriptors"),
    "grpo": ("data", "backbone", "prompt", "reward", "grpo"),
}
# Trainer fields that change what is logged or kept, not what is trained.
NOT_TRAINING = {"output_dir", "logging_dir", "run_name", "logging_steps", "save_steps", "save_total_limit",
                "report_to", "log_completions_every", "dataloader_num_workers", "use_cpu", "heldout_every"}
SETTINGS_FILE = "emorl_settings.json"


def trainer_config(prof: Profile, stage: str, **runtime: Any):
    """The `sft` or `grpo` section as the trainer gets it: the profile's values over the class defaults, precision
    from backbone.dtype, and what the run adds (output folder, reward weights)."""
    return prof.section(stage, **precision_flags(prof.section("backbone").dtype), **runtime)


def changed_fields(cfg) -> dict[str, Any]:
    """The fields of a config that differ from its class's defaults (what a run's metadata records)."""
    import dataclasses

    with check_only():
        default = type(cfg)()
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if f.init and str(getattr(cfg, f.name)) != str(getattr(default, f.name))}


def settings_hash(prof: Profile, stage: str, extra: str = "") -> str:
    """What a run is trained with: its stage's sections as resolved (a value written out equal to its default changes
    nothing; a changed default does), + e.g. the start adapter's hash."""
    import hashlib
    import json

    from ..infra.config import to_dict

    sections = {}
    with check_only():
        for k in TRAIN_SECTIONS[stage]:
            values = to_dict(trainer_config(prof, k) if k in ("sft", "grpo") else prof.section(k))
            sections[k] = {n: v for n, v in values.items() if n not in NOT_TRAINING}
    blob = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256((blob + extra).encode()).hexdigest()[:16]


def code_and_runtime(prof, stage: str) -> str:
    """The other half of what a run was trained with: the training code it ran (fingerprint.TRAINING_CODE's import
    closure and the numeric packages' versions) and the runtime section (threads, kernels: they change the bits)."""
    from ..infra.fingerprint import (
        TRAINING_CODE,
        TRAINING_OBSERVERS,
        code_digest,
        digest,
    )

    return f"|code:{code_digest(TRAINING_CODE[stage], TRAINING_OBSERVERS)}|runtime:{digest(prof.sections.get('runtime'))}"


def trained_hash(folder: Path) -> str | None:
    """The settings hash a checkpoint folder or final adapter was made with (None: unknown)."""
    import json

    for f in (folder / SETTINGS_FILE, folder / "emorl_run.json"):
        if f.exists():
            return json.loads(f.read_text()).get("settings_hash")
    return None


def open_run(prof: Profile, run: Run, force: bool, stage: str, extra: str = "") -> tuple[Paths, Path, bool]:
    """(paths, final adapter folder, whether it is already trained).

    A final adapter counts as trained only if it was made with the current settings and training code: change a
    learning rate or the trainer's code and the run trains again (its checkpoints, made with the old ones, are
    cleared too). `force` always retrains. Under several processes the main one clears and stamps the folder while
    the others wait."""
    import json
    import shutil

    from .distributed import main_process_writes

    apply_runtime(prof, log)
    paths = prof.paths.ensure()
    final = run.adapter_dir(paths)
    h = settings_hash(prof, stage, extra + code_and_runtime(prof, stage))
    if final.exists() and not force:
        if trained_hash(final) == h:
            log.info("%s %s: final adapter is current, skipped (%s)", stage, run.name, final)
            return paths, final, True
        log.info("%s %s: settings changed since %s was trained (profile sections, training code, runtime or start "
                 "adapter): training it again", stage, run.name, final)
    ckpt = run.checkpoint_dir(paths)
    with main_process_writes() as writer:
        if writer:
            if force or (ckpt.exists() and trained_hash(ckpt) != h):
                shutil.rmtree(ckpt, ignore_errors=True)
                run.log_csv(paths).unlink(missing_ok=True)
            ckpt.mkdir(parents=True, exist_ok=True)
            (ckpt / SETTINGS_FILE).write_text(json.dumps({"settings_hash": h, "run": run.name}))
    return paths, final, False


def run_callbacks(run: Run, paths: Paths, stop_after_steps: int | None, jsonl_logs: tuple[Path, ...] = ()) -> list:
    """The per-step CSV log, trimming of per-step jsonl logs on resume, progress for Ctrl-C, and a test stop."""
    return ([CSVLogger(run.log_csv(paths)), WhereAmI(run.name)] + [JsonlStepTrim(p) for p in jsonl_logs]
            + ([StopAt(stop_after_steps)] if stop_after_steps is not None else []))


def train_and_save(trainer, processor, run: Run, paths: Paths, final: Path, meta: dict, stage: str,
                   stop_after_steps: int | None = None) -> Path | None:
    """Train (resuming from the run's newest checkpoint), then write the final adapter atomically with what produced
    it (the main process; the others wait for it). Returns None when stopped early by `stop_after_steps` (no
    `final`, as after an interruption)."""
    import json
    import time
    from dataclasses import asdict

    from .distributed import check_world_size

    check_world_size(trainer)
    resume = last_checkpoint(run.checkpoint_dir(paths))
    if resume:
        log.info("%s %s: resuming from %s", stage, run.name, resume)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume)
    if stop_after_steps is not None and trainer.state.global_step < trainer.state.max_steps:
        return None
    # What `emorl infer` needs to ask the adapter as it was trained: labels, condition (and the prompt, in meta).
    meta = {"run": asdict(run), "name": run.name, "stage": stage, "seconds": round(time.time() - t0, 1),
            "settings_hash": trained_hash(run.checkpoint_dir(paths)),
            "steps": trainer.state.global_step, "condition": run.condition,
            "labels": list(corpus_candidates(run.corpus)), **meta}
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
# Train every run of a stage in a profile's experiment matrix (what notebooks 03/04 and `emorl sft|grpo` call).
# ----------------------------------------------------------------------------------------------------------------
def _select(runs: list[Run], only: list[str] | None) -> list[Run]:
    if not only:
        return runs
    chosen = [r for r in runs if r.name in only]
    unknown = sorted(set(only) - {r.name for r in chosen})
    if unknown:
        raise ValueError(f"unknown run(s) {unknown}; this profile's runs: {[r.name for r in runs]}")
    return chosen


def stage_runs(prof: Profile, stage: str) -> list[Run]:
    ecfg = prof.section("experiments")
    return sft_runs(ecfg) if stage == "sft" else grpo_runs(ecfg)


def _train_one(stage: str, prof: Profile, run: Run, force: bool) -> Path:
    from .grpo import run_grpo
    from .sft import run_sft

    t0 = time.time()
    final = (run_sft if stage == "sft" else run_grpo)(prof, run, force=force)
    log.info("%s %s: %.0f s -> %s", stage, run.name, time.time() - t0, final)
    return final


def train_stage(stage: str, prof: Profile, only: list[str] | None = None, force: bool = False,
                workers: int | None = None) -> dict[str, Path]:
    """Train the `sft` or `grpo` runs of the profile; returns run name -> final adapter folder.

    `workers` (default: experiments.workers) trains that many runs side by side in worker processes; under
    `accelerate launch` the processes already train one run together, so runs go one after another."""
    from ..infra.parallel import run_jobs
    from .distributed import check_launch, launched_world_size

    check_launch()
    runs = _select(stage_runs(prof, stage), only)
    if force and stage == "sft":  # force recomputes the stage's own cache too: the acoustic descriptors
        from ..method.descriptors import descriptors_path

        for corpus in sorted({r.corpus for r in runs}):
            descriptors_path(prof.paths.manifests / f"{corpus}.jsonl").unlink(missing_ok=True)
    workers = 1 if launched_world_size() > 1 else (workers or prof.section("experiments").workers)
    if workers > 1:  # reasoning runs (long completions) first, so that the short ones fill the workers' tails
        runs = sorted(runs, key=lambda r: r.condition == "IR")
    for i, run in enumerate(runs, 1):
        log.info("%s run %d/%d: %s", stage, i, len(runs), run.name)
    finals = run_jobs(_train_one, [(stage, prof, run, force) for run in runs], workers)
    return {run.name: final for run, final in zip(runs, finals)}

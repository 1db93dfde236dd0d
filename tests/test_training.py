"""The trainers are audio-true: the spy, masking and resume tests of the training issue."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emorl_lib.data.manifest import Utterance
from emorl_lib.infra.io import write_jsonl
from emorl_lib.profile import Profile, run_setup
from emorl_lib.training.experiments import Run

LABELS = ("neutral", "happy", "sad", "angry")
F0 = {"neutral": 160.0, "happy": 300.0, "sad": 110.0, "angry": 240.0}


@pytest.fixture(scope="module")
def train_profile(tmp_path_factory, kit_paths) -> Profile:
    """A scratch profile on tone 'utterances' (pitch = emotion), IEMOCAP-shaped (fold = session)."""
    root = tmp_path_factory.mktemp("train")
    sr = 16000
    rows = []
    for sess in (1, 2):
        for i, lab in enumerate(LABELS):
            t = np.arange(int((1.0 + 0.1 * i) * sr)) / sr
            x = (0.3 * np.sin(2 * np.pi * F0[lab] * t)).astype("float32")
            wav = root / f"s{sess}_{lab}.wav"
            sf.write(wav, x, sr)
            rows.append(Utterance(f"Ses0{sess}F_impro01_F00{i}", "iemocap", f"Ses0{sess}F", "F", lab[:3], lab, lab,
                                  None, sess, len(t) / sr, str(wav), str(wav), None))
    sections = {
        "paths": {"cache": str(kit_paths.cache), "runs": str(root / "runs"), "results": str(root / "results")},
        "backbone": {"name": "tiny-qwen2-audio"},
        "experiments": {"corpora": ["iemocap"], "iemocap_folds": [1], "sft_before_grpo": False},
        "grpo": {"num_generations": 4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                 "max_completion_length": 12, "max_steps": 4, "save_steps": 2,
                 "report_to": [], "logging_steps": 1, "beta": 0.04, "learning_rate": 1e-3,
                 "log_completions_every": 1},
        "sft": {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                "learning_rate": 1e-3, "report_to": [], "logging_steps": 1, "warmup_steps": 0},
    }
    prof = Profile("trainprof", None, sections)
    write_jsonl(prof.paths.ensure().manifests / "iemocap.jsonl", rows)
    return prof


def _adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(next(folder.glob("*.safetensors"))))


# ---- GRPO: every log-prob forward sees the audio ----------------------------------------------------------------


def test_grpo_every_logprob_forward_receives_audio(train_profile):
    from datasets import Dataset

    from emorl_lib.method.prompts import PromptConfig
    from emorl_lib.method.rewards import RewardConfig
    from emorl_lib.model.backbones import BackboneConfig, load_backbone
    from emorl_lib.training.grpo import (
        AudioGRPOTrainer,
        EmoGRPOConfig,
        prompt_rows,
        reward_functions,
    )
    from emorl_lib.training.runs import training_rows

    paths = train_profile.paths
    run = Run("iemocap", "grpo", "IR", "eswr", 1)
    bcfg = BackboneConfig()
    bb = load_backbone(bcfg, paths, trainable=True)
    # num_iterations=2 makes TRL compute old-policy log-probs too; beta>0 adds the reference forward
    funcs, weights = reward_functions(RewardConfig(), "IR", "eswr")
    args = EmoGRPOConfig(output_dir=str(paths.run / "spy"), num_generations=4, per_device_train_batch_size=4,
                         max_completion_length=8, max_steps=1, num_iterations=2, beta=0.04, report_to=[],
                         save_steps=100, reward_weights=weights, gradient_accumulation_steps=1)
    rows = training_rows(paths, run, None, 0)
    ds = Dataset.from_list(prompt_rows(rows, PromptConfig(), "iemocap", "IR"))
    trainer = AudioGRPOTrainer(model=bb.model, reward_funcs=funcs, args=args,
                               train_dataset=ds, processing_class=bb.processor)
    calls = []
    inner = bb.model.get_base_model().model  # Qwen2AudioModel: every forward path goes through it

    def spy(module, args, kwargs):
        ids = kwargs.get("input_ids")
        calls.append({"len": None if ids is None else ids.shape[1], "audio": kwargs.get("input_features") is not None,
                      "grad": torch.is_grad_enabled()})

    handle = inner.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        trainer.train()
        full = [c for c in calls if c["len"] and c["len"] > 1]  # prefill and log-prob forwards (not cached decode)
        assert full and all(c["audio"] for c in full), full
        assert sum(c["grad"] for c in full) >= 1  # the loss forward
        assert sum(not c["grad"] for c in full) >= 3  # generation prefill, old policy, reference
        # negative control: TRL's own log-prob forward, fed what stock GRPOTrainer feeds it, lacks the audio
        calls.clear()
        from trl import GRPOTrainer

        ids = torch.tensor([[1, 2, 3, 4]])
        with torch.no_grad():
            try:
                GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, torch.ones_like(ids), 2)
            except Exception:
                pass
        assert calls and not calls[0]["audio"]
    finally:
        handle.remove()


def test_grpo_refuses_a_logprob_forward_without_audio(train_profile):
    from emorl_lib.training.grpo import AudioGRPOTrainer

    t = AudioGRPOTrainer.__new__(AudioGRPOTrainer)
    t._audio = None
    with pytest.raises(RuntimeError, match="no audio features"):
        t._get_per_token_logps_and_entropies(None, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3), 1)


# ---- SFT: loss on the assistant turn only ------------------------------------------------------------------------


def test_sft_collator_masks_prompt_and_audio(tiny_backbone_dir, tone_wav):
    from emorl_lib.method.prompts import PromptConfig, build_messages, format_target
    from emorl_lib.model.backbones import load_processor
    from emorl_lib.training.sft import IGNORE, AudioSFTCollator

    proc = load_processor(str(tiny_backbone_dir))
    coll = AudioSFTCollator(proc)
    cfg = PromptConfig()
    targets = [format_target("IR", "angry"), format_target("IR", "neutral")]
    batch = coll([{"messages": build_messages(cfg, str(tone_wav), ["neutral", "angry"], "IR"), "target": targets[0]},
                  {"messages": build_messages(cfg, str(tone_wav), ["neutral", "angry"], condition="IR") +
                   [], "target": targets[1] + " extra words"}])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert batch["input_features"].shape[0] == 2 and "feature_attention_mask" in batch
    audio_id = proc.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert (ids == audio_id).any()
    assert (labels[ids == audio_id] == IGNORE).all()  # audio positions carry no loss
    assert (labels[mask == 0] == IGNORE).all()  # nor does padding
    for row, target in zip(range(2), [targets[0], targets[1] + " extra words"]):
        kept = labels[row][labels[row] != IGNORE]
        assert proc.tokenizer.decode(kept) == target + "<|im_end|>"
        first = int((labels[row] != IGNORE).nonzero()[0])
        prompt_text = proc.tokenizer.decode(ids[row][:first])
        assert prompt_text.endswith("<|im_start|>assistant\n") and "Listen to the speech" in prompt_text


# ---- exact resume ------------------------------------------------------------------------------------------------


def _length_reward(completions, **kwargs):
    """Varies on any text, so an untrained model still gets a gradient (the emotion rewards give it none)."""
    return [len(c[0]["content"] if isinstance(c, list) else c) / 50.0 for c in completions]


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_interrupted_run_resumes_to_the_same_weights(train_profile, stage, monkeypatch):
    from emorl_lib.training import grpo
    from emorl_lib.training.grpo import run_grpo
    from emorl_lib.training.sft import run_sft

    monkeypatch.setattr(grpo, "reward_functions", lambda cfg, cond, acc: ([_length_reward], [1.0]))

    def runner(prof, run, **kw):
        return (run_sft if stage == "sft" else run_grpo)(run_setup(prof, run), **kw)

    paths = train_profile.paths
    # uninterrupted
    a = Run("iemocap", stage, "IR", "eswr" if stage == "grpo" else None, 1)
    final_a = runner(train_profile, a, force=True)
    # the same run under another name (fold 1 of a copy of the manifest), stopped after 2 of 4 steps, then resumed
    b_prof = train_profile.with_overrides({"paths": {"runs": str(paths.run.parent / "b")}})
    b_paths = b_prof.paths.ensure()
    b_paths.manifests.mkdir(parents=True, exist_ok=True)
    (b_paths.manifests / "iemocap.jsonl").write_text((paths.manifests / "iemocap.jsonl").read_text())
    assert runner(b_prof, a, force=True, stop_after_steps=3) is None  # interrupted: no final adapter
    assert not a.adapter_dir(b_paths).exists()
    ckpt = a.checkpoint_dir(b_paths)
    assert (ckpt / "checkpoint-2").exists() and (ckpt / "checkpoint-3").exists()
    # a kill while checkpoint-3 was being written: the folder is there, its trainer state is not
    (ckpt / "checkpoint-3" / "trainer_state.json").unlink()
    from emorl_lib.training.runs import last_checkpoint

    assert last_checkpoint(ckpt) == str(ckpt / "checkpoint-2")  # never resumed from a half-written checkpoint
    final_b = runner(b_prof, a)
    ta, tb = _adapter_tensors(final_a), _adapter_tensors(final_b)
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=1e-6, msg=k)
    # training moved the weights, so equality is not trivial (LoRA B starts at zero)
    assert any(float(ta[k].abs().max()) > 0 for k in ta if "lora_B" in k)
    # the per-step log reads as one clean run after the resume
    import pandas as pd

    log = pd.read_csv(a.log_csv(b_paths))
    steps = log["step"][log["step"] > 0].tolist()
    assert steps == sorted(steps) and len(set(steps)) == len(steps) and max(steps) == 4
    meta = json.loads((final_b / "emorl_run.json").read_text())
    assert meta["name"] == a.name and meta["steps"] == 4
    # what `emorl infer` reads back: the labels and condition the adapter was trained with, and its prompt
    assert meta["labels"] == list(LABELS) and meta["condition"] == "IR" and meta["prompt"]["system_prompt"]
    if stage == "grpo":
        # sampled completions: step 2 was logged in both attempts (sampled for step 3); the file keeps it once
        from emorl_lib.infra.io import read_jsonl

        logged = [r["step"] for r in read_jsonl(b_paths.logs / f"{a.name}.completions.jsonl")]
        assert logged == [0, 1, 2, 3]


def test_a_finished_run_is_skipped_until_its_settings_change(train_profile, capsys):
    from emorl_lib.training.sft import run_sft

    run = Run("iemocap", "sft", "IR", None, 1)
    prof = train_profile.with_overrides({"paths": {"runs": str(train_profile.paths.run.parent / "settings")},
                                         "sft": {"max_steps": 2}})
    paths = prof.paths.ensure()
    (paths.manifests / "iemocap.jsonl").write_text((train_profile.paths.manifests / "iemocap.jsonl").read_text())
    final = run_sft(run_setup(prof, run))
    first = json.loads((final / "emorl_run.json").read_text())["settings_hash"]
    out = capsys.readouterr()
    # what a person follows: the run's progress and one summary line, never the trainer's per-step log dicts
    assert re.search(r"\[runs\] sft iemocap-f1_sft_IR: 2 steps in \d+ s; loss \S+ -> \S+", out.out)
    assert "{'loss'" not in out.out + out.err and "'train_runtime'" not in out.out + out.err
    assert run_sft(run_setup(prof, run)) == final
    assert "is current, skipped" in capsys.readouterr().out
    # an evaluation setting does not touch training ...
    run_sft(run_setup(prof.with_overrides({"eval": {"batch_size": 3}}), run))
    assert "is current, skipped" in capsys.readouterr().out
    # ... a training setting retrains
    run_sft(run_setup(prof.with_overrides({"sft": {"learning_rate": 5e-4}}), run))
    assert "settings changed" in capsys.readouterr().out
    second = json.loads((final / "emorl_run.json").read_text())["settings_hash"]
    assert second != first


def test_ctrl_c_during_training_prints_one_line_and_the_same_command_resumes(train_profile, tmp_path, capsys,
                                                                              monkeypatch):
    import yaml
    from transformers import TrainerCallback

    from emorl_lib.cli import main as cli_main
    from emorl_lib.training import sft

    sections = {**train_profile.sections,
                "paths": {**train_profile.sections["paths"], "runs": str(tmp_path / "runs")},
                "experiments": {**train_profile.sections["experiments"], "sft_conditions": ["IR"]}}
    prof_file = tmp_path / "ctrlc.yaml"
    prof_file.write_text(yaml.safe_dump(sections))
    manifests = tmp_path / "runs" / "ctrlc" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "iemocap.jsonl").write_text((train_profile.paths.manifests / "iemocap.jsonl").read_text())

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    real = sft.run_callbacks
    monkeypatch.setattr(sft, "run_callbacks", lambda *a, **k: real(*a, **k) + [CtrlC()])
    capsys.readouterr()
    assert cli_main(["sft", "--profile", str(prof_file)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "emorl sft: interrupted at step 3 of 4 of iemocap-f1_sft_IR (last checkpoint: step 2); "
        "run the same command again to resume from the last checkpoint")
    monkeypatch.setattr(sft, "run_callbacks", real)
    assert cli_main(["sft", "--profile", str(prof_file)]) == 0
    final = tmp_path / "runs" / "ctrlc" / "checkpoints" / "iemocap-f1_sft_IR" / "final"
    assert json.loads((final / "emorl_run.json").read_text())["steps"] == 4
    assert "resuming from" in capsys.readouterr().out


def test_fp16_training_gets_fp32_trainable_weights_back():
    """TRL casts a quantised model's LoRA weights to bf16; fp16's gradient scaler has no bf16 kernel (seen on a GPU:
    the first optimizer step failed), so under fp16 they go back to fp32 and the frozen weights stay as they are."""
    import torch

    from emorl_lib.training.grpo import fp32_trainable_weights

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)).to(torch.bfloat16)
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    assert fp32_trainable_weights(model) == 2
    assert model[1].weight.dtype == model[1].bias.dtype == torch.float32
    assert model[0].weight.dtype == torch.bfloat16
    assert fp32_trainable_weights(model) == 0


# ---- held-out accuracy during training: a curve, and no change to what is trained ------------------------------
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_heldout_curve_is_written_and_leaves_training_unchanged(train_profile, stage, monkeypatch):
    import pandas as pd

    from emorl_lib.training import grpo
    from emorl_lib.training.grpo import run_grpo
    from emorl_lib.training.sft import run_sft

    monkeypatch.setattr(grpo, "reward_functions", lambda cfg, cond, acc: ([_length_reward], [1.0]))
    def runner(prof, run, **kw):
        return (run_sft if stage == "sft" else run_grpo)(run_setup(prof, run), **kw)

    src = [json.loads(l) for l in (train_profile.paths.manifests / "iemocap.jsonl").read_text().splitlines()]
    # MELD-shaped copy of the tone corpus: session 2 trains, session 1 is the dev (held-out) split
    meld = [{**r, "corpus": "meld", "fold": None, "split": "train" if r["fold"] == 2 else "dev"} for r in src]
    run = Run("meld", stage, "IR", "eswr" if stage == "grpo" else None)
    finals = {}
    for every in (0, 2):
        prof = train_profile.with_overrides({
            "paths": {"runs": str(train_profile.paths.run.parent / f"heldout{every}")},
            "sft": {"heldout_every": every}, "grpo": {"heldout_every": every},
            "eval": {"max_new_tokens": {"IR": 6, "EUR": 6, "ESR": 6}}})
        write_jsonl(prof.paths.ensure().manifests / "meld.jsonl", meld)
        finals[every] = runner(prof, run, force=True)
        curve = run.heldout_csv(prof.paths)
        assert curve.exists() == (every > 0)
    log = pd.read_csv(run.heldout_csv(train_profile.with_overrides(
        {"paths": {"runs": str(train_profile.paths.run.parent / "heldout2")}}).paths))
    assert log.step.tolist() == [0, 2, 4] and (log.n == 4).all()
    assert log[["ua", "wa", "unparseable"]].apply(lambda c: c.between(0, 1)).all().all()
    ta, tb = _adapter_tensors(finals[0]), _adapter_tensors(finals[2])
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, msg=k)


def test_a_stage_in_worker_processes_trains_what_a_serial_stage_does(train_profile):
    """experiments.workers runs a stage's runs side by side; each run seeds itself, so the adapters are the ones a
    serial stage with the same torch thread count trains."""
    from emorl_lib.profile import training_setup
    from emorl_lib.training.runs import train_stage

    finals = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count
    try:
        for workers in (1, 2):
            prof = train_profile.with_overrides({
                "paths": {"runs": str(train_profile.paths.run.parent / f"workers{workers}")},
                "experiments": {"seeds": [1, 2], "workers": workers, "sft_conditions": ["IR"]},
                "sft": {"max_steps": 2}})
            (prof.paths.ensure().manifests / "iemocap.jsonl").write_text(
                (train_profile.paths.manifests / "iemocap.jsonl").read_text())
            finals[workers] = train_stage(training_setup(prof, "sft"))
    finally:
        torch.set_num_threads(threads)
    assert list(finals[1]) == list(finals[2]) == ["iemocap-f1_sft_IR_s1", "iemocap-f1_sft_IR_s2"]
    for name in finals[1]:
        ta, tb = _adapter_tensors(finals[1][name]), _adapter_tensors(finals[2][name])
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=0, msg=f"{name} {k}")
    s1, s2 = (_adapter_tensors(finals[2][n]) for n in finals[2])
    assert any(not torch.equal(s1[k], s2[k]) for k in s1)  # the seeds differ, so the runs do


def test_log_summary_compares_the_two_ends_of_a_log_even_a_short_one():
    import pandas as pd

    from emorl_lib.training.runs import log_summary

    run = Run("meld", "sft", "IR")
    short = pd.DataFrame({"step": range(10, 110, 10), "loss": [6.0, 2.5, 0.8, 0.5, 0.4, 0.4, 0.35, 0.3, 0.36, 0.34]})
    row = log_summary({run: short}).iloc[0]
    assert row["steps"] == 100
    assert row["loss_first"] == pytest.approx((6.0 + 2.5) / 2) and row["loss_last"] == pytest.approx((0.36 + 0.34) / 2)
    long = pd.DataFrame({"step": range(1, 41), "reward": [0.0] * 20 + [1.0] * 20})
    row = log_summary({run: long}).iloc[0]
    assert (row["reward_first"], row["reward_last"]) == (0.0, 1.0)  # the full window of 10 at each end

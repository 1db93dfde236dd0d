"""Two processes on the CPU (gloo) run the kit's SFT and GRPO commands as ONE data-parallel run: `accelerate launch`
starts tests/distributed_probe.py (the `emorl` CLI with spies) on the tiny model, and each rank's records show that
the ranks keep identical weights after every step, train on different utterances, feed the audio to every forward,
and resume after an interruption to the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from emorl_lib.data.manifest import Utterance
from emorl_lib.infra.io import write_jsonl

REPO = Path(__file__).resolve().parent.parent
PROBE = REPO / "tests" / "distributed_probe.py"
LABELS = ("neutral", "happy", "sad", "angry")
F0 = {"neutral": 160.0, "happy": 300.0, "sad": 110.0, "angry": 240.0}
RUN = {"sft": "iemocap-f1_sft_IR", "grpo": "iemocap-f1_grpo_eswr_IR"}
STEPS = 4
TRAIN_ROWS = 8  # session 2 (fold 1 tests on session 1): 4 emotions x 2 takes


def _utterances(root: Path) -> list[Utterance]:
    """Tone 'utterances' (pitch = emotion), IEMOCAP-shaped: two sessions of 4 emotions x 2 takes."""
    sr = 16000
    rows = []
    for sess in (1, 2):
        for take in range(2):
            for i, lab in enumerate(LABELS):
                t = np.arange(int((1.0 + 0.1 * i + 0.05 * take) * sr)) / sr
                x = (0.3 * np.sin(2 * np.pi * F0[lab] * (1 + 0.02 * take) * t)).astype("float32")
                wav = root / f"s{sess}_{lab}_{take}.wav"
                sf.write(wav, x, sr)
                rows.append(Utterance(f"Ses0{sess}F_impro0{take}_F00{i}", "iemocap", f"Ses0{sess}F", "F", lab[:3],
                                      lab, lab, None, sess, len(t) / sr, str(wav), str(wav), None))
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_backbone_dir, kit_paths):
    """The audio and manifest rows, and the shared model cache (the tiny model built once, before any launch)."""
    root = tmp_path_factory.mktemp("dist_audio")
    return {"rows": _utterances(root), "cache": str(kit_paths.cache), "root": root}


def write_profile(folder: Path, data: dict, **sections) -> Path:
    """A profile file `dist.yaml` in `folder` (its runs/results there too) with the manifest in place."""
    from emorl_lib.profile import load_profile

    folder.mkdir(parents=True, exist_ok=True)
    prof = {
        "paths": {"cache": data["cache"], "runs": str(folder / "runs"), "results": str(folder / "results")},
        "backbone": {"name": "tiny-qwen2-audio"},
        "experiments": {"corpora": ["iemocap"], "iemocap_folds": [1], "sft_before_grpo": False,
                        "sft_conditions": ["IR"], "grpo_runs": [["eswr", "IR"]]},
        "sft": {"max_steps": STEPS, "save_steps": 2, "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "report_to": [], "logging_steps": 1,
                "warmup_steps": 0},
        # one prompt x G = 4 completions per rank and step
        "grpo": {"num_generations": 4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                 "max_completion_length": 12, "max_steps": STEPS, "save_steps": 2, "report_to": [],
                 "logging_steps": 1, "learning_rate": 1e-3, "beta": 0.04},
    }
    for key, values in sections.items():
        prof[key].update(values)
    path = folder / "dist.yaml"
    path.write_text(yaml.safe_dump(prof))
    write_jsonl(load_profile(path).paths.ensure().manifests / "iemocap.jsonl", data["rows"])
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(stage: str, profile: Path, probe_dir: Path, tag: str, crash_at: int = 0) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2` (torchrun; on a machine without a GPU the kit makes it one
    gloo group on the CPU) of `emorl <stage>` under the probe."""
    env = {**os.environ, "EMORL_PROBE_DIR": str(probe_dir), "EMORL_PROBE_TAG": tag, "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "EMORL_PROBE_LENGTH_REWARD": "1"}
    if crash_at:
        env["EMORL_PROBE_CRASH_AT"] = str(crash_at)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT", "ACCELERATE_USE_CPU", "CUDA_VISIBLE_DEVICES"):
        env.pop(var, None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU test also on a machine that has a GPU
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(PROBE), stage, "--profile", str(profile)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


def records(probe_dir: Path, tag: str) -> list[list[dict]]:
    """Each rank's records, rank 0 first."""
    out = []
    for rank in (0, 1):
        f = probe_dir / f"{tag}.rank{rank}.jsonl"
        assert f.exists(), f"rank {rank} wrote no records ({f})"
        out.append([json.loads(line) for line in f.read_text().splitlines()])
    return out


def _tail(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(next(folder.glob("*.safetensors"))))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
    """stage -> (folder, records, process) of a full two-process run, launched once per stage when first asked."""
    done: dict[str, tuple[Path, list, subprocess.CompletedProcess]] = {}

    def get(stage: str):
        if stage not in done:
            folder = tmp_path_factory.mktemp(f"dist_{stage}")
            profile = write_profile(folder, data)
            proc = launch(stage, profile, folder / "probe", "full")
            assert proc.returncode == 0, _tail(proc)
            done[stage] = (folder, records(folder / "probe", "full"), proc)
        return done[stage]

    return get


def _final(folder: Path, stage: str) -> Path:
    return folder / "runs" / "dist" / "checkpoints" / RUN[stage] / "final"


# ---- one data-parallel run ----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_two_processes_keep_identical_weights_after_every_step(uninterrupted, stage):
    folder, ranks, proc = uninterrupted(stage)
    for recs in ranks:
        begin = [r for r in recs if r["event"] == "begin"]
        assert len(begin) == 1 and begin[0]["torch_world_size"] == 2 and begin[0]["args_world_size"] == 2
        assert begin[0]["backend"] == "gloo" and begin[0]["parallel_mode"] == "distributed"
    hashes = [[r["weights"] for r in recs if r["event"] in ("begin", "step")] for recs in ranks]
    assert len(hashes[0]) == STEPS + 1 and hashes[0] == hashes[1]  # equal on both ranks at the start and every step
    assert len(set(hashes[0])) == STEPS + 1  # and every step moved them: equality is not that of untouched weights
    assert (_final(folder, stage) / "adapter_config.json").exists()
    reports = [line for line in proc.stdout.splitlines() if line.startswith(f"{RUN[stage]}: ")]
    assert len(reports) == 1  # the command reports from the main process only


@pytest.mark.slow
def test_sft_ranks_train_on_different_utterances(uninterrupted):
    _, ranks, _ = uninterrupted("sft")
    batches = [[r["utt_ids"] for r in recs if r["event"] == "batch"] for recs in ranks]
    per_epoch = TRAIN_ROWS // (2 * 2)  # two ranks x 2 utterances per step
    assert len(batches[0]) >= STEPS and len(batches[1]) >= STEPS
    for k in range(STEPS):
        assert not set(batches[0][k]) & set(batches[1][k]), f"step {k + 1}: both ranks got {batches[0][k]}"
    epoch = [u for rank in batches for b in rank[:per_epoch] for u in b]
    assert len(epoch) == len(set(epoch)) == TRAIN_ROWS  # one epoch: every training utterance once, on one rank


@pytest.mark.slow
def test_grpo_ranks_generate_for_different_prompts_in_whole_groups(uninterrupted):
    _, ranks, _ = uninterrupted("grpo")
    batches = [[r["utt_ids"] for r in recs if r["event"] == "batch"] for recs in ranks]
    assert len(batches[0]) == len(batches[1]) == STEPS
    for k in range(STEPS):
        for rank in (0, 1):  # a rank's completions are one prompt's whole group of G = 4
            assert len(batches[rank][k]) == 4 and len(set(batches[rank][k])) == 1
        assert batches[0][k][0] != batches[1][k][0], f"step {k + 1}: both ranks generated for {batches[0][k][0]}"
    prompts = [b[0] for rank in batches for b in rank]
    assert len(prompts) == len(set(prompts)) == TRAIN_ROWS  # 4 steps x 2 ranks = one epoch, each prompt once


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_audio_reaches_every_forward_on_every_rank(uninterrupted, stage):
    _, ranks, _ = uninterrupted(stage)
    for rank, recs in enumerate(ranks):
        forwards = [r for r in recs if r["event"] == "forward"]
        assert forwards, f"rank {rank}: no forward recorded"
        missing = [f for f in forwards if f["audio_rows"] != f["rows"]]
        assert not missing, f"rank {rank}: forwards without (all) their audio: {missing[:3]}"
        for step in range(STEPS):
            at = [f for f in forwards if f["step"] == step]
            assert sum(f["grad"] for f in at) >= 1, f"rank {rank} step {step + 1}: no training forward"
            if stage == "grpo":  # generation prefill and the reference model's log-probs, both without gradient
                assert sum(not f["grad"] for f in at) >= 2, f"rank {rank} step {step + 1}: {at}"


# ---- the loss is averaged over the processes, not summed -------------------------------------------------------------
@pytest.mark.slow
def test_two_process_sft_step_equals_one_process_with_the_whole_batch(uninterrupted, data, tmp_path, monkeypatch):
    """transformers multiplies the loss by the process count for a model whose forward takes **kwargs (Qwen2-Audio
    does, and ignores them): without the kit's correction the first step's loss and gradient would be 2x."""
    import pandas as pd

    from emorl_lib.profile import load_profile, run_setup
    from emorl_lib.training import sft
    from emorl_lib.training.experiments import Run

    folder, ranks, _ = uninterrupted("sft")
    two = pd.read_csv(folder / "runs" / "dist" / "logs" / f"{RUN['sft']}.csv")
    seen: list[list[str]] = []
    call = sft.AudioSFTCollator.__call__

    def spy(self, batch):
        seen.append([ex["utt_id"] for ex in batch])
        return call(self, batch)

    monkeypatch.setattr(sft.AudioSFTCollator, "__call__", spy)
    one_prof = load_profile(write_profile(tmp_path / "one", data, sft={"per_device_train_batch_size": 4,
                                                                        "max_steps": 1}))
    sft.run_sft(run_setup(one_prof, Run("iemocap", "sft", "IR", None, 1)), force=True)
    one = pd.read_csv(tmp_path / "one" / "runs" / "dist" / "logs" / f"{RUN['sft']}.csv")
    two_first = {u for recs in ranks for u in [r for r in recs if r["event"] == "batch"][0]["utt_ids"]}
    assert set(seen[0]) == two_first, "the comparison needs the same four utterances in the first step"
    for col in ("loss", "grad_norm"):
        a, b = float(two[col].iloc[0]), float(one[col].iloc[0])
        # equal up to how tokens are weighted (mean of the two ranks' token means vs one token mean)
        assert a == pytest.approx(b, rel=0.1), f"{col}: two processes {a}, one process {b}"


def test_sft_gradient_accumulation_averages_micro_batches(data, tmp_path):
    """The same correction in one process: 2 micro-batches of 2 accumulated = one batch of 4 (without it the
    accumulated loss is summed, not averaged)."""
    import pandas as pd

    from emorl_lib.profile import load_profile, run_setup
    from emorl_lib.training.experiments import Run
    from emorl_lib.training.sft import run_sft

    logs = {}
    for name, bs, ga in (("whole", 4, 1), ("accumulated", 2, 2)):
        prof = load_profile(write_profile(tmp_path / name, data, sft={"per_device_train_batch_size": bs,
                                                                       "gradient_accumulation_steps": ga,
                                                                       "max_steps": 1}))
        run_sft(run_setup(prof, Run("iemocap", "sft", "IR", None, 1)), force=True)
        logs[name] = pd.read_csv(tmp_path / name / "runs" / "dist" / "logs" / f"{RUN['sft']}.csv")
    for col in ("loss", "grad_norm"):
        a, b = float(logs["accumulated"][col].iloc[0]), float(logs["whole"][col].iloc[0])
        assert a == pytest.approx(b, rel=0.1), f"{col}: accumulated {a}, whole batch {b}"


# ---- interruption -------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_an_interrupted_two_process_run_resumes_to_the_same_weights(uninterrupted, tmp_path, data, stage):
    import pandas as pd

    full, _, _ = uninterrupted(stage)
    profile = write_profile(tmp_path / "b", data)
    crashed = launch(stage, profile, tmp_path / "probe", "crashed", crash_at=2)
    assert crashed.returncode != 0, _tail(crashed)  # both ranks died after checkpoint 2
    ckpt = _final(tmp_path / "b", stage).parent
    assert (ckpt / "checkpoint-2").is_dir() and not (ckpt / "final").exists()
    assert {r["event"] for recs in records(tmp_path / "probe", "crashed") for r in recs} >= {"crash"}
    resumed = launch(stage, profile, tmp_path / "probe", "resumed")
    assert resumed.returncode == 0, _tail(resumed)
    ranks = records(tmp_path / "probe", "resumed")
    for recs in ranks:
        begin = [r for r in recs if r["event"] == "begin"]
        assert begin and begin[0]["start_step"] == 2  # picked up at the checkpoint, not from scratch
    steps = [[r["weights"] for r in recs if r["event"] == "step"] for recs in ranks]
    assert len(steps[0]) == STEPS - 2 and steps[0] == steps[1]
    a, b = _adapter(_final(full, stage)), _adapter(_final(tmp_path / "b", stage))
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    log = pd.read_csv(tmp_path / "b" / "runs" / "dist" / "logs" / f"{RUN[stage]}.csv")
    assert log["step"].tolist() == list(range(1, STEPS + 1))  # one clean log across the interruption


# ---- launches that would not be one data-parallel run ---------------------------------------------------------------
def test_accelerates_cpu_launcher_with_several_processes_is_refused(monkeypatch):
    """`accelerate launch --cpu --num_processes 2` starts one process (no mpirun): the kit says so and how instead."""
    from emorl_lib.training.distributed import check_launch

    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    check_launch()  # one process, asked for as one: fine
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(RuntimeError, match="--multi_gpu --num_processes N"):
        check_launch()
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's processes: fine
    check_launch()


def test_a_trainer_that_is_not_data_parallel_across_the_launch_is_refused(monkeypatch):
    from types import SimpleNamespace

    from emorl_lib.training.distributed import check_world_size

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="each process would train alone"):
        check_world_size(SimpleNamespace(args=SimpleNamespace(world_size=1)))
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_world_size(SimpleNamespace(args=SimpleNamespace(world_size=1)))

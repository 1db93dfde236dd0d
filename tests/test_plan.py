"""`emorl plan`: the parts table of the real model counted on the meta device, the verdict and what to change, and the
memory estimate checked against what a real SFT and GRPO run allocates on the CPU (torch's allocations and the
process RSS) for the tiny model and a mid-size random model of the same architecture."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import MID_RANDOM
from emorl_lib.data.manifest import Utterance
from emorl_lib.infra.io import write_jsonl
from emorl_lib.infra.perf import TensorMemory, peak_memory, reset_peak_memory
from emorl_lib import plan as P

# The validation's tolerance: the estimate of torch's peak allocations within 20 % of the measured peak (tiny and
# mid-size models); the mid-size model's RSS growth (weights + training, where tensors dominate) within 20 % too; on
# a GPU, within 10 % of torch.cuda.max_memory_allocated (benchmarks/results/, the paper's GRPO step at full size).
TORCH_TOLERANCE = 0.20
RSS_TOLERANCE = 0.20
GPU_TOLERANCE = 0.10
REPO = Path(__file__).resolve().parent.parent


# ---- measuring ----------------------------------------------------------------------------------------------------
def test_tensor_memory_counts_what_is_allocated_and_freed():
    with TensorMemory(baseline=100) as m:
        a = torch.empty(1000)  # 4000 B
        assert m.current == 4100
        b = a + 1  # 4000 B more
        v = b[:10]  # a view: nothing new
        b.add_(1)  # in place: nothing new
        del a
        assert m.current == 4100 and m.peak == 8100
        c = torch.cat([b, v])  # 4040 B
        assert m.current == 8140
        del b, v, c
    assert m.current == 100 and m.peak == 8140


# ---- the parts and the verdict ----------------------------------------------------------------------------------
def test_audio_tokens_follow_the_encoder():
    assert P.audio_tokens(30.0, 30.0) == 750  # the whole window: 25 tokens a second
    assert P.audio_tokens(5.0, 30.0) == 125
    assert P.audio_tokens(45.0, 30.0) == 750  # cut at the window
    assert P.audio_tokens(4.0, 4.0) == 100  # the tiny model's window


def test_parts_of_the_real_model_counted_on_the_meta_device():
    """Qwen2-Audio-7B-Instruct's shapes (backbones.QWEN2_AUDIO_7B_*): 8.4B parameters, LoRA r 16 on the LLM's 7
    projections x 32 layers = 40.0M; nothing is allocated."""
    from emorl_lib.profile import load_profile

    bcfg = load_profile("paper").section("backbone")
    with TensorMemory() as m:
        shapes = P.model_shapes(bcfg)
    assert shapes.total == 8_397_094_912
    assert shapes.parts["embeddings"] == shapes.parts["lm_head"] == 156_032 * 4096
    assert shapes.parts["audio encoder"] == 636_968_960 and shapes.parts["projector"] == 1280 * 4096 + 4096
    assert shapes.lora_modules == 7 * 32 and shapes.lora == 16 * 32 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    assert shapes.quantisable == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # the LLM's linears, lm_head kept 16-bit
    assert shapes.audio_positions == 1500 and shapes.audio_window_s == 30.0
    assert m.peak < 2**20  # the 16 GB model was built on the meta device: no tensor memory


def test_plan_command_paper_on_a_t4(capsys):
    """`emorl plan --profile paper --gpu t4`: the parts table, each stage's terms and verdict, what to change, and
    an exit status that says whether it fits. The changes it proposes, applied to the profile, make it fit."""
    from emorl_lib.cli import main
    from emorl_lib.profile import load_profile

    rc = main(["plan", "--profile", "paper", "--gpu", "t4"])
    out = capsys.readouterr().out
    for part in ("audio encoder", "projector", "LLM layers", "embeddings", "lm_head", "LoRA r 16 on 224 linears"):
        assert part in out
    assert "GRPO step" in out and "SFT step" in out and "KV cache" in out and "logits and cross-entropy" in out
    assert "VERDICT:" in out and "to make it fit" in out
    p = P.plan(load_profile("paper"), P.GPUS["t4"])
    assert rc == (0 if p.fits() else 3)
    for stage, sp in p.stages.items():
        if sp.estimate.fits(p.gpu):
            continue
        assert sp.changes and sp.changes[-1].fits, f"{stage}: no change makes it fit a T4"
        fixed = P.plan(load_profile("paper", sp.changes[-1].overrides), P.GPUS["t4"])
        assert fixed.stages[stage].estimate.fits(p.gpu)
        assert fixed.stages[stage].estimate.peak < sp.estimate.peak


def test_gpu_argument():
    assert P.gpu_from_arg("t4") is P.GPUS["t4"] and P.GPUS["t4"].memory_gib == 15.0 and not P.GPUS["t4"].bf16
    g = P.gpu_from_arg("24GiB")
    assert g.memory_gib == 24.0 and g.tflops is None
    with pytest.raises(ValueError, match="t4, a100-40, h100"):
        P.gpu_from_arg("v100-ish")


# ---- a run on a GPU sizes itself (plan.fit) ---------------------------------------------------------------------------
def test_a_run_on_a_t4_sizes_itself_keeping_the_recipe(monkeypatch):
    """The paper's GRPO and SFT on a T4 (as `torch.cuda` would report it): the setups carry the planner's changes
    that keep the recipe (rows per generate call, 16-bit frozen weights, a smaller micro-batch with more
    accumulation), the result fits by the planner's own estimate, the changes are recorded with each run, and the
    prompts, completions and loss per optimizer step are the paper's."""
    from emorl_lib.profile import eval_setup, load_profile, training_setup

    monkeypatch.setattr(P, "this_gpu", lambda: P.GPUS["t4"])
    prof = load_profile("paper")
    shapes = P.model_shapes(prof.section("backbone"), prof.paths)
    g = prof.values("grpo")
    grpo = training_setup(prof, "grpo")
    a = grpo.runs[0].args
    assert a.rollout_rows_per_generate == g.num_generations  # one group per generate call
    assert not grpo.runs[0].backbone.fp32_frozen_weights
    for key in ("num_generations", "per_device_train_batch_size", "gradient_accumulation_steps",
                "max_completion_length", "learning_rate", "beta", "temperature"):
        assert getattr(a, key) == getattr(g, key), key
    assert grpo.sizing == grpo.runs[0].sizing and len(grpo.sizing) == 2  # the rows' last value only
    assert any(w.startswith("grpo.rollout_rows_per_generate: 6") for w in grpo.sizing)
    fitted, made = P.fit(prof, "grpo", P.GPUS["t4"])
    assert all(c.keeps_recipe for c in made)
    assert P.memory(shapes, P.steps_of(fitted, shapes, P.GPUS["t4"])["grpo"]).fits(P.GPUS["t4"])
    assert not P.memory(shapes, P.steps_of(prof, shapes, P.GPUS["t4"])["grpo"]).fits(P.GPUS["t4"])
    sft = training_setup(prof, "sft").runs[0]
    s = prof.values("sft")
    assert sft.args.per_device_train_batch_size * sft.args.gradient_accumulation_steps == \
        s.per_device_train_batch_size * s.gradient_accumulation_steps
    assert sft.args.per_device_train_batch_size < s.per_device_train_batch_size
    ev = eval_setup(prof)
    assert ev.eval.batch_size < prof.section("eval").batch_size  # the same greedy answers, fewer per call
    assert P.eval_memory(prof, shapes, P.GPUS["t4"], ev.eval.batch_size).fits(P.GPUS["t4"])


def test_the_planner_sizes_the_reasoning_runs_as_they_read_their_section():
    """A section's `reasoning` settings reach the planner's estimate (the paper's runs reason: ESR), and what the
    planner sizes from the section cannot be set per condition, where its changes would not reach."""
    from emorl_lib.infra.config import ConfigError
    from emorl_lib.profile import load_profile

    prof = load_profile("paper")
    shapes = P.model_shapes(prof.section("backbone"), prof.paths)
    base = P.steps_of(prof, shapes, P.GPUS["h100"])["grpo"]
    longer = prof.with_overrides({"grpo": {"reasoning": {"max_completion_length": 2 * base.target_tokens}}})
    st = P.steps_of(longer, shapes, P.GPUS["h100"])["grpo"]
    assert st.target_tokens == 2 * base.target_tokens
    assert P.memory(shapes, st).peak > P.memory(shapes, base).peak
    for key in ("per_device_train_batch_size", "rollout_rows_per_generate", "seed"):
        with pytest.raises(ConfigError, match=f"reasoning.{key}: not set per condition"):
            prof.with_overrides({"grpo": {"reasoning": {key: 4}}})


def test_a_gpu_too_small_stops_before_loading_with_the_planners_table(monkeypatch, capsys):
    """On 8 GiB even the recipe-keeping changes do not fit: `emorl grpo` exits 3 with the planner's table (the
    method-changing options listed, not made) before any weights are loaded."""
    from emorl_lib.cli import main
    from emorl_lib.profile import load_profile, training_setup

    small = P.gpu_from_arg("8")
    monkeypatch.setattr(P, "this_gpu", lambda: small)
    with pytest.raises(P.DoesNotFit, match="even with every change that keeps the recipe") as e:
        training_setup(load_profile("paper"), "grpo")
    assert "VERDICT" in str(e.value) and "max_completion_length: 128" in str(e.value)
    loaded = []
    import emorl_lib.model.backbones as B

    monkeypatch.setattr(B, "load_backbone", lambda *a, **k: loaded.append(a))
    assert main(["grpo", "--profile", "paper"]) == 3
    assert "does not fit a GPU with 8 GiB" in capsys.readouterr().err and not loaded


def test_on_the_cpu_nothing_is_resized():
    from emorl_lib.profile import load_profile

    prof = load_profile("paper")
    assert P.this_gpu() is None  # this test runs where CUDA is absent (CI)
    assert P.fit(prof, "grpo") == (prof, [])


# ---- validation against a measured run on the CPU --------------------------------------------------------------------
LABELS = ("neutral", "happy", "sad", "angry")


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[Utterance]:
    root = tmp_path_factory.mktemp("plan_audio")
    out = []
    for sess in (1, 2):
        for k, lab in enumerate(LABELS):
            t = np.arange(int((1.0 + 0.1 * k) * 16000)) / 16000
            wav = root / f"s{sess}_{lab}.wav"
            sf.write(wav, (0.3 * np.sin(2 * np.pi * (120 + 40 * k) * t)).astype("float32"), 16000)
            out.append(Utterance(f"Ses0{sess}F_impro01_F00{k}", "iemocap", f"Ses0{sess}F", "F", lab[:3], lab, lab,
                                 None, sess, len(t) / 16000, str(wav), str(wav), None))
    return out


def _profile(folder: Path, cache: str, rows, backbone: dict):
    from emorl_lib.profile import load_profile

    folder.mkdir(parents=True, exist_ok=True)
    doc = {"paths": {"cache": cache, "runs": str(folder / "runs"), "results": str(folder / "results")},
           "backbone": backbone,
           "experiments": {"corpora": ["iemocap"], "iemocap_folds": [1], "sft_before_grpo": False,
                           "sft_conditions": ["IR"], "grpo_runs": [["eswr", "IR"]]},
           "sft": {"max_steps": 2, "save_steps": 100, "per_device_train_batch_size": 2, "report_to": [],
                   "gradient_accumulation_steps": 1, "warmup_steps": 0},
           "grpo": {"num_generations": 4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                    "max_completion_length": 16, "max_steps": 2, "save_steps": 100, "report_to": []}}
    (folder / "plan.yaml").write_text(yaml.safe_dump(doc))
    prof = load_profile(folder / "plan.yaml")
    write_jsonl(prof.paths.ensure().manifests / "iemocap.jsonl", rows)
    return prof


def _length_reward(completions, **kwargs):
    return [len(c[0]["content"] if isinstance(c, list) else c) / 50.0 for c in completions]


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return 0


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (a model's parameters and buffers)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        st = t.untyped_storage()
        key = st.data_ptr() or id(st)
        if t.device.type == "meta" or key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def measure(prof, stage: str, monkeypatch) -> dict:
    """Train `stage` for the profile's 2 steps with torch's allocations tracked (weights counted at the start), the
    process's RSS growth from before the model is loaded, and the (rows, tokens) of every forward."""
    import transformers

    from emorl_lib.profile import run_setup
    from emorl_lib.training import grpo
    from emorl_lib.training.experiments import Run

    out: dict = {"forwards": []}
    train = transformers.Trainer.train

    def tracked(self, *a, **k):
        model = self.model
        base = storage_bytes(list(model.parameters()) + list(model.buffers()))
        inner = model.get_base_model().model if hasattr(model, "get_base_model") else model.model

        def hook(module, args, kwargs):
            ids = kwargs.get("input_ids")
            if ids is not None and ids.shape[1] > 1:
                out["forwards"].append((int(ids.shape[0]), int(ids.shape[1]), torch.is_grad_enabled()))

        handle = inner.register_forward_pre_hook(hook, with_kwargs=True)
        reset_peak_memory()
        try:
            with TensorMemory(base) as m:
                result = train(self, *a, **k)
        finally:
            handle.remove()
        out.update(weights=base, torch_peak=m.peak, rss_peak=peak_memory()["rss_peak_mib"] * 2**20)
        return result

    monkeypatch.setattr(transformers.Trainer, "train", tracked)
    monkeypatch.setattr(grpo, "reward_functions", lambda cfg, condition, accuracy: ([_length_reward], [1.0]))
    gc.collect()
    out["rss_before"] = _rss()
    run = Run("iemocap", stage, "IR", "eswr" if stage == "grpo" else None, 1)
    run_setup(prof, run).train(force=True)
    return out


def estimate_for(prof, stage: str, measured: dict) -> P.Estimate:
    """The planner's estimate of the measured run: the profile's step, with the token counts the run had (the
    memory formulas are under test here, not the prompt-length estimate)."""
    shapes = P.model_shapes(prof.section("backbone"), prof.paths)
    st = P.steps_of(prof, shapes, gpu=None, clip_s=1.3)[stage]
    train = [(b, n) for b, n, grad in measured["forwards"] if grad]
    b, S = max(train, key=lambda x: x[0] * x[1])
    if stage == "sft":
        return P.memory(shapes, replace(st, batch=b, prompt_tokens=S - 1, target_tokens=1))
    return P.memory(shapes, replace(st, batch=b, prompt_tokens=S - st.target_tokens))  # T: max_completion_length


def _check(est: P.Estimate, measured: dict, rss: bool) -> None:
    ratio = est.peak / measured["torch_peak"]
    detail = "; ".join(f"{t.name} {t.bytes / 2**20:.1f} MiB ({t.phase})" for t in est.terms)
    assert abs(ratio - 1) <= TORCH_TOLERANCE, (f"estimate {est.peak / 2**20:.1f} MiB vs torch's peak "
                                               f"{measured['torch_peak'] / 2**20:.1f} MiB: {detail}")
    # the weights as loaded (the optimizer's state comes with the first step)
    loaded = sum(t.bytes for t in est.terms if t.phase == "weights" and not t.name.startswith("optimizer"))
    assert loaded == pytest.approx(measured["weights"], rel=0.02, abs=2**20)
    if rss:
        grown = measured["rss_peak"] - measured["rss_before"]
        assert abs(est.peak / grown - 1) <= RSS_TOLERANCE, (f"estimate {est.peak / 2**20:.0f} MiB vs RSS growth "
                                                            f"{grown / 2**20:.0f} MiB")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_estimate_matches_a_tiny_run_on_the_cpu(tmp_path, kit_paths, tiny_backbone_dir, rows, stage, monkeypatch):
    """The tiny model as the default profile trains it (LoRA r 32 + embeddings, head and projector in full). Its
    tensors are a few MB beside the interpreter's hundreds, so only torch's allocations are compared."""
    prof = _profile(tmp_path, str(kit_paths.cache), rows, {
        "name": "tiny-qwen2-audio", "lora": {"r": 32, "alpha": 64,
                                             "modules_to_save": ["embed_tokens", "lm_head", "multi_modal_projector"]}})
    measured = measure(prof, stage, monkeypatch)
    _check(estimate_for(prof, stage, measured), measured, rss=False)


@pytest.fixture(scope="module")
def mid_backbone(kit_paths) -> dict:
    """The `qwen2-audio-7b-random` backbone shrunk to 370M parameters: the real model's vocabulary and 30 s audio
    window, fewer and narrower layers (1.5 GB in fp32: the CPU trains it in seconds). Built once, before any
    measurement."""
    from emorl_lib.model.backbones import (
        BackboneConfig,
        RandomModelConfig,
        resolve_model_dir,
    )

    section = {"name": "qwen2-audio-7b-random", "random": MID_RANDOM}
    resolve_model_dir(BackboneConfig(name=section["name"], random=RandomModelConfig(**section["random"])), kit_paths)
    gc.collect()
    return section


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_estimate_matches_a_mid_size_run_on_the_cpu(tmp_path, kit_paths, mid_backbone, rows, stage, monkeypatch):
    prof = _profile(tmp_path, str(kit_paths.cache), rows, mid_backbone)
    measured = measure(prof, stage, monkeypatch)
    _check(estimate_for(prof, stage, measured), measured, rss=True)


# ---- validation against GPU measurements (benchmarks/results/) ----------------------------------------------------
def test_estimate_matches_the_measured_full_size_grpo_step_on_a_gpu():
    """benchmarks/results/grpo_full_h100.csv: the paper's GRPO step with the 7B shapes (random weights) on an H100,
    peak torch.cuda.max_memory_allocated per setting. The planner, given the same settings, within GPU_TOLERANCE;
    the weights after loading (before the trainer adds its reference adapter and optimizer) within 2 %."""
    import csv

    from emorl_lib.profile import load_profile

    rows = list(csv.DictReader((REPO / "benchmarks" / "results" / "grpo_full_h100.csv").open()))
    usable = [r for r in rows if "second mode in its process" not in r.get("note", "")]  # not a memory figure
    assert len(usable) >= 2
    for r in usable:
        g = int(r["num_generations"])
        prof = load_profile("paper", {
            "backbone": {"name": "qwen2-audio-7b-random", "dtype": r["dtype"],
                         "fp32_frozen_weights": r["fp32_frozen_weights"] == "True",
                         "gradient_checkpointing": r["gradient_checkpointing"] == "True"},
            "grpo": {"num_generations": g, "per_device_train_batch_size": int(r["prompts_per_step"]) * g,
                     "gradient_accumulation_steps": 1, "max_completion_length": int(r["max_completion_length"]),
                     "beta": float(r["beta"]), "cache_audio": r["cache_audio"] == "True",
                     "rollout_shared_prefix": False}})  # measured before the kit's generation paths: TRL's generate
        shapes = P.model_shapes(prof.section("backbone"), prof.paths)
        est = P.memory(shapes, P.steps_of(prof, shapes, P.GPUS["h100"], float(r["clip_seconds"]))["grpo"])
        measured = float(r["gpu_allocated_peak_mib"]) * 2**20
        assert abs(est.peak / measured - 1) <= GPU_TOLERANCE, (r["tag"], r["mode"], est.peak / 2**30, measured / 2**30)
        loaded = sum(t.bytes for t in est.terms if t.phase == "weights" and not t.name.startswith(("optimizer",
                                                                                                  "reference")))
        after_load = float(r["gpu_allocated_after_load_mib"]) * 2**20
        # LoRA is fp32 after loading; TRL casts it to bf16 later (a 0.07 GiB difference on 10.5)
        assert loaded == pytest.approx(after_load, rel=0.02), (r["tag"], loaded / 2**30, after_load / 2**30)


def test_readme_planner_table_is_what_the_planner_generates():
    """The README's planner table is generated (`python -m emorl_lib.golden readme`), never typed: a change to the
    planner without regenerating it fails here."""
    from emorl_lib import golden

    block = golden.current_plan_block("paper")
    assert block is not None and "NVIDIA T4" in block
    assert block == golden.planned_block("paper"), "run: python -m emorl_lib.golden readme"

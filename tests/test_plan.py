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

from emorl_lib.data.manifest import Utterance
from emorl_lib.infra.io import write_jsonl
from emorl_lib.infra.perf import TensorMemory, peak_memory, reset_peak_memory
from emorl_lib.training import plan as P

# The validation's tolerance: the estimate of torch's peak allocations within 20 % of the measured peak (tiny and
# mid-size models); the mid-size model's RSS growth (weights + training, where tensors dominate) within 20 % too.
TORCH_TOLERANCE = 0.20
RSS_TOLERANCE = 0.20


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


def test_gpu_argument():
    assert P.gpu_from_arg("t4") is P.GPUS["t4"] and P.GPUS["t4"].memory_gib == 15.0 and not P.GPUS["t4"].bf16
    g = P.gpu_from_arg("24GiB")
    assert g.memory_gib == 24.0 and g.tflops is None
    with pytest.raises(ValueError, match="t4, a100-40, h100"):
        P.gpu_from_arg("v100-ish")


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
    from emorl_lib.infra.config import load_profile

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


def measure(prof, stage: str, monkeypatch) -> dict:
    """Train `stage` for the profile's 2 steps with torch's allocations tracked (weights counted at the start), the
    process's RSS growth from before the model is loaded, and the (rows, tokens) of every forward."""
    import transformers

    from emorl_lib.training import grpo
    from emorl_lib.training.experiments import Run
    from emorl_lib.training.sft import run_sft

    out: dict = {"forwards": []}
    train = transformers.Trainer.train

    def tracked(self, *a, **k):
        model = self.model
        base = TensorMemory.storage_bytes(list(model.parameters()) + list(model.buffers()))
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
    (run_sft if stage == "sft" else grpo.run_grpo)(prof, run, force=True)
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


MID_TEXT = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4, "num_attention_heads": 8,
            "num_key_value_heads": 8}  # and the real vocabulary (156,032): the logits terms at their real width
MID_AUDIO = {"d_model": 256, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 1024}


@pytest.fixture(scope="module")
def mid_model(tmp_path_factory, tiny_backbone_dir) -> Path:
    """A 370M-parameter random Qwen2-Audio: the real model's vocabulary and 30 s audio window, fewer and narrower
    layers (1.5 GB in fp32: the CPU trains it in seconds)."""
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    from emorl_lib.training.backbones import chat_template

    out = tmp_path_factory.mktemp("mid_model")
    tok = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", "num_mel_bins": 128, "max_source_positions": 1500,
                      **MID_AUDIO},
        text_config={"model_type": "qwen2", "vocab_size": 156032, "max_position_embeddings": 8192,
                     "tie_word_embeddings": False, "eos_token_id": eos, "pad_token_id": tok.pad_token_id,
                     "bos_token_id": None, **MID_TEXT},
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2AudioForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(eos_token_id=[eos, tok.pad_token_id], pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    del model
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
                                 padding_value=0.0, return_attention_mask=True)
    Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=chat_template()).save_pretrained(out)
    gc.collect()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_estimate_matches_a_mid_size_run_on_the_cpu(tmp_path, kit_paths, mid_model, rows, stage, monkeypatch):
    prof = _profile(tmp_path, str(kit_paths.cache), rows, {"name": "qwen2-audio-7b-instruct", "path": str(mid_model)})
    measured = measure(prof, stage, monkeypatch)
    _check(estimate_for(prof, stage, measured), measured, rss=True)

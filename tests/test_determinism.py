"""Determinism: pinned CPU paths are honoured, training twice gives the same bits, and the invalidation rule.

Subprocesses start clean: the pinned variables are read when torch loads, so each setting needs its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_training import train_profile  # noqa: F401  (the module-scoped fixture of the training tests)

from emorl_lib.infra import determinism as D
from emorl_lib.infra.fingerprint import weights_digest
from emorl_lib.infra.paths import REPO_ROOT
from emorl_lib.training.experiments import Run

PINNABLE, WHY = D.pinnable()
needs_pins = pytest.mark.skipif(not PINNABLE, reason=f"CPU paths cannot be pinned here: {WHY}")
# The pinned probe's digest (1 thread, oneDNN off) for a torch version: the same on every x86-64 CPU with AVX2.
# Measured on an AMD EPYC (AVX2 only); on an Intel Xeon with AVX-512 (torch 2.11) the forward and most gradients
# gave the same bits (see the README's determinism notes).
PROBE_DIGEST = {"2.13.0": "c1c6da230d815adf"}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (*D.CPU_ENV, *D.THREAD_VARS, "MKL_VERBOSE", "ONEDNN_VERBOSE")}
    env.update(extra)
    return env


def _probe(*args: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "emorl_lib.infra.cpu_probe", *args], env=_clean_env(**env),
                         capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout
    return json.loads(out[out.index("{"):])  # (a verbose library may print before the JSON)


# ---- pinned CPU paths ----------------------------------------------------------------------------------------------
@needs_pins
def test_import_pins_every_variable_and_torch_honours_them():
    r = _probe("--threads", "1")
    assert r["env"] == {**{k: v for k, v in D.CPU_ENV.items()}, **r["env"]} and r["problems"] == []
    assert {k: r["env"][k] for k in D.CPU_ENV} == D.CPU_ENV
    assert r["torch_capability"] == "AVX2" and r["probe"]["capability"] == "AVX2"
    # MKL says which branch it runs (CNR:...) and oneDNN which ISA it may use, when asked to be verbose
    verbose = subprocess.run([sys.executable, "-m", "emorl_lib.infra.cpu_probe", "--threads", "1", "--onednn"],
                             env=_clean_env(MKL_VERBOSE="1", ONEDNN_VERBOSE="1"), capture_output=True, text=True,
                             cwd=REPO_ROOT, check=True).stdout
    cnr = {line.split("CNR:")[1].split()[0] for line in verbose.splitlines() if "CNR:" in line}
    assert cnr == {"COMPATIBLE"}, cnr
    assert "isa:Intel AVX2" in verbose and "AVX-512" not in verbose.split("isa:")[1].splitlines()[0]


@needs_pins
def test_a_user_setting_is_kept_and_reported():
    r = _probe("--threads", "1", MKL_CBWR="AUTO")
    assert r["env"]["MKL_CBWR"] == "AUTO"
    assert any("MKL_CBWR='AUTO'" in p for p in r["problems"])


@needs_pins
def test_two_cpu_capability_settings_differ_and_the_pinned_path_is_stable():
    """Torch's default kernels and its AVX2 kernels round differently (so the pin is needed and honoured); the pinned
    path gives the same bits whatever the surrounding settings that must not matter (oneDNN's ISA cap with oneDNN
    off, a user's thread variables) and equals the digest recorded for this torch version."""
    import torch

    default = _probe("--threads", "1", "--values", ATEN_CPU_CAPABILITY="default")
    pinned = _probe("--threads", "1", "--values")
    assert default["probe"]["capability"] == "DEFAULT" and pinned["probe"]["capability"] == "AVX2"
    assert default["probe"]["inputs"] == pinned["probe"]["inputs"]  # same inputs: only the kernels differ
    assert default["probe"]["hash"] != pinned["probe"]["hash"]
    # what differs is rounding: every value agrees within a float32 tolerance
    for name, v in pinned["probe"]["values"].items():
        np.testing.assert_allclose(default["probe"]["values"][name], v, rtol=1e-4, atol=1e-6, err_msg=name)
    other = _probe("--threads", "1", ONEDNN_MAX_CPU_ISA="SSE41", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    assert other["probe"]["hash"] == pinned["probe"]["hash"]
    want = PROBE_DIGEST.get(torch.__version__.split("+")[0])
    if want:
        assert pinned["probe"]["hash"] == want


def test_runtime_section_sets_threads_and_deterministic_algorithms():
    import torch

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.enabled)
    try:
        cfg = D.apply_runtime(D.RuntimeConfig(threads=1, onednn=False))
        assert cfg.threads == 1 and torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.mkldnn.enabled and os.environ["OMP_NUM_THREADS"] == "1"
        with pytest.raises(Exception, match="runtime.threads"):
            D.RuntimeConfig(threads=0)
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])
        torch.backends.mkldnn.enabled = before[2]


# ---- training twice: the same bits ----------------------------------------------------------------------------------
def _length_reward(completions, **kwargs):
    return [len(c[0]["content"] if isinstance(c, list) else c) / 50.0 for c in completions]


_TRAIN_IN_SUBPROCESS = """
import sys, yaml
from emorl_lib.profile import Profile, run_setup
from emorl_lib.training import grpo
from emorl_lib.training.experiments import Run

def length_reward(completions, **kwargs):
    return [len(c[0]["content"] if isinstance(c, list) else c) / 50.0 for c in completions]

grpo.reward_functions = lambda *args: ([length_reward], [1.0])
stage = sys.argv[2]
prof = Profile("trainprof", None, yaml.safe_load(open(sys.argv[1])))
run = Run("iemocap", stage, "IR", "eswr" if stage == "grpo" else None, 1)
print("FINAL", run_setup(prof, run).train(force=True))
"""


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_training_twice_gives_bit_identical_adapters(train_profile, stage, monkeypatch, tmp_path):  # noqa: F811
    """The same run trained in this process and again in a fresh process: the adapters' bytes are equal."""
    from emorl_lib.profile import run_setup
    from emorl_lib.training import grpo

    monkeypatch.setattr(grpo, "reward_functions", lambda *args: ([_length_reward], [1.0]))
    run = Run("iemocap", stage, "IR", "eswr" if stage == "grpo" else None, 1)
    paths = train_profile.paths
    profs = []
    for name in ("one", "two"):
        p = train_profile.with_overrides({"paths": {"runs": str(tmp_path / name)}})
        p.paths.ensure()
        (p.paths.manifests / "iemocap.jsonl").write_text((paths.manifests / "iemocap.jsonl").read_text())
        profs.append(p)
    first = run_setup(profs[0], run).train(force=True)
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump(profs[1].sections))
    out = subprocess.run([sys.executable, "-c", _TRAIN_IN_SUBPROCESS, str(cfg), stage], capture_output=True,
                         text=True, cwd=REPO_ROOT, env=_clean_env(TOKENIZERS_PARALLELISM="false",
                                                                  HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    second = Path(out.stdout.split("FINAL ")[-1].strip())
    assert second != first and weights_digest(second) is not None
    assert weights_digest(first) == weights_digest(second)
    from safetensors.torch import load_file

    a, b = (load_file(str(next(d.glob("*.safetensors")))) for d in (first, second))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert any(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)  # training moved the weights


# ---- one invalidation rule -----------------------------------------------------------------------------------------
def test_training_code_closure_leaves_out_evaluation_and_figures():
    from emorl_lib.evaluation.predictions import PREDICTION_CODE
    from emorl_lib.infra.fingerprint import closure, notebook_imports
    from emorl_lib.training.grpo import EmoGRPOConfig
    from emorl_lib.training.runs import TRAINING_OBSERVERS
    from emorl_lib.training.sft import EmoSFTConfig

    for cls in (EmoSFTConfig, EmoGRPOConfig):
        roots = (cls.__module__,)
        assert "emorl_lib.training.heldout" in closure(roots)  # the trainers do run it
        mods = closure(roots, TRAINING_OBSERVERS)
        assert cls.__module__ in mods and "emorl_lib.method.rewards" in mods
        assert not any(m.startswith("emorl_lib.evaluation") for m in mods), cls
    assert "emorl_lib.evaluation.figures" not in closure(PREDICTION_CODE)
    nb = closure(notebook_imports(REPO_ROOT / "notebooks" / "06_paper_figures.ipynb"))
    assert "emorl_lib.evaluation.figures" in nb


def test_a_change_in_training_code_retrains_a_finished_run(train_profile, monkeypatch, capsys):  # noqa: F811
    from emorl_lib.infra import fingerprint
    from emorl_lib.profile import run_setup
    from emorl_lib.training.sft import run_sft

    run = Run("iemocap", "sft", "IR", None, 1)
    prof = train_profile.with_overrides({"paths": {"runs": str(train_profile.paths.run.parent / "code")},
                                         "sft": {"max_steps": 1}})
    paths = prof.paths.ensure()
    (paths.manifests / "iemocap.jsonl").write_text((train_profile.paths.manifests / "iemocap.jsonl").read_text())
    run_sft(run_setup(prof, run))
    capsys.readouterr()
    run_sft(run_setup(prof, run))
    assert "is current, skipped" in capsys.readouterr().out
    real = fingerprint.code_digest
    monkeypatch.setattr(fingerprint, "code_digest", lambda *a: real(*a) + "-edited")
    run_sft(run_setup(prof, run))
    assert "settings changed" in capsys.readouterr().out


def test_predictions_made_by_another_key_are_dropped_and_redone(tmp_path, monkeypatch):
    from emorl_lib.data.testsets import TestSet
    from emorl_lib.evaluation import predictions as G
    from emorl_lib.method.prompts import PromptConfig
    from emorl_lib.model.generate import Generated

    class Row:
        def __init__(self, i):
            self.utt_id, self.wav, self.transcript, self.label4 = f"u{i}", f"/x/u{i}.wav", None, "sad"

    ts = TestSet(name="t", corpus="iemocap", rows=[Row(i) for i in range(3)], four_class=True, n_total=3)
    monkeypatch.setattr(G, "load_16k", lambda wav: np.zeros(1600, "float32"))
    made = []
    monkeypatch.setattr(G, "generate_batch",
                        lambda bb, m, a, n, *rest: made.extend(m) or [Generated("<answer>sad</answer>", 3)] * len(m))
    out = tmp_path / "p.jsonl"
    G.predict_set(None, ts, PromptConfig(), "IR", out, 8, 8, progress=False, key="adapter-A")
    G.predict_set(None, ts, PromptConfig(), "IR", out, 8, 8, progress=False, key="adapter-A")
    assert len(made) == 3
    G.predict_set(None, ts, PromptConfig(), "IR", out, 8, 8, progress=False, key="adapter-B")  # retrained adapter
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(made) == 6 and len(lines) == 3 and {x["key"] for x in lines} == {"adapter-B"}


def test_prediction_key_follows_the_adapter_weights_and_the_settings(train_profile, tmp_path):  # noqa: F811
    from emorl_lib.evaluation.matrix import prediction_key
    from emorl_lib.profile import eval_setup

    prof = train_profile.with_overrides({"paths": {"runs": str(tmp_path / "runs")}})
    s = eval_setup(prof)
    run = Run("iemocap", "sft", "IR", None, 1)
    final = run.adapter_dir(s.paths)
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    (final / "adapter_model.safetensors").write_bytes(b"weights one")
    k1 = prediction_key(s, run, base="b")
    (final / "emorl_run.json").write_text('{"seconds": 12}')  # metadata is not the model
    assert prediction_key(s, run, base="b") == k1
    (final / "adapter_model.safetensors").write_bytes(b"weights two")  # retrained to other weights
    k2 = prediction_key(s, run, base="b")
    assert k2 != k1
    s2 = eval_setup(prof.with_overrides({"prompt": {"system_prompt": "Another wording."}}))
    assert prediction_key(s2, run, base="b") != k2
    assert prediction_key(eval_setup(prof.with_overrides({"eval": {"bootstrap": 10}})), run, base="b") == k2
    # a default written out changes nothing (the key hashes the settings as resolved, not the YAML)
    assert prediction_key(eval_setup(prof.with_overrides({"prompt": {"transcript": False}})), run, base="b") == k2

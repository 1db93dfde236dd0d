"""Shared fixtures. Each area has its own block; add to it, don't rewrite others'."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub


# ---- foundation: paths, tiny backbone -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kit_paths(tmp_path_factory):
    """Paths of a scratch profile whose cache/runs/results live in a temp folder."""
    from emorl_lib.infra.paths import Paths, PathsConfig

    root = tmp_path_factory.mktemp("kit")
    return Paths.for_profile("test", PathsConfig(cache=str(root / "cache"), runs=str(root / "runs"),
                                                 results=str(root / "results"))).ensure()


@pytest.fixture(scope="session")
def tiny_backbone_dir(kit_paths) -> Path:
    from emorl_lib.model.backbones import BackboneConfig, build_tiny_qwen2_audio

    return build_tiny_qwen2_audio(BackboneConfig(), kit_paths)


@pytest.fixture(scope="session")
def tone_wav(tmp_path_factory) -> Path:
    """A 2.5 s, 16 kHz tone: a real file for processor and generate tests."""
    import soundfile as sf

    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    x = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype("float32")
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    sf.write(path, x, sr)
    return path


# The `qwen2-audio-7b-random` backbone shrunk to 370M parameters: the real vocabulary (156,032: the logits terms at
# their real width) and 30 s audio window, 4 narrow layers (tests/test_plan.py, tests/test_rollout.py)
MID_RANDOM = {"text": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4,
                       "num_attention_heads": 8, "num_key_value_heads": 8},
              "audio": {"d_model": 256, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 1024}}


# ---- synthetic corpora (emorl_lib/synthetic) ------------------------------------------------------------------
SYNTHETIC_TEST_SIZE = 0.1  # small: a few dozen clips per corpus; every track-2 class still has entries


@pytest.fixture(scope="session")
def synthetic_corpora(tmp_path_factory) -> dict[str, Path]:
    """corpus -> root of a small synthetic corpus in the real layout, generated once per session (seed 0).

    The SAVEE flat re-upload layout is at `emorl_lib.data.synthetic.savee_flat_root(root.parent)`.
    """
    from emorl_lib.data.synthetic import generate_all

    return generate_all(tmp_path_factory.mktemp("synthetic"), seed=0, size=SYNTHETIC_TEST_SIZE)


# ---- evaluation: a few short clips of different lengths (batched generation pads them differently) -----------
@pytest.fixture(scope="session")
def eval_wavs(tmp_path_factory) -> list[Path]:
    import soundfile as sf

    sr = 16000
    d = tmp_path_factory.mktemp("eval_audio")
    out = []
    for i, (secs, f0) in enumerate([(1.0, 140), (2.2, 220), (1.6, 180), (3.0, 260), (0.8, 120)]):
        t = np.arange(int(secs * sr)) / sr
        x = (0.25 * np.sin(2 * np.pi * f0 * t) * (1 + 0.4 * np.sin(2 * np.pi * (2 + i) * t))).astype("float32")
        p = d / f"clip{i}.wav"
        sf.write(p, x, sr)
        out.append(p)
    return out


def write_notebook(path: Path, body: str, params: str = 'profile = "default"'):
    """A two-cell notebook (a tagged parameters cell, then `body`) for the runner's tests."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)

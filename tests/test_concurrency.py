"""Caches written by several processes at once stay usable: numba's (librosa), the tiny model, the 16 kHz wav cache.

Each test starts processes together on an empty cache, then checks that the cache works afterwards. Without the
kit's lock, two processes compiling librosa into an empty numba cache left a cache that crashed every later
process in 5 rounds of 8 (measured with the unprotected worker below; see emorl_lib/infra/numba_cache.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emorl_lib.infra.paths import REPO_ROOT

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("EMORL_STRESS_ROUNDS", "3"))

_LIBROSA_WORKER = """
import sys, numpy as np
import emorl_lib
from emorl_lib.infra import numba_cache
librosa = numba_cache.librosa()
sr = 16000
x = (0.3 * np.sin(2 * np.pi * 180 * np.arange(sr) / sr)).astype(np.float32)
if sys.argv[1] in ("yin", "both"):
    f0 = librosa.yin(x, fmin=60, fmax=500, sr=sr, frame_length=1024, hop_length=256)
    assert abs(float(np.median(f0)) - 180) < 5
if sys.argv[1] in ("onset", "both"):
    librosa.onset.onset_detect(y=x, sr=sr)
    librosa.util.localmax(x.astype(np.float64))
print("ok")
"""


def _start(code: str, *args: str, **env: str) -> subprocess.Popen:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=e, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    return [(p.wait(), p.communicate()[1][-2000:]) for p in procs]


def test_concurrent_first_use_of_librosa_never_poisons_the_numba_cache(tmp_path):
    """ROUNDS x (3 processes on an empty cache, then one that loads what they wrote): every exit is clean."""
    for r in range(ROUNDS):
        cache = tmp_path / f"numba{r}"
        procs = [_start(_LIBROSA_WORKER, what, NUMBA_CACHE_DIR=str(cache)) for what in ("onset", "yin", "both")]
        for rc, err in _finish(procs):
            assert rc == 0, f"round {r}: a worker failed ({rc}): {err}"
        assert list(cache.rglob("*.nbi")), "nothing was cached: the test would not exercise the cache"
        after = _start(_LIBROSA_WORKER, "both", NUMBA_CACHE_DIR=str(cache))
        (rc, err), = _finish([after])
        assert rc == 0, f"round {r}: loading the cache failed ({rc}, -11 is a segfault): {err}"


def test_librosa_cache_lives_outside_the_venv():
    out = subprocess.run([sys.executable, "-c", "import emorl_lib, os; print(os.environ['NUMBA_CACHE_DIR'])"],
                         env={k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, capture_output=True,
                         text=True, check=True, cwd=REPO_ROOT).stdout.strip()
    assert Path(out) == REPO_ROOT / "cache" / "numba" and sys.prefix not in out


_TINY_WORKER = """
import sys
from emorl_lib.infra.paths import Paths, PathsConfig
from emorl_lib.model.backbones import BackboneConfig, build_tiny_qwen2_audio, load_backbone
paths = Paths.for_profile("c", PathsConfig(cache=sys.argv[1], runs=sys.argv[1] + "/runs", results=sys.argv[1] + "/res"))
out = build_tiny_qwen2_audio(BackboneConfig(), paths)
bb = load_backbone(BackboneConfig(), paths, trainable=False)
print("DIR", out)
"""


def test_two_processes_building_the_tiny_model_at_once(tmp_path):
    from emorl_lib.infra.fingerprint import file_digest, weights_digest

    shared = tmp_path / "shared"
    results = _finish([_start(_TINY_WORKER, str(shared)) for _ in range(2)])
    for rc, err in results:
        assert rc == 0, err
    built = [d for d in (shared / "models").iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(built) == 1 and (built[0] / "config.json").exists()
    assert not [p for p in (shared / "models").iterdir() if p.name.endswith(".tmp")]  # no half-built copy left
    (rc, err), = _finish([_start(_TINY_WORKER, str(tmp_path / "alone"))])
    assert rc == 0, err
    alone = next(d for d in (tmp_path / "alone" / "models").iterdir() if d.is_dir() and not d.name.startswith("."))
    assert weights_digest(alone) == weights_digest(built[0])  # the build is deterministic, and complete
    assert file_digest(alone / "tokenizer.json") == file_digest(built[0] / "tokenizer.json")


_PREP_WORKER = """
import sys
from emorl_lib.profile import Profile, data_setup
from emorl_lib.data.prep import prepare
root = sys.argv[1]
prof = Profile("c", None, {"paths": {"cache": root + "/cache", "runs": root + "/" + sys.argv[2], "results": root + "/res"},
                           "data": {"synthetic": True, "synthetic_size": 0.1, "corpora": ["savee", "ravdess"],
                                    "workers": 2}})
out = prepare(data_setup(prof), progress=False)
print("KEPT", sum(r.kept for r in out.reports.values()))
"""


def test_two_processes_preparing_the_same_corpora_at_once(tmp_path):
    """Synthetic corpora and the 16 kHz cache built by two processes started together: both finish with the same
    manifests, every cached clip reads, and nothing was skipped."""
    import soundfile as sf

    results = _finish([_start(_PREP_WORKER, str(tmp_path), f"runs{i}") for i in range(2)])
    for rc, err in results:
        assert rc == 0, err
    for corpus in ("savee", "ravdess"):
        a = (tmp_path / "runs0" / "c" / "manifests" / f"{corpus}.jsonl").read_text()
        b = (tmp_path / "runs1" / "c" / "manifests" / f"{corpus}.jsonl").read_text()
        assert a == b and a.count("\n") > 5
        report = (tmp_path / "runs0" / "c" / "manifests" / f"{corpus}.report.json").read_text()
        assert "not decodable" not in report
    wavs = list((tmp_path / "cache" / "audio16k").rglob("*.wav"))
    assert wavs and all(sf.info(str(w)).frames > 0 for w in wavs)
    assert not list((tmp_path / "cache").rglob(".*.tmp"))

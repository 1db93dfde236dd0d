"""Measuring and saving time: stopwatches, peak memory, a machine description, benchmark CSVs, and two caches.

The caches exploit what GRPO and evaluation repeat:
- `EncoderCache`: the frozen audio encoder's output per clip. TRL repeats every prompt G times and runs a full
  forward over the audio four times per step (generation prefill, old-policy, reference and loss forwards), so the
  encoder would see each clip ~4G times. Keyed on the exact mel features (so every forward still receives
  `input_features`, and a repeated clip is encoded once). It caches the TOWER output, never the projector's: the
  projector may be trainable (`lora.modules_to_save`).
- `FeatureCache`: the log-mel features per clip (a Whisper extractor pads every clip to its chunk, so one clip's
  features do not depend on its batch). Keyed on the waveform's bytes; reused across evaluation reruns.
Both compare candidates exactly (torch.equal / bytes), so a hit returns what the plain path would compute.
"""

from __future__ import annotations

import csv
import hashlib
import os
import platform
import resource
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np


# ----------------------------------------------------------------------------------------------------------------
# Timing and memory
# ----------------------------------------------------------------------------------------------------------------
def _sync() -> None:
    """Wait for queued GPU work, so a wall-clock section times the kernels and not their launch."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:
        pass


class Stopwatch:
    """Accumulated wall time and call counts per named section (sections may nest; each is inclusive)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        _sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1

    def wrap(self, obj: Any, attr: str, name: str | None = None) -> None:
        """Time every call of `obj.attr` (an instance attribute shadows the class's method)."""
        fn = getattr(obj, attr)

        def timed(*args, **kwargs):
            with self.section(name or attr):
                return fn(*args, **kwargs)

        setattr(obj, attr, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def reset_peak_memory() -> None:
    """Start peak counters afresh: the process's peak RSS (Linux: clear_refs 5) and CUDA's peak statistics."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, with CUDA, peak allocated and reserved GPU memory (MiB),
    since the last `reset_peak_memory`."""
    out = {"rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    try:  # VmHWM honours reset_peak_memory; ru_maxrss is the lifetime peak
        hwm = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM"))
        out["rss_peak_mib"] = int(hwm.split()[1]) / 1024.0
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu_allocated_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
            out["gpu_reserved_peak_mib"] = torch.cuda.max_memory_reserved() / 2**20
    except ImportError:
        pass
    return out


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""


def machine_description() -> str:
    """One line: CPU model, cores, RAM, GPU (name, memory), OS, torch. Benchmarks store it beside every row."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        ram = f"{kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    parts = [cpu, f"{os.cpu_count()} cores", ram]
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            parts.append(f"GPU {p.name} {p.total_memory / 2**30:.0f} GiB")
        else:
            parts.append("no GPU")
        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    parts.append(platform.platform(terse=True))
    return " | ".join(p for p in parts if p)


def append_csv(path: Path, row: dict[str, Any]) -> Path:
    """Add one row to a benchmark CSV (columns grow as new keys appear; old rows keep theirs). Atomic rewrite."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    if path.exists():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    row = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row}
    rows.append(row)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Audio encoder output cache
# ----------------------------------------------------------------------------------------------------------------
def find_audio_tower(model):
    """The Qwen2-Audio encoder inside a (PEFT-wrapped) model, or None."""
    for name, module in model.named_modules():
        if name.endswith("audio_tower") and hasattr(module, "_get_feat_extract_output_lengths"):
            return module
    return None


class EncoderCache:
    """Runs a frozen audio encoder once per distinct clip and serves repeats from memory.

    Installed on the encoder instance (`install`), it intercepts `forward(input_features, attention_mask)`: rows
    whose features (and mask row) equal a cached clip exactly are served from the cache; the rest are encoded in
    one batch. Refuses to install on an encoder with trainable parameters (its output would change with training
    and differ between the policy and the reference). `clear()` at each new generation batch bounds the memory to
    that batch's clips. Counters: `encoded` rows computed, `served` rows answered from the cache."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, Any, Any, Any]] = []  # (fingerprint, features, mask row, output) per clip
        self.encoded = 0
        self.served = 0
        self._tower = None
        self._forward = None

    # -- wiring --
    def install(self, tower) -> "EncoderCache":
        if any(p.requires_grad for p in tower.parameters()):
            raise ValueError("EncoderCache: the audio encoder has trainable parameters (lora.modules_to_save or a "
                             "LoRA target in audio_tower?); its output cannot be cached")
        self._tower, self._forward = tower, tower.forward
        tower.forward = self._cached_forward
        return self

    def uninstall(self) -> None:
        if self._tower is not None:
            del self._tower.forward  # back to the class's method
            self._tower = self._forward = None
        self.clear()

    def clear(self) -> None:
        self.entries.clear()

    # -- the forward --
    @staticmethod
    def _fingerprint(x):
        import torch

        flat = x.reshape(x.shape[0], -1).double()
        w = torch.linspace(1.0, 2.0, flat.shape[1], dtype=flat.dtype, device=flat.device)
        return torch.stack([flat.sum(1), (flat * w).sum(1)], 1)

    def _stochastic(self) -> bool:
        """Dropout active in the encoder: its output is random, so a cached one would not be what the plain path
        computes."""
        cfg = self._tower.config
        rates = [getattr(cfg, k, 0.0) or 0.0 for k in ("dropout", "attention_dropout", "activation_dropout",
                                                         "encoder_layerdrop")]
        return bool(self._tower.training and any(r > 0 for r in rates))

    def _lookup(self, fp, feats, mask_row) -> int | None:
        import torch

        for i, (efp, efeats, emask, _) in enumerate(self.entries):
            if (efp.shape == fp.shape and torch.equal(efp, fp) and efeats.shape == feats.shape
                    and torch.equal(efeats, feats) and _mask_equal(emask, mask_row)):
                return i
        return None

    def _cached_forward(self, input_features, attention_mask=None, **kwargs):
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        if kwargs.get("output_hidden_states") or kwargs.get("output_attentions") or self._stochastic():
            return self._forward(input_features, attention_mask=attention_mask, **kwargs)
        fps = self._fingerprint(input_features)
        n = input_features.shape[0]
        slot: list[int | None] = []
        first_of: dict[int, int] = {}  # new rows equal to an earlier new row in this call
        misses: list[int] = []
        for r in range(n):
            m = None if attention_mask is None else attention_mask[r]
            hit = self._lookup(fps[r], input_features[r], m)
            if hit is None:
                for j in misses:
                    if torch.equal(fps[j], fps[r]) and torch.equal(input_features[j], input_features[r]) and \
                            _mask_equal(None if attention_mask is None else attention_mask[j], m):
                        first_of[r] = j
                        break
                else:
                    misses.append(r)
            slot.append(hit)
        if misses:
            idx = torch.tensor(misses, device=input_features.device)
            mask = None if attention_mask is None else attention_mask.index_select(0, idx)
            out = self._forward(input_features.index_select(0, idx), attention_mask=mask, **kwargs)
            hidden = out.last_hidden_state
            base = len(self.entries)
            for k, r in enumerate(misses):
                m = None if attention_mask is None else attention_mask[r]
                self.entries.append((fps[r], input_features[r], m, hidden[k].detach()))
            for k, r in enumerate(misses):
                slot[r] = base + k
            for r, j in first_of.items():
                slot[r] = slot[j]
        self.encoded += len(misses)
        self.served += n - len(misses)
        return BaseModelOutput(last_hidden_state=torch.stack([self.entries[s][3] for s in slot], 0))


def _mask_equal(a, b) -> bool:
    import torch

    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a, b))


@contextmanager
def encoder_cache(model) -> Iterator[EncoderCache | None]:
    """An EncoderCache on `model`'s audio tower for the duration of the block (None if it has none)."""
    tower = find_audio_tower(model)
    if tower is None:
        yield None
        return
    cache = EncoderCache().install(tower)
    try:
        yield cache
    finally:
        cache.uninstall()


# ----------------------------------------------------------------------------------------------------------------
# Mel feature cache
# ----------------------------------------------------------------------------------------------------------------
class FeatureCache:
    """Log-mel features per clip, keyed on the waveform's bytes and the extractor call's options.

    Fills until `max_bytes` and then stops adding (an LRU smaller than a test set would miss on every sequential
    rerun; keep-first still serves the first part). `hits`/`misses`/`skipped` count clips."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.store: dict[bytes, dict[str, np.ndarray]] = {}
        self.nbytes = 0
        self.hits = self.misses = self.skipped = 0

    @staticmethod
    def key(wave: np.ndarray, options: dict) -> bytes:
        a = np.ascontiguousarray(wave)
        h = hashlib.blake2b(a.tobytes(), digest_size=20)
        h.update(repr((a.dtype.str, a.shape, sorted((k, repr(v)) for k, v in options.items()))).encode())
        return h.digest()

    def extract(self, extractor, audio: list[np.ndarray], **options):
        """What `extractor(audio, **options)` returns, computing only the clips not cached. Requires padding to a
        fixed length (Qwen2-Audio's processor always asks for padding='max_length'), else rows would depend on
        their batch."""
        from transformers import BatchFeature

        if options.get("padding") != "max_length":
            return extractor(audio, **options)
        single = isinstance(audio, np.ndarray) and audio.ndim == 1
        clips = [audio] if single else list(audio)
        opts = {k: v for k, v in options.items() if k != "return_tensors"}
        keys = [self.key(np.asarray(c), opts) for c in clips]
        todo = sorted({i for i, k in enumerate(keys) if k not in self.store}, key=lambda i: i)
        todo_keys: dict[bytes, int] = {}
        for i in todo:
            todo_keys.setdefault(keys[i], i)
        fresh: dict[bytes, dict[str, np.ndarray]] = {}
        if todo_keys:
            rows = list(todo_keys.values())
            out = extractor([clips[i] for i in rows], **{**opts, "return_tensors": "np"})
            for j, i in enumerate(rows):
                fresh[keys[i]] = {k: np.asarray(v[j]) for k, v in out.items()}
        self.misses += len(todo_keys)
        self.hits += len(clips) - len(todo_keys)
        for k, v in fresh.items():
            size = sum(a.nbytes for a in v.values())
            if self.nbytes + size <= self.max_bytes:
                self.store[k] = v
                self.nbytes += size
            else:
                self.skipped += 1
        rows = [self.store.get(k) or fresh[k] for k in keys]
        batch = {name: np.stack([r[name] for r in rows], 0) for name in rows[0]}
        return BatchFeature(batch, tensor_type=options.get("return_tensors"))

    @contextmanager
    def installed(self, processor) -> Iterator["FeatureCache"]:
        """Route `processor`'s feature-extractor calls through this cache for the duration of the block."""
        fe = processor.feature_extractor
        proxy = _CachedExtractor(fe, self)
        processor.feature_extractor = proxy
        try:
            yield self
        finally:
            processor.feature_extractor = fe


class _CachedExtractor:
    """Stands in for a feature extractor: calls go through the cache, everything else to the real one."""

    def __init__(self, fe, cache: FeatureCache) -> None:
        self._fe, self._cache = fe, cache

    def __call__(self, audio, **options):
        return self._cache.extract(self._fe, audio, **options)

    def __getattr__(self, name):
        return getattr(self._fe, name)

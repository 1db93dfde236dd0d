"""Measuring: stopwatches, peak memory, a machine description, benchmark CSVs.

The exact caches that save time live with what they speed up: the audio-encoder cache with the GRPO trainer
(`training/grpo.py`), the mel-feature cache with evaluation generation (`evaluation/generate.py`).
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .io import append_csv


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
            driver = _nvidia_driver()
            parts.append(f"CUDA {torch.version.cuda}" + (f" driver {driver}" if driver else ""))
        else:
            parts.append("no GPU")
        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    parts.append(platform.platform(terse=True))
    return " | ".join(p for p in parts if p)


def _nvidia_driver() -> str:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


# The packages whose private APIs the kit touches (pinned exactly in pyproject.toml), and what they stand on.
PINNED_PACKAGES = ("transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "tokenizers",
                   "safetensors")


def package_versions(names: tuple[str, ...] = PINNED_PACKAGES) -> str:
    """'name version; ...' for every benchmark row: a figure is only comparable under the same stack."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for n in names:
        try:
            out.append(f"{n} {version(n)}")
        except PackageNotFoundError:
            out.append(f"{n} -")
    return "; ".join(out)


class GPUMemorySampler:
    """GPU memory over time: a thread reads torch's allocated and reserved bytes every `interval` seconds and
    writes `seconds,allocated_mib,reserved_mib,label` rows to a CSV, flushed per row so that a killed run keeps
    its trace. Set `label` to mark phases. Without CUDA it records nothing."""

    def __init__(self, path: Path, interval: float = 0.5) -> None:
        import threading

        self.path, self.interval = Path(path), interval
        self.label = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-memory-sampler", daemon=True)

    def _run(self) -> None:
        import csv

        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with self.path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seconds", "allocated_mib", "reserved_mib", "label"])
            while True:
                a, r = torch.cuda.memory_allocated() / 2**20, torch.cuda.memory_reserved() / 2**20
                w.writerow([f"{time.perf_counter() - t0:.2f}", f"{a:.0f}", f"{r:.0f}", self.label])
                f.flush()
                if self._stop.wait(self.interval):
                    break

    def __enter__(self) -> "GPUMemorySampler":
        try:
            import torch

            if torch.cuda.is_available():
                self._thread.start()
        except ImportError:
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def append_benchmark_row(path: Path, row: dict[str, Any]) -> Path:
    """Add one timestamped row to a benchmark CSV (columns grow as new keys appear)."""
    return append_csv(path, {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), **row})


class TensorMemory:
    """Peak bytes of torch tensor storages created while it is active (a TorchDispatchMode: every op's outputs),
    plus a `baseline` the caller adds for tensors that already existed (the model's weights). Device-agnostic, so it
    measures on the CPU what `torch.cuda.max_memory_allocated` measures on a GPU, minus the allocator's rounding.

    `with TensorMemory() as m: ...` then `m.peak`, `m.current`. A storage is counted once, from the op that
    creates it until it is freed; views and in-place ops add nothing."""

    def __init__(self, baseline: int = 0) -> None:
        self.baseline = baseline
        self.current = baseline
        self.peak = baseline
        self._mode = None

    def __enter__(self) -> "TensorMemory":
        import weakref

        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves
        from torch.utils.weak import WeakIdKeyDictionary

        tracker = self
        live = WeakIdKeyDictionary()

        def freed(n: int) -> None:
            tracker.current -= n

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                # a view or an in-place result shares an input's storage: nothing new was allocated
                inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.device.type != "meta":
                        st = t.untyped_storage()
                        if id(st) in inputs or st in live:
                            continue
                        n = st.nbytes()
                        live[st] = n
                        weakref.finalize(st, freed, n)
                        tracker.current += n
                        if tracker.current > tracker.peak:
                            tracker.peak = tracker.current
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self._mode = None

"""Bit-identical numbers on every x86-64 machine: pinned CPU code paths, fixed threads, deterministic algorithms.

A float sum rounds differently when it is split differently, and three libraries under torch choose how to split it
from the CPU they find: ATen's vectorised kernels (AVX2 or AVX-512 lanes; also torch's random normal fill, so even a
model's random initialisation changes), MKL's GEMM (a branch per CPU generation and vendor; on AMD its `AVX2` branch
is not honoured and only `COMPATIBLE` is), and oneDNN's JIT kernels (up to the newest ISA). The number of threads
splits reductions too. Each library reads its variable once, when it first loads or first runs, so the variables
below are set when `emorl_lib` is imported (`emorl_lib/__init__.py`), before torch, in every process that imports
the kit first: the CLI, the notebooks (their first import is the kit), the runner's papermill kernels (which also
inherit the runner's environment) and worker processes. A variable already set is kept (a user may override it)
and reported, since the numbers may then differ from the golden tables.

Sources: ATen reads `ATEN_CPU_CAPABILITY` (aten/src/ATen/native/DispatchStub.cpp; values default, avx2, avx512);
oneMKL's conditional numerical reproducibility, `MKL_CBWR` with a fixed thread count and `MKL_DYNAMIC=FALSE`
(oneMKL developer guide, "Reproducibility Conditions"; `COMPATIBLE` is the branch meant to agree across Intel and
non-Intel CPUs); oneDNN's `ONEDNN_MAX_CPU_ISA` ("CPU Dispatcher Control"). Check what a process got with
`python -m emorl_lib.infra.determinism` (it prints torch's capability and runs a probe under MKL/oneDNN verbose).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

from .config import setting

# The pinned environment: one place. Values are what every machine can run (x86-64 with AVX2 and FMA: Intel since
# 2013, AMD since 2015), so the default profile's numbers do not depend on the CPU that made them.
CPU_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",   # torch's own kernels: AVX2 lanes even on AVX-512 CPUs
    "MKL_CBWR": "COMPATIBLE",        # MKL's branch that is the same on Intel and AMD (AVX2 is ignored on AMD)
    "MKL_DYNAMIC": "FALSE",          # MKL may not change its thread count at run time
    "OMP_DYNAMIC": "FALSE",          # nor may OpenMP
    "ONEDNN_MAX_CPU_ISA": "AVX2",    # oneDNN's JIT kernels: at most AVX2
}
# Deterministic CUDA matmuls (cuBLAS reads it when a handle is created); harmless on the CPU.
GPU_ENV: dict[str, str] = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
# Set for child processes the kit starts (notebook kernels): Python's string hashing, hence set iteration order.
CHILD_ENV: dict[str, str] = {"PYTHONHASHSEED": "0"}
# Thread variables for child processes; their value is the profile's runtime.threads.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# ATen's capability names as torch.backends.cpu.get_cpu_capability() reports them.
_ATEN_REPORTED = {"avx2": "AVX2", "avx512": "AVX512", "default": "DEFAULT"}

_applied: dict[str, str] = {}  # what pin_cpu_env set or found, for the report


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pinnable() -> tuple[bool, str]:
    """Whether this machine can run the pinned paths: x86-64 with AVX2 and FMA (else, why not)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return False, f"{machine} is not x86-64: MKL and ATen's AVX2 kernels do not exist here"
    flags = cpu_flags()
    if flags and not {"avx2", "fma"} <= flags:
        return False, "this CPU lacks AVX2/FMA"
    return True, ""


def pin_cpu_env(environ: dict | None = None) -> dict[str, str]:
    """Set the pinned variables where unset (`os.environ` by default); returns the ones that differ from the pins.

    Runs at `import emorl_lib`. On a machine that cannot run AVX2 nothing is pinned (forcing it would crash with an
    illegal instruction) and the kit says its numbers will not match the golden tables bit for bit."""
    env = os.environ if environ is None else environ
    ok, why = pinnable()
    pins = {**(CPU_ENV if ok else {}), **GPU_ENV}
    differ = {}
    for k, v in pins.items():
        have = env.setdefault(k, v)
        if have != v:
            differ[k] = have
    if environ is None:
        _applied.update({k: env[k] for k in pins})
        if not ok:
            _applied["unpinned"] = why
    return differ


def torch_loaded_before() -> bool:
    return "torch" in sys.modules


def check(log=None) -> list[str]:
    """Problems with the pinned state of this process, each as a sentence (empty: all honoured). Logged as
    warnings when `log` is given. Called once torch is in use (training, evaluation)."""
    problems = []
    ok, why = pinnable()
    if not ok:
        problems.append(f"CPU paths not pinned: {why}; numbers may differ from the golden tables")
    for k, v in {**(CPU_ENV if ok else {})}.items():
        if os.environ.get(k) != v:
            problems.append(f"{k}={os.environ.get(k)!r} (the kit pins {v!r}): numbers may differ from other machines")
    if ok and "torch" in sys.modules:
        import torch

        want = _ATEN_REPORTED.get(os.environ.get("ATEN_CPU_CAPABILITY", ""), None)
        got = torch.backends.cpu.get_cpu_capability()
        if want and got != want:
            problems.append(f"torch runs its {got} kernels, not {want}: torch was loaded before emorl_lib set "
                            "ATEN_CPU_CAPABILITY (import emorl_lib first, or export the variables)")
    if log is not None:
        for p in problems:
            log.warning("determinism: %s", p)
    return problems


# ---------------------------------------------------------------------------------------------------------------
# The profile's `runtime` section
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class RuntimeConfig:
    """The `runtime` section: how a process computes. It changes the bits of every number, so every stage's
    fingerprint includes it."""

    threads: int = setting(1, "kit", "torch/OpenMP/MKL threads: a fixed count, so reductions split the same way on "
                                     "every machine (softmax backward's bits change with it)")
    deterministic_algorithms: bool = setting(True, "kit", "torch.use_deterministic_algorithms (warn_only)")
    onednn: bool = setting(False, "kit", "torch's oneDNN kernels (1-d convolution, GELU) pick their blocking per CPU; "
                                         "off, those ops run ATen's pinned kernels and MKL's GEMM")

    def __post_init__(self) -> None:
        if int(self.threads) < 1:
            raise ValueError(f"runtime.threads must be >= 1, not {self.threads}")


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a child process (a notebook kernel) that should compute with `threads` threads."""
    return {**{v: str(threads) for v in THREAD_VARS}, **CHILD_ENV}


def kernel_env(threads: int = 1) -> dict[str, str]:
    """The environment a Jupyter kernel spec (kernel.json's "env") should carry so that a notebook opened by hand
    computes exactly as the runner's kernels do (`python -m emorl_lib.infra.cpu_probe --kernel-env`)."""
    ok, _ = pinnable()
    return {**(CPU_ENV if ok else {}), **GPU_ENV, **thread_env(threads)}


def apply_runtime(cfg: RuntimeConfig, log=None) -> RuntimeConfig:
    """Threads, deterministic algorithms and oneDNN for this process.

    Torch is configured only where it is already imported (training, evaluation); elsewhere (data preparation,
    whose workers fork) only the thread variables are set, which torch reads when it loads."""
    for v in THREAD_VARS:
        os.environ[v] = str(cfg.threads)  # children (workers, subprocesses) and a torch loaded later get the same
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != cfg.threads:
            torch.set_num_threads(cfg.threads)
        # warn_only: an op without a deterministic implementation warns instead of stopping a run (on the CPU none
        # of the kit's training ops does; on CUDA some scatter/index kernels may).
        torch.use_deterministic_algorithms(cfg.deterministic_algorithms, warn_only=True)
        torch.backends.mkldnn.enabled = cfg.onednn
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = cfg.deterministic_algorithms
    check(log)
    return cfg


def describe() -> dict[str, Any]:
    """What this process runs with: the pins, the CPU, torch's capability and threads (for reports)."""
    out: dict[str, Any] = {"machine": platform.machine(), "pinnable": pinnable()[0],
                           "cpu_avx512": any(f.startswith("avx512") for f in cpu_flags()),
                           "env": {k: os.environ.get(k) for k in (*CPU_ENV, *GPU_ENV, *THREAD_VARS)}}
    if "torch" in sys.modules:
        import torch

        out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_threads"] = torch.get_num_threads()
        out["torch_onednn"] = torch.backends.mkldnn.enabled
    return out

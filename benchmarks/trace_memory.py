"""Run one `emorl` command with GPU memory sampled over time, and record its wall time and peaks.

    .venv/bin/python benchmarks/trace_memory.py --csv mem_grpo.csv -- grpo --profile gpu-smoke

The command runs in this process (the same `emorl_lib.cli.main` the `emorl` script calls) while a thread samples
torch's allocated and reserved GPU memory every --interval seconds into --csv (`perf.GPUMemorySampler`). One row
(command, exit code, wall seconds, peak allocated/reserved, machine, package versions) is appended to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from emorl_lib.infra.paths import repo_root


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: trace_memory.py [--csv FILE] [--interval S] [--out CSV] -- <emorl arguments>")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", default="memory_trace.csv", help="where the samples go")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(repo_root() / "results" / "benchmarks" / "commands.csv"))
    a = ap.parse_args(argv[:cut])
    command = argv[cut + 1:]

    import torch

    from emorl_lib.cli import main as emorl
    from emorl_lib.infra.perf import (
        GPUMemorySampler,
        append_benchmark_row,
        machine_description,
        package_versions,
        peak_memory,
        reset_peak_memory,
    )

    reset_peak_memory()
    t0 = time.perf_counter()
    with GPUMemorySampler(Path(a.csv), a.interval) as sampler:
        sampler.label = command[0] if command else ""
        try:
            rc = emorl(command)
        except SystemExit as e:
            rc = int(e.code or 0) if not isinstance(e.code, str) else 1
    wall = time.perf_counter() - t0
    row = {"machine": machine_description(), "versions": package_versions(), "tag": a.tag,
           "command": "emorl " + " ".join(command), "exit_code": rc, "wall_s": wall, "memory_trace": Path(a.csv).name,
           **peak_memory()}
    if torch.cuda.is_available():
        row.update({"gpu_allocated_peak_gib": row["gpu_allocated_peak_mib"] / 1024,
                    "gpu_reserved_peak_gib": row["gpu_reserved_peak_mib"] / 1024})
    append_benchmark_row(Path(a.out), row)
    alloc, res = row.get("gpu_allocated_peak_mib", 0) / 1024, row.get("gpu_reserved_peak_mib", 0) / 1024
    print(f"emorl {' '.join(command)}: exit {rc}, {wall:.1f} s, peak GPU allocated {alloc:.2f} GiB reserved "
          f"{res:.2f} GiB; trace {a.csv}; row appended to {a.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

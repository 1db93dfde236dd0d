"""Training in several processes (`accelerate launch`, `torchrun`): what the kit does so that a launch of N processes
is one data-parallel run and not N runs that overwrite each other's files.

- On GPUs, each process takes its own GPU (`backbones.load_model`) and accelerate wraps the model in DDP (NCCL).
- Without a GPU, accelerate 1.15 makes processes started by torchrun (`accelerate launch --multi_gpu`) a
  data-parallel group over gloo only when told they are on the CPU (`PartialState(cpu=True)`, `ACCELERATE_USE_CPU`);
  otherwise each process trains ALONE on the whole data set, silently. The kit sets `use_cpu` on the trainer's
  config when it sees several processes and no GPU (`cpu_processes`).
- accelerate's `--cpu` launcher starts ONE process unless it runs under `mpirun` (`--mpirun_hostfile`), whatever
  `--num_processes` says: `check_launch` refuses that launch with the command that works.
- Files shared by the ranks (checkpoint folder, settings stamp, final adapter, CSV log) are written by the main
  process only, the others waiting for it (`main_process_writes`).
- `check_world_size` refuses a trainer whose world size is not the launcher's.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from ..infra.log import get_logger

log = get_logger(__name__)

# The variables a launcher sets for the size of the job: torchrun (WORLD_SIZE) and the MPI implementations accelerate
# reads (accelerate.state.PartialState._prepare_backend).
_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    """How many processes the launcher started (1 outside a launcher)."""
    for var in _WORLD_SIZE_VARS:
        value = os.environ.get(var)
        if value:
            return int(value)
    return 1


def cpu_processes() -> bool:
    """Several processes and no GPU: the data-parallel group must be told it runs on the CPU (gloo)."""
    import torch

    return launched_world_size() > 1 and not torch.cuda.is_available()


def check_launch() -> None:
    """accelerate's `--cpu` launcher with `--num_processes N > 1` and no MPI starts one process (it sets
    MASTER_PORT, ACCELERATE_USE_CPU and nothing else): N were asked for, one would train. Refuse it."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if use_cpu and os.environ.get("MASTER_PORT") and not any(os.environ.get(v) for v in _WORLD_SIZE_VARS):
        raise RuntimeError(
            "`accelerate launch --cpu --num_processes N` starts ONE process unless it runs under mpirun; for N CPU "
            "processes use `accelerate launch --multi_gpu --num_processes N -m emorl_lib.cli ...` (torchrun: the kit "
            "trains on the CPU over gloo when there is no GPU), or --num_processes 1")


def distributed_state():
    """accelerate's process state (the one the trainers' configs set up; created here if none exists yet)."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_processes())


@contextmanager
def main_process_writes() -> Iterator[bool]:
    """`with main_process_writes() as writer: if writer: ...`: the block's file writes happen in the main process
    only; every process waits at the end until they are done, so no rank reads a folder being replaced."""
    state = distributed_state()
    try:
        yield state.is_main_process
    finally:
        state.wait_for_everyone()


def check_world_size(trainer) -> None:
    """A trainer that is not data-parallel across the launched processes would train each rank alone and write the
    same files from every rank: refuse it before the first step."""
    launched = launched_world_size()
    if trainer.args.world_size != launched:
        raise RuntimeError(
            f"{launched} processes were launched but the trainer runs with world size {trainer.args.world_size}: "
            "each process would train alone on the whole data set (on a machine without a GPU, launch with "
            "`accelerate launch --multi_gpu --num_processes N`)")
    if launched > 1:
        log.info("data-parallel over %d processes (%s, backend %s)", launched, trainer.args.parallel_mode.value,
                 trainer.accelerator.state.backend)

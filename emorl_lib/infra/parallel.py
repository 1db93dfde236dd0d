"""Independent jobs (training runs of one stage, evaluation of several models) side by side in worker processes.

On a small CPU machine the tiny model's steps are too small for torch's intra-op threads to help much, while two
runs in two single-threaded processes use two cores fully. Each job is a call `fn(*args)` of a module-level
function; a job's result does not depend on the others or on which worker ran it (each run seeds itself), so a
parallel stage trains exactly what a serial one with the same thread count would. `workers <= 1` runs the jobs
in this process, one after another.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from .log import get_logger

log = get_logger(__name__)


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple], workers: int = 1, threads: int = 1) -> list[Any]:
    """[fn(*job) for job in jobs], in order; in `workers` spawned processes (each with `threads` torch threads)
    when workers > 1 and there is more than one job. The first failure is raised after the others finish."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    n = min(workers, len(jobs))
    log.info("running %d jobs in %d worker processes (%d torch thread(s) each)", len(jobs), n, threads)
    ctx = multiprocessing.get_context("spawn")  # fork would copy a process that may hold torch threads
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e
    return [f.result() for f in futures]

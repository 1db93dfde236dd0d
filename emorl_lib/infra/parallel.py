"""Independent jobs side by side in worker processes: whole runs (training runs of one stage, evaluation of several
models: `run_jobs`, spawned, one torch thread each) and many small ones (decoding clips, describing them:
`imap_progress`, forked, with a progress bar).

On a small CPU machine the tiny model's steps are too small for torch's intra-op threads to help much, while two
runs in two single-threaded processes use two cores fully. Each job is a call `fn(*args)` of a module-level
function; a job's result does not depend on the others or on which worker ran it (each run seeds itself), so a
parallel stage trains exactly what a serial one with the same thread count would. `workers <= 1` runs the jobs
in this process, one after another.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from .log import get_logger
from .progress import PROGRESS_ENV

log = get_logger(__name__)


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ[PROGRESS_ENV] = "lines"  # workers side by side: progress as whole lines, never two bars on one line
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


def fork_context():
    """fork where it is cheap and safe (Linux: the small jobs' workers run numpy, soundfile, PyAV, openSMILE, never
    torch); elsewhere the platform's default."""
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else multiprocessing.get_context()


def ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent (which stops the pool and says where it stopped), so the terminal
    shows one line, not a traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def imap_progress(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int, desc: str, unit: str = "clip",
                  progress: bool = True, serial_below: int = 2) -> list[Any]:
    """[fn(job) for job in jobs] in completion order, with one progress bar; in `workers` forked processes unless
    there is one worker or fewer than `serial_below` jobs."""
    from .progress import bar as progress_bar

    bar = progress_bar(len(jobs), desc, unit, disable=not progress)
    out: list[Any] = []
    try:
        if workers <= 1 or len(jobs) < serial_below:
            for j in jobs:
                out.append(fn(j))
                bar.update()
        else:
            with fork_context().Pool(workers, initializer=ignore_sigint) as pool:
                for r in pool.imap_unordered(fn, jobs, chunksize=4):
                    out.append(r)
                    bar.update()
    finally:
        bar.close()
    return out

"""Progress a person can follow: where a long command is, and its progress bars.

- Where: the stages say where they are with `at(...)` as they go (training step, utterance, corpus); the command
  line and the notebook runner catch KeyboardInterrupt and print `interrupted_line(...)`, one line saying where it
  stopped and how to go on, instead of a traceback.
- Bars: `bar(...)`, the one way the kit shows progress. In a terminal it is a tqdm bar, in JupyterLab a widget;
  where neither would read well (`lines_mode`: notebooks run by the runner, worker processes training side by side,
  logs and CI) it is a `LineBar`: a few whole lines (a text bar at fixed milestones), so that runs side by side stay
  readable and an executed notebook holds no wall of carriage returns.

Nothing here changes what runs.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

# "lines": progress as whole lines (set by the notebook runner for its kernels and by worker pools for their
# workers); "bars": tqdm bars even where the output is not a terminal.
PROGRESS_ENV = "EMORL_PROGRESS"

INTERRUPTED_EXIT = 130  # what a shell reports for a command ended by SIGINT (128 + 2)


@dataclass
class Position:
    where: str = ""       # e.g. "at step 37 of 60 of meld_grpo_eswr_ESR (last checkpoint: step 30)"
    resume: str = ""      # e.g. "run the same command again to resume from the last checkpoint"


_now = Position()


def at(where: str, resume: str | None = None) -> None:
    """Record where the running stage is (and, when it changes, how to pick up after an interruption)."""
    _now.where = where
    if resume is not None:
        _now.resume = resume


def clear() -> None:
    _now.where = _now.resume = ""


def current() -> Position:
    return Position(_now.where, _now.resume)


def interrupted_line(prefix: str, default_resume: str = "run the same command again to resume") -> str:
    """`<prefix>: interrupted <where>; <how to resume>`: one line."""
    where = f" {_now.where}" if _now.where else ""
    return f"{prefix}: interrupted{where}; {_now.resume or default_resume}"


def close_bars() -> None:
    """Close progress bars left open by the interruption, so the line printed next starts on a line of its own
    (an open bar would also redraw itself after it)."""
    try:
        from tqdm import auto, std
    except ImportError:
        return
    for cls in {std.tqdm, auto.tqdm}:
        for bar in list(getattr(cls, "_instances", ())):
            try:
                bar.close()
            except Exception:  # a bar half torn down by the interruption: nothing to redraw
                pass


# ---- bars ----------------------------------------------------------------------------------------------------------
def lines_mode() -> bool:
    """Whether progress goes out as whole lines: asked for (EMORL_PROGRESS=lines: the runner's kernels, worker
    processes), or output that is neither a terminal nor a notebook (a log file, CI)."""
    mode = os.environ.get(PROGRESS_ENV, "")
    if mode in ("lines", "bars"):
        return mode == "lines"
    if "ipykernel" in sys.modules:
        return False
    return not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


def duration(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


class LineBar:
    """A progress bar as whole lines: `desc [####------] n/total, elapsed, ~remaining, postfix` when a milestone
    (a fraction of the total) is passed, through a callback (the kit's logger). Same calls as a tqdm bar."""

    def __init__(self, total: int, desc: str = "", unit: str = "it", initial: int = 0, disable: bool = False,
                 milestones: tuple[float, ...] = (), emit=None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.disable = disable or not total
        self.milestones = sorted(m for m in milestones if initial < m * total)
        self.postfix: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self.start = initial
        self.emit = emit or (lambda line: print(line, file=sys.stdout, flush=True))

    def text(self) -> str:
        done = self.n / self.total if self.total else 1.0
        width = 20
        filled = int(round(done * width))
        elapsed = time.monotonic() - self.t0
        rate = (self.n - self.start) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.n) / rate if rate > 0 else float("nan")
        post = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        eta = f", ~{duration(left)} left" if left == left and self.n < self.total else ""
        return (f"{self.desc} [{'#' * filled}{'-' * (width - filled)}] {self.n}/{self.total} {self.unit}, "
                f"{duration(elapsed)}{eta}" + (f"; {post}" if post else ""))

    def update(self, k: int = 1) -> None:
        self.n += k
        passed = [m for m in self.milestones if self.n >= m * self.total]
        if passed and not self.disable:
            self.milestones = [m for m in self.milestones if m not in passed]
            self.emit(self.text())

    def set_postfix(self, values: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(values or {}), **kwargs}

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.milestones = []


def bar(total: int, desc: str = "", unit: str = "it", initial: int = 0, disable: bool = False, leave: bool = False,
        milestones: tuple[float, ...] = (), emit=None):
    """The kit's progress bar (see the module docstring): a tqdm bar, or in lines mode a `LineBar` that emits a line at
    each of `milestones` (none: silent; the stage says what it did in its own summary line)."""
    if lines_mode():
        return LineBar(total, desc, unit, initial, disable, milestones, emit)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable or not total, leave=leave,
                dynamic_ncols=True)

"""Where a long command is, so that Ctrl-C ends it with one line (where it stopped, how to go on) instead of a
traceback.

The stages say where they are with `at(...)` as they go (training step, utterance, corpus); the command line and
the notebook runner catch KeyboardInterrupt and print `interrupted_line(...)`. Nothing here changes what runs.
"""

from __future__ import annotations

from dataclasses import dataclass

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

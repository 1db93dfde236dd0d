"""Logging: one line per event through the standard `logging` module, from the main process only by default.

Under `accelerate launch` every process runs the same code; like `accelerate.logging.get_logger`, a record is emitted
by the main process unless the call says `main_process_only=False`. The main process is accelerate's when its state
exists, else rank 0 by the launcher's environment (`RANK`), else this process.

Like transformers, the kit's logger has its own handler (INFO to stdout, so notebooks show it as plain output;
warnings and errors to stderr);
`EMORL_LOG_LEVEL=WARNING` quiets it, and an application that configures logging itself can remove it.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "emorl_lib"
_FORMAT = "[%(short)s] %(message)s"


def is_main_process() -> bool:
    try:
        from accelerate.state import PartialState

        if PartialState._shared_state:
            return PartialState().is_main_process
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0") or 0) == 0


class _ShortName(logging.Filter):
    """`emorl_lib.training.grpo` -> `grpo`: the module says where a line comes from, briefly."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.short = record.name.rsplit(".", 1)[-1]
        return True


class _StdHandler(logging.StreamHandler):
    """INFO and below to stdout, WARNING and above to stderr, each as it is at the time (a notebook kernel or a test
    may have replaced them)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        super().emit(record)


def _configure_root() -> logging.Logger:
    root = logging.getLogger(ROOT)
    if not getattr(root, "_emorl_configured", False):
        handler = _StdHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(_ShortName())
        root.addHandler(handler)
        root.setLevel(os.environ.get("EMORL_LOG_LEVEL", "INFO").upper())
        root.propagate = False
        root._emorl_configured = True  # type: ignore[attr-defined]
    return root


class MainProcessLogger(logging.LoggerAdapter):
    """A logger whose records come from the main process only, unless `main_process_only=False`."""

    def log(self, level: int, msg: object, *args, main_process_only: bool = True, **kwargs) -> None:  # type: ignore[override]
        if self.isEnabledFor(level) and (not main_process_only or is_main_process()):
            kwargs.setdefault("stacklevel", 2)
            self.logger.log(level, msg, *args, **kwargs)

    def process(self, msg, kwargs):
        return msg, kwargs


def get_logger(name: str) -> MainProcessLogger:
    _configure_root()
    return MainProcessLogger(logging.getLogger(name), {})

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
import warnings

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
    """The kit's logger for module `name`. A module run as a program (`python -m emorl_lib.runner`) is named
    `__main__`, outside the kit's logger and its handler: it gets its own module name, so its lines show however it
    is started."""
    if name == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        name = spec.name if spec is not None and spec.name.startswith(ROOT) else ROOT
    _configure_root()
    return MainProcessLogger(logging.getLogger(name), {})


# Warnings known to be harmless in this exact stack, each silenced by a filter on its own message (and the module that
# issues it), so that any other warning still shows. docs/pitfalls.md ("Warnings the kit silences") says why each is
# harmless; tests/test_foundation.py keeps the two lists equal.
KNOWN_HARMLESS: tuple[tuple[str, type[Warning], str], ...] = (
    # transformers 5.23 deprecates the property that TRL 1.16 and peft 0.21 still read at every model load
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils"),
    (r"`gradient_checkpointing_enable` is deprecated", FutureWarning, r"transformers\.modeling_utils"),
)


def quiet_known_warnings() -> None:
    """Install the KNOWN_HARMLESS filters (at `import emorl_lib`, in every process that imports the kit)."""
    for message, category, module in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)

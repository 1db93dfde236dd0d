"""emorl-kit: reproducibility kit for EMO-RL (Li et al., Findings of EMNLP 2025, arXiv 2509.15654).

Heavy dependencies (torch, transformers, trl) are imported by the submodules that need them, so that
`import emorl_lib` and the light modules (labels, rewards, metrics) stay fast.

Importing the kit first pins the CPU code paths torch, MKL and oneDNN will use (infra/determinism.py) and moves
numba's cache out of the .venv (infra/numba_cache.py): those libraries read their variables when they load, so this
must happen before they are imported.
"""

from .infra import determinism as _determinism
from .infra import log as _log
from .infra import numba_cache as _numba_cache

_determinism.pin_cpu_env()
_log.quiet_known_warnings()  # each harmless warning of the pinned stack, by its message (docs/pitfalls.md)
_numba_cache.pin_cache_dir()  # librosa's numba cache in the kit's cache folder, not the .venv
if _determinism.torch_loaded_before():  # too late for the pins to take effect if torch already ran its kernels
    from .infra.log import get_logger as _get_logger

    _determinism.check(_get_logger(__name__))

__version__ = "0.1.0"

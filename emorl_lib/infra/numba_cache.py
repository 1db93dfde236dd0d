"""librosa's numba-compiled functions, cached on disk so that concurrent first use can never poison the cache.

numba caches compiled code on disk (`cache=True`); librosa compiles several functions eagerly, for several type
signatures, when its modules load, and more on first call. Two processes starting on an empty cache both compile
and both write, with no lock and last writer wins, file by file: a gufunc's kernel can end up written by one
process and its wrapper (which refers to the kernel's process-specific symbols) by the other, and every later
process that loads that pair crashes. Reproduced: two processes started together (`onset_detect` and `yin`) left
a cache that segfaulted every later load in 5 rounds of 8; locking each cache file separately was not enough
(1 poisoned round in 3 with three processes), because the kernel and its wrapper live in different files.

So only one process at a time writes, and it writes everything it compiles from one consistent set:
(1) the kit's numba cache is its own folder, not the `.venv` (NUMBA_CACHE_DIR, set at `import emorl_lib` unless
the user set it); (2) `librosa()` imports librosa and compiles the functions the kit uses (`warm_up`) while holding
an exclusive lock on that folder, the only time the process may write to the cache; a second process waits, then
loads what the first wrote; (3) anything compiled later (another signature, another function) is compiled in memory
and never written. Forked workers inherit the compiled code from their parent and compile nothing.

The kit's own stages no longer call librosa (the descriptors come from openSMILE), but librosa stays installed and
the tests and users call it: import it through `librosa()` wherever several processes may start together.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator

from .io import file_lock
from .paths import repo_root

_installed = False


def default_cache_dir() -> Path:
    """<kit>/cache/numba (beside the kit's other caches; removed with them)."""
    return repo_root() / "cache" / "numba"


def pin_cache_dir(environ: dict | None = None) -> str:
    """Point numba's cache at the kit's folder unless NUMBA_CACHE_DIR is set; numba reads it when it loads."""
    env = os.environ if environ is None else environ
    return env.setdefault("NUMBA_CACHE_DIR", str(default_cache_dir()))


_writes_allowed = False


def install_lock() -> None:
    """Let numba write its cache only inside `compiling()` (the warm-up, under the folder's lock)."""
    global _installed
    if _installed:
        return
    from numba.core import caching

    cls = caching.IndexDataCacheFile
    save = cls.save

    def guarded_save(self, key, data):
        if _writes_allowed:
            return save(self, key, data)
        return None  # compiled outside the warm-up: kept in memory only

    guarded_save.__wrapped__ = save  # type: ignore[attr-defined]
    cls.save = guarded_save
    _installed = True


def cache_dir() -> Path:
    return Path(pin_cache_dir())


@contextmanager
def compiling() -> Iterator[None]:
    """The only window in which this process writes numba's cache: exclusive over the cache folder."""
    global _writes_allowed
    install_lock()
    with file_lock(cache_dir() / ".emorl-compile.lock"):
        _writes_allowed = True
        try:
            yield
        finally:
            _writes_allowed = False


def librosa() -> ModuleType:
    """librosa, imported (and its kit functions compiled or loaded) under the cache folder's lock."""
    if "librosa" in sys.modules and _installed:
        return sys.modules["librosa"]
    warm_up()
    return sys.modules["librosa"]


_warmed: set[str] = set()


def warm_up(f0_methods: tuple[str, ...] = ("yin",)) -> None:
    """Compile (or load) the numba code the kit runs, in this process, before any worker starts; the results are
    written to the cache by this process alone (`compiling`)."""
    todo = [m for m in f0_methods if m not in _warmed]
    if todo == [] and "librosa" in sys.modules and _installed:
        return
    import numpy as np

    with compiling():
        import librosa as lr

        sr = 16000
        y = (0.3 * np.sin(2 * np.pi * 150 * np.arange(sr // 2) / sr)).astype(np.float32)
        for dtype in (np.float32, np.float64):
            x = y.astype(dtype)
            if "yin" in todo:
                lr.yin(x, fmin=60.0, fmax=500.0, sr=sr, frame_length=1024, hop_length=256)
            if "pyin" in todo:
                lr.pyin(x, fmin=60.0, fmax=500.0, sr=sr, frame_length=1024, hop_length=256)
        lr.util.frame(y, frame_length=1024, hop_length=256, axis=0)
    _warmed.update(todo)

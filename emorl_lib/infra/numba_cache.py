"""librosa's numba-compiled functions, compiled and cached so that concurrent first use cannot corrupt the cache.

numba caches compiled code on disk (`cache=True`; librosa compiles several functions eagerly, for several type
signatures, when its modules load). Its cache writer reads a function's index, picks the first free data-file name
for a new signature and writes both, with no lock: two processes compiling different signatures of one function at
the same time can give two signatures the same data file, and every later process that loads the cache then runs
machine code compiled for the other signature and crashes (reproduced: two processes started together on an empty
cache, `onset_detect` and `yin`, left a cache that segfaults every later load in 5 rounds of 8).

The kit therefore (1) keeps its numba cache in its own folder, not in the `.venv` (NUMBA_CACHE_DIR, set at
`import emorl_lib` unless the user set it), (2) serialises every cache write and read of a function behind a file lock
(`install_lock`, idempotent), so the index and its data files always agree, and (3) compiles what its workers use in
the parent before a pool starts (`warm_up`): forked workers inherit the compiled code and compile nothing.
Use `librosa()` to import librosa the safe way.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

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


def install_lock() -> None:
    """Wrap numba's cache-file save and load in an exclusive / shared lock on `<index>.lock`."""
    global _installed
    if _installed:
        return
    from numba.core import caching

    cls = caching.IndexDataCacheFile
    save, load = cls.save, cls.load

    def locked_save(self, key, data):
        with file_lock(Path(self._index_path + ".lock")):
            return save(self, key, data)  # re-reads the index under the lock, so it sees the other writers' names

    def locked_load(self, key):
        with file_lock(Path(self._index_path + ".lock"), shared=True):
            return load(self, key)

    locked_save.__wrapped__, locked_load.__wrapped__ = save, load  # type: ignore[attr-defined]
    cls.save, cls.load = locked_save, locked_load
    _installed = True


def librosa() -> ModuleType:
    """librosa, imported after the cache lock is in place (its eager compilations are then safe)."""
    pin_cache_dir()
    install_lock()
    import librosa as lr

    return lr


def warm_up(f0_methods: tuple[str, ...] = ("yin",)) -> None:
    """Compile (or load) the numba code the descriptor workers run, in this process, before they start."""
    import numpy as np

    lr = librosa()
    sr = 16000
    y = (0.3 * np.sin(2 * np.pi * 150 * np.arange(sr // 2) / sr)).astype(np.float32)
    for dtype in (np.float32, np.float64):
        x = y.astype(dtype)
        if "yin" in f0_methods:
            lr.yin(x, fmin=60.0, fmax=500.0, sr=sr, frame_length=1024, hop_length=256)
        if "pyin" in f0_methods:
            lr.pyin(x, fmin=60.0, fmax=500.0, sr=sr, frame_length=1024, hop_length=256)
    lr.util.frame(y, frame_length=1024, hop_length=256, axis=0)

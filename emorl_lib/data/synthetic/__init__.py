"""Synthetic mini corpora in the real on-disk layouts (docs/corpora.md), for tests and the default
profile: the loaders a user runs on the real downloads run unchanged on these.

    generate("iemocap", dest)  -> dest/IEMOCAP_full_release
    generate("meld", dest)     -> dest/MELD.Raw
    generate("ravdess", dest)  -> dest/Audio_Speech_Actors_01-24
    generate("savee", dest)    -> dest/SAVEE   (original AudioData/ layout; flat re-upload copy in dest/SAVEE_flat)

Each corpus is written into a temp folder and renamed into place when complete; a stamp
(dest/.<root>.stamp.json: seed, size, generator version, counts) makes a second call with the same arguments
return at once, and different arguments regenerate. Audio is deterministic by seed (byte-identical wavs).
The emotion cues are in `voice` (one table per emotion, one per cue); which EmoBox track-2 entries exist at a
given size is `track2.track2_included(corpus, size)`.

`generate_all` takes one size for every corpus or a mapping {corpus: size} (`..sizes`: corpora not named get
DEFAULT_SIZE).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from ...infra.io import atomic_write_text, file_lock
from ..sizes import CORPORA, DEFAULT_SIZE, Sizes, check_sizes, size_of
from . import iemocap, meld, ravdess, savee
from .clips import default_workers
from .track2 import track2_included

__all__ = ["generate", "generate_all", "CORPORA", "ROOT_NAMES", "GENERATOR_VERSION", "track2_included",
           "savee_flat_root", "Sizes", "DEFAULT_SIZE", "size_of", "check_sizes"]

GENERATOR_VERSION = "2"
ROOT_NAMES: dict[str, str] = {"iemocap": iemocap.ROOT_NAME, "meld": meld.ROOT_NAME, "ravdess": ravdess.ROOT_NAME,
                              "savee": savee.ROOT_NAME}


def savee_flat_root(dest: Path) -> Path:
    """Where generate("savee", dest) puts the flat re-upload layout (ALL/{SPK}_{code}NN.wav)."""
    return Path(dest) / savee.FLAT_NAME


def _stamp_path(dest: Path, corpus: str) -> Path:
    return dest / f".{ROOT_NAMES[corpus]}.stamp.json"


def _roots(dest: Path, corpus: str) -> list[Path]:
    return [dest / ROOT_NAMES[corpus]] + ([savee_flat_root(dest)] if corpus == "savee" else [])


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def generate(corpus: str, dest: Path, seed: int = 0, size: float = 1.0, workers: int | None = None,
             force: bool = False) -> Path:
    """Write one synthetic corpus under dest and return its root, as a user's download would be passed to a loader.

    size scales the counts (1.0: the default, a few hundred utterances per corpus; all 240 track-2 entries).
    workers: rendering processes (default: up to 2). force: write it again even if a current copy exists.
    Several processes may ask at once: one writes while the others wait, then find it (a lock per corpus).
    """
    corpus = corpus.lower()
    if corpus not in ROOT_NAMES:
        raise ValueError(f"unknown corpus {corpus!r}; expected one of {CORPORA}")
    if isinstance(size, Mapping):
        raise ValueError(f"generate() writes one corpus at one size, got the mapping {dict(size)!r} "
                         "(generate_all takes a mapping)")
    check_sizes(size)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with file_lock(dest / f".{corpus}.lock"):
        return _generate_locked(corpus, dest, seed, size, workers, force)


def _generate_locked(corpus: str, dest: Path, seed: int, size: float, workers: int | None, force: bool) -> Path:
    want = {"corpus": corpus, "seed": int(seed), "size": float(size), "version": GENERATOR_VERSION}
    stamp = _read_stamp(_stamp_path(dest, corpus))
    roots = _roots(dest, corpus)
    if not force and stamp and {k: stamp.get(k) for k in want} == want and all(r.is_dir() for r in roots):
        return roots[0]

    workers = default_workers() if workers is None else workers
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".tmp-{corpus}-"))
    try:
        tmp_roots = [tmp / r.name for r in roots]
        for r in tmp_roots:
            r.mkdir()
        if corpus == "iemocap":
            counts = iemocap.write(tmp_roots[0], seed, size, workers)
        elif corpus == "meld":
            counts = meld.write(tmp_roots[0], seed, size, workers)
        elif corpus == "ravdess":
            counts = ravdess.write(tmp_roots[0], seed, size, workers)
        else:
            counts = savee.write(tmp_roots[0], tmp_roots[1], seed, size, workers)
        counts["track2_included"] = len(track2_included(corpus, size))
        # Swap in: the stamp goes first and comes back last, so a crash in between is seen as "not generated".
        _stamp_path(dest, corpus).unlink(missing_ok=True)
        for new, old in zip(tmp_roots, roots):
            if old.exists():
                shutil.rmtree(old)
            new.rename(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = round(time.perf_counter() - t0, 2)
    atomic_write_text(_stamp_path(dest, corpus), json.dumps({**want, "counts": counts, "seconds": seconds}, indent=1))
    return roots[0]


def generate_all(dest: Path, seed: int = 0, size: Sizes = 1.0, corpora: tuple[str, ...] = CORPORA,
                 workers: int | None = None, force: bool = False) -> dict[str, Path]:
    """generate() each corpus at its size (`size`: one number, or {corpus: size}, see `size_of`); corpus -> root.
    Each corpus's stamp holds its own size, so a corpus is regenerated only when its own size changes."""
    check_sizes(size)
    return {c: generate(c, dest, seed=seed, size=size_of(size, c), workers=workers, force=force) for c in corpora}

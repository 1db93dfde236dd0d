"""The environment lock (requirements-py3XX.lock) and how an installed environment differs from it.

scripts/lock.sh writes one lock per supported Python with uv; scripts/bootstrap.sh installs exactly it into .venv,
then calls `python -m emorl_lib.infra.envlock prune` and `check`; tests/test_environment.py fails on any difference.
Outside the lock, and allowed in the environment: what the lock file itself lists as excluded from its output (torch
and the CUDA runtime torch brings on Linux), the installer (pip, which comes with the venv's Python) and the kit.
Standard library (and packaging where present) only: bootstrap runs it right after installing the lock.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .log import get_logger
from .paths import REPO_ROOT

log = get_logger("emorl_lib.infra.envlock")  # not __name__: `python -m` makes it __main__
KIT = "emorl-kit"
INSTALLER = ("pip",)  # from the venv's Python (ensurepip), not from the lock
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_EXCLUDED_HEADER = "# The following packages were excluded from the output:"


def normalize(name: str) -> str:
    """PEP 503 name: lock files, metadata and pip spell the same project differently (PyYAML, pyyaml)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path(version: tuple[int, int] | None = None, root: Path = REPO_ROOT) -> Path:
    """The lock of a Python version (default: the running one)."""
    major, minor = version or sys.version_info[:2]
    return root / f"requirements-py{major}{minor}.lock"


@dataclass
class Lock:
    path: Path
    pins: dict[str, str]                            # normalised name -> exact version
    excluded: list[str] = field(default_factory=list)  # resolved but left out of the file (torch and its CUDA stack)


def read_lock(path: Path) -> Lock:
    """Parse a `uv pip compile` output: `name==version` lines (hash lines follow) and the excluded-packages footer."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no lock file for this Python; the kit locks "
                                f"{', '.join(sorted(p.name for p in path.parent.glob('requirements-py*.lock')))} "
                                f"(scripts/lock.sh makes them)")
    pins: dict[str, str] = {}
    excluded: list[str] = []
    in_excluded = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith(_EXCLUDED_HEADER):
            in_excluded = True
            continue
        if in_excluded:
            if line.startswith("# ") and line[2:].strip():
                excluded.append(normalize(line[2:].strip()))
            else:
                in_excluded = False
            continue
        m = _PIN.match(line)
        if m:
            name = normalize(m.group(1))
            if name in pins:
                raise ValueError(f"{path}:{n}: {name} pinned twice")
            pins[name] = m.group(2)
        elif line and not line[0].isspace() and not line.startswith("#"):
            raise ValueError(f"{path}:{n}: expected `name==version` (an exact pin), got {line!r}")
    if not pins:
        raise ValueError(f"{path}: no `name==version` lines: not a lock written by scripts/lock.sh")
    return Lock(path, pins, excluded)


def installed() -> dict[str, list[str]]:
    """Every distribution the running interpreter sees, name -> versions (two versions: a broken install)."""
    out: dict[str, list[str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(normalize(name), []).append(dist.version)
    return out


def _same_version(a: str, b: str) -> bool:
    try:
        from packaging.version import Version
    except ImportError:  # bootstrap may check before packaging is in
        return a == b
    return Version(a) == Version(b)


@dataclass
class Drift:
    missing: dict[str, str]                # locked, not installed: name -> locked version
    wrong: dict[str, tuple[str, str]]      # name -> (locked, installed)
    extra: dict[str, str]                  # installed, neither locked nor allowed outside the lock
    duplicated: dict[str, list[str]]       # installed more than once

    def __bool__(self) -> bool:
        return bool(self.missing or self.wrong or self.extra or self.duplicated)

    def report(self) -> str:
        parts = [f"missing {k}=={v}" for k, v in sorted(self.missing.items())]
        parts += [f"{k}: locked {a}, installed {b}" for k, (a, b) in sorted(self.wrong.items())]
        parts += [f"not in the lock: {k}=={v}" for k, v in sorted(self.extra.items())]
        parts += [f"installed twice: {k} {v}" for k, v in sorted(self.duplicated.items())]
        return "\n".join(parts)


def compare(lock: Lock, have: dict[str, list[str]]) -> Drift:
    """How `have` (installed()) differs from the lock; the kit, pip and the lock's excluded packages may be there."""
    allowed = {normalize(KIT), *INSTALLER, *lock.excluded}
    missing = {k: v for k, v in lock.pins.items() if k not in have}
    wrong = {k: (v, have[k][0]) for k, v in lock.pins.items()
             if k in have and len(have[k]) == 1 and not _same_version(v, have[k][0])}
    extra = {k: vs[0] for k, vs in have.items() if k not in lock.pins and k not in allowed}
    duplicated = {k: vs for k, vs in have.items() if len(vs) > 1 and k != normalize(KIT)}
    return Drift(missing, wrong, extra, duplicated)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emorl_lib.infra.envlock", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["check", "prune"],
                    help="check: list every difference, exit 1 if any; prune: uninstall what the lock does not have")
    ap.add_argument("--lock", type=Path, default=None, help="lock file (default: the running Python's)")
    a = ap.parse_args(argv)
    lock = read_lock(a.lock or lock_path())
    drift = compare(lock, installed())
    if a.action == "prune":
        if drift.extra:
            log.info("uninstalling what %s does not list: %s", lock.path.name, " ".join(sorted(drift.extra)),
                     main_process_only=False)
            subprocess.check_call([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *sorted(drift.extra)])
        return 0
    if drift:
        log.error("the environment of %s differs from %s:\n%s", sys.executable, lock.path, drift.report(),
                  main_process_only=False)
        return 1
    log.info("%s: %d packages, all as locked", lock.path.name, len(lock.pins), main_process_only=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

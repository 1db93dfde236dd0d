"""One invalidation rule: an output is current only if its settings, its inputs and the library code it runs are
unchanged.

"The library code it runs" is the static import closure of the entry points (every `import`/`from` of an
`emorl_lib` module anywhere in a file, function-level imports included, followed transitively), not the whole
library: a change to evaluation/figures.py changes the code digest of the figures stage and not the training code's.
Each digest also covers the versions of the third-party packages the numbers depend on. Used by the runner (one
fingerprint per notebook), by training (a final adapter records the code digest it was trained with) and by
evaluation (each prediction line records the adapter, settings and code that produced it). Each names its own
entry points: training the trainer config's module (training/runs.py), predictions their module
(evaluation/predictions.py).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .paths import PACKAGE_ROOT

PACKAGE = "emorl_lib"
# The packages whose versions change the numbers (a different torch rounds differently; a different trl trains
# differently). Others (plotting, notebooks) change no result the golden tables hold.
NUMERIC_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "safetensors",
                    "numpy", "scipy", "librosa", "numba", "opensmile", "soundfile", "soxr", "av", "scikit-learn",
                    "pandas")
# Package data read by code (chat template, track-2 lists): part of the digest of any closure that holds their package.
DATA_SUFFIXES = (".jsonl", ".jinja", ".json", ".txt")


def digest(obj: Any, n: int = 16) -> str:
    """sha256 of a JSON-able object (sorted keys) or of bytes/str, shortened."""
    if isinstance(obj, bytes):
        data = obj
    elif isinstance(obj, str):
        data = obj.encode()
    else:
        data = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:n]


def file_digest(path: str | Path, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


# ---- the import closure ----------------------------------------------------------------------------------------
def module_file(module: str) -> Path | None:
    """The source file of an emorl_lib module or package (None: not one of ours)."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    p = PACKAGE_ROOT.parent.joinpath(*module.split("."))
    if (p / "__init__.py").exists():
        return p / "__init__.py"
    if p.with_suffix(".py").exists():
        return p.with_suffix(".py")
    return None


def imports_of(source: str, module: str = "__main__", is_package: bool = False) -> set[str]:
    """emorl_lib modules a source text imports, anywhere in it (relative imports resolved against `module`)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if module_file(a.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if not module_file(name):
                continue
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names if module_file(f"{name}.{a.name}"))
    return out


@functools.lru_cache(maxsize=None)
def _closure(roots: tuple[str, ...], leave_out: tuple[str, ...] = ()) -> frozenset[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen or m in leave_out or module_file(m) is None:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        f = module_file(m)
        todo += imports_of(f.read_text(encoding="utf-8"), m, f.name == "__init__.py")
    return frozenset(seen)


def closure(roots: Iterable[str], leave_out: Iterable[str] = ()) -> list[str]:
    """Every emorl_lib module the roots import, transitively, sorted; `leave_out` modules are neither included nor
    followed."""
    return sorted(_closure(tuple(sorted(set(roots))), tuple(sorted(set(leave_out)))))


def notebook_imports(notebook: Path) -> set[str]:
    """emorl_lib modules a notebook's code cells import (shell and magic lines skipped)."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    src = "\n".join("".join(c.get("source", "")) for c in nb.get("cells", []) if c.get("cell_type") == "code")
    src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
    return imports_of(src)


def module_digests(roots: Iterable[str], leave_out: Iterable[str] = ()) -> dict[str, str]:
    """Relative path -> digest of every source file (and package data file) in the closure of `roots`."""
    out: dict[str, str] = {}
    mods = closure(roots, leave_out)
    for m in mods:
        f = module_file(m)
        out[f.relative_to(PACKAGE_ROOT.parent).as_posix()] = file_digest(f)
    for pkg in {m for m in mods if module_file(m).name == "__init__.py"}:
        folder = module_file(pkg).parent
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix in DATA_SUFFIXES:
                out[f.relative_to(PACKAGE_ROOT.parent).as_posix()] = file_digest(f)
    return out


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for name in NUMERIC_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def code_digest(roots: Iterable[str], leave_out: Iterable[str] = ()) -> str:
    """One digest for the code the roots run: their closure's files and the numeric packages' versions."""
    return digest({"files": module_digests(roots, leave_out), "versions": package_versions()})


def weights_digest(folder: str | Path) -> str | None:
    """The identity of a saved model or adapter: its weights and config files, not its metadata (a run's wall time
    is in emorl_run.json; two trainings to the same bits give the same digest). None when there is none."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin")
                   or p.name in ("adapter_config.json", "config.json"))
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        return None
    return digest({p.name: file_digest(p) for p in files})


def changed(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Keys whose value differs, appeared or disappeared (sorted)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))

"""What every notebook's setup cell runs (notebooks/SETUP_CELL.txt): emorl-kit for the notebook's Python.

Where the kit is installed (the kit's .venv, or this ran before) it does nothing. On a fresh Colab or Kaggle runtime
it installs the kit from the checkout it belongs to, with pip, runtime dependencies only, keeping what the runtime has
that fits them (pandas, matplotlib, Jupyter); torch is never touched. In a local Jupyter whose kernel is not the kit's,
it says which kernel to choose instead of installing into another Python. It needs nothing but the standard library:
it runs before the kit is importable.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout this file is in


def is_kit(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "pyproject.toml")) and os.path.isdir(os.path.join(path, "emorl_lib"))


def hosted() -> bool:
    """A hosted notebook runtime (Colab, Kaggle): its own Python is the one to install into."""
    return "google.colab" in sys.modules or bool({"COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"} & set(os.environ))


def setup(root: str = ROOT) -> str:
    """The installed version, or 'installed from <root>' after installing the checkout `root` into this Python."""
    try:
        return importlib.metadata.version("emorl-kit")  # installed (the kit's .venv, or this ran before)
    except importlib.metadata.PackageNotFoundError:
        pass
    root = os.path.abspath(root)
    if not is_kit(root):
        raise RuntimeError(f"{root} is not an emorl-kit checkout (no pyproject.toml and emorl_lib/)")
    venv = os.path.join(root, ".venv")
    if not hosted() and os.path.isdir(venv) and os.path.realpath(sys.prefix) != os.path.realpath(venv):
        raise RuntimeError(f"this notebook runs on {sys.executable}, not in the kit's environment {venv}: choose the "
                           "kernel 'emorl-kit' (Kernel > Change Kernel; ./run_tests.sh or ./run_all.sh registers it)")
    if importlib.util.find_spec("torch") is None:
        raise RuntimeError(f"torch is not installed in {sys.executable}: install the build you want first "
                           "(the kit never installs torch, so that a runtime keeps its CUDA build)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as keep:  # pip may not replace torch
        keep.write(f"torch=={importlib.metadata.version('torch')}\n")
    try:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-c", keep.name, "-e", root])
    finally:
        os.unlink(keep.name)
    sys.path.insert(0, root)  # an editable install is seen by new processes only
    importlib.invalidate_caches()
    return f"installed from {root}"

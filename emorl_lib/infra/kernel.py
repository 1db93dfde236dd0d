"""The `emorl-kit` Jupyter kernel, so that a JupyterLab started anywhere on the machine runs the notebooks in the
kit's .venv (and their setup cell never pip-installs the kit into another Python).

The notebooks declare the kernel name `emorl-kit`. scripts/bootstrap.sh registers a kernel of that name in the user's
Jupyter data directory (the user line of `jupyter --paths`; JUPYTER_DATA_DIR moves it), which every Jupyter of the
user searches, whatever Python it runs on. Its launcher starts ipykernel in the .venv of the emorl-kit checkout that
holds the notebook (Jupyter starts a kernel in the notebook's folder), so several checkouts each get their own
environment; a notebook outside any checkout gets the .venv that registered the kernel last.
Hosted runtimes have no such kernel and fall back to their own Python 3 (Colab says `Unrecognized runtime
"emorl-kit"; defaulting to "python3"`), where the setup cell installs the kit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from .log import get_logger

log = get_logger("emorl_lib.infra.kernel")  # not __name__: `python -m` makes it __main__

KERNEL_NAME = "emorl-kit"
DISPLAY_NAME = "emorl-kit"

_LAUNCHER = """#!/bin/sh
# The emorl-kit Jupyter kernel, written by emorl_lib/infra/kernel.py (scripts/bootstrap.sh). Jupyter starts it in the
# notebook's folder: run ipykernel in the .venv of the emorl-kit checkout above that folder, else in the .venv that
# registered this kernel last.
d=$(pwd -P)
while :; do
  if [ -f "$d/pyproject.toml" ] && [ -d "$d/emorl_lib" ] && [ -x "$d/.venv/bin/python" ]; then
    exec "$d/.venv/bin/python" -Xfrozen_modules=off -m ipykernel_launcher -f "$1"
  fi
  [ "$d" = / ] && break
  d=$(dirname "$d")
done
if [ -x {fallback} ]; then
  exec {fallback} -Xfrozen_modules=off -m ipykernel_launcher -f "$1"
fi
echo "emorl-kit kernel: no emorl-kit checkout with a .venv above $(pwd), and" {fallback} "is gone:" \\
     "run ./run_tests.sh or ./run_all.sh in a checkout once (it registers this kernel again)" >&2
exit 1
"""


def data_dir() -> Path:
    """The user's Jupyter data directory (what `jupyter --paths` lists under data, first user entry)."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir())


def install(venv: Path, data: Path | None = None) -> Path:
    """Write the kernel (kernel.json + launcher) into <data>/kernels/emorl-kit, replacing an older one."""
    python = Path(os.path.abspath(venv)) / "bin" / "python"  # not resolved: the venv's own symlink is the venv
    if not os.access(python, os.X_OK):
        raise FileNotFoundError(f"{python}: no Python in the venv {venv}")
    kdir = (data or data_dir()) / "kernels" / KERNEL_NAME
    kdir.mkdir(parents=True, exist_ok=True)
    launcher = kdir / "launch.sh"
    launcher.write_text(_LAUNCHER.replace("{fallback}", shlex.quote(str(python))))
    launcher.chmod(0o755)
    from .determinism import kernel_env

    spec = {
        "argv": [str(launcher), "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        # the CPU code paths and thread count pinned as the runner's kernels have them, before torch loads
        "env": kernel_env(),
        "metadata": {"debugger": True},
    }
    (kdir / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    try:  # the Python logo, as `ipykernel install` does
        from ipykernel.kernelspec import RESOURCES

        for logo in Path(RESOURCES).glob("logo-*"):
            shutil.copy(logo, kdir / logo.name)
    except ImportError:
        pass
    return kdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emorl_lib.infra.kernel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, default=Path(sys.prefix),
                    help="the venv for notebooks outside any checkout (default: this interpreter's)")
    ap.add_argument("--data-dir", type=Path, default=None, help="Jupyter data directory (default: the user's)")
    a = ap.parse_args(argv)
    kdir = install(a.venv, a.data_dir)
    log.info("Jupyter kernel '%s' registered in %s", KERNEL_NAME, kdir, main_process_only=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

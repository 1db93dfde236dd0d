#!/usr/bin/env bash
# Refresh the environment lock, requirements-py3XX.lock: every package the kit's .venv installs (pyproject.toml's
# runtime dependencies and all its extras, transitive ones included), pinned exactly, with hashes, resolved by uv for
# Linux x86_64 (manylinux_2_28) and each Python the kit supports. scripts/bootstrap.sh installs exactly that.
#   scripts/lock.sh                          # after editing pyproject.toml: every locked version that still fits stays
#   scripts/lock.sh --upgrade                # the newest versions pyproject.toml's ranges allow
#   scripts/lock.sh --upgrade-package numpy  # (any other `uv pip compile` option is passed on)
# torch (requirements-torch.txt) takes part in the resolution, so the lock fits it, but is not written to the lock,
# nor is what torch brings on Linux only (its CUDA runtime: the packages its Linux wheel needs and its Windows wheel,
# the CPU build, does not). bootstrap installs torch first, on its own. environment.yml (conda) is rewritten from the
# Python 3.11 lock. uv itself goes into .tools/ (git-ignored), never into .venv: it is no dependency of the kit.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
PYTHONS=(3.11 3.12)
PLATFORM=x86_64-manylinux_2_28
CPU_PLATFORM=x86_64-pc-windows-msvc   # where PyPI's torch wheel is the CPU build

uv="uv"
if ! { command -v uv >/dev/null 2>&1 && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ]; }; then
  uv=".tools/uv-$UV_VERSION/bin/uv"
  if [ ! -x "$uv" ]; then
    echo "[lock] installing uv $UV_VERSION into .tools/uv-$UV_VERSION (once)"
    python3 -m venv ".tools/uv-$UV_VERSION"
    ".tools/uv-$UV_VERSION/bin/python" -m pip install -q "uv==$UV_VERSION"
  fi
fi

torch_closure() {  # <python> <platform>: torch and everything it needs there, one name per line
  "$uv" pip compile requirements-torch.txt --python-version "$1" --python-platform "$2" \
    --no-header --no-annotate --quiet | sed -n 's/^\([A-Za-z0-9._-]*\)==.*/\1/p' | sort
}

for py in "${PYTHONS[@]}"; do
  out="requirements-py${py/./}.lock"
  no_emit=(--no-emit-package torch)
  for name in $(comm -23 <(torch_closure "$py" "$PLATFORM") <(torch_closure "$py" "$CPU_PLATFORM")); do
    no_emit+=(--no-emit-package "$name")
  done
  echo "[lock] Python $py -> $out"
  "$uv" pip compile pyproject.toml --all-extras --constraints requirements-torch.txt \
    --python-version "$py" --python-platform "$PLATFORM" --generate-hashes \
    "${no_emit[@]}" --custom-compile-command "scripts/lock.sh" --quiet --output-file "$out" "$@"
  echo "[lock]   $(grep -c '^[A-Za-z0-9]' "$out") packages locked"
done

python3 - <<'PY'
"""environment.yml: the same versions as the Python 3.11 lock, for conda (tests/test_environment.py compares them)."""
import re
from pathlib import Path

pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*==[^\s\\;]+)", Path("requirements-py311.lock").read_text(), re.M)
torch = [l for l in Path("requirements-torch.txt").read_text().splitlines() if l and not l.startswith("#")]
lines = [
    "# For conda: `conda env create -f environment.yml && conda activate emorl-kit && pip install --no-deps -e .`",
    "# Written by scripts/lock.sh from requirements-py311.lock (the same versions; a test keeps them equal), plus the",
    "# torch of requirements-torch.txt: on a GPU machine pip takes PyPI's CUDA build of it; replace that line by the",
    "# build you want (keep the version). Do not edit by hand: edit pyproject.toml and run scripts/lock.sh.",
    "name: emorl-kit",
    "channels:",
    "  - conda-forge",
    "dependencies:",
    "  - python=3.11",
    "  - pip",
    "  - pip:",
    *[f"      - {p}" for p in torch + pins],
]
Path("environment.yml").write_text("\n".join(lines) + "\n")
print(f"[lock] environment.yml: {len(pins)} locked packages + {', '.join(torch)}")
PY

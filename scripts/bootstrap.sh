#!/usr/bin/env bash
# Create .venv and install exactly the lock on first use; on later runs, when nothing changed, do nothing.
#   1. torch, on its own (requirements-torch.txt: torch==2.13.0, which pip takes from the local CPU wheel on the
#      kit's machines; EMORL_TORCH=<pip arguments> for another build, e.g. CUDA). A torch already in the venv is kept.
#   2. requirements-py3XX.lock for the venv's Python: every other package, exact versions, hashes checked, no
#      resolution (--no-deps); then whatever the lock does not list is uninstalled (a package dropped from it).
#   3. the kit itself, editable, without dependencies; `pip check`; the lock check (emorl_lib/infra/envlock.py).
#   4. the `emorl-kit` Jupyter kernel in the user's Jupyter data directory (emorl_lib/infra/kernel.py).
# EMORL_VENV=<folder> uses another venv; PYTHON=<interpreter> creates it with another Python (3.11 or 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EMORL_VENV:-.venv}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${EMORL_TORCH:-$(grep -v '^#' requirements-torch.txt | xargs)}"

[ -x "$VENV/bin/python" ] || { echo "[bootstrap] creating $VENV with $("$PY" --version)"; "$PY" -m venv "$VENV"; }
pyver="$("$VENV/bin/python" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
lock="requirements-py${pyver}.lock"
if [ ! -f "$lock" ]; then
  echo "[bootstrap] $VENV runs Python ${pyver:0:1}.${pyver:1}, and the kit has no lock for it ($lock)." \
       "Locked: $(ls requirements-py*.lock | xargs). Remove $VENV and run again with PYTHON=python3.11 (or 3.12)." >&2
  exit 1
fi
want="$(cat "$lock" pyproject.toml requirements-torch.txt scripts/bootstrap.sh | sha256sum | cut -c1-16) $lock ${TORCH_SPEC}"
stamp="$VENV/.emorl-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[bootstrap] installing $lock into $VENV (first run, or the lock, pyproject.toml or torch changed; a few minutes)"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  # torch's own dependencies (sympy, filelock, ...) are in the lock: take the locked versions right away.
  grep -E '^[A-Za-z0-9]' "$lock" | sed 's/ .*//' > "$VENV/.lock-constraints.txt"
  # shellcheck disable=SC2086
  "${pip[@]}" install -q -c "$VENV/.lock-constraints.txt" $TORCH_SPEC
fi
"${pip[@]}" install -q --require-hashes --no-deps -r "$lock"
"$VENV/bin/python" -m emorl_lib.infra.envlock prune --lock "$lock"
# --no-build-isolation: build with the locked setuptools instead of fetching the newest one.
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
"${pip[@]}" check
"$VENV/bin/python" -m emorl_lib.infra.envlock check --lock "$lock"
rm -rf "$VENV/share/jupyter/kernels/emorl-kit"  # where older versions of this script registered it
"$VENV/bin/python" -m emorl_lib.infra.kernel --venv "$VENV"
"$VENV/bin/python" -c "import torch, transformers, trl, peft, bitsandbytes, papermill, av, librosa"
echo "$want" > "$stamp"
echo "[bootstrap] done: $("$VENV/bin/python" -c 'import torch, transformers, trl; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")')"

#!/usr/bin/env bash
# Create .venv and install the pinned stack on first use; on later runs, when nothing changed, do nothing.
# torch goes in first and on its own: `pip install torch==2.13.0` takes the local CPU wheel on the kit's machines;
# set EMORL_TORCH to other pip arguments elsewhere (e.g. a CUDA build), or EMORL_VENV to use another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EMORL_VENV:-.venv}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${EMORL_TORCH:-torch==2.13.0}"
want="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16) ${TORCH_SPEC}"
stamp="$VENV/.emorl-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "[bootstrap] installing the pinned environment into $VENV (first run only; ~2 GB, a few minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH_SPEC
fi
"$VENV/bin/python" -m pip install -q -r requirements.txt -r requirements-dev.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
# A Jupyter kernel inside the venv, so JupyterLab users run notebooks in exactly this environment.
"$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name emorl-kit --display-name "emorl-kit (.venv)" >/dev/null
"$VENV/bin/python" -c "import torch, transformers, trl, peft, bitsandbytes, papermill, av, librosa" 
echo "$want" > "$stamp"
echo "[bootstrap] done: $("$VENV/bin/python" -c 'import torch, transformers, trl; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")')"

#!/usr/bin/env bash
# The main job: runs the numbered notebooks in order with papermill for a profile (default: the embedded default,
# tiny model + synthetic corpora on the CPU) and writes every table and figure to results/<profile>/.
#   ./run_all.sh                      # profile "default"
#   ./run_all.sh paper                # the paper profile (GPU, real corpora)
#   ./run_all.sh default 01 02        # a subset of notebooks
#   ./run_all.sh --force              # rerun stages whose outputs are current
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec "${EMORL_VENV:-.venv}/bin/python" -m emorl_lib.runner "$@"

#!/usr/bin/env bash
# The test command: installs the environment on first use (nothing on later runs), then runs the whole suite.
# Extra arguments go to pytest (e.g. ./run_tests.sh -k rewards).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec "${EMORL_VENV:-.venv}/bin/python" -m pytest "$@"

#!/usr/bin/env bash
# The test suite: unit tests and lab tests together (the lab fixture reuses a running lab
# or brings one up). Needs root and scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests --durations=40 "$@"

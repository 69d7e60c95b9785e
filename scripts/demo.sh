#!/usr/bin/env bash
# The main job against the built-in lab: bring the lab up, start-all, then status.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
inventory=$(.venv/bin/invoke lab.up | tail -n 1)
.venv/bin/invoke start-all --hosts "$inventory"
.venv/bin/invoke status --hosts "$inventory"

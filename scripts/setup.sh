#!/usr/bin/env bash
# All set-up on a fresh Debian 12 machine, as root: system packages (Docker Engine, OpenSSH,
# Redis, debootstrap, Compose v2) and a virtualenv (.venv) with comfyume-fab and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/invoke --version

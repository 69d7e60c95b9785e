"""Who deployed what, when, from which revision: the audit line and the deployed record."""
from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path


def who() -> str:
    """user@machine of whoever runs this task."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# This tool's own folder: the checkout in a clone (or an editable install), site-packages once installed.
_TOOL_ROOT = Path(__file__).resolve().parents[2]


def local_revision(where: str | Path | None = None) -> str:
    """This tool's git revision (short), '-dirty' when its work tree has changes; read from the
    tool's own checkout, never from the current folder (which may be any other repository).
    Installed (not a git checkout of this tool): `installed-VERSION`, one word for audit lines."""
    root = Path(where) if where is not None else _TOOL_ROOT
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return _installed()
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return _installed()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return _installed()


def _installed() -> str:
    from .. import __version__
    return f"installed-{__version__}"



def audit_line(task: str, revision: str, config_hash: str, mode: str, result: str, detail: str = "") -> str:
    line = f"{now_iso()} by={who()} task={task} rev={revision} config={config_hash} mode={mode} result={result}"
    return f"{line} {detail}".strip()


def deployed_record(revision: str, config_hash: str, host_hash: str, mode: str, images: dict | None = None) -> bytes:
    record = {"revision": revision, "config_hash": config_hash, "host_hash": host_hash,
              "mode": mode, "at": now_iso(), "by": who()}
    if images:
        record["images"] = images  # branch, commit and the image of each service (ops.imagestep)
    return (json.dumps(record, indent=1) + "\n").encode()

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


def local_revision(where: str | Path = ".") -> str:
    """The local git revision (short), '-dirty' when the work tree has changes; 'unknown' outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def audit_line(task: str, revision: str, config_hash: str, mode: str, result: str, detail: str = "") -> str:
    line = f"{now_iso()} by={who()} task={task} rev={revision} config={config_hash} mode={mode} result={result}"
    return f"{line} {detail}".strip()


def deployed_record(revision: str, config_hash: str, host_hash: str, mode: str, images: dict | None = None) -> bytes:
    record = {"revision": revision, "config_hash": config_hash, "host_hash": host_hash,
              "mode": mode, "at": now_iso(), "by": who()}
    if images:
        record["images"] = images  # branch, commit and the image of each service (ops.imagestep)
    return (json.dumps(record, indent=1) + "\n").encode()

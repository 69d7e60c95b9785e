"""The "stopped on purpose" record written (`stop-verda`, `stop-all`: `record_text`, uploaded to
`facts.stopped.STOPPED_FILE`) and cleared (`start-all`: `clear_command`); `facts.stopped` reads it."""
from __future__ import annotations

import json

from ..commands import q, workdir_path
from ..facts.stopped import STOPPED_FILE


def record_text(task: str, by: str, at: str) -> bytes:
    return (json.dumps({"task": task, "by": by, "at": at}) + "\n").encode()


def clear_command(workdir: str) -> str:
    return f"rm -f -- {q(workdir_path(workdir, STOPPED_FILE))}"

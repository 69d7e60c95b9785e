"""The "stopped on purpose" record a worker host keeps in its workdir: who stopped its worker with
which task and when (`stop-verda`, `stop-all` write it; `start-all` removes it). `status` reads it
to tell a deliberate stop from a failure.

`read_command(workdir)` prints the file (nothing when absent); `parse_record` reads it;
`actions.stopped` writes and clears it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from .. import commands as cmd

STOPPED_FILE = "stopped.json"


@dataclass(frozen=True)
class StoppedRecord:
    task: str  # stop-verda | stop-all
    by: str  # user@machine
    at: str  # RFC 3339 UTC, e.g. 2026-11-30T23:01:02Z

    def seconds_since(self, now: datetime | None = None) -> float | None:
        try:
            then = datetime.strptime(self.at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return None
        return max(0.0, ((now or datetime.now(timezone.utc)) - then).total_seconds())


def read_command(workdir: str) -> str:
    return cmd.read_file(workdir, STOPPED_FILE) + " || true"


def parse_record(text: str) -> StoppedRecord | None:
    """The record, or None when there is none (or it is not one: a deliberate stop is never guessed)."""
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("task", "by", "at")):
        return None
    return StoppedRecord(task=data["task"], by=data["by"], at=data["at"])


def for_how_long(seconds: float | None) -> str:
    """12 s, 5 min, 3 h 20 min, 2 d 4 h."""
    if seconds is None:
        return "an unknown time"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"

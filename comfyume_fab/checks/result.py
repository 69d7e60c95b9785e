"""A check's result: one named finding, ok or not, with its detail and data for --json."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import clean


@dataclasses.dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    duration: float = 0.0
    host: str | None = None
    warning: bool = False  # ok, but degraded (e.g. a GPU mode running on CPU)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # a detail often quotes a host (a log line, Compose's output): never a raw control character
        self.detail = clean(self.detail)

    def as_json(self) -> dict[str, Any]:
        out = {"name": self.name, "ok": self.ok, "detail": clean(self.detail),
               "duration_ms": round(self.duration * 1000, 1), "host": self.host, "warning": self.warning}
        out.update(self.data)
        return out

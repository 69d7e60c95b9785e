"""Facts: what a host or its ComfyUI says, one module per subject, each the exact command (or HTTP
call) and the pure parser of its output side by side (pyinfra's shape):

- `docker`: the engine's version and runtimes, and the project's containers (`docker inspect`
  with `INSPECT_FORMAT`) as `ContainerInfo`, with the rules that read them (healthy, crash loop).
- `compose`: `docker compose version` (v2, or the legacy Python docker-compose).
- `nvidia`: `nvidia-smi --query-gpu=...` and `nvidia-smi -L`.
- `comfyui`: ComfyUI's HTTP API: `GET /system_stats`, `POST /prompt`, `GET /history/{id}`.
- `tailscale`: `tailscale ip -4`.

No I/O here; `host.state` runs the commands. Every parser is tested on output recorded from the
real program (tests/fixtures/), and tests/unit/test_fact_pairs.py checks that each module's command
is the one its recording was made with. A parser that cannot make sense of its input raises
`ParseError`, whose message says in one sentence what was expected and quotes what was seen.
"""
from __future__ import annotations

import json
from typing import Any

EXCERPT_CHARS = 120  # an excerpt in a message never exceeds this (plus quotes and an ellipsis)


def excerpt(seen: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, quoted excerpt of `seen` for an error message."""
    if isinstance(seen, bytes):
        seen = seen.decode("utf-8", "replace")
    if not isinstance(seen, str):
        try:
            seen = json.dumps(seen, sort_keys=True, default=str)
        except (TypeError, ValueError):
            seen = repr(seen)
    text = " ".join(seen.split())
    if not text:
        return "empty output"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


class ParseError(ValueError):
    """The output of a command or an HTTP call was not what its parser expects."""

    def __init__(self, expected: str, seen: Any = None, *, message: str | None = None):
        self.expected = expected
        self.seen = seen
        super().__init__(message or f"Expected {expected}, but saw {excerpt(seen)}.")

"""Facts: what a host or its ComfyUI says, one module per subject, each the exact command (or HTTP
call) and the pure parser of its output side by side (pyinfra's shape). A fact the host-state
read learns is a `Fact`: its section name, command, parser and `HostState` fields in one place;
`host.state` lists them. Commands that change a host are in `host.actions`, not here.

- `docker`: the engine's version and runtimes, and the project's containers (`docker inspect`
  with `INSPECT_FORMAT`) as `ContainerInfo`, with the rules that read them (healthy, crash loop).
- `compose`: `docker compose version` (v2, or the legacy Python docker-compose).
- `nvidia`: `nvidia-smi --query-gpu=...` and `nvidia-smi -L`.
- `tailscale`: `tailscale ip -4`.
- `swarm`: the engine's swarm state (`docker info`), the nodes, the stack's services and tasks,
  and the images' default argv (run by `ops.swarm`, not part of the host-state read).
- `deployed`: the record start-all leaves in the workdir (`deployed.json`).
- `envfile`: the uploaded `.env`'s fingerprints (`CFAB_ENV_HASH`, `CFAB_HASH_<SERVICE>`) and, on
  request, the Redis password.
- `salt`: the host's fingerprint salt (`fingerprint.salt` in the workdir), never printed.
- `lock`: the deploy lock as the host shows it (`lock_read`, `parse_lock`).
- `stopped`: the "stopped on purpose" record a worker host keeps.
- `git`: the team's repository as the host reads it, and the host's bare checkout.
- `images`: the images on the engine and the commit a built image came from.
- `queue_manager`: the queue manager's HTTP API (`/health`, `/api/jobs`), parsed.
- `ended`: how a stopped container ended (exit code, killed after its grace period, OOM).
- `autostop`: autostop's installed files and container, and the state files its program writes.
- `comfyui`: ComfyUI's HTTP API: `GET /system_stats`, `POST /prompt`, `GET /history/{id}`.

No I/O here; `host.state` runs the commands. Every parser is tested on output recorded from the
real program (tests/fixtures/), and tests/unit/test_fact_pairs.py checks that each module's command
is the one its recording was made with. A parser that cannot make sense of its input raises
`ParseError`, whose message says in one sentence what was expected and quotes what was seen.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, NamedTuple

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


class Place(NamedTuple):
    """Where a host's facts are read: its compose project and its remote folder."""
    project: str
    workdir: str


def field(name: str, kind: Any, default: Any = None, *, factory: Callable[[], Any] | None = None,
          repr: bool = True) -> tuple:
    """One `HostState` field a fact fills (its name, type and default), as `host.state` declares it."""
    spec = dataclasses.field(default_factory=factory, repr=repr) if factory is not None else \
        dataclasses.field(default=default, repr=repr)
    return (name, kind, spec)


@dataclasses.dataclass(frozen=True)
class Fact:
    """One thing the host-state read learns, whole: `section` names its part of the one-round-trip
    script, `command(place)` is its shell snippet, `fields` are the `HostState` fields it fills and
    `fill(state, exit_code, output)` parses its output into them (`absent`: the exit code and
    output it reads as when its section did not run). `preflight` facts are what start-all and
    status learn before touching a host; an `on_request` fact runs only when asked for."""
    section: str
    command: Callable[[Place], str]
    fill: Callable[[Any, int, str], None]
    fields: tuple[tuple, ...] = ()
    absent: tuple[int, str] = (1, "")
    preflight: bool = False
    on_request: bool = False


def fixed(command: str) -> Callable[[Place], str]:
    """A fact's command that does not depend on where it is read."""
    return lambda place: command

"""Wait, bounded, until a host's compose services are running and healthy, showing each
service's progress; name the service and show its last log lines when it never gets there."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from ..errors import UnhealthyError
from ..host.commands import ComposeProject
from ..host.facts.docker import ContainerInfo, by_service, describe, service_ok
from ..host.ssh.remote import Remote
from ..host.state import read_containers


def wait_healthy(remote: Remote, compose: ComposeProject, services: Sequence[str], timeout: float,
                 say: Callable[[str], None], interval: float = 0.25, announced: set[str] | None = None) -> float:
    """Each service's "healthy" line is said once: `announced` holds the services already said (by
    an earlier wait of the same stage) and gets the ones said now. `interval` is short because a poll is one `docker inspect` round trip (~50 ms) while a
    late one keeps the whole deploy waiting: healthchecks can pass every second."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    shown: dict[str, str] = {}
    while True:
        current = by_service(read_containers(remote, compose.project, step="wait healthy"))
        pending = []
        for svc in services:
            c = current.get(svc)
            text = describe(c)
            if shown.get(svc) != text:
                shown[svc] = text
                if service_ok(c) and (announced is None or svc not in announced):
                    if announced is not None:
                        announced.add(svc)
                    say(f"{remote.name}: {svc} healthy ({time.monotonic() - t0:.1f} s)")
            if not service_ok(c):
                pending.append(svc)
                if c is not None and c.crash_looping:
                    _fail(remote, compose, svc, c, f"is crash-looping ({c.restart_count} restarts)")
        if not pending:
            return time.monotonic() - t0
        if time.monotonic() >= deadline:
            svc = pending[0]
            others = f" (also waiting for {', '.join(pending[1:])})" if pending[1:] else ""
            _fail(remote, compose, svc, current.get(svc), f"did not become healthy within {timeout:g} s{others}")
        time.sleep(interval)


def last_logs(remote: Remote, compose: ComposeProject, service: str, lines: int = 8) -> str:
    res = remote.run(compose.logs(service, tail=lines), step="logs")
    text = [ln.split("|", 1)[-1].strip() for ln in res.stdout.splitlines() if ln.strip()]
    return " | ".join(text[-lines:]) or "(no log lines)"


def _fail(remote, compose: ComposeProject, svc, c: ContainerInfo | None, what, step: str = "wait healthy",
          extra: str = "") -> None:
    logs = last_logs(remote, compose, svc)
    raise UnhealthyError(f"service {svc} {what}: {describe(c)}{extra}; last log lines: {logs}",
                         host=remote.name, step=step,
                         hint=f"inspect it with `docker compose -p {compose.project} logs {svc}` on {remote.name}")


def up_failed(remote: Remote, compose: ComposeProject, services: Sequence[str], output: str) -> None:
    """`docker compose up -d` failed: when a service it waited for is unhealthy, exited or
    crash-looping (a `depends_on: service_healthy` chain), name it with its last log lines and the
    services left unstarted; else quote the last lines of Compose's own output. Always raises."""
    current = by_service(read_containers(remote, compose.project, step="compose up"))
    bad = [svc for svc in services if current.get(svc) is not None and
           (current[svc].health == "unhealthy" or current[svc].state in ("exited", "dead", "restarting")
            or current[svc].crash_looping)]
    if bad:
        waiting = [svc for svc in services if current.get(svc) is not None and current[svc].state == "created"]
        extra = f"; not started because of it: {', '.join(waiting)}" if waiting else ""
        _fail(remote, compose, bad[0], current[bad[0]],
              "failed while `docker compose up -d` waited for it", step="compose up", extra=extra)
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    raise UnhealthyError(f"`docker compose up -d` failed: {' | '.join(lines[-3:])[-400:] or 'no output'}",
                         host=remote.name, step="compose up",
                         hint="the message above is Compose's own; fix the cause and rerun start-all")

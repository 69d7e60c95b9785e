"""The job queue and the workers' heartbeats, read from Redis on the app host."""
from __future__ import annotations

import time
from typing import Any, Sequence

from ..host.ssh.remote import Remote
from .links import read_queue
from .result import CheckResult


def queue_checks(remote: Remote, host: str, port: int, password: str | None, timeout: float,
                 worker_ids: Sequence[str], heartbeat_timeout: int) -> tuple[dict[str, Any], list[CheckResult]]:
    """(the queue block for --json, the checks): depth, running, and each worker's heartbeat age."""
    t0 = time.monotonic()
    app = remote.name
    try:
        q = read_queue(remote, host, port, password, timeout, worker_ids)
    except Exception as exc:  # reported as a failed check, never a traceback
        return {}, [CheckResult("queue", False, f"cannot read the queue from Redis on {app}: "
                                f"{getattr(exc, 'cause', exc)}", time.monotonic() - t0, app)]
    checks = [CheckResult("queue", True, f"{q.pending} pending, {q.running} running", time.monotonic() - t0,
                          app, data={"depth": q.pending, "running": q.running})]
    workers = {}
    for wid, ttl in q.heartbeat_ttls.items():
        if ttl is None or ttl < 0:
            workers[wid] = {"heartbeat_age_s": None, "ok": False}
            checks.append(CheckResult(f"heartbeat-{wid}", False, f"no worker:{wid}:heartbeat key in Redis: {wid} has "
                                      f"not polled the queue manager for {heartbeat_timeout} s", host=app))
        else:
            age = heartbeat_timeout - ttl
            workers[wid] = {"heartbeat_age_s": age, "ok": True}
            checks.append(CheckResult(f"heartbeat-{wid}", True, f"last poll {age} s ago", host=app,
                                      data={"age_s": age}))
    return {"depth": q.pending, "running": q.running, "workers": workers}, checks

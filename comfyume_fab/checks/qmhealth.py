"""The queue manager's health by what it says (its `/health` body), not by its status code, and
what that means for the other checks: a heartbeat the queue manager could not record, a worker busy
with a long job, a link jobs do not go through (pure judgements apart from `health_check`)."""
from __future__ import annotations

import http.client
import json
import time
from typing import Iterable

from ..errors import TunnelError
from ..host.facts import queue_manager as qm
from ..host.ssh.remote import Remote
from .links import http_via
from .result import CheckResult


def health_result(name: str, host: str | None, what: str, http_status: int, body: bytes, took: float
                  ) -> CheckResult:
    """One check from a /health answer: the body decides (200 with "unhealthy" fails, naming the cause)."""
    h = qm.parse_health(http_status, body)
    data = {"http_status": http_status, **{k: v for k, v in h.data.items() if k in ("status", "redis_connected",
                                                                                     "inference_mode")}}
    if h.ok:
        mode = f", inference_mode {h.inference_mode}" if h.inference_mode else ""
        return CheckResult(name, True, f"{what}: healthy, Redis connected{mode} ({took * 1000:.0f} ms)", took, host,
                           data=data)
    return CheckResult(name, False, f"{what}: {h.cause}", took, host, data={**data, "cause": h.cause})


def health_check(via: Remote, host: str, port: int, name: str, timeout: float, what: str) -> CheckResult:
    """GET /health at host:port over a connection `via` opens."""
    t0 = time.monotonic()
    try:
        status, body = http_via(via, host, port, "GET", qm.HEALTH, timeout=timeout)
    except TunnelError as exc:
        return CheckResult(name, False, f"{what}: {exc.cause}", time.monotonic() - t0, via.name,
                           data={"diagnosis": exc.kind})
    except (OSError, http.client.HTTPException) as exc:
        return CheckResult(name, False, f"{what}: no valid HTTP answer from {host}:{port}/health within "
                           f"{timeout:g} s ({exc or type(exc).__name__})", time.monotonic() - t0, via.name)
    return health_result(name, via.name, what, status, body, time.monotonic() - t0)


def curl_health_command(url: str) -> list[str]:
    """argv for the worker container's own curl (the real image has curl): the body, then the code."""
    return ["curl", "-sS", "-m", "5", "-w", "\\n%{http_code}", f"{url.rstrip('/')}/health"]


def split_curl(out: str) -> tuple[int, bytes]:
    """(HTTP status, body) from `curl -w '\\n%{http_code}'` output (0 when there is no code)."""
    body, _, code = out.rstrip("\n").rpartition("\n")
    return (int(code) if code.strip().isdigit() else 0), body.encode()


def running_prompt(via: Remote, port: int, timeout: float) -> str | None:
    """The prompt the worker's own ComfyUI runs now (GET /queue on its loopback), None when idle or
    unreadable: the busy evidence for the heartbeat when the inference probe does not run."""
    from ..host.facts import ParseError
    from ..host.facts.comfyui import QUEUE, parse_queue
    try:
        status, body = http_via(via, "127.0.0.1", port, "GET", QUEUE, timeout=timeout)
        queue = parse_queue(json.loads(body or b"{}")) if status == 200 else None
    except (TunnelError, OSError, http.client.HTTPException, ParseError, ValueError):
        return None
    return queue.running[0].prompt_id if queue and queue.running else None


def lost_redis(checks: Iterable[CheckResult]) -> bool:
    """Whether a queue-manager health check says it lost Redis."""
    return any(c.data.get("redis_connected") is False for c in checks if c.name.startswith("queue-manager"))


def settle_heartbeats(checks: list[CheckResult], busy_workers: dict[str, str], redis_lost: bool) -> None:
    """A failed heartbeat is the worker's fault only when the queue manager could record it and the
    worker was not busy: when the queue manager lost Redis it cannot write heartbeats; a worker
    running a job asks for the next one (which refreshes the heartbeat) only when it is done."""
    for c in checks:
        wid = c.name.removeprefix("heartbeat-")
        if not c.name.startswith("heartbeat-") or c.ok or c.data.get("stopped_on_purpose"):
            continue
        if redis_lost:
            c.ok, c.warning = True, True
            c.detail = (f"no heartbeat for {wid}, but the queue manager cannot record heartbeats (it lost Redis): "
                        "whether the worker still polls is unknown until Redis is back")
            c.data["diagnosis"] = "queue-manager-cannot-record"
        elif wid in busy_workers:
            c.ok, c.warning = True, True
            c.detail = (f"no heartbeat for {wid} while it is busy with a job ({busy_workers[wid]}): the queue manager "
                        "refreshes it only when the worker asks for its next job")
            c.data["diagnosis"] = "busy"
        else:
            c.data.setdefault("diagnosis", "stopped-polling")


def degrade_unused_links(checks: list[CheckResult], jobs_complete: bool) -> None:
    """Redis from a worker: the design requires the link, but the real worker talks HTTP only to the
    queue manager. While the job probe proves jobs complete, its failure degrades, it does not fail."""
    if not jobs_complete:
        return
    for c in checks:
        if c.name.startswith("redis-from-") and not c.ok:
            link = f"{c.host} -> Redis"
            c.ok, c.warning = True, True
            c.detail = (f"DEGRADED: the link {link} fails ({c.detail}); jobs still complete (job probe ok) because "
                        "the worker talks HTTP only to the queue manager, but the design requires this link: fix it")
            c.data["verdict"] = "degraded"


def verdict(ok: bool, unreachable: bool, stopped: bool, checks: Iterable[CheckResult]) -> str:
    """healthy | degraded | stopped on purpose | unreachable | not healthy."""
    if ok:
        return "degraded" if any(c.data.get("verdict") == "degraded" for c in checks) else "healthy"
    return "unreachable" if unreachable else "stopped on purpose" if stopped else "not healthy"
